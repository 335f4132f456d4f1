"""The configuration of a world model: the sizes of V and M and how frames are prepared.

It is stored as ``config.json`` beside ``model.safetensors``. ``format_version`` names the
layout of both files so that a model written by a newer dreamgym is refused with a clear
error instead of being misread.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from dreamgym.errors import ConfigError

WORLD_MODEL_FORMAT_VERSION = 1
"""The newest layout of a world model's ``config.json`` + ``model.safetensors`` this dreamgym can read."""
FORMAT_VERSION = WORLD_MODEL_FORMAT_VERSION  # its first, public name (``dreamgym.FORMAT_VERSION``)

SUPPORTED_FORMAT_VERSIONS = (1,)

OMITTED_WHEN_ABSENT: dict[str, Any] = {"num_trajectory_starts": 0, "ensemble_size": 1}
"""Optional fields and the value that means "absent": a field at that value is left out of
``config.json``, so a model without the part keeps the file older dreamgym versions wrote and read."""

MAX_ENSEMBLE_SIZE = 16
"""Most members an ensemble of M may have."""

MAX_TRAJECTORY_STARTS = 65536
"""Largest bank of trajectory starts a config may ask for (about 140 MB at the default sizes)."""

MAX_SIZES = {
    "z_dim": 4096,
    "action_dim": 256,
    "rnn_hidden": 16384,
    "num_mixtures": 256,
    "num_start_latents": 1_000_000,
}
"""Upper limits of the size fields: far above any real model, low enough that a crafted
``config.json`` cannot make the loader allocate without bound. (The loader also caps the
total size of the weights before it allocates them; see ``dreamgym.models.world_model``.)"""
MAX_CHANNELS = 4096

REQUIRED_FIELDS = (
    "z_dim",
    "rnn_hidden",
    "action_dim",
    "num_mixtures",
    "num_start_latents",
    "encoder_channels",
    "decoder_channels",
    "crop_dashboard",
)
"""Fields a ``config.json`` must name: they shape the weights or the frames, so a default
standing in for a missing one would silently describe another model."""


