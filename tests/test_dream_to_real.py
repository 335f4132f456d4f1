"""Dreams that are hard to exploit, and the real env seen through V + M.

Trajectory starts, dream-time dropout, a pessimistic reward loss, the one observer of the
real env, and real validation while an SB3 agent trains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym import WorldModel
from dreamgym.cli import main
from dreamgym.envs.dynamics import LatentDream
from dreamgym.envs.observer import LatentObserver, teacher_forced_states
from dreamgym.models.mdnrnn import MDNOutput
from dreamgym.training import train_rnn
from dreamgym.training.rnn import rnn_losses

from conftest import make_tiny_model
from test_training import RNN_ARGS, make_store

BANK = 12


def with_bank(model: WorldModel, n: int = BANK, seed: int = 0) -> WorldModel:
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    model.set_trajectory_starts(
        torch.randn(n, cfg.z_dim, generator=g),
        torch.full((n, cfg.z_dim), -3.0),
        torch.rand(n, cfg.rnn_hidden, generator=g) * 2 - 1,
        torch.randn(n, cfg.rnn_hidden, generator=g),
    )
    return model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_m(tmp_path_factory, store) -> Path:
    """A tiny V + M, M trained with dropout, a pessimistic reward loss and a trajectory bank."""
    out = tmp_path_factory.mktemp("wm")
    make_tiny_model().save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config["training"] = {"vae": {"epochs": 0}}  # the tiny V counts as trained here
    (out / "config.json").write_text(json.dumps(config))
    train_rnn(store, out, out, epochs=2, dropout=0.1, reward_overprediction_weight=4.0,
              trajectory_starts=20, **RNN_ARGS)
    return out


# ----------------------------------------------------------------------------- observer
def test_real_env_observations_are_the_observers_and_the_bank_uses_the_same_states(tiny_model):
    """RealCarRacing-v0's [z, h] is LatentObserver's, and teacher forcing gives the same h.

    Teacher forcing over the same frames and actions is what the bank of trajectory starts
    is built from.
    """
    env = gym.make("dreamgym/RealCarRacing-v0", model=tiny_model, max_episode_steps=6)
    observer = LatentObserver(tiny_model)
    obs, _ = env.reset(seed=3)
    frames = [env.unwrapped.car.state.copy()]
    observer.reset(frames[0])
    np.testing.assert_array_equal(obs, observer.observation())
    rng = np.random.default_rng(0)
    actions, zs = [], [observer.z]
    for _ in range(5):
        action = rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32)
        obs, *_ = env.step(action)
        observer.step(action, env.unwrapped.car.state.copy())
        np.testing.assert_array_equal(obs, observer.observation())
        actions.append(action)
        zs.append(observer.z)
    h, c = teacher_forced_states(tiny_model.rnn, torch.cat(zs), torch.as_tensor(np.stack(actions)))
    torch.testing.assert_close(h[-1:], observer.h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c[-1:], observer.c, rtol=1e-5, atol=1e-6)
    env.close()


# ----------------------------------------------------------------------------- trajectory starts
def test_trajectory_start_needs_a_bank_and_names_the_fix(tiny_model):
    with pytest.raises(ValueError, match="has none; add one with `dreamgym start-bank"):
        gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, start="trajectory")
    with pytest.raises(ValueError, match=r"start must be one of \['first_frame', 'trajectory'\]"):
        gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, start="middle")


def test_trajectory_start_takes_z_h_and_c_from_the_bank():
    model = with_bank(make_tiny_model())
    dream = LatentDream(model, 64, start="trajectory")
    dream.reset(np.arange(64), np.arange(64, dtype=np.uint64) + 7)
    # Every h is one of the bank's, with its c; z lies near the bank's mu (sigma = e^-1.5).
    match = (dream.h[:, None, :] == model.trajectory_h[None]).all(-1)
    assert match.any(1).all()
    index = match.float().argmax(1)
    torch.testing.assert_close(dream.c, model.trajectory_c[index])
    assert (dream.z - model.trajectory_mu[index]).abs().max() < 6 * np.exp(-1.5)
    assert len(index.unique()) > BANK // 2  # the draws spread over the bank


def test_first_frame_dream_is_unchanged_by_the_new_options():
    """A model with a bank, dreaming from first frames without dropout, dreams exactly as before."""
    plain, banked = make_tiny_model(), with_bank(make_tiny_model())
    trajectories = []
    for model in (plain, banked):
        env = gym.make("dreamgym/DreamCarRacing-v0", model=model)
        obs, _ = env.reset(seed=11)
        steps = [obs]
        for _ in range(10):
            steps.append(env.step(np.array([0.3, 0.5, 0.0], np.float32))[0])
        trajectories.append(np.stack(steps))
    np.testing.assert_array_equal(*trajectories)


def test_mixed_start_draws_each_episode_from_one_bank_at_the_given_rate():
    """start=p: an episode starts from a real trajectory state with probability p, else from a first frame."""
    model = with_bank(make_tiny_model())
    dream = LatentDream(model, 400, start=0.3)
    dream.reset(np.arange(400), np.arange(400, dtype=np.uint64) + 7)
    from_bank = (dream.h[:, None, :] == model.trajectory_h[None]).all(-1)
    trajectory = from_bank.any(1)
    assert 80 <= int(trajectory.sum()) <= 160  # 120 expected, sd 9
    index = from_bank.float().argmax(1)[trajectory]
    torch.testing.assert_close(dream.c[trajectory], model.trajectory_c[index])
    # The others start as first-frame episodes do: M's state at zero, z near a first frame's.
    first = ~trajectory
    assert (dream.h[first] == 0).all() and (dream.c[first] == 0).all()
    distance = (dream.z[first, None, :] - model.start_mu[None]).abs().amax(-1).amin(1)
    assert float(distance.max()) < 6 * float(torch.exp(0.5 * model.start_logvar).max())
    # Which episodes start where is the episode's key's: the same keys, the same starts.
    again = LatentDream(model, 400, start=0.3)
    again.reset(np.arange(400), np.arange(400, dtype=np.uint64) + 7)
    assert torch.equal(again.z, dream.z) and torch.equal(again.h, dream.h)


def test_start_fractions_0_and_1_are_the_two_modes_and_others_are_refused(tiny_model):
    from dreamgym.validation import parse_start

    model = with_bank(make_tiny_model())
    for fraction, mode in ((0, "first_frame"), (1.0, "trajectory")):
        dreams = [LatentDream(model, 8, start=start) for start in (fraction, mode)]
        assert dreams[0].start == mode
        for dream in dreams:
            dream.reset(np.arange(8), np.arange(8, dtype=np.uint64))
        assert torch.equal(dreams[0].z, dreams[1].z) and torch.equal(dreams[0].h, dreams[1].h)
    with pytest.raises(ValueError, match=r"start as a fraction of trajectory starts must be in \[0, 1\], got 1.5"):
        LatentDream(model, 2, start=1.5)
    with pytest.raises(TypeError, match="start must be a number, got bool"):
        LatentDream(model, 2, start=True)
    with pytest.raises(ValueError, match="start=0.5 needs a world model with a bank"):
        gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, start=0.5)
    assert parse_start("0.25") == 0.25 and parse_start("trajectory") == "trajectory"


@pytest.mark.parametrize("start", ["first_frame", "trajectory", 0.5])
def test_vector_sub_env_equals_single_env_with_trajectory_starts_and_dropout(start):
    model = with_bank(make_tiny_model())
    kwargs = dict(model=model, start=start, dropout=0.2, max_episode_steps=30)
    vec = gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=3, **kwargs)
    obs_v, _ = vec.reset(seed=5)
    actions = np.random.default_rng(1).uniform([-1, 0, 0], [1, 1, 1], (8, 3, 3)).astype(np.float32)
    vec_obs = [obs_v]
    for a in actions:
        vec_obs.append(vec.step(a)[0])
    for i in range(3):
        env = gym.make("dreamgym/DreamCarRacing-v0", **kwargs)
        single = [env.reset(seed=5 + i)[0]]
        for a in actions:
            single.append(env.step(a[i])[0])
        np.testing.assert_allclose(np.stack(single), np.stack(vec_obs)[:, i], rtol=1e-4, atol=1e-5)


def test_dream_dropout_keeps_one_mask_per_episode():
    model = make_tiny_model()
    dream = LatentDream(model, 4, dropout=0.5)
    dream.reset(np.arange(4), np.array([1, 2, 3, 4], dtype=np.uint64))
    masks = dream.input_mask.clone(), dream.output_mask.clone()
    assert set(masks[0].unique().tolist()) <= {0.0, 2.0} and (masks[1] == 0).any() and (masks[1] == 2).any()
    assert not torch.equal(masks[1][0], masks[1][1])  # each episode its own M
    for _ in range(5):
        dream.step(torch.zeros(4, 3))
    assert torch.equal(dream.input_mask, masks[0]) and torch.equal(dream.output_mask, masks[1])
    # Dropout changes the dream: the same keys without it give other latents.
    plain = LatentDream(model, 4)
    plain.reset(np.arange(4), np.array([1, 2, 3, 4], dtype=np.uint64))
    a = torch.full((4, 3), 0.5)
    assert not torch.allclose(plain.step(a).z, dream.step(a).z)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        LatentDream(model, 1, dropout=1.0)


def test_bank_round_trips_and_old_configs_stay_as_they_were(tmp_path):
    model = with_bank(make_tiny_model())
    model.save_pretrained(tmp_path / "banked")
    loaded = WorldModel.from_pretrained(tmp_path / "banked")
    assert loaded.config.num_trajectory_starts == BANK
    torch.testing.assert_close(loaded.trajectory_h, model.trajectory_h)
    make_tiny_model().save_pretrained(tmp_path / "plain")
    assert "num_trajectory_starts" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not WorldModel.from_pretrained(tmp_path / "plain").has_trajectory_starts


# ----------------------------------------------------------------------------- training M
def test_m_trained_with_dropout_pessimism_and_a_bank_records_them(trained_m, store):
    model = WorldModel.from_pretrained(trained_m)
    record = model.config.training["rnn"]
    assert model.config.dropout == 0.1 and record["dropout"] == 0.1
    assert record["reward_overprediction_weight"] == 4.0
    # 4 training episodes of 60 steps with states at t = 0, 4, ..., 60: 64, of which 20 are kept.
    assert model.config.num_trajectory_starts == 20
    # The bank's h are M's real teacher-forced states along the training episodes.
    states = []
    for episode in store:
        z = model.encode(np.asarray(episode.frames))[0]
        states.append(teacher_forced_states(model.rnn, z, torch.as_tensor(episode.actions))[0])
    states = torch.cat(states)
    distance = (model.trajectory_h[:, None, :] - states[None]).abs().amax(-1).amin(-1)
    assert distance.max() < 1e-5
    env = gym.make("dreamgym/DreamCarRacing-v0", model=model, start="trajectory", dropout=0.1, max_episode_steps=5)
    env.reset(seed=0)
    assert np.isfinite(env.step(env.action_space.sample())[0]).all()


def test_pessimistic_reward_loss_counts_over_prediction_more():
    z = torch.zeros(1, 2, 1, 3, 1)
    out = MDNOutput(z, z, z, torch.tensor([[1.0, -1.0]]), torch.zeros(1, 2))
    target, mask = torch.zeros(1, 2), torch.ones(1, 2)
    zeros = torch.zeros(1, 2, 3)
    plain = rnn_losses(out, zeros, target, torch.zeros(1, 2), mask, 1.0)["reward_mse"]
    pessimistic = rnn_losses(out, zeros, target, torch.zeros(1, 2), mask, 1.0, 5.0)["reward_mse"]
    assert plain.item() == pytest.approx(1.0) and pessimistic.item() == pytest.approx(3.0)  # (5 + 1) / 2


def test_start_bank_command_adds_a_bank_without_touching_the_source(trained_m, store, tmp_path, capsys):
    before = (trained_m / "model.safetensors").read_bytes()
    out = tmp_path / "banked"
    assert main(["start-bank", str(trained_m), "--data", str(store.root), "--out", str(out),
                 "--size", "16", "--burn-in", "5", "--every", "3"]) == 0
    assert "16 trajectory starts added" in capsys.readouterr().out
    assert (trained_m / "model.safetensors").read_bytes() == before
    model = WorldModel.from_pretrained(out)
    assert model.config.num_trajectory_starts == 16
    assert model.config.training["trajectory_starts"]["burn_in"] == 5
    # States from a chosen range of seeds only: the toy store's episodes are seeds 100-105.
    assert main(["start-bank", str(trained_m), "--data", str(store.root), "--out", str(tmp_path / "two"),
                 "--only-seeds", "100:102", "--burn-in", "5"]) == 0
    assert WorldModel.from_pretrained(tmp_path / "two").config.training["trajectory_starts"]["episodes"] <= 2
    assert main(["start-bank", str(trained_m), "--data", str(store.root), "--out", str(tmp_path / "x"),
                 "--only-seeds", "5:2"]) == 2
    assert "--only-seeds must be FIRST:STOP" in capsys.readouterr().err
    assert main(["start-bank", str(trained_m), "--data", str(store.root), "--out", str(trained_m)]) == 2
    assert "is the source model's folder" in capsys.readouterr().err
    assert main(["start-bank", str(trained_m), "--data", str(store.root), "--out", str(out)]) == 2
    assert "already holds a world model" in capsys.readouterr().err


def test_fine_tuning_starts_from_the_given_m_and_refuses_one_of_another_v(tmp_path, store, trained_m):
    """train_rnn(init_from=...) is a round of the paper's loop: M starts where the given M was.

    0 epochs leave it exactly so; it trains on from there, and refuses an M of another V.
    """
    source = WorldModel.from_pretrained(trained_m)
    untouched = train_rnn(store, trained_m, tmp_path / "zero", epochs=0, init_from=trained_m, **RNN_ARGS)
    for name, tensor in source.rnn.state_dict().items():
        torch.testing.assert_close(untouched.rnn.state_dict()[name], tensor, rtol=0, atol=0)
    assert untouched.config.training["rnn"]["init_from"] == str(trained_m)
    tuned = train_rnn(store, trained_m, tmp_path / "one", epochs=1, init_from=trained_m, **RNN_ARGS)
    fresh = train_rnn(store, trained_m, tmp_path / "fresh", epochs=1, **RNN_ARGS)
    moved = (tuned.rnn.lstm.weight_ih_l0 - source.rnn.lstm.weight_ih_l0).abs().max().item()
    fresh_distance = (fresh.rnn.lstm.weight_ih_l0 - source.rnn.lstm.weight_ih_l0).abs().max().item()
    assert 0 < moved < fresh_distance

    other_v = tmp_path / "other-v"
    make_tiny_model(seed=5).save_pretrained(other_v)
    config = json.loads((other_v / "config.json").read_text())
    config["training"] = {"vae": {"epochs": 0}, "rnn": {"epochs": 0}}
    (other_v / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="another V"):
        train_rnn(store, trained_m, tmp_path / "bad", epochs=1, init_from=other_v, **RNN_ARGS)


# ----------------------------------------------------------------------------- agents
def test_cmaes_trains_from_trajectory_starts_and_records_it(tmp_path):
    from dreamgym.agents.cmaes import train_controller

    model = with_bank(make_tiny_model())
    controller = train_controller(model, tmp_path / "c", generations=2, popsize=4, rollouts=2, max_steps=10,
                                  eval_every=1, eval_rollouts=4, progress=False, start="trajectory", dropout=0.1)
    # The ES mean of every evaluated generation is kept, for the real score against dream training.
    snapshots = sorted(p.name for p in (tmp_path / "c" / "snapshots").iterdir())
    assert snapshots == ["generation-0001", "generation-0002"]
    from dreamgym.agents.controller import LinearController

    assert not np.array_equal(*(LinearController.load(tmp_path / "c" / "snapshots" / n).flat() for n in snapshots))
    state = json.loads((tmp_path / "c" / "checkpoints" / "cmaes_state.json").read_text())
    assert state["options"]["start"] == "trajectory" and state["options"]["dropout"] == 0.1
    assert controller.training["generations_done"] == 2
    from dreamgym.training.common import CheckpointError

    with pytest.raises(CheckpointError, match="start: 'trajectory' -> 'first_frame'"):
        train_controller(model, tmp_path / "c", generations=3, popsize=4, rollouts=2, max_steps=10,
                         eval_every=1, eval_rollouts=4, progress=False)


def test_real_validation_callback_scores_checkpoints_on_validation_seeds(tmp_path, tiny_model_dir):
    from stable_baselines3 import PPO

    from dreamgym.agents.real_validation import RealValidationCallback, load_validation
    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=4, model=str(tiny_model_dir), max_episode_steps=20, seed=0)
    callback = RealValidationCallback(tmp_path, model=str(tiny_model_dir), eval_freq=64, episodes=2, seed=40,
                                      workers=1, max_steps=5, verbose=0)
    PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0).learn(128, callback=callback)
    record = load_validation(tmp_path)
    assert [e["timesteps"] for e in record["history"]] == [64, 128]
    assert all(e["seeds"] == [40, 41] and len(e["returns"]) == 2 and "dream_mean" in e for e in record["history"])
    best = max(record["history"], key=lambda e: e["mean"])
    assert record["best"] == best
    assert (tmp_path / "best_model.zip").read_bytes() == Path(best["checkpoint"]).read_bytes()
    with pytest.raises(ValueError, match="eval_freq must be >= 1"):
        RealValidationCallback(tmp_path, None, eval_freq=0)


def test_agent_policy_drives_with_an_sb3_agent_through_its_world_model(tmp_path, tiny_model_dir):
    from stable_baselines3 import PPO

    from dreamgym.data.policies import AgentPolicy, make_policy
    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=2, model=str(tiny_model_dir), max_episode_steps=10, seed=0)
    agent = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0)
    agent.save(tmp_path / "ppo.zip")
    policy = make_policy(f"agent:sb3:{tmp_path / 'ppo.zip'}?noise=0&model={tiny_model_dir}", seed=0)
    assert isinstance(policy, AgentPolicy)
    env = gym.make("dreamgym/RealCarRacing-v0", model=str(tiny_model_dir), max_episode_steps=4)
    obs, _ = env.reset(seed=2)
    policy.reset(2)
    for _ in range(3):
        action = policy(env.unwrapped.car.state)
        np.testing.assert_allclose(action, np.clip(agent.predict(obs, deterministic=True)[0], [-1, 0, 0], 1), atol=1e-6)
        obs, *_ = env.step(action)
    env.close()
    with pytest.raises(ValueError, match="policy 'controller' needs a controller folder or 'reference'"):
        make_policy(f"controller:sb3:{tmp_path / 'ppo.zip'}", seed=0)


def test_controller_snapshots_are_validated_once_each(tmp_path, tiny_model_dir, monkeypatch):
    from dreamgym.agents import real_validation as validation
    from dreamgym.agents.cmaes import train_controller

    train_controller(str(tiny_model_dir), tmp_path / "c", generations=2, popsize=4, rollouts=2, max_steps=10,
                     eval_every=1, eval_rollouts=4, progress=False)
    calls = []
    evaluate = validation.evaluate
    monkeypatch.setattr(validation, "evaluate", lambda *a, **k: (calls.append(a[0]), evaluate(*a, **k))[1])
    record = validation.validate_controller_snapshots(tmp_path / "c", episodes=2, seed=50, workers=1, max_steps=5,
                                                      progress=False)
    assert [(e["generation"], e["timesteps"]) for e in record["history"]] == [(1, 4 * 2 * 10), (2, 2 * 4 * 2 * 10)]
    assert all(e["seeds"] == [50, 51] and "dream_mean" in e for e in record["history"])
    assert len(calls) == 2
    again = validation.validate_controller_snapshots(tmp_path / "c", episodes=2, seed=50, workers=1, max_steps=5,
                                                     progress=False)
    assert len(calls) == 2 and again == record  # finished scores are kept, not run again
    validation.validate_controller_snapshots(tmp_path / "c", episodes=3, seed=50, workers=1, max_steps=5,
                                             progress=False)
    assert len(calls) == 4  # other episodes: scored anew


def test_exported_policy_acts_as_the_sb3_agent_and_loads_without_sb3(tmp_path, tiny_model_dir, capsys):
    from stable_baselines3 import PPO

    from dreamgym.agents.evaluate import evaluate, parse_agent_spec
    from dreamgym.agents.mlp_policy import MlpPolicyAgent, PolicyFormatError
    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=2, model=str(tiny_model_dir), max_episode_steps=10, seed=0)
    agent = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(16)
    agent.save(tmp_path / "ppo.zip")
    assert main(["export-policy", f"sb3:{tmp_path / 'ppo.zip'}", "--model", str(tiny_model_dir),
                 "--out", str(tmp_path / "policy")]) == 0
    assert "[24, 64, 64, 3] (tanh)" in capsys.readouterr().out
    policy = MlpPolicyAgent.load(tmp_path / "policy")
    obs = np.random.default_rng(0).normal(0, 2, (50, 24)).astype(np.float32)
    np.testing.assert_allclose(policy.act(obs), agent.predict(obs, deterministic=True)[0], atol=1e-6)
    # The exported folder is an agent spec of its own, scored through the world model it records.
    assert parse_agent_spec(str(tmp_path / "policy")).kind == "mlp"
    exported = evaluate(str(tmp_path / "policy"), episodes=2, seed=3, workers=1, max_steps=5, progress=False)
    original = evaluate(f"sb3:{tmp_path / 'ppo.zip'}", episodes=2, seed=3, workers=1, max_steps=5,
                        model=str(tiny_model_dir), progress=False)
    np.testing.assert_allclose(exported["returns"], original["returns"], atol=1e-4)
    (tmp_path / "policy" / "policy.safetensors").write_bytes(b"junk")
    with pytest.raises(PolicyFormatError, match="corrupt or unreadable"):
        MlpPolicyAgent.load(tmp_path / "policy")


def test_a_sampling_policy_draws_from_its_gaussian_reproducibly_per_episode(tmp_path, tiny_model_dir, capsys):
    """export-policy --sample: PPO's stochastic policy, safetensors + JSON, its noise a function of the episode seed."""
    from stable_baselines3 import PPO

    from dreamgym.agents.evaluate import evaluate
    from dreamgym.agents.mlp_policy import MlpPolicyAgent, PolicyFormatError
    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=2, model=str(tiny_model_dir), max_episode_steps=10, seed=0)
    agent = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0).learn(16)
    agent.save(tmp_path / "ppo.zip")
    assert main(["export-policy", f"sb3:{tmp_path / 'ppo.zip'}", "--model", str(tiny_model_dir),
                 "--out", str(tmp_path / "sampled"), "--sample"]) == 0
    assert "drawing its actions from its Gaussian" in capsys.readouterr().out
    config = json.loads((tmp_path / "sampled" / "policy.json").read_text())
    assert config["format_version"] == 2 and config["sample"] is True  # an older dreamgym refuses, not ignores, it
    np.testing.assert_allclose(config["log_std"], agent.policy.log_std.detach().numpy(), atol=1e-7)
    sampled = MlpPolicyAgent.load(tmp_path / "sampled")
    obs = np.zeros(24, np.float32)
    sampled.reset_episode(5)
    first = [sampled.act(obs) for _ in range(3)]
    sampled.reset_episode(5)
    assert np.array_equal(first, [sampled.act(obs) for _ in range(3)])
    assert not np.array_equal(first[0], first[1])
    # Scored twice, the same episodes; the noise changes them from the mean-action agent's.
    runs = [evaluate(str(tmp_path / "sampled"), episodes=2, seed=3, workers=1, max_steps=8, dream=True,
                     progress=False) for _ in range(2)]
    assert runs[0]["returns"] == runs[1]["returns"] and runs[0]["dream"]["returns"] == runs[1]["dream"]["returns"]
    assert main(["export-policy", f"sb3:{tmp_path / 'ppo.zip'}", "--model", str(tiny_model_dir),
                 "--out", str(tmp_path / "mean")]) == 0
    by_mean = evaluate(str(tmp_path / "mean"), episodes=2, seed=3, workers=1, max_steps=8, dream=True,
                       progress=False)
    assert by_mean["dream"]["returns"] != runs[0]["dream"]["returns"]
    # The draws follow the Gaussian: mean(obs) + exp(log_std) * N(0, 1), away from the bounds.
    wide = MlpPolicyAgent([4, 8, 3], "tanh", [-100.0] * 3, [100.0] * 3, log_std=np.log([0.5, 1.0, 2.0]).tolist(),
                          sample=True)
    draws = wide.act(np.ones((20000, 4), np.float32))
    mean = MlpPolicyAgent([4, 8, 3], "tanh", [-100.0] * 3, [100.0] * 3, state_dict=wide.net.state_dict()).act(
        np.ones(4, np.float32))
    np.testing.assert_allclose(draws.mean(0), mean, atol=0.05)
    np.testing.assert_allclose(draws.std(0), [0.5, 1.0, 2.0], rtol=0.03)
    with pytest.raises(PolicyFormatError, match="needs the log_std of its Gaussian"):
        MlpPolicyAgent([4, 8, 3], "tanh", [-1.0] * 3, [1.0] * 3, sample=True)


