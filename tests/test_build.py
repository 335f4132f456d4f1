"""`dreamgym build` end to end at toy scale, the packaging of a built model, and bad configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import dreamgym  # noqa: F401
from dreamgym import ConfigError, WorldModel
from dreamgym.training.build import build, load_build_config, package_world_model
from conftest import TINY_CONFIG

TOY = {
    "collect": {"episodes": 2, "workers": 1, "max_steps": 20, "seed": 0},
    "model": TINY_CONFIG,
    "vae": {"epochs": 1, "batch_size": 8},
    "rnn": {"epochs": 1, "batch_size": 2, "seq_len": 8},
}


def write_config(tmp_path: Path, **overrides) -> Path:
    config = {
        "out": str(tmp_path / "wm"),
        **TOY,
        "collect": {**TOY["collect"], "out": str(tmp_path / "data")},
        **overrides,
    }
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("build")
    build(write_config(tmp_path), progress=False)
    return tmp_path


def test_build_produces_a_loadable_world_model_with_records(built):
    out = built / "wm"
    model = WorldModel.from_pretrained(out)
    assert model.config.z_dim == TINY_CONFIG["z_dim"]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("vae_recon_mse", "rnn_nll", "reward_mae", "open_loop_latent_mse_k1"):
        assert key in metrics
    record = json.loads((out / "build.json").read_text())
    assert set(record["runs"][-1]["stage_seconds"]) == {"collect", "train-vae", "train-rnn", "inspect"}
    for image in ("reconstruction.png", "open_loop.png", "curves_vae.png", "curves_rnn.png"):
        assert (out / image).stat().st_size > 0
    env = gym.make("dreamgym/DreamCarRacing-v0", model=out)
    check_env(env.unwrapped)


def test_rebuild_skips_finished_stages(built):
    out = built / "wm"
    weights = out / "model.safetensors"
    before = {p: p.stat().st_mtime_ns for p in (built / "data").glob("*.npz")}
    checkpoint_mtimes = {p: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*.safetensors")}
    build(built / "build.yaml", progress=False)
    assert {p: p.stat().st_mtime_ns for p in (built / "data").glob("*.npz")} == before
    assert {p: p.stat().st_mtime_ns for p in (out / "checkpoints").glob("*.safetensors")} == checkpoint_mtimes
    assert weights.is_file()
    assert len(json.loads((out / "build.json").read_text())["runs"]) == 2


def test_package_writes_fp16_weights_and_a_card_from_the_metrics(built, tmp_path):
    dest = tmp_path / "shipped"
    card_copy = tmp_path / "card.md"
    package_world_model(built / "wm", dest, model_ref="org/toy", data=built / "data", card_copies=(card_copy,))
    from safetensors import safe_open

    with safe_open(str(dest / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    shipped = WorldModel.from_pretrained(dest)
    assert next(shipped.parameters()).dtype.is_floating_point
    card = (dest / "README.md").read_text()
    assert card == card_copy.read_text()
    assert "library_name: dreamgym" in card and "world-model" in card
    metrics = json.loads((dest / "metrics.json").read_text())
    assert f"{metrics['vae_recon_mse']:.4g}" in card
    assert "dreamgym build --config" in card
    assert "![held-out frames" in card and (dest / "reconstruction.png").is_file()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colect": {}}, "unknown sections"),
        ({"vae": {"epochs": 1, "learning_rate": 1}}, "unknown keys"),
        ({"model": {"z_dim": -3}}, "z_dim"),
        ({"model": {"format_version": 99}}, "format_version"),
        ({"collect": {"episodes": 1}}, "needs 'out'"),
        ({"out": None}, "needs 'out'"),
    ],
)
def test_bad_build_config_is_refused_clearly(tmp_path, change, message):
    path = write_config(tmp_path, **change)
    with pytest.raises(ConfigError, match=message):
        load_build_config(path)


def test_unreadable_build_configs(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_build_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_build_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_build_config(bad)


def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    path = write_config(tmp_path, colect={})
    result = subprocess.run(
        [sys.executable, "-m", "dreamgym.cli", "build", "--config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown sections" in result.stderr and "Traceback" not in result.stderr
