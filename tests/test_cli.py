"""The `dreamgym` command line: every subcommand run once through `main`, the demo, and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import imageio.v3 as iio
import numpy as np
import pytest
import yaml

from dreamgym import WorldModelConfig
from dreamgym.agents.controller import LinearController
from dreamgym.cli import COMMANDS, arg, dataclass_args, main
from dreamgym.training import train_rnn, train_vae

from conftest import TINY_CONFIG
from test_training import RNN_ARGS, VAE_ARGS, make_store

OBS_DIM = TINY_CONFIG["z_dim"] + TINY_CONFIG["rnn_hidden"]


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> SimpleNamespace:
    """What the commands work on: an episode store, a trained tiny world model and a controller for it."""
    root = tmp_path_factory.mktemp("cli")
    store = make_store(root / "store", n=4)
    model = root / "wm"
    train_vae(store, model, WorldModelConfig(**TINY_CONFIG), epochs=1, **VAE_ARGS)
    train_rnn(store, model, model, epochs=1, **RNN_ARGS)
    controller = root / "controller"
    weights = np.random.default_rng(0).normal(scale=0.1, size=3 * OBS_DIM + 3)
    record = {"model": str(model), "revision": None, "source": "path"}
    LinearController.from_flat(weights, OBS_DIM, world_model=record).save(controller)
    return SimpleNamespace(store=str(store.root), model=str(model), controller=str(controller))


def _sb3_agent(made: SimpleNamespace, tmp: Path) -> str:
    """A PPO agent trained for a few steps in the tiny model's dream, saved as a zip."""
    from stable_baselines3 import PPO

    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=2, model=made.model, max_episode_steps=10, seed=0)
    PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu").learn(16).save(tmp / "ppo.zip")
    return f"sb3:{tmp / 'ppo.zip'}"


def _build_config(made: SimpleNamespace, tmp: Path) -> str:
    config = {
        "out": str(tmp / "built"),
        "collect": {"episodes": 2, "workers": 1, "max_steps": 20, "seed": 0, "out": str(tmp / "data")},
        "model": TINY_CONFIG,
        "vae": {"epochs": 1, "batch_size": 8},
        "rnn": {"epochs": 1, "batch_size": 2, "seq_len": 8},
    }
    (tmp / "build.yaml").write_text(yaml.safe_dump(config))
    return str(tmp / "build.yaml")


def _copy(folder: str, tmp: Path) -> str:
    """A copy of ``folder``, for a command that writes into the folder it is given."""
    return str(shutil.copytree(folder, tmp / "copy"))


@dataclass(frozen=True)
class Case:
    """One run of a subcommand: its arguments, a line it prints, and a file it writes (under the test's tmp_path)."""

    argv: Callable[[SimpleNamespace, Path], list[str]]
    printed: str
    writes: str | None = None


