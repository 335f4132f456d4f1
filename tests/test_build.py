"""`dreamgym build` end to end at toy scale, the packaging of a built model, and bad configs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    ("change", "message"),
    [
        ({"colect": {}}, "unknown sections"),
        ({"vae": {"epochs": 1, "learning_rate": 1}}, "unknown keys"),
        ({"model": {"z_dim": -3}}, "z_dim"),
        ({"model": {"format_version": 99}}, "format_version"),
        ({"collect": {"episodes": 1}}, "needs 'out'"),
        ({"out": None}, "needs 'out'"),
        ({"controller": {"generation": 2}}, r"section 'controller' has unknown keys \['generation'\]"),
        ({"controller": {"model": "x"}}, r"section 'controller' has unknown keys \['model'\]"),
        ({"iterations": [{"rnn": {"epochs": 1}}]}, "has 'iterations' but no 'controller' section"),
        ({"controller": {}, "iterations": {"rnn": {}}}, "'iterations' must be a list of rounds"),
        ({"controller": {}, "iterations": [{"collect": {"seed": 100}}]},
         r"every collection of iterations\[0\].collect needs 'episodes'"),
        ({"controller": {}, "iterations": [{"collect": [{"episodes": 2}, {"seed": 9}]}]},
         r"every collection of iterations\[0\].collect needs 'episodes'"),
        ({"controller": {}, "iterations": [{"collect": "random"}]},
         r"iterations\[0\].collect must be a mapping or a list"),
        ({"controller": {}, "iterations": [{"rnn": {}}, {"vae": {"epochs": 1}}]},
         r"iterations\[1\] must be a mapping with some of \['collect', 'rnn', 'controller'\]"),
        ({"controller": {}, "iterations": [{"rnn": {"epoch": 1}}]},
         r"iterations\[0\].rnn' has unknown keys \['epoch'\]"),
        ({"controller": {}, "iterations": [{"collect": {"episodes": 1, "out": "elsewhere"}}]},
         r"iterations\[0\].collect' has unknown keys \['out'\]"),
        ({"controller": {}, "iterations": [{"controller": {"out": "x"}}]},
         r"iterations\[0\].controller' has unknown keys \['out'\]"),
        # A round that inherits round 0's seeds would collect nothing new.
        ({"controller": {}, "iterations": [{"collect": {"episodes": 3}}]},
         r"iterations\[0\].collect\[0\] collects seeds 0-2, which overlap collect's 0-1; .* 'seed' of 2 or more"),
        ({"controller": {}, "iterations": [{"collect": [{"episodes": 2, "seed": 10}, {"episodes": 2, "seed": 11}]}]},
         r"iterations\[0\].collect\[1\] collects seeds 11-12, which overlap iterations\[0\].collect\[0\]'s 10-11"),
        ({"controller": {},
          "iterations": [{"collect": {"episodes": 2, "seed": 5}}, {"collect": {"episodes": 1, "seed": 6}}]},
         r"iterations\[1\].collect\[0\] collects seeds 6-6, which overlap iterations\[0\].collect\[0\]'s 5-6"),
        ({"collect": {"episodes": 2, "out": "d", "policy": "controller:{controller}"}},
         "round 0, which has no previous controller"),
    ],
)
def test_bad_build_config_is_refused_clearly(tmp_path, change, message):
    path = write_config(tmp_path, **change)
    with pytest.raises(ConfigError, match=message):
        load_build_config(path)


def test_collect_crop_dashboard_reaches_v_and_must_agree_with_model(tmp_path):
    collect = {**TOY["collect"], "out": str(tmp_path / "data"), "crop_dashboard": False}
    config = load_build_config(write_config(tmp_path, collect=collect))
    assert config["collect"]["crop_dashboard"] is False
    assert config["model"].crop_dashboard is False  # V sees the frames as they are collected
    with pytest.raises(ConfigError, match="collect.crop_dashboard is False but model.crop_dashboard is True"):
        load_build_config(write_config(tmp_path, collect=collect, model={**TOY["model"], "crop_dashboard": True}))


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


@pytest.mark.slow
def test_cli_reports_a_bad_config_in_one_line(tmp_path):
    path = write_config(tmp_path, colect={})
    result = subprocess.run(
        [sys.executable, "-m", "dreamgym.cli", "build", "--config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown sections" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------ iterative build
CONTROLLER = {"generations": 2, "popsize": 4, "rollouts": 2, "max_steps": 20, "eval_every": 1, "eval_rollouts": 2}
ROUND = {"collect": [{"policy": "controller:{controller}?noise=0.3", "episodes": 2, "seed": 100}], "rnn": {"epochs": 1}}


def files_state(folder: Path) -> dict[Path, tuple[int, bytes]]:
    """Every file under ``folder`` (bar build.json): mtime and content."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "build.json"}


