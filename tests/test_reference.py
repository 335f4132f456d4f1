"""The embedded world models by name, and the shipped reference agent of any kind."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym import hub
from dreamgym.agents import specs
from dreamgym.agents.evaluate import evaluate
from dreamgym.agents.mlp_policy import MlpPolicyAgent
from dreamgym.agents.specs import load_agent, parse_agent_spec, resolve_agent_model
from dreamgym.demo import run_demo
from dreamgym.hub import embedded_model_path, load_world_model

from conftest import make_tiny_model

V1 = "dreamgym/DreamCarRacing-v1"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def installed_v1(tmp_path, monkeypatch):
    """A tiny world model installed as the embedded DreamCarRacing-v1, with a reference MLP agent trained in it."""
    assets = tmp_path / "assets"
    model = make_tiny_model(seed=3)
    model.save_pretrained(assets / "DreamCarRacing-v1")
    config = json.loads((assets / "DreamCarRacing-v1" / "config.json").read_text())
    config["training"] = {"vae": {"epochs": 0}, "rnn": {"epochs": 0}}
    (assets / "DreamCarRacing-v1" / "config.json").write_text(json.dumps(config))
    obs_dim = model.config.z_dim + model.config.rnn_hidden
    torch.manual_seed(0)
    agent = MlpPolicyAgent([obs_dim, 8, 3], "tanh", [-1.0, 0.0, 0.0], [1.0, 1.0, 1.0],
                           world_model={"model": V1, "revision": None})
    agent.save(assets / "DreamCarRacing-v1" / "reference")
    monkeypatch.setattr(hub, "ASSETS_DIR", assets)
    monkeypatch.setattr(specs, "REFERENCE_AGENT_DIR", assets / "DreamCarRacing-v1" / "reference")
    return model


def test_an_embedded_world_model_loads_by_its_env_id(installed_v1):
    loaded = load_world_model(V1)
    for name, tensor in installed_v1.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_a_missing_embedded_model_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "ASSETS_DIR", tmp_path)
    assert embedded_model_path(V1) is None
    with pytest.raises(FileNotFoundError, match="not installed"):
        load_world_model(V1)


def test_the_reference_is_the_shipped_policy_scored_in_the_model_it_names(installed_v1):
    spec = parse_agent_spec("reference")
    assert spec.kind == "mlp"
    _, loaded = load_agent(spec)
    assert resolve_agent_model(spec, loaded, None, None) == (V1, None)
    result = evaluate("reference", episodes=1, seed=7, workers=1, max_steps=4, dream=True, progress=False)
    assert result["model"] == V1
    assert len(result["returns"]) == 1 and "dream" in result


def test_controller_reference_names_the_v0_controller_even_with_a_shipped_policy(installed_v1):
    from dreamgym.agents.controller import REFERENCE_DIR, reference_controller_installed

    if not reference_controller_installed():
        pytest.skip("no reference controller in this checkout")
    assert parse_agent_spec("controller:reference").path == str(REFERENCE_DIR)
    assert parse_agent_spec("reference").kind == "mlp"


def test_without_a_shipped_policy_the_reference_is_the_v0_controller(tmp_path, monkeypatch):
    monkeypatch.setattr(specs, "REFERENCE_AGENT_DIR", tmp_path / "none")
    from dreamgym.agents.controller import reference_controller_installed

    if reference_controller_installed():
        assert parse_agent_spec("reference").kind == "controller"
    else:
        with pytest.raises(FileNotFoundError, match="no reference agent"):
            parse_agent_spec("reference")


def test_the_demo_drives_the_reference_in_its_own_dream(installed_v1, tmp_path):
    summary = run_demo(out=tmp_path / "demo", gif_steps=2, max_steps=4, real=False)
    assert summary["driver"] == "the reference agent"
    env = gym.make("dreamgym/DreamCarRacing-v0", model=V1, max_episode_steps=4)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (installed_v1.config.z_dim + installed_v1.config.rnn_hidden,)


@pytest.mark.skipif(embedded_model_path(V1) is None, reason="DreamCarRacing-v1 is not installed in this checkout")
def test_v1_dreams_in_its_own_model_by_default():
    env = gym.make(V1)
    assert env.unwrapped.world_model.config.training["rnn"].get("init_from") is not None


@pytest.mark.skipif(embedded_model_path(V1) is None, reason="DreamCarRacing-v1 is not installed in this checkout")
def test_the_shipped_v1_is_small_names_its_dream_and_its_card_states_the_final_test():
    folder = embedded_model_path(V1)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 25 * 2**20
    policy = json.loads((folder / "reference" / "policy.json").read_text())
    assert policy["world_model"] == {"model": V1, "revision": None}
    assert (folder / "loop.png").is_file()
    assert policy["sample"] is True  # the reference draws its actions, as it was tested
    results = json.loads((REPO / "results" / "dream_to_real" / "test-reference-v1-sample.json").read_text())
    assert results["seeds"] == list(range(60000, 60100))
    card = (folder / "README.md").read_text()
    assert f"{results['mean']:.1f} +/- {results['std']:.1f}" in card
    assert card == (REPO / "model_cards" / "DreamCarRacing-v1.md").read_text()
