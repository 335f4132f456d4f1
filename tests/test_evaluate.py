"""`dreamgym evaluate`: real scores over seeded episodes, parallel workers, the dream gap, agent specs."""

from __future__ import annotations

import importlib.util
import json

import gymnasium as gym
import numpy as np
import pytest

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents import controller as controller_mod
from dreamgym.agents import specs
from dreamgym.agents.controller import LinearController
from dreamgym.agents.evaluate import AgentSpec, RealEpisodeConfig, evaluate, play_real_episodes, run_episode
from dreamgym.cli import main

OBS_DIM = 8 + 16
STEPS = 20
KEYS = {"agent", "model", "revision", "env_id", "episodes", "seed", "seeds", "returns", "mean", "std", "lengths",
        "dreamgym_version", "wall_seconds"}


@pytest.fixture
def controller_dir(tmp_path, tiny_model_dir):
    """A controller that records the tiny world model as the one it was trained in."""
    rng = np.random.default_rng(0)
    record = {"model": str(tiny_model_dir), "revision": None, "source": "path"}
    controller = LinearController.from_flat(rng.normal(0, 0.3, 3 * OBS_DIM + 3), OBS_DIM, world_model=record)
    return controller.save(tmp_path / "ctrl")


def test_writes_results_json(controller_dir, tiny_model_dir, tmp_path):
    out = tmp_path / "results.json"
    result = evaluate(str(controller_dir), episodes=3, seed=5, workers=1, max_steps=STEPS, out=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    assert KEYS <= set(saved) and "dream" not in saved and "gap" not in saved
    assert saved["env_id"] == "dreamgym/RealCarRacing-v0"
    assert saved["seeds"] == [5, 6, 7] and saved["episodes"] == 3 and saved["seed"] == 5
    assert len(saved["returns"]) == 3 and saved["lengths"] == [STEPS] * 3
    assert saved["mean"] == pytest.approx(np.mean(saved["returns"]))
    assert saved["std"] == pytest.approx(np.std(saved["returns"]))
    # The world model is the one controller.json records.
    assert saved["model"] == str(tiny_model_dir)


def test_episode_i_uses_seed_plus_i(controller_dir, tiny_model_dir):
    result = evaluate(str(controller_dir), episodes=2, seed=3, workers=1, max_steps=STEPS, progress=False)
    controller = LinearController.load(controller_dir)
    env = gym.make("dreamgym/RealCarRacing-v0", model=str(tiny_model_dir), max_episode_steps=STEPS)
    total, _ = run_episode(env, controller, 4)
    assert result["returns"][1] == total


def test_two_workers_give_the_same_returns_as_one(controller_dir):
    one = evaluate(str(controller_dir), episodes=3, seed=0, workers=1, max_steps=STEPS, progress=False)
    two = evaluate(str(controller_dir), episodes=3, seed=0, workers=2, max_steps=STEPS, progress=False)
    assert one["returns"] == two["returns"] and one["lengths"] == two["lengths"]
    assert len(set(one["returns"])) > 1  # different seeds, different tracks


def test_dream_adds_the_dream_block_and_gap(controller_dir, tiny_model_dir):
    result = evaluate(
        str(controller_dir), episodes=2, seed=1, workers=1, max_steps=STEPS, dream=True, temperature=1.2,
        progress=False,
    )
    dream = result["dream"]
    assert len(dream["returns"]) == 2 and dream["mean"] == pytest.approx(np.mean(dream["returns"]))
    assert result["gap"] == pytest.approx(dream["mean"] - result["mean"])
    assert result["temperature"] == 1.2
    assert dream["lengths"] == [STEPS, STEPS]
    # The dream episode of seed s is DreamCarRacing-v0 reset with seed s (run batched, so up to rounding).
    env = gym.make("dreamgym/DreamCarRacing-v0", model=str(tiny_model_dir), temperature=1.2, max_episode_steps=STEPS)
    total, _ = run_episode(env, LinearController.load(controller_dir), 2)
    assert dream["returns"][1] == pytest.approx(total, rel=1e-4, abs=1e-4)


def test_model_argument_overrides_the_recorded_one(controller_dir, tiny_model_dir, tmp_path):
    record_path = controller_dir / "controller.json"
    config = json.loads(record_path.read_text())
    config["world_model"] = {"model": str(tmp_path / "gone"), "revision": None, "source": "path"}
    record_path.write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="gone"):
        evaluate(str(controller_dir), episodes=1, workers=1, max_steps=STEPS, progress=False)
    result = evaluate(str(controller_dir), episodes=1, workers=1, max_steps=STEPS, model=str(tiny_model_dir),
                      progress=False)
    assert result["model"] == str(tiny_model_dir)


