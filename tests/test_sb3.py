"""Stable-Baselines3 on the dream: DreamVecEnv's VecEnv contract, PPO, agent loading, the example."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3
from stable_baselines3.common.env_checker import check_env
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import VecCheckNan, VecEnv, VecMonitor, VecTransposeImage

from dreamgym.agents.real_validation import RealValidationCallback
from dreamgym.envs import DreamCarRacingEnv
from dreamgym.errors import ArgumentError
from dreamgym.sb3 import DreamVecEnv, load_sb3_agent, make_dream_vec_env

from conftest import make_tiny_model

OBS_DIM = 8 + 16
ROOT = Path(__file__).resolve().parents[1]


def _actions(steps, n, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform([-1, 0, 0], [1, 1, 1], (n, 3)).astype(np.float32) for _ in range(steps)]


def _terminating_model():
    """A tiny model whose every dream step ends the episode."""
    model = make_tiny_model()
    with torch.no_grad():
        model.rnn.head.bias[-1] = 10.0
    return model


@pytest.mark.parametrize("continuous", [True, False])
def test_sb3_check_env_passes_on_single_dream(tiny_model, continuous):
    env = DreamCarRacingEnv(tiny_model, continuous=continuous)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # CarRacing's own action box is [-1,0,0]..[1,1,1]; SB3 merely recommends [-1, 1].
        warnings.filterwarnings("ignore", message="We recommend you to use a symmetric")
        check_env(env, warn=True)


def test_reset_and_step_follow_the_vec_env_api(tiny_model):
    venv = DreamVecEnv(tiny_model, n_envs=4, seed=0)
    assert isinstance(venv, VecEnv) and venv.num_envs == 4
    assert venv.render_mode is None and venv.get_attr("render_mode") == [None] * 4
    obs = venv.reset()
    assert obs.shape == (4, OBS_DIM) and obs.dtype == np.float32
    assert all(venv.observation_space.contains(o) for o in obs)
    checked = VecCheckNan(venv, raise_exception=True)
    for actions in _actions(3, 4):
        obs, rewards, dones, infos = checked.step(actions)
        assert obs.shape == (4, OBS_DIM) and obs.dtype == np.float32
        assert rewards.shape == (4,) and rewards.dtype == np.float32
        assert dones.shape == (4,) and dones.dtype == bool and not dones.any()
        assert isinstance(infos, list) and len(infos) == 4
        for info in infos:
            assert 0.0 <= info["termination_probability"] <= 1.0
            assert info["TimeLimit.truncated"] is False and "terminal_observation" not in info
    assert venv.get_attr("elapsed_steps") == [3] * 4


def test_time_limit_resets_in_the_same_step(tiny_model):
    steps = 5
    venv = DreamVecEnv(tiny_model, n_envs=3, seed=7, max_episode_steps=steps)
    reference = DreamVecEnv(tiny_model, n_envs=3, seed=7, max_episode_steps=None)
    venv.reset(), reference.reset()
    actions = _actions(steps, 3)
    for t, a in enumerate(actions):
        obs, _, dones, infos = venv.step(a)
        expected, *_ = reference.step(a)
        if t < steps - 1:
            assert not dones.any()
    assert dones.all()
    for i, info in enumerate(infos):
        assert info["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(info["terminal_observation"], expected[i])
    # The returned observation is already the next episode's first: the one a single env
    # gives on its second (unseeded) reset.
    for i in range(3):
        env = DreamCarRacingEnv(tiny_model)
        env.reset(seed=7 + i)
        np.testing.assert_allclose(obs[i], env.reset()[0], atol=1e-6)
    assert venv.get_attr("elapsed_steps") == [0] * 3
    for t, a in enumerate(_actions(steps, 3, seed=1)):
        _, _, dones, _ = venv.step(a)
        assert dones.all() == (t == steps - 1)


@pytest.mark.parametrize("max_episode_steps", [None, 1])
def test_termination_is_not_truncation(max_episode_steps):
    venv = DreamVecEnv(_terminating_model(), n_envs=2, seed=0, max_episode_steps=max_episode_steps)
    first = venv.reset()
    obs, _, dones, infos = venv.step(_actions(1, 2)[0])
    assert dones.all()
    for i, info in enumerate(infos):
        # Terminated and out of time in the same step is a real end, not a truncation.
        assert info["TimeLimit.truncated"] is False
        assert info["termination_probability"] > 0.5
        assert info["terminal_observation"].shape == (OBS_DIM,)
        assert not np.array_equal(info["terminal_observation"], obs[i])
    assert not np.array_equal(obs, first)  # a fresh key draws a fresh start


def test_seeding_is_reproducible(tiny_model):
    def rollout(venv):
        observations = [venv.reset()]
        observations += [venv.step(a)[0] for a in _actions(10, 3)]
        return np.stack(observations)

    a = rollout(DreamVecEnv(tiny_model, n_envs=3, seed=11, max_episode_steps=4))
    b = rollout(DreamVecEnv(tiny_model, n_envs=3, seed=11, max_episode_steps=4))
    np.testing.assert_array_equal(a, b)
    venv = DreamVecEnv(tiny_model, n_envs=3, max_episode_steps=4)
    assert venv.seed(11) == [11, 12, 13]
    np.testing.assert_array_equal(rollout(venv), a)
    # Seeds apply to one reset only; after it each sub-env's Generator goes on.
    assert not np.array_equal(venv.reset(), a[0])
    assert not np.array_equal(rollout(DreamVecEnv(tiny_model, n_envs=3, seed=12)), a)
    assert not np.array_equal(DreamVecEnv(tiny_model, n_envs=3).reset(), DreamVecEnv(tiny_model, n_envs=3).reset())


@pytest.mark.parametrize("continuous", [True, False])
def test_sub_envs_match_single_envs_across_resets(tiny_model, continuous):
    n, seed, steps = 3, 21, 20
    venv = DreamVecEnv(tiny_model, n_envs=n, seed=seed, continuous=continuous, max_episode_steps=8)
    envs = [DreamCarRacingEnv(tiny_model, continuous=continuous, max_episode_steps=8) for _ in range(n)]
    obs = venv.reset()
    single = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    np.testing.assert_allclose(obs, single, atol=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        if continuous:
            actions = rng.uniform([-1, 0, 0], [1, 1, 1], (n, 3)).astype(np.float32)
        else:
            actions = rng.integers(0, 5, n)
        obs, rewards, dones, _ = venv.step(actions)
        for i, env in enumerate(envs):
            o, r, terminated, truncated, _ = env.step(actions[i])
            assert dones[i] == (terminated or truncated)
            assert rewards[i] == pytest.approx(r, abs=1e-5)
            if dones[i]:
                o, _ = env.reset()
            np.testing.assert_allclose(obs[i], o, atol=1e-5)


def test_bad_actions_raise_clear_errors(tiny_model):
    venv = DreamVecEnv(tiny_model, n_envs=2, seed=0)
    with pytest.raises(gym.error.ResetNeeded):
        venv.step(np.zeros((2, 3), np.float32))
    venv.reset()
    with pytest.raises(ValueError, match="NaN or inf"):
        venv.step(np.array([[0, 0, 0], [np.nan, 0, 0]], np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        venv.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        venv.step(np.zeros((2, 2), np.float32))
    discrete = DreamVecEnv(tiny_model, n_envs=2, seed=0, continuous=False)
    discrete.reset()
    with pytest.raises(ValueError, match="0..4"):
        discrete.step(np.array([0, 5]))
    with pytest.raises(ValueError, match="integer"):
        discrete.step(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        discrete.step(np.array([1]))
    # A rejected batch leaves the dream untouched.
    assert discrete.get_attr("elapsed_steps") == [0, 0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_envs=0), "n_envs"),
        (dict(obs_mode="rgb"), "obs_mode"),
        (dict(max_episode_steps=0), "max_episode_steps"),
        (dict(temperature=0.0), "temperature"),
        (dict(render_mode="human"), "render_mode"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_raise(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DreamVecEnv(tiny_model, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"), [(dict(n_envs=True), "n_envs must be an int"), (dict(seed=1.5), "seed")]
)
def test_arguments_of_the_wrong_type_raise(tiny_model, kwargs, message):
    with pytest.raises(ArgumentError, match=message):
        DreamVecEnv(tiny_model, **kwargs)


def test_pixels_and_render(tiny_model):
    venv = DreamVecEnv(tiny_model, n_envs=4, seed=0, obs_mode="pixels", max_episode_steps=2, render_mode="rgb_array")
    obs = venv.reset()
    assert obs.shape == (4, 64, 64, 3) and obs.dtype == np.uint8
    venv.step(_actions(1, 4)[0])
    obs, _, dones, infos = venv.step(_actions(1, 4)[0])
    assert dones.all() and infos[0]["terminal_observation"].shape == (64, 64, 3)
    env = DreamCarRacingEnv(tiny_model, obs_mode="pixels")
    env.reset(seed=1)
    np.testing.assert_array_equal(venv.env_method("reset", indices=[1], seed=1)[0][0], env.reset(seed=1)[0])
    grid = venv.render()
    assert grid.shape == (2 * 256, 2 * 256, 3) and grid.dtype == np.uint8
    assert VecTransposeImage(venv).reset().shape == (4, 3, 64, 64)
    with pytest.warns(UserWarning, match="no `render_mode`"):
        assert DreamVecEnv(tiny_model, n_envs=1).render() is None


def test_attributes_and_methods(tiny_model):
    venv = DreamVecEnv(tiny_model, n_envs=3, seed=0, temperature=1.5)
    venv.reset()
    assert venv.get_attr("temperature") == [1.5] * 3 and venv.has_attr("obs_mode") and not venv.has_attr("nope")
    venv.set_attr("temperature", 0.5)
    assert venv.dream.temperature == 0.5 and venv.get_attr("temperature", indices=1) == [0.5]
    with pytest.raises(ValueError, match="shared by all"):
        venv.set_attr("temperature", 2.0, indices=[0])
    with pytest.raises(ValueError, match="temperature"):
        venv.set_attr("temperature", -1.0)
    with pytest.raises(AttributeError, match="fixed"):
        venv.set_attr("obs_mode", "pixels")
    # The shared settings as attributes: checked and written through to the dream, or fixed.
    venv.sample_termination = 1
    venv.max_episode_steps = 50
    assert venv.dream.sample_termination is True and venv.vector_env.max_episode_steps == 50
    assert venv.get_attr("max_episode_steps") == [50] * 3 and venv.get_attr("ensemble") == [False] * 3
    with pytest.raises(ValueError, match="temperature"):
        venv.temperature = 0.0
    with pytest.raises(AttributeError, match="fixed"):
        venv.dropout = 0.5
    venv.set_attr("tag", "a", indices=[0, 2])
    assert venv.get_attr("tag", indices=[0, 2]) == ["a", "a"]
    with pytest.raises(AttributeError, match="sub-env 1"):
        venv.get_attr("tag")
    assert venv.env_is_wrapped(Monitor) == [False] * 3
    assert all(isinstance(g, np.random.Generator) for g in venv.get_attr("np_random"))
    env = DreamCarRacingEnv(tiny_model, temperature=0.5)
    (obs, info), = venv.env_method("reset", seed=4, indices=2)
    np.testing.assert_allclose(obs, env.reset(seed=4)[0], atol=1e-6)
    with pytest.raises(AttributeError, match="no method 'step'"):
        venv.env_method("step")
    venv.close()


def test_ppo_trains_and_vec_monitor_logs_episodes(tiny_model):
    venv = make_dream_vec_env(n_envs=8, model=tiny_model, max_episode_steps=10, seed=0)
    assert isinstance(venv, VecMonitor) and isinstance(venv.unwrapped, DreamVecEnv)
    venv.reset()
    for t in range(10):
        _, _, dones, infos = venv.step(_actions(1, 8, seed=t)[0])
    assert dones.all() and all(info["episode"]["l"] == 10 for info in infos)
    agent = PPO("MlpPolicy", venv, n_steps=16, batch_size=32, n_epochs=1, seed=0, device="cpu")
    agent.learn(64)
    assert agent.num_timesteps == 128 and len(agent.ep_info_buffer) > 0


@pytest.mark.parametrize("algo", [PPO, A2C, SAC, TD3, DDPG, DQN])
def test_load_sb3_agent_detects_the_algorithm(tiny_model, tmp_path, algo):
    continuous = algo is not DQN
    venv = DreamVecEnv(tiny_model, n_envs=2, continuous=continuous)
    kwargs = dict(buffer_size=16) if algo in (SAC, TD3, DDPG, DQN) else {}
    algo("MlpPolicy", venv, device="cpu", **kwargs).save(tmp_path / "agent.zip")
    loaded = load_sb3_agent(tmp_path / "agent", device="cpu")
    assert type(loaded) is algo
    action, _ = loaded.predict(venv.reset(), deterministic=True)
    assert action.shape == ((2, 3) if continuous else (2,))


def test_load_sb3_agent_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_sb3_agent(tmp_path / "missing.zip")
    (tmp_path / "bad.zip").write_text("not a zip")
    with pytest.raises(ValueError, match="not an SB3 agent zip"):
        load_sb3_agent(tmp_path / "bad.zip")
    with pytest.raises(ValueError, match="unknown SB3 algorithm"):
        load_sb3_agent(tmp_path / "bad.zip", algo="PPG")
    # A zip whose policy comes from no SB3 algorithm it knows: it cannot tell which to load with.
    with zipfile.ZipFile(tmp_path / "foreign.zip", "w") as archive:
        archive.writestr("data", json.dumps({"policy_class": {"__module__": "somewhere.else"}}))
    with pytest.raises(ValueError, match="cannot tell which algorithm saved"):
        load_sb3_agent(tmp_path / "foreign.zip")


@pytest.mark.slow
def test_example_trains_ppo_at_toy_scale(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy", "HF_HUB_OFFLINE": "1"}
    args = [
        "--model", str(tiny_model_dir), "--total-timesteps", "128", "--n-envs", "8", "--n-steps", "16",
        "--n-epochs", "1", "--eval-freq", "64", "--eval-episodes", "2", "--eval-max-steps", "10",
        "--eval-workers", "1", "--eval-seed", "7", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ppo_in_the_dream.py"), *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best validation checkpoint" in result.stdout
    assert {"final_model.zip", "best_model.zip", "validation.json"} <= {p.name for p in out.iterdir()}
    validation = json.loads((out / "validation.json").read_text())
    # Scored twice on the real validation seeds 7 and 8, and the best checkpoint kept.
    assert [e["timesteps"] for e in validation["history"]] == [64, 128]
    assert all(e["seeds"] == [7, 8] for e in validation["history"])
    assert (out / "best_model.zip").read_bytes() == Path(validation["best"]["checkpoint"]).read_bytes()
    assert type(load_sb3_agent(out / "final_model.zip", device="cpu")) is PPO

    # A finished run is not written over; --resume trains it on, scoring where one long run would.
    def run(*extra: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(ROOT / "examples" / "ppo_in_the_dream.py"), *args, *extra]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    final = (out / "final_model.zip").read_bytes()
    again = run()
    assert again.returncode != 0 and "already holds a run (final_model.zip); give --resume" in again.stderr
    assert (out / "final_model.zip").read_bytes() == final
    resumed = run("--resume", "--total-timesteps", "256")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    validation = json.loads((out / "validation.json").read_text())
    assert [e["timesteps"] for e in validation["history"]] == [64, 128, 192, 256]
    assert load_sb3_agent(out / "final_model.zip", device="cpu").num_timesteps == 256
    assert (out / "checkpoints" / "step-128.zip").is_file()
    done = run("--resume", "--total-timesteps", "256")
    assert done.returncode != 0 and "is trained to 256 dream steps already" in done.stderr


@pytest.mark.slow
def test_example_keeps_a_fixed_std_and_validates_drawing(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy", "HF_HUB_OFFLINE": "1"}
    args = [
        "--model", str(tiny_model_dir), "--total-timesteps", "128", "--n-envs", "8", "--n-steps", "16",
        "--n-epochs", "2", "--learning-rate", "0.01", "--eval-freq", "128", "--eval-episodes", "1",
        "--eval-max-steps", "5", "--eval-workers", "1", "--device", "cpu", "--out", str(out),
        "--log-std-init", "-1.0", "--fixed-std", "--eval-sample",
    ]  # fmt: skip
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "ppo_in_the_dream.py"), *args],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = load_sb3_agent(out / "final_model.zip", device="cpu")
    np.testing.assert_array_equal(trained.policy.log_std.detach().numpy(), -1.0)  # std exp(-1) throughout
    free = subprocess.run(  # without --fixed-std the same run trains its std
        [sys.executable, str(ROOT / "examples" / "ppo_in_the_dream.py"), *args[:-2], "--out", str(tmp_path / "free")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert free.returncode == 0, free.stderr[-3000:]
    free_std = load_sb3_agent(tmp_path / "free" / "final_model.zip", device="cpu").policy.log_std.detach().numpy()
    assert not np.allclose(free_std, -1.0)
    validation = json.loads((out / "validation.json").read_text())
    assert validation["sample"] is True
    assert json.loads((out / "checkpoints" / "step-128-sample" / "policy.json").read_text())["log_std"] == [-1.0] * 3


def test_validation_resume_keeps_the_record_and_refuses_other_validation_seeds(tmp_path):
    history = [{"timesteps": t, "mean": m} for t, m in ((10, 5.0), (20, 9.0), (30, 7.0))]
    record = {"episodes": 3, "seed": 5, "max_steps": 1000, "history": history, "best": history[1]}
    (tmp_path / "validation.json").write_text(json.dumps(record))
    callback = RealValidationCallback(tmp_path, model=None, eval_freq=10, episodes=3, seed=5)
    callback.resume(20)  # the agent kept was trained to 20 steps: what came after it is not its record
    assert [e["timesteps"] for e in callback.history] == [10, 20] and callback.best == history[1]
    other = RealValidationCallback(tmp_path, model=None, eval_freq=10, episodes=3, seed=6)
    with pytest.raises(ValueError, match=r"with \(episodes, seed, max_steps, sample\) = \(3, 5, 1000, False\), not"):
        other.resume(30)
    drawing = RealValidationCallback(tmp_path, model=None, eval_freq=10, episodes=3, seed=5, sample=True)
    with pytest.raises(ValueError, match=r"\(3, 5, 1000, False\), not \(3, 5, 1000, True\)"):
        drawing.resume(30)


def test_sampling_validation_scores_the_exported_drawing_policy(tiny_model_dir, tmp_path, monkeypatch):
    from dreamgym.agents import real_validation
    from dreamgym.agents.mlp_policy import MlpPolicyAgent

    venv = make_dream_vec_env(n_envs=2, model=str(tiny_model_dir), max_episode_steps=5, seed=0)
    agent = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu")
    scored, real_evaluate = [], real_validation.evaluate
    monkeypatch.setattr(real_validation, "evaluate", lambda spec, **kw: scored.append(spec) or real_evaluate(spec, **kw))  # noqa: E501
    callback = RealValidationCallback(tmp_path / "run", model=str(tiny_model_dir), eval_freq=16, episodes=2, seed=3,
                                      workers=1, max_steps=5, dream=False, sample=True, verbose=0)
    agent.learn(16, callback=callback)
    (entry,) = callback.history

    folder = tmp_path / "run" / "checkpoints" / "step-16-sample"
    assert scored == [str(folder)] and entry["seeds"] == [3, 4] and len(entry["returns"]) == 2
    exported = MlpPolicyAgent.load(folder)
    assert exported.sample and exported.world_model == {"model": str(tiny_model_dir.resolve()), "revision": None}
    saved = load_sb3_agent(tmp_path / "run" / "checkpoints" / "step-16.zip", device="cpu")
    np.testing.assert_allclose(exported.log_std, saved.policy.log_std.detach().numpy())
    obs = np.random.default_rng(0).normal(size=OBS_DIM).astype(np.float32)
    exported.sample = False  # its mean is the saved checkpoint's deterministic action
    np.testing.assert_allclose(exported.act(obs), saved.predict(obs, deterministic=True)[0], atol=1e-5)
    record = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert record["sample"] is True and record["history"][0]["checkpoint"].endswith("step-16.zip")
    venv.close()


def test_every_front_end_refuses_the_same_bad_input_the_same_way(tiny_model):
    """The single env, the Gymnasium vector env and the SB3 VecEnv share one dream and one set of checks."""
    from dreamgym.envs.dream_vector import DreamCarRacingVectorEnv
    from dreamgym.errors import ResetNeededError

    fronts = {
        "single": (DreamCarRacingEnv(tiny_model), np.zeros(3, np.float32)),
        "vector": (DreamCarRacingVectorEnv(2, model=tiny_model), np.zeros((2, 3), np.float32)),
        "sb3": (DreamVecEnv(tiny_model, n_envs=2), np.zeros((2, 3), np.float32)),
    }
    for name, (env, action) in fronts.items():
        # Gymnasium's ResetNeeded, and the RuntimeError the vector env raised before.
        with pytest.raises(ResetNeededError, match="reset"):
            env.step(action)
        assert issubclass(ResetNeededError, (gym.error.ResetNeeded, RuntimeError)), name
    with pytest.raises(ArgumentError, match="num_envs must be an int"):
        DreamCarRacingVectorEnv(True, model=tiny_model)
    with pytest.raises(ArgumentError, match="n_envs must be an int"):
        DreamVecEnv(tiny_model, n_envs=True)


def test_sb3_sub_envs_equal_the_gymnasium_vector_env(tiny_model):
    """Between autoresets the SB3 VecEnv returns what the Gymnasium vector env returns, bit for bit."""
    from dreamgym.envs.dream_vector import DreamCarRacingVectorEnv

    venv = DreamVecEnv(tiny_model, n_envs=3, seed=2, temperature=1.3, max_episode_steps=None)
    envs = DreamCarRacingVectorEnv(3, model=tiny_model, temperature=1.3, max_episode_steps=None)
    np.testing.assert_array_equal(venv.reset(), envs.reset(seed=2)[0])
    for a in _actions(6, 3, seed=4):
        obs, rewards, _, infos = venv.step(a)
        expected, expected_rewards, _, _, info = envs.step(a)
        np.testing.assert_array_equal(obs, expected)
        np.testing.assert_array_equal(rewards, expected_rewards.astype(np.float32))
        assert [i["termination_probability"] for i in infos] == info["termination_probability"].tolist()
    assert venv.get_attr("elapsed_steps") == envs.elapsed_steps.tolist() == [6] * 3
