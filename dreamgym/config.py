"""The configuration of a world model: the sizes of V and M and how frames are prepared.

It is stored as ``config.json`` beside ``model.safetensors``. ``format_version`` names the
layout of both files so that a model written by a newer dreamgym is refused with a clear
error instead of being misread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
"""The newest layout of ``config.json`` + ``model.safetensors`` this dreamgym can read."""

SUPPORTED_FORMAT_VERSIONS = (1,)

OMITTED_WHEN_ABSENT = ("num_trajectory_starts",)

MAX_TRAJECTORY_STARTS = 65536
"""Largest bank of trajectory starts a config may ask for (about 140 MB at the default sizes)."""


class ConfigError(ValueError):
    """A world-model configuration is malformed or from an unsupported version."""


@dataclass
class WorldModelConfig:
    """Sizes and settings of a V + M world model.

    The defaults are those of Ha & Schmidhuber's CarRacing model: a 64x64x3 frame, a 32-d
    latent, an LSTM of 256 units and 5 Gaussians per latent dimension.

    Args:
        format_version: layout version of the saved files; see :data:`FORMAT_VERSION`.
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
        crop_dashboard: drop the bottom 12-pixel dashboard strip of CarRacing's 96x96 frame
            before resizing (the paper does).
        kl_free_bits: floor on V's KL term per frame, in nats.
        dropout: dropout on M's LSTM input and output during training (Dropout's Dream Land).
        training: free-form record of how the model was trained, kept for the model card.
    """

    format_version: int = FORMAT_VERSION
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
    crop_dashboard: bool = True
    kl_free_bits: float = 16.0
    dropout: float = 0.0
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format_version not in SUPPORTED_FORMAT_VERSIONS:
            raise ConfigError(
                f"world model format_version {self.format_version!r} is not supported by this "
                f"dreamgym (it reads versions {list(SUPPORTED_FORMAT_VERSIONS)}); "
                "upgrade dreamgym or re-export the model"
            )
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
        starts = self.num_trajectory_starts
        if not isinstance(starts, int) or isinstance(starts, bool) or not 0 <= starts <= MAX_TRAJECTORY_STARTS:
            raise ConfigError(
                f"config field 'num_trajectory_starts' must be an integer in [0, {MAX_TRAJECTORY_STARTS}], got {starts!r}"
            )
        if self.image_size != 64:
            raise ConfigError(f"image_size must be 64 (the ConvVAE's geometry), got {self.image_size}")
        if len(self.encoder_channels) != 4 or any(c <= 0 for c in self.encoder_channels):
            raise ConfigError(
                f"encoder_channels must be 4 positive integers, got {self.encoder_channels!r}"
            )
        if len(self.decoder_channels) != 3 or any(c <= 0 for c in self.decoder_channels):
            raise ConfigError(
                f"decoder_channels must be 3 positive integers, got {self.decoder_channels!r}"
            )
        if list(self.decoder_kernels) != [5, 5, 6, 6]:
            # Other kernels do not land on 64x64 from the 1x1 seed of the decoder.
            raise ConfigError(f"decoder_kernels must be [5, 5, 6, 6], got {self.decoder_kernels!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorldModelConfig:
        """Build a config from the contents of ``config.json``, refusing unknown fields."""
        if not isinstance(data, dict):
            raise ConfigError(f"a world model config must be a JSON object, got {type(data).__name__}")
        if "format_version" not in data:
            raise ConfigError("config.json has no 'format_version': it is not a dreamgym world model")
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
        for name in OMITTED_WHEN_ABSENT:
            if not data[name]:
                del data[name]
        return data

    @property
    def observation_dim(self) -> int:
        """Size of the latent observation ``[z, h]``."""
        return self.z_dim + self.rnn_hidden