def _validation_record(steps_and_means: list[tuple[int, float]], seed: int = 20_000) -> dict:
    history = [{"timesteps": t, "mean": m, "stderr": 1.0, "dream_mean": m + 10.0} for t, m in steps_and_means]
    best = max(history, key=lambda e: e["mean"])
    best = {**best, "checkpoint": f"step-{best['timesteps']}"}
    return {"episodes": 3, "seed": seed, "history": history, "best": best}


def test_curve_script_joins_a_run_trained_on_in_a_second_process(tmp_path):
    """examples/real_vs_dream_training.py: LABEL=A+B is one run's curve, in order of dream steps, best of all."""
    script = Path(__file__).resolve().parents[1] / "examples" / "real_vs_dream_training.py"
    first, later, other = tmp_path / "first.json", tmp_path / "later.json", tmp_path / "other.json"
    first.write_text(json.dumps(_validation_record([(1_000_000, 700.0)])))
    later.write_text(json.dumps(_validation_record([(3_000_000, 500.0), (2_000_000, 450.0)])))
    other.write_text(json.dumps(_validation_record([(2_000_000, 100.0)], seed=30_000)))
    run = subprocess.run([sys.executable, str(script), "--runs", f"PPO={first}+{later}", "--out", str(tmp_path / "c")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    table = (tmp_path / "c.md").read_text()
    rows = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "," in line]
    assert rows == ["1,000,000", "2,000,000", "3,000,000"]
    assert "best on validation: 1,000,000 dream steps, real 700.0" in table
    assert (tmp_path / "c.png").stat().st_size > 0
    bad = subprocess.run([sys.executable, str(script), "--runs", f"PPO={first}+{other}", "--out", str(tmp_path / "d")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "scored on different validation seeds" in bad.stderr