def _is_real(value: Any) -> bool:
    """An int or float (numpy's included), not a bool or a string."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _check_format_version(version: Any) -> None:
    # `True in (1,)` and `1.0 in (1,)` hold in Python: the type is checked first.
    if type(version) is not int or version not in SUPPORTED_FORMAT_VERSIONS:
        raise ConfigError(
            f"world model format_version {version!r} is not supported by this "
            f"dreamgym (it reads the integer versions {list(SUPPORTED_FORMAT_VERSIONS)}); "
            "upgrade dreamgym or re-export the model"
        )


def _check_int_list(name: str, value: Any, length: int) -> None:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != length
        or any(not isinstance(c, int) or isinstance(c, bool) or not 0 < c <= MAX_CHANNELS for c in value)
    ):
        raise ConfigError(
            f"{name} must be {length} positive integers (a list, each at most {MAX_CHANNELS}), got {value!r}"
        )


@dataclass
class WorldModelConfig:
    """Sizes and settings of a V + M world model.

    The defaults are those of Ha & Schmidhuber's CarRacing model: a 64x64x3 frame, a 32-d
    latent, an LSTM of 256 units and 5 Gaussians per latent dimension.

    Args:
        format_version: layout version of the saved files; see :data:`WORLD_MODEL_FORMAT_VERSION`.
        env_id: the real Gymnasium env the model was trained on.
        image_size: side of the square frame fed to V.
        z_dim: size of V's latent ``z``.
        encoder_channels: output channels of V's stride-2, kernel-4 conv layers.
        decoder_channels: output channels of V's deconv layers, before the final RGB layer.
        decoder_kernels: kernel sizes of V's deconv layers, the final RGB layer included.
        action_dim: size of the continuous action fed to M.
        rnn_hidden: LSTM units of M.
        num_mixtures: Gaussians per latent dimension in M's mixture head.
        num_start_latents: size of the bank of real first-frame latents dream episodes start from.
        num_trajectory_starts: size of the bank of real states ``(z, h, c)`` taken along real
            trajectories, for ``start="trajectory"`` dreams (0: the model has none).
        ensemble_size: number of Ms (members) trained from different seeds on the same data;
            member 0 is ``rnn``, the one whose ``h`` agents observe, and the others dream and
            measure disagreement in ``ensemble=True`` dreams (1: a single M, as in the paper).
        crop_dashboard: drop the bottom 12-pixel dashboard strip of CarRacing's 96x96 frame
            before resizing (the paper does).
        kl_free_bits: floor on V's KL term per frame, in nats.
        dropout: dropout on M's LSTM input and output during training (Dropout's Dream Land).
        training: free-form record of how the model was trained, kept for the model card.
    """

    format_version: int = WORLD_MODEL_FORMAT_VERSION
    env_id: str = "CarRacing-v3"
    image_size: int = 64
    z_dim: int = 32
    encoder_channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32])
    decoder_kernels: list[int] = field(default_factory=lambda: [5, 5, 6, 6])
    action_dim: int = 3
    rnn_hidden: int = 256
    num_mixtures: int = 5
    num_start_latents: int = 256
    num_trajectory_starts: int = 0
    ensemble_size: int = 1
    crop_dashboard: bool = True
    kl_free_bits: float = 16.0
    dropout: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_format_version(self.format_version)
        positive = {
            "image_size": self.image_size,
            "z_dim": self.z_dim,
            "action_dim": self.action_dim,
            "rnn_hidden": self.rnn_hidden,
            "num_mixtures": self.num_mixtures,
            "num_start_latents": self.num_start_latents,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"config field {name!r} must be a positive integer, got {value!r}")
            if name in MAX_SIZES and value > MAX_SIZES[name]:
                # A crafted config.json must not make the loader allocate without limit.
                raise ConfigError(f"config field {name!r} is {value}, above the limit of {MAX_SIZES[name]}")
        starts = self.num_trajectory_starts
        if not isinstance(starts, int) or isinstance(starts, bool) or not 0 <= starts <= MAX_TRAJECTORY_STARTS:
            raise ConfigError(
                f"config field 'num_trajectory_starts' must be an integer in [0, {MAX_TRAJECTORY_STARTS}], "
                f"got {starts!r}"
            )
        members = self.ensemble_size
        if not isinstance(members, int) or isinstance(members, bool) or not 1 <= members <= MAX_ENSEMBLE_SIZE:
            raise ConfigError(
                f"config field 'ensemble_size' must be an integer in [1, {MAX_ENSEMBLE_SIZE}], got {members!r}"
            )
        if self.image_size != 64:
            raise ConfigError(f"image_size must be 64 (the ConvVAE's geometry), got {self.image_size}")
        _check_int_list("encoder_channels", self.encoder_channels, 4)
        _check_int_list("decoder_channels", self.decoder_channels, 3)
        if not isinstance(self.decoder_kernels, (list, tuple)) or list(self.decoder_kernels) != [5, 5, 6, 6]:
            # Other kernels do not land on 64x64 from the 1x1 seed of the decoder.
            raise ConfigError(f"decoder_kernels must be [5, 5, 6, 6], got {self.decoder_kernels!r}")
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ConfigError(f"env_id must be a non-empty string, got {self.env_id!r}")
        if not isinstance(self.crop_dashboard, bool):
            raise ConfigError(f"crop_dashboard must be true or false, got {self.crop_dashboard!r}")
        if not _is_real(self.kl_free_bits) or not 0.0 <= self.kl_free_bits < math.inf:
            raise ConfigError(f"kl_free_bits must be a finite number >= 0, got {self.kl_free_bits!r}")
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1) (a number), got {self.dropout!r}")
        if not isinstance(self.training, dict):
            raise ConfigError(f"training must be a JSON object (the training record), got {self.training!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], complete: bool = True) -> WorldModelConfig:
        """Build a config from the contents of ``config.json``, refusing unknown or missing fields.

        Args:
            data: the JSON object.
            complete: require every field that shapes the weights (:data:`REQUIRED_FIELDS`), as
                ``save_pretrained`` writes them; False lets missing fields take their defaults
                (a build config's ``model`` section).
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a world model config must be a JSON object, got {type(data).__name__}")
        if "format_version" not in data:
            raise ConfigError("config.json has no 'format_version': it is not a dreamgym world model")
        _check_format_version(data["format_version"])
        missing = [name for name in REQUIRED_FIELDS if name not in data] if complete else []
        if missing:
            raise ConfigError(
                f"config.json lacks the fields {missing}; a world model's config names every size of its weights"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"config.json has unknown fields {unknown}; expected only {sorted(known)}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        # Optional parts left at "absent" are not written, so a model without them keeps the
        # config.json that older dreamgym versions read.
        for name, absent in OMITTED_WHEN_ABSENT.items():
            if data[name] == absent:
                del data[name]
        return data

    @property
    def observation_dim(self) -> int:
        """Size of the latent observation ``[z, h]``."""
        return self.z_dim + self.rnn_hidden
