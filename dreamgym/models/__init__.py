"""The networks of a world model: V (:class:`ConvVAE`) and M (:class:`MDNRNN`), bundled as :class:`WorldModel`."""

from dreamgym.models.mdnrnn import MDNRNN, MDNOutput, StackedMDNRNN, mixture_mean, mixture_nll, sample_mixture
from dreamgym.models.vae import ConvVAE, vae_loss
from dreamgym.models.world_model import WorldModel, WorldModelFormatError, load_weights_strict

__all__ = [
    "MDNRNN",
    "ConvVAE",
    "MDNOutput",
    "StackedMDNRNN",
    "WorldModel",
    "WorldModelFormatError",
    "load_weights_strict",
    "mixture_mean",
    "mixture_nll",
    "sample_mixture",
    "vae_loss",
]