@pytest.mark.skipif(importlib.util.find_spec("dreamgym.agents.sb3") is None, reason="SB3 adapter not installed")
def test_sb3_agent(tiny_model_dir, tmp_path):
    from stable_baselines3 import PPO

    env = gym.make("dreamgym/DreamCarRacing-v0", model=str(tiny_model_dir), max_episode_steps=STEPS)
    agent = PPO("MlpPolicy", env, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]}, device="cpu", seed=0)
    agent.save(tmp_path / "ppo.zip")
    result = evaluate(f"sb3:{tmp_path / 'ppo.zip'}", episodes=2, workers=1, max_steps=STEPS, model=str(tiny_model_dir),
                      dream=True, progress=False)
    assert result["agent_kind"] == "sb3" and len(result["returns"]) == 2 and len(result["dream"]["returns"]) == 2
    # SB3's own convention: the .zip suffix may be left out.
    again = evaluate(f"sb3:{tmp_path / 'ppo'}", episodes=2, workers=1, max_steps=STEPS, model=str(tiny_model_dir),
                     progress=False)
    assert again["returns"] == result["returns"]


def test_bad_specs_give_clear_errors(tmp_path, controller_dir, monkeypatch):
    kwargs = dict(episodes=1, workers=1, max_steps=STEPS, progress=False)
    with pytest.raises(ValueError, match="needs a path"):
        evaluate("sb3:", **kwargs)
    with pytest.raises(FileNotFoundError, match="no SB3 agent"):
        evaluate(f"sb3:{tmp_path / 'missing.zip'}", **kwargs)
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate(str(tmp_path / "nothing"), **kwargs)
    (tmp_path / "agent.zip").write_bytes(b"")
    with pytest.raises(ValueError, match="sb3:"):
        evaluate(str(tmp_path / "agent.zip"), **kwargs)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="controller.json"):
        evaluate(str(tmp_path / "empty"), **kwargs)
    with pytest.raises(ValueError, match="non-empty"):
        evaluate("", **kwargs)
    # An install that ships neither v1's reference policy nor v0's reference controller.
    monkeypatch.setattr(specs, "REFERENCE_AGENT_DIR", tmp_path / "no-reference-agent")
    monkeypatch.setattr(controller_mod, "REFERENCE_DIR", tmp_path / "no-reference")
    with pytest.raises(FileNotFoundError, match="no reference agent is installed"):
        evaluate("reference", **kwargs)
    with pytest.raises(ValueError, match="episodes"):
        evaluate(str(controller_dir), episodes=0)


def test_controller_for_another_world_model_is_refused(tmp_path, tiny_model_dir):
    record = {"model": str(tiny_model_dir), "revision": None, "source": "path"}
    LinearController(obs_dim=288, world_model=record).save(tmp_path / "big")
    with pytest.raises(ValueError, match="size 288.*size 24"):
        evaluate(str(tmp_path / "big"), episodes=1, workers=1, max_steps=STEPS, progress=False)


def test_in_memory_controller_needs_a_model(tmp_path):
    record = {"model": None, "revision": None, "source": "in-memory"}
    LinearController(obs_dim=OBS_DIM, world_model=record).save(tmp_path / "c")
    with pytest.raises(ValueError, match="--model"):
        evaluate(str(tmp_path / "c"), episodes=1, workers=1, max_steps=STEPS, progress=False)


def test_a_failing_worker_surfaces_its_error(tiny_model_dir, tmp_path):
    # A spec the parent would have refused: the worker's own error must come back, not a hang.
    gone = AgentSpec("controller", str(tmp_path / "gone"), "gone")
    config = RealEpisodeConfig(gone, str(tiny_model_dir), None, STEPS)
    with pytest.raises(FileNotFoundError, match="no controller folder"):
        list(play_real_episodes(config, [0, 1], 1))


def test_cli_evaluate(controller_dir, tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    rc = main(["evaluate", str(controller_dir), "--episodes", "2", "--workers", "1", "--max-steps", str(STEPS),
               "--dream", "--out", str(out)])
    assert rc == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["seeds"] == [0, 1] and "gap" in saved
    printed = capsys.readouterr().out
    assert "real:" in printed and "gap" in printed
    assert main(["evaluate", "sb3:"]) == 2
    assert "needs a path" in capsys.readouterr().err