@pytest.fixture(scope="module")
def iterated(tmp_path_factory) -> tuple[Path, Path]:
    """A toy build with a controller and one round of the paper's iterative training: (tmp, final folder)."""
    tmp_path = tmp_path_factory.mktemp("iterated")
    final = build(write_config(tmp_path, controller=CONTROLLER, iterations=[ROUND]), progress=False)
    return tmp_path, final


@pytest.mark.slow
def test_iterative_build_retrains_m_and_c_on_all_rounds(iterated):
    from dreamgym.agents.cmaes import select_controller
    from dreamgym.agents.controller import LinearController
    from dreamgym.data.storage import EpisodeStore

    tmp_path, final = iterated
    out = tmp_path / "wm"
    assert final == out / "round-1"
    assert EpisodeStore(tmp_path / "data").seeds() == {0, 1, 100, 101}
    for folder, episodes in ((out, 2), (final, 4)):
        model = WorldModel.from_pretrained(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        # Round 0 trained on its own 2 episodes only; round 1 on round 0's and its own.
        assert metrics["train_episodes"] + metrics["heldout_episodes"] == episodes
        assert model.config.training["rnn"]["train_episodes"] == metrics["train_episodes"]
        controller = LinearController.load(select_controller(folder / "controller"))
        assert controller.world_model == {"model": str(folder.resolve()), "revision": None, "source": "path"}
        assert controller.obs_dim == TINY_CONFIG["z_dim"] + TINY_CONFIG["rnn_hidden"]
        assert len(json.loads((folder / "controller" / "logs" / "cmaes.json").read_text())) == 2
        assert (folder / "curves_controller.png").stat().st_size > 0
    env = gym.make("dreamgym/DreamCarRacing-v0", model=final)
    check_env(env.unwrapped)
    # Round 1 kept round 0's V and retrained M from scratch.
    v0, v1 = WorldModel.from_pretrained(out), WorldModel.from_pretrained(final)
    for (name, a), b in zip(v0.vae.state_dict().items(), v1.vae.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    pairs = zip(v0.rnn.state_dict().values(), v1.rnn.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert (final / "logs" / "vae.json").read_bytes() == (out / "logs" / "vae.json").read_bytes()
    # Round 1's episodes were driven by round 0's selected controller: not the random policy's actions.
    store = EpisodeStore(tmp_path / "data")
    assert all(store.load(s).length == TOY["collect"]["max_steps"] for s in (100, 101))
    record = json.loads((out / "build.json").read_text())
    assert (final / "build.json").read_text() == (out / "build.json").read_text()
    assert set(record["runs"][-1]["stage_seconds"]) == {
        "collect", "train-vae", "train-rnn", "inspect", "train-controller", "inspect-controller",
        "round-1/collect-0", "round-1/train-rnn", "round-1/inspect", "round-1/train-controller",
        "round-1/inspect-controller",
    }
    assert record["settings"]["controller"] == CONTROLLER
    assert record["settings"]["iterations"][0]["collect"] == ROUND["collect"]


@pytest.mark.slow
def test_iterative_rebuild_changes_nothing(iterated):
    tmp_path, final = iterated
    out = tmp_path / "wm"
    before = {**files_state(out), **files_state(tmp_path / "data")}
    assert build(tmp_path / "build.yaml", progress=False) == final
    after = {**files_state(out), **files_state(tmp_path / "data")}
    # Checkpoints and episodes untouched: nothing was retrained or recollected.
    untouched = [p for p in before if "checkpoints" in p.parts or p.suffix == ".npz"]
    assert len(untouched) > 10 and [p for p in untouched if after[p] != before[p]] == []
    logs = [p for p in before if "logs" in p.parts]
    assert len(logs) == 6 and [p for p in logs if after[p][1] != before[p][1]] == []
    # Round 0 is rewritten from the same episodes only, not from the store's round-1 episodes too.
    for name in ("model.safetensors", "metrics.json", "config.json", "reconstruction.png", "open_loop.png"):
        assert after[out / name][1] == before[out / name][1], name
        assert after[final / name][1] == before[final / name][1], name
    assert set(after) == set(before)
    assert len(json.loads((out / "build.json").read_text())["runs"]) == 2
    assert (final / "build.json").read_text() == (out / "build.json").read_text()


SWEEP_ROWS = [
    {"temperature": 1.0, "controller": "runs/sweep/tau-1.0/mean", "dream_mean": 812.4, "dream_std": 40.2,
     "real_mean": 655.1, "real_std": 170.9, "episodes": 100, "seeds": [5000, 5099],
     "train_command": "dreamgym train-controller --model M --out runs/sweep/tau-1.0 --temperature 1.0",
     "evaluate_command":
         "dreamgym evaluate runs/sweep/tau-1.0/mean --episodes 100 --seed 5000 --dream --temperature 1.0"},
    {"temperature": 1.3, "controller": "runs/sweep/tau-1.3", "dream_mean": 543.0, "dream_std": 12.0,
     "real_mean": 701.6, "real_std": 99.4, "episodes": 100, "seeds": [5000, 5099],
     "train_command": "dreamgym train-controller --model M --out runs/sweep/tau-1.3 --temperature 1.3",
     "evaluate_command": "dreamgym evaluate runs/sweep/tau-1.3 --episodes 100 --seed 5000 --dream --temperature 1.3"},
]


def write_records(tmp_path: Path) -> tuple[Path, Path]:
    results = tmp_path / "results.json"
    results.write_text(json.dumps({
        "agent": "runs/carracing/round-1/controller/mean", "mean": 687.25, "std": 151.5, "episodes": 100,
        "seed": 5000, "env_id": "dreamgym/RealCarRacing-v0", "dream": {"mean": 799.4, "std": 33.3},
    }))
    sweep = tmp_path / "temperature_sweep.json"
    sweep.write_text(json.dumps({"model": "runs/carracing/round-1", "rows": SWEEP_ROWS}))
    return results, sweep


@pytest.mark.slow
def test_package_ships_the_controller_its_log_scores_and_sweep(iterated, tmp_path):
    from dreamgym.agents.cmaes import select_controller
    from dreamgym.agents.controller import LinearController
    from dreamgym.agents.evaluate import evaluate

    built_dir, final = iterated
    results, sweep = write_records(tmp_path)
    dest = tmp_path / "shipped"
    package_world_model(final, dest, model_ref="org/toy", data=built_dir / "data",
                        controller=final / "controller", results=results, sweep=sweep)
    shipped = LinearController.load(dest / "controller")
    chosen = LinearController.load(select_controller(final / "controller"))
    np.testing.assert_array_equal(shipped.flat(), chosen.flat())
    # It is recorded as trained in the packaged model, and where it was really trained is kept.
    assert shipped.world_model == {"model": str(dest.resolve()), "revision": None, "source": "path"}
    assert shipped.training["trained_in"] == chosen.world_model
    assert shipped.training["selected"] == chosen.training["selected"]
    assert json.loads((dest / "controller" / "training_log.json").read_text()) == json.loads(
        (final / "controller" / "logs" / "cmaes.json").read_text())
    assert (dest / "curves_controller.png").stat().st_size > 0
    assert json.loads((dest / "results.json").read_text()) == json.loads(results.read_text())
    assert json.loads((dest / "temperature_sweep.json").read_text())["rows"] == SWEEP_ROWS
    assert (dest / "build.json").read_text() == (final / "build.json").read_text()
    # The shipped controller drives the real env through the shipped (fp16) world model.
    scored = evaluate(str(dest / "controller"), episodes=1, max_steps=20, workers=1, progress=False)
    assert scored["model"] == str(dest.resolve()) and scored["lengths"] == [20]
    assert np.isfinite(scored["mean"])

    card = (dest / "README.md").read_text()
    params = 3 * (TINY_CONFIG["z_dim"] + TINY_CONFIG["rnn_hidden"]) + 3
    assert f"The reference controller in `controller/` (the paper's linear controller, {params} parameters," in card
    assert "**687.2 +/- 151.5** over 100 episodes" in card and "seeds 5000-5099" in card
    assert "799.4 +/- 33.3 in this dream" in card
    assert "dreamgym evaluate CONTROLLER_DIR --episodes 100 --seed 5000 --dream" in card
    assert "## Dream vs real over temperature" in card and "over the same 100 seeds (5000-5099)" in card
    assert "| 1.0 | 812 +/- 40 | 655 +/- 171 | `" + SWEEP_ROWS[0]["train_command"] in card
    assert "| 1.3 | 543 +/- 12 | 702 +/- 99 | `" in card
    for row in SWEEP_ROWS:
        assert f"`{row['train_command']}` then `{row['evaluate_command']}`" in card
    assert "![the reference controller's CMA-ES run" in card
    assert "round 1, 2 episodes with `controller:{controller}?noise=0.3`" in card
    assert "value: 687.25 +/- 151.50" in card  # the model-index


@pytest.mark.slow
def test_package_cli_into_the_default_model_folder_records_the_default(iterated, tmp_path, monkeypatch):
    """Packaged where dreamgym ships its default model, the controller names the default world model."""
    from dreamgym import hub
    from dreamgym.agents.controller import LinearController
    from dreamgym.cli import main

    _, final = iterated
    dest = tmp_path / "DreamCarRacing-v0"
    monkeypatch.setattr(hub, "DEFAULT_MODEL_DIR", dest)
    results, _ = write_records(tmp_path)
    assert main(["package", str(final), "--out", str(dest), "--ref", "default",
                 "--controller", str(final / "controller"), "--results", str(results)]) == 0
    shipped = LinearController.load(dest / "controller")
    assert shipped.world_model == {"model": None, "revision": None, "source": "default"}
    card = (dest / "README.md").read_text()
    assert "dreamgym evaluate reference --episodes 100 --seed 5000 --dream" in card
    assert "Dream vs real over temperature" not in card and not (dest / "temperature_sweep.json").exists()


@pytest.mark.slow
def test_temperature_sweep_example(tiny_model_dir, tmp_path, monkeypatch):
    """examples/temperature_sweep.py at toy scale: one row per tau, a re-run skips what is scored."""
    import runpy

    from dreamgym.agents.cmaes import select_controller
    from dreamgym.agents.controller import LinearController

    script = Path(__file__).resolve().parents[1] / "examples" / "temperature_sweep.py"
    out, table = tmp_path / "sweep", tmp_path / "results" / "temperature_sweep.json"

    def options(generations: int, temperatures: str = "1.0,1.3") -> list[str]:
        return [
            "--model", str(tiny_model_dir), "--out", str(out), "--results", str(table),
            "--temperatures", temperatures, "--generations", str(generations), "--popsize", "4", "--rollouts", "2",
            "--eval-every", "1", "--episodes", "1", "--eval-seed", "7", "--workers", "1", "--max-steps", "20",
        ]

    def sweep_here(generations: int, temperatures: str = "1.0,1.3") -> None:
        # In this process (the first run below is a real one): much faster than a new interpreter.
        monkeypatch.setattr(sys, "argv", [str(script), *options(generations, temperatures)])
        runpy.run_path(str(script), run_name="__main__")

    result = subprocess.run([sys.executable, str(script), *options(1)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout
    rows = json.loads(table.read_text())["rows"]
    assert [row["temperature"] for row in rows] == [1.0, 1.3]
    for row in rows:
        tau = row["temperature"]
        folder = out / f"tau-{tau}"
        assert row["controller"] == str(select_controller(folder))
        controller = LinearController.load(row["controller"])
        assert controller.temperature == tau and controller.training["options"]["max_steps"] == 20
        scored = json.loads((folder / "results.json").read_text())
        assert scored["lengths"] == [20] and scored["seeds"] == [7] and scored["temperature"] == tau
        assert (row["real_mean"], row["dream_mean"]) == (scored["mean"], scored["dream"]["mean"])
        assert row["episodes"] == 1 and row["seeds"] == [7, 7]
        assert np.isfinite([row["dream_mean"], row["dream_std"], row["real_mean"], row["real_std"]]).all()
        assert f"--out {folder} --temperature {tau} --generations 1" in row["train_command"]
        assert "--max-steps 20" in row["train_command"]
        assert row["evaluate_command"].startswith(f"dreamgym evaluate {row['controller']} --episodes 1")
        expected = f"--seed 7 --dream --temperature {tau} --max-steps 20 --out {folder / 'results.json'}"
        assert expected in row["evaluate_command"]
        assert f"| {tau} | {row['dream_mean']:.0f} ± {row['dream_std']:.0f} |" in printed

    def scores():
        return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.glob("*/results.json"))}

    before = scores()
    sweep_here(1)  # all trained and scored: nothing is evaluated again
    assert scores() == before and json.loads(table.read_text())["rows"] == rows
    sweep_here(2, "1.0")  # trained further: the same folder holds a new controller, which is scored again
    after = scores()
    path = out / "tau-1.0" / "results.json"
    assert json.loads(after[path][1])["controller_sha256"] != json.loads(before[path][1])["controller_sha256"]
    assert after[out / "tau-1.3" / "results.json"] == before[out / "tau-1.3" / "results.json"]
