"""Training a world model from collected episodes: V first (:func:`train_vae`), then M (:func:`train_rnn`).

Both stages checkpoint every epoch (safetensors + JSON, never pickle), resume where they
stopped, and score the model on the same held-out episodes (:func:`split_seeds`) into
``metrics.json`` (:func:`evaluate_world_model`).
"""

from dreamgym.errors import CheckpointError
from dreamgym.training.common import split_seeds
from dreamgym.training.metrics import evaluate_world_model, write_metrics
from dreamgym.training.rnn import train_rnn
from dreamgym.training.vae import train_vae
from dreamgym.validation import pick_device

__all__ = [
    "CheckpointError",
    "evaluate_world_model",
    "pick_device",
    "split_seeds",
    "train_rnn",
    "train_vae",
    "write_metrics",
]