CASES = {
    "collect": Case(
        lambda m, t: ["collect", "--episodes", "1", "--max-steps", "10", "--workers", "1", "--out", str(t / "new"),
                      "--policy", f"replay:{m.store}", "--seed", "100", "--keep-dashboard"],
        "1 episodes in", "new/manifest.json",
    ),
    "verify-data": Case(lambda m, t: ["verify-data", m.store], "4 intact episodes"),
    "train-vae": Case(
        lambda m, t: ["train-vae", "--data", m.store, "--out", str(t / "v"), "--epochs", "1", "--max-frames", "16",
                      "--batch-size", "8", "--device", "cpu"],
        "V epoch 1/1: loss", "v/model.safetensors",
    ),
    "train-rnn": Case(
        lambda m, t: ["train-rnn", "--data", m.store, "--vae", m.model, "--out", str(t / "m"), "--epochs", "1",
                      "--seq-len", "10", "--batch-size", "4", "--device", "cpu"],
        "M epoch 1/1: loss", "m/metrics.json",
    ),
    "start-bank": Case(
        lambda m, t: ["start-bank", m.model, "--data", m.store, "--out", str(t / "banked"), "--size", "4"],
        "4 trajectory starts added", "banked/model.safetensors",
    ),
    "ensemble": Case(
        lambda m, t: ["ensemble", m.model, m.model, "--out", str(t / "ens")],
        "an ensemble of 2 Ms from 2 world models", "ens/model.safetensors",
    ),
    "export-policy": Case(
        lambda m, t: ["export-policy", _sb3_agent(m, t), "--model", m.model, "--out", str(t / "policy")],
        "exported PPO policy", "policy/policy.json",
    ),
    "build": Case(lambda m, t: ["build", "--config", _build_config(m, t)], "world model ready in", "built/build.json"),
    "metrics": Case(lambda m, t: ["metrics", m.model, "--data", m.store], '"vae_recon_mse"'),
    "package": Case(
        lambda m, t: ["package", m.model, "--out", str(t / "pkg"), "--ref", "org/tiny", "--fp32"],
        "packaged", "pkg/README.md",
    ),
    "card": Case(lambda m, t: ["card", _copy(m.model, t), "--ref", "org/tiny"], "wrote", "copy/README.md"),
    "push": Case(
        lambda m, t: ["push", m.model, "--repo-id", "org/tiny", "--dry-run", str(t / "staged")],
        "dry run: nothing uploaded", "staged/README.md",
    ),
    "train-controller": Case(
        lambda m, t: ["train-controller", "--model", m.model, "--out", str(t / "c"), "--generations", "1",
                      "--popsize", "4", "--rollouts", "1", "--max-steps", "5", "--eval-every", "0", "--device", "cpu"],
        "best controller", "c/controller.json",
    ),
    "evaluate": Case(
        lambda m, t: ["evaluate", m.controller, "--episodes", "1", "--workers", "1", "--max-steps", "5",
                      "--out", str(t / "results.json")],
        "real:", "results.json",
    ),
    "diagnose": Case(
        lambda m, t: ["diagnose", m.controller, "--episodes", "1", "--max-steps", "10", "--horizons", "5",
                      "--branch-every", "5", "--out", str(t / "d")],
        "where the dream lies", "d/diagnose.json",
    ),
    "play": Case(
        lambda m, t: ["play", "--model", m.model, "--max-steps", "3", "--fps", "0", "--seed", "0"], "played 3 steps"
    ),
    "video": Case(
        lambda m, t: ["video", "--agent", m.controller, "--model", m.model, "--steps", "3", "--out", str(t / "v.gif")],
        "wrote", "v.gif",
    ),
    "inspect": Case(
        lambda m, t: ["inspect", m.model, "--data", m.store, "--out", str(t / "pictures")],
        "open_loop.png", "pictures/reconstruction.png",
    ),
    "demo": Case(
        lambda m, t: ["demo", "--model", m.model, "--gif-steps", "2", "--max-steps", "3", "--no-real",
                      "--out", str(t / "demo")],
        "dream return", "demo/demo.json",
    ),
}
SLOW = {"build"}  # collects, trains V and M, and draws their pictures


def test_the_cases_cover_every_subcommand():
    assert sorted(CASES) == sorted(command.name for command in COMMANDS)


@pytest.mark.parametrize("command", [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES])
def test_every_subcommand_runs_through_main(command, made, tmp_path, capsys):
    case = CASES[command]
    assert main(case.argv(made, tmp_path)) == 0
    assert case.printed in capsys.readouterr().out
    if case.writes is not None:
        assert (tmp_path / case.writes).is_file()


def test_demo_shows_the_dream_return_next_to_the_real_one(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir), "--gif-steps", "6", "--max-steps", "15",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert summary["dream"]["steps"] == 15  # the tiny model never terminates, so the episode hits the cap
    assert summary["real"]["steps"] == 15 and isinstance(summary["real"]["return"], float)
    assert summary["driver"] == "correlated random actions"
    frames = iio.imread(out / "dream.gif")
    assert frames.shape[0] == 7 and frames.shape[1:3] == (256, 256)
    printed = capsys.readouterr().out
    assert f"dream return {summary['dream']['return']:.1f}" in printed
    assert f"real return {summary['real']['return']:.1f}" in printed
    assert main(["demo", "--model", str(tiny_model_dir), "--gif-steps", "2", "--max-steps", "5", "--no-real",
                 "--out", str(out)]) == 0
    assert "real" not in json.loads((out / "demo.json").read_text())


@pytest.mark.slow
def test_missing_model_folder_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dreamgym.cli", "demo", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


@dataclass
class ExampleArgs:
    model: str | None = arg(None, "world model")
    steps: int = arg(200, "steps per env")
    render: bool = arg(False, "show it")
    runs: list[str] = arg([], "LABEL=FOLDER pairs")


def test_dataclass_args_reads_the_fields_that_arg_declares():
    """The examples' flags: types from the defaults, --flag/--no-flag for booleans, lists of strings."""
    args = dataclass_args(ExampleArgs, argv=["--steps", "5", "--render", "--runs", "a=1", "b=2"])
    assert args == ExampleArgs(model=None, steps=5, render=True, runs=["a=1", "b=2"])
    assert dataclass_args(ExampleArgs, argv=["--model", "m"]) == ExampleArgs(model="m")
    first, second = ExampleArgs(), ExampleArgs()
    first.runs.append("x")
    assert second.runs == []  # a list default is copied for each instance, never shared
