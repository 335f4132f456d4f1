"""The world model shipped inside the package: offline, env-checked, with a card of its measured metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import dreamgym  # noqa: F401
from dreamgym.hub import DEFAULT_MODEL_DIR, default_model_path

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(default_model_path() is None, reason="no default world model in this checkout")


@pytest.mark.slow
def test_default_loads_offline_with_no_model_argument():
    code = (
        "import gymnasium as gym\n"
        "env = gym.make('dreamgym:dreamgym/DreamCarRacing-v0')\n"
        "obs, _ = env.reset(seed=0)\n"
        "obs, r, term, trunc, _ = env.step(env.action_space.sample())\n"
        "print('OK', obs.shape)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "OK (288,)" in result.stdout


@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_default_passes_check_env(obs_mode):
    env = gym.make("dreamgym/DreamCarRacing-v0", obs_mode=obs_mode)
    check_env(env.unwrapped)


def test_default_is_small_and_safetensors_only():
    files = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()}
    assert sum(files.values()) < 20 * 2**20
    assert not [name for name in files if name.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]


def test_card_reports_the_shipped_metrics():
    metrics = json.loads((DEFAULT_MODEL_DIR / "metrics.json").read_text())
    card = (REPO / "model_cards" / "DreamCarRacing-v0.md").read_text()
    assert card == (DEFAULT_MODEL_DIR / "README.md").read_text()
    for key in ("vae_recon_mse", "rnn_nll", "open_loop_latent_mse_k50"):
        assert f"{metrics[key]:.4g}" in card
    assert "dreamgym build --config configs/carracing.yaml" in card
    assert "Hardware" in card


def test_reference_controller_loads_in_one_line_and_drives_the_default_dream():
    from dreamgym.agents.controller import load_controller, reference_controller_installed

    if not reference_controller_installed():
        pytest.skip("no reference controller in this checkout")
    controller = load_controller("reference")
    assert controller.num_params == 867
    assert controller.world_model["source"] == "default"
    env = gym.make("dreamgym/DreamCarRacing-v0")
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        action = controller.act(obs)
        assert env.action_space.contains(action)
        obs, *_ = env.step(action)
