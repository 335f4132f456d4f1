"""Shared fixtures: a tiny world model (built fresh, seeded) and its saved folder.

The SDL drivers are set before anything imports pygame so that ``render_mode="human"``
and CarRacing's rendering work on a headless machine. The Hub is put offline so that no
test can reach the network by accident.
"""

from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch

from dreamgym import WorldModel, WorldModelConfig

torch.set_num_threads(1)

TINY_CONFIG = dict(
    z_dim=8,
    rnn_hidden=16,
    num_mixtures=2,
    num_start_latents=4,
    encoder_channels=[4, 8, 8, 8],
    decoder_channels=[8, 8, 4],
)


def make_tiny_model(seed: int = 0, **overrides) -> WorldModel:
    """A freshly initialised tiny world model whose dream does not end at once."""
    torch.manual_seed(seed)
    model = WorldModel(WorldModelConfig(**{**TINY_CONFIG, **overrides}))
    with torch.no_grad():
        # Termination logit: sigmoid(-10) ~ 5e-5, so dream episodes run on.
        model.rnn.head.bias[-1] = -10.0
        # A spread-out start bank, so different seeds start from different latents.
        model.start_mu.copy_(torch.randn_like(model.start_mu))
        model.start_logvar.fill_(-2.0)
    return model.eval()


@pytest.fixture
def tiny_config() -> WorldModelConfig:
    return WorldModelConfig(**TINY_CONFIG)


@pytest.fixture
def tiny_model() -> WorldModel:
    return make_tiny_model()


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_model):
    path = tmp_path / "tiny-wm"
    tiny_model.save_pretrained(path)
    return path
