"""DreamCarRacing-v0 and RealCarRacing-v0: registration, spaces, determinism, bad input, rendering."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings

import gymnasium as gym
import numpy as np
import pygame
import pytest
import torch
from gymnasium.envs.box2d.car_racing import CarRacing
from gymnasium.utils.env_checker import check_env

import dreamgym
from dreamgym.envs import DreamCarRacingEnv, RealCarRacingEnv, dynamics
from dreamgym.envs.common import DISCRETE_ACTIONS, upscale
from dreamgym.envs.dynamics import LatentDream
from dreamgym.preprocessing import preprocess_frames

from conftest import make_tiny_model

DREAM_ID = "dreamgym/DreamCarRacing-v0"
REAL_ID = "dreamgym/RealCarRacing-v0"
OBS_DIM = 8 + 16

# Gymnasium warnings check_env is expected to give: checking a wrapped env always warns that
# it is not the unwrapped one, and an env built without gym.make has no spec to re-create it
# in other render modes.
EXPECTED_CHECKER_WARNINGS = (
    "different from the unwrapped",
    "environment not having a spec",
)


def _actions(n, seed=0, continuous=True):
    rng = np.random.default_rng(seed)
    if not continuous:
        return [int(a) for a in rng.integers(0, 5, n)]
    return [rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32) for _ in range(n)]


def _rollout(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    observations, rewards, terminations = [obs], [], []
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        terminations.append(terminated)
    return np.stack(observations), np.array(rewards), np.array(terminations)


def _check_env_strictly(env):
    """check_env, failing on any Gymnasium warning beyond the expected ones."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    unexpected = [
        str(w.message)
        for w in caught
        if "WARN" in str(w.message) and not any(s in str(w.message) for s in EXPECTED_CHECKER_WARNINGS)
    ]
    assert not unexpected, unexpected


# --------------------------------------------------------------- registration
def test_envs_registered():
    for env_id in (DREAM_ID, REAL_ID):
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 1000
        assert spec.reward_threshold == 900


MAKE_SCRIPT = textwrap.dedent(
    """
    import sys
    import gymnasium as gym
    import_first, env_id, path = sys.argv[1] == "1", sys.argv[2], sys.argv[3]
    if import_first:
        import dreamgym
    else:
        assert "dreamgym" not in sys.modules
    env = gym.make(env_id, model=path)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert "dreamgym" in sys.modules
    print("OK", type(env.unwrapped).__name__, obs.shape, env.spec.max_episode_steps)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env_id", "import_first"),
    [("dreamgym:" + DREAM_ID, False), (DREAM_ID, True)],
    ids=["module-prefix-no-import", "plain-id-after-import"],
)
def test_gym_make_in_fresh_process(tiny_model_dir, env_id, import_first):
    result = subprocess.run(
        [sys.executable, "-c", MAKE_SCRIPT, "1" if import_first else "0", env_id, str(tiny_model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"OK DreamCarRacingEnv ({OBS_DIM},) 1000" in result.stdout


def test_gym_make_with_model_instance(tiny_model):
    env = gym.make(DREAM_ID, model=tiny_model)
    assert isinstance(env.unwrapped, DreamCarRacingEnv)
    assert env.unwrapped.world_model is tiny_model
    assert env.unwrapped.max_episode_steps is None  # gym.make's TimeLimit truncates instead
    env.close()


def test_gym_make_without_model_says_a_model_is_needed(monkeypatch):
    # As an install without the shipped default would be.
    monkeypatch.setattr("dreamgym.hub.default_model_path", lambda: None)
    with pytest.raises(ValueError, match="no world model given"):
        gym.make(DREAM_ID)
    with pytest.raises(ValueError, match="no world model given"):
        DreamCarRacingEnv()
    with pytest.raises(ValueError, match="no world model given"):
        RealCarRacingEnv()


# --------------------------------------------------------------- env checker
@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_check_env_dream(tiny_model, obs_mode):
    _check_env_strictly(DreamCarRacingEnv(model=tiny_model, obs_mode=obs_mode))
    # With a render mode and a spec, check_env also renders in every other render mode ("human" too).
    rendered = gym.make(DREAM_ID, model=tiny_model, obs_mode=obs_mode, continuous=False, render_mode="rgb_array")
    _check_env_strictly(rendered.unwrapped)
    rendered.close()
    env = gym.make(DREAM_ID, model=tiny_model, obs_mode=obs_mode)
    _check_env_strictly(env.unwrapped)
    _check_env_strictly(env)


@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_check_env_real(tiny_model, obs_mode):
    env = gym.make(REAL_ID, model=tiny_model, obs_mode=obs_mode)
    _check_env_strictly(env.unwrapped)
    _check_env_strictly(env)
    env.close()


# --------------------------------------------------------------- spaces
def test_latent_observation_space(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Box)
    assert space.shape == (OBS_DIM,) and space.dtype == np.float32
    unbounded = np.finfo(np.float32).max
    np.testing.assert_array_equal(space.low[:8], -unbounded)
    np.testing.assert_array_equal(space.high[:8], unbounded)
    np.testing.assert_array_equal(space.low[8:], -1.0)
    np.testing.assert_array_equal(space.high[8:], 1.0)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[8:], 0.0)  # h starts at zero


def test_pixel_observation_space(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model, obs_mode="pixels")
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8


def test_action_spaces_match_carracing(tiny_model):
    car_continuous = gym.make("CarRacing-v3")
    car_discrete = gym.make("CarRacing-v3", continuous=False)
    try:
        dream = DreamCarRacingEnv(model=tiny_model)
        assert dream.action_space == car_continuous.action_space
        assert dream.action_space.dtype == np.float32
        dream_d = DreamCarRacingEnv(model=tiny_model, continuous=False)
        assert dream_d.action_space == car_discrete.action_space == gym.spaces.Discrete(5)
    finally:
        car_continuous.close()
        car_discrete.close()


@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
@pytest.mark.parametrize("continuous", [True, False])
def test_dream_and_real_spaces_identical(tiny_model, obs_mode, continuous):
    dream = DreamCarRacingEnv(model=tiny_model, obs_mode=obs_mode, continuous=continuous)
    real = RealCarRacingEnv(model=tiny_model, obs_mode=obs_mode, continuous=continuous)
    try:
        assert dream.observation_space == real.observation_space
        assert dream.observation_space.dtype == real.observation_space.dtype
        np.testing.assert_array_equal(dream.observation_space.low, real.observation_space.low)
        np.testing.assert_array_equal(dream.observation_space.high, real.observation_space.high)
        assert dream.action_space == real.action_space
    finally:
        real.close()


# --------------------------------------------------------------- determinism
@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_same_seed_same_trajectory(tiny_model, obs_mode):
    actions = _actions(50)
    a = _rollout(DreamCarRacingEnv(model=tiny_model, obs_mode=obs_mode), 123, actions)
    b = _rollout(DreamCarRacingEnv(model=make_tiny_model(), obs_mode=obs_mode), 123, actions)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not a[2].any()  # the tiny model's termination bias keeps the dream going
    # The dream actually moves.
    assert len({o.tobytes() for o in a[0]}) == 51


def test_same_seed_same_trajectory_in_one_env(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model)
    actions = _actions(50, seed=1)
    first = _rollout(env, 7, actions)
    _rollout(env, 8, actions)  # something else in between
    again = _rollout(env, 7, actions)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)


def test_same_seed_same_trajectory_via_gym_make(tiny_model):
    actions = _actions(50, seed=2)
    a = _rollout(gym.make(DREAM_ID, model=tiny_model), 5, actions)
    b = _rollout(gym.make(DREAM_ID, model=tiny_model), 5, actions)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_different_trajectories(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model)
    actions = _actions(20)
    a, ra, _ = _rollout(env, 1, actions)
    b, rb, _ = _rollout(env, 2, actions)
    assert not np.array_equal(a[0], b[0])  # different start latents
    assert not np.array_equal(a[1:], b[1:])
    assert not np.array_equal(ra, rb)


def test_unseeded_resets_differ(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model)
    actions = _actions(5)
    first = _rollout(env, 9, actions)[0]
    second = _rollout(env, None, actions)[0]
    assert not np.array_equal(first, second)


def test_different_actions_different_trajectories(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model)
    a = _rollout(env, 1, _actions(10, seed=0))[0]
    b = _rollout(env, 1, _actions(10, seed=1))[0]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1:], b[1:])


def test_temperature_changes_the_trajectory(tiny_model):
    actions = _actions(20)
    runs = {
        tau: _rollout(DreamCarRacingEnv(model=tiny_model, temperature=tau), 4, actions)[0] for tau in (0.5, 1.0, 1.5)
    }
    np.testing.assert_array_equal(runs[0.5][0], runs[1.0][0])  # the start does not depend on tau
    assert not np.array_equal(runs[0.5][1:], runs[1.0][1:])
    assert not np.array_equal(runs[1.0][1:], runs[1.5][1:])
    assert DreamCarRacingEnv(model=tiny_model, temperature=1.5).temperature == 1.5


def test_low_temperature_follows_the_most_likely_mean(tiny_model):
    """At tau -> 0 the next z is the mean of M's heaviest mixture component."""
    env = DreamCarRacingEnv(model=tiny_model, temperature=1e-6)
    obs, _ = env.reset(seed=0)
    action = np.array([0.1, 0.5, 0.0], np.float32)
    h, c = torch.zeros(1, 16), torch.zeros(1, 16)
    for _ in range(5):
        z = torch.from_numpy(obs[None, :8])
        obs, *_ = env.step(action)
        with torch.no_grad():
            h, c = _lstm_by_hand(tiny_model, z, action, h, c)
            out = tiny_model.rnn.heads(h)
            expected_z = out.mu.gather(-1, out.log_pi.argmax(-1, keepdim=True)).squeeze(-1)
        np.testing.assert_allclose(obs[8:], h[0].numpy(), atol=1e-5)
        # The noise left is sigma * sqrt(1e-6) * N(0, 1).
        np.testing.assert_allclose(obs[:8], expected_z[0].numpy(), atol=1e-2)


def test_dream_start_comes_from_the_bank(tiny_model):
    with torch.no_grad():
        tiny_model.start_logvar.fill_(-40.0)  # no posterior noise
    env = DreamCarRacingEnv(model=tiny_model)
    bank = tiny_model.start_mu.numpy()
    starts = set()
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        distances = np.abs(bank - obs[:8]).max(axis=1)
        assert distances.min() < 1e-6
        starts.add(int(distances.argmin()))
    assert starts == {0, 1, 2, 3}  # every bank entry gets used


def test_batched_dream_rows_equal_single_dreams(tiny_model):
    """LatentDream draws per-episode random numbers, so a batch reproduces single dreams."""
    keys = np.array([11, 2**63 + 7, 42], dtype=np.uint64)
    actions = torch.from_numpy(np.stack(_actions(10))).float()
    batch = LatentDream(tiny_model, 3, temperature=1.2)
    batch.reset(np.arange(3), keys)
    singles = [LatentDream(tiny_model, 1, temperature=1.2) for _ in range(3)]
    for b, single in enumerate(singles):
        single.reset(np.zeros(1, dtype=np.int64), keys[b : b + 1])
        torch.testing.assert_close(single.z[0], batch.z[b], atol=1e-6, rtol=0)
    for t in range(10):
        out = batch.step(actions[t].expand(3, 3).contiguous())
        for b, single in enumerate(singles):
            s = single.step(actions[t][None])
            torch.testing.assert_close(s.z[0], out.z[b], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(s.reward[0], out.reward[b], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_envs", [1, 3])
def test_noise_drawn_ahead_is_the_noise_drawn_step_by_step(tiny_model, monkeypatch, num_envs):
    """A dream draws the noise of its next steps in one call; what each step gets must not depend on it."""

    def rollout() -> list[torch.Tensor]:
        dream = LatentDream(tiny_model, num_envs, temperature=1.3, sample_termination=True, dropout=0.1)
        dream.reset(np.arange(num_envs), np.arange(1, num_envs + 1, dtype=np.uint64) * np.uint64(7919))
        seen = []
        for t in range(150):
            if t in (5, 6, 70):  # resets mid-block drop what was drawn ahead, of one slot or all
                index = np.array([t % num_envs]) if t != 70 else np.arange(num_envs)
                dream.reset(index, np.full(len(index), 1000 + t, dtype=np.uint64))
            action = torch.full((num_envs, 3), 0.1 * (t % 7))
            out = dream.step(action)
            seen += [out.z.clone(), out.reward.clone(), out.terminated.clone()]
        return seen

    ahead = rollout()
    monkeypatch.setattr(dynamics, "MAX_NOISE_AHEAD", 1)  # one step at a time, as before it drew ahead
    for a, b in zip(ahead, rollout(), strict=True):
        assert torch.equal(a, b)


# --------------------------------------------------------------- rewards and termination
def test_dream_reward_is_m_reward_head(tiny_model):
    with torch.no_grad():
        tiny_model.rnn.head.weight[-2].zero_()
        tiny_model.rnn.head.bias[-2] = -0.1
    env = DreamCarRacingEnv(model=tiny_model)
    _, rewards, _ = _rollout(env, 0, _actions(5))
    np.testing.assert_allclose(rewards, -0.1, rtol=1e-6)
    assert all(isinstance(r, float) for r in rewards.tolist())


def test_dream_terminates_when_m_says_so(tiny_model):
    with torch.no_grad():
        tiny_model.rnn.head.weight[-1].zero_()
        tiny_model.rnn.head.bias[-1] = 10.0
    env = DreamCarRacingEnv(model=tiny_model)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros(3, np.float32))
    assert terminated is True and truncated is False
    assert info["termination_probability"] == pytest.approx(1 / (1 + np.exp(-10)), rel=1e-5)


def test_dream_sample_termination(tiny_model):
    with torch.no_grad():
        tiny_model.rnn.head.weight[-1].zero_()
        tiny_model.rnn.head.bias[-1] = 0.0  # probability 0.5
    env = DreamCarRacingEnv(model=tiny_model, sample_termination=True)
    outcomes = []
    for seed in range(40):
        env.reset(seed=seed)
        outcomes.append(env.step(np.zeros(3, np.float32))[2])
    assert 5 < sum(outcomes) < 35
    # Thresholding at 0.5 never fires on a probability of exactly 0.5.
    env = DreamCarRacingEnv(model=tiny_model, sample_termination=False)
    env.reset(seed=0)
    assert env.step(np.zeros(3, np.float32))[2] is False


# --------------------------------------------------------------- actions
def test_discrete_actions_table():
    assert DISCRETE_ACTIONS.shape == (5, 3) and DISCRETE_ACTIONS.dtype == np.float32
    space = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))
    assert all(space.contains(a) for a in DISCRETE_ACTIONS)


def test_discrete_actions_match_carracing():
    """Discrete action a in CarRacing-v3 drives exactly like DISCRETE_ACTIONS[a] in continuous mode."""
    discrete, continuous = CarRacing(continuous=False), CarRacing(continuous=True)

    def run(env, first, then):
        frame, _ = env.reset(seed=0)
        frames, rewards = [frame], []
        for i in range(12):
            frame, reward, *_ = env.step(first if i < 6 else then)  # gas first so steering shows
            frames.append(frame)
            rewards.append(reward)
        return np.stack(frames), np.array(rewards)

    try:
        for a in range(5):
            frames_d, rewards_d = run(discrete, 3, a)
            frames_c, rewards_c = run(continuous, DISCRETE_ACTIONS[3], DISCRETE_ACTIONS[a])
            np.testing.assert_array_equal(frames_d, frames_c, err_msg=f"discrete action {a}")
            np.testing.assert_array_equal(rewards_d, rewards_c)
            if a:  # the comparison is sensitive: half the action drives differently
                frames_w, _ = run(continuous, DISCRETE_ACTIONS[3], DISCRETE_ACTIONS[a] * 0.5)
                assert not np.array_equal(frames_d, frames_w), f"action {a} check is not sensitive"
    finally:
        discrete.close()
        continuous.close()


def test_dream_discrete_equals_mapped_continuous(tiny_model):
    discrete = _actions(15, continuous=False)
    a = _rollout(DreamCarRacingEnv(model=tiny_model, continuous=False), 3, discrete)
    b = _rollout(DreamCarRacingEnv(model=tiny_model, continuous=True), 3, [DISCRETE_ACTIONS[i] for i in discrete])
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # numpy integer scalars are accepted too
    c = _rollout(DreamCarRacingEnv(model=tiny_model, continuous=False), 3, [np.int64(i) for i in discrete])
    np.testing.assert_array_equal(a[0], c[0])


def test_continuous_actions_are_clipped(tiny_model):
    raw = [np.array([2.0, 1.5, -0.5], np.float32), np.array([-3.0, -1.0, 9.0], np.float32)]
    clipped = [np.clip(a, [-1, 0, 0], [1, 1, 1]).astype(np.float32) for a in raw]
    a = _rollout(DreamCarRacingEnv(model=tiny_model), 0, raw)
    b = _rollout(DreamCarRacingEnv(model=tiny_model), 0, clipped)
    np.testing.assert_array_equal(a[0], b[0])
    # Lists and float64 arrays are accepted.
    c = _rollout(DreamCarRacingEnv(model=tiny_model), 0, [list(map(float, x)) for x in clipped])
    np.testing.assert_array_equal(a[0], c[0])


# --------------------------------------------------------------- bad input
@pytest.fixture(params=["dream", "real"])
def reset_env(request, tiny_model):
    cls = DreamCarRacingEnv if request.param == "dream" else RealCarRacingEnv
    envs = []

    def make(**kwargs):
        env = cls(model=tiny_model, **kwargs)
        env.reset(seed=0)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


@pytest.mark.parametrize(
    "action", [np.zeros(2, np.float32), np.zeros(4, np.float32), np.zeros((1, 3), np.float32), 0.5, []]
)
def test_wrong_action_shape(reset_env, action):
    env = reset_env()
    with pytest.raises(ValueError, match=r"expected a continuous action of shape \(3,\)"):
        env.step(action)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_action(reset_env, bad):
    env = reset_env()
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([0.0, bad, 0.0], np.float32))


@pytest.mark.parametrize("action", [5, -1, 100, np.int64(5)])
def test_discrete_action_out_of_range(reset_env, action):
    env = reset_env(continuous=False)
    with pytest.raises(ValueError, match=r"discrete actions must be in 0\.\.4"):
        env.step(action)


@pytest.mark.parametrize("action", [1.0, np.array([1]), np.array([0.0, 1.0, 0.0]), "1"])
def test_discrete_action_wrong_type(reset_env, action):
    env = reset_env(continuous=False)
    with pytest.raises(ValueError, match="expected discrete integer action"):
        env.step(action)


@pytest.mark.parametrize("cls", [DreamCarRacingEnv, RealCarRacingEnv])
def test_step_before_reset(tiny_model, cls):
    env = cls(model=tiny_model)
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(np.zeros(3, np.float32))
    env.close()


@pytest.mark.parametrize("cls", [DreamCarRacingEnv, RealCarRacingEnv])
def test_unknown_obs_mode(tiny_model, cls):
    with pytest.raises(ValueError, match=r"unknown obs_mode 'rgb'.*latent.*pixels"):
        cls(model=tiny_model, obs_mode="rgb")


@pytest.mark.parametrize("cls", [DreamCarRacingEnv, RealCarRacingEnv])
@pytest.mark.parametrize("mode", ["rgb", "ansi", "state_pixels"])
def test_unknown_render_mode(tiny_model, cls, mode):
    with pytest.raises(ValueError, match=f"unknown render_mode '{mode}'"):
        cls(model=tiny_model, render_mode=mode)


@pytest.mark.parametrize("temperature", [0, 0.0, -1, float("nan"), float("inf")])
def test_bad_temperature(tiny_model, temperature):
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        DreamCarRacingEnv(model=tiny_model, temperature=temperature)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        gym.make(DREAM_ID, model=tiny_model, temperature=temperature)


@pytest.mark.parametrize("cls", [DreamCarRacingEnv, RealCarRacingEnv])
@pytest.mark.parametrize("steps", [0, -3, 2.5, "10"])
def test_bad_max_episode_steps(tiny_model, cls, steps):
    with pytest.raises(ValueError, match="max_episode_steps must be"):
        cls(model=tiny_model, max_episode_steps=steps)


@pytest.mark.parametrize("env_id", [DREAM_ID, REAL_ID])
@pytest.mark.parametrize("path", ["./nope", "/tmp/does/not/exist"])
def test_model_path_that_does_not_exist(env_id, path):
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        gym.make(env_id, model=path)
    assert path in str(info.value)


@pytest.mark.parametrize("cls", [DreamCarRacingEnv, RealCarRacingEnv])
def test_rejected_action_does_not_count_as_a_step(tiny_model, cls):
    env = cls(model=tiny_model, max_episode_steps=3)
    env.reset(seed=0)
    for _ in range(3):
        with pytest.raises(ValueError):
            env.step(np.zeros(2, np.float32))
    truncations = [env.step(np.zeros(3, np.float32))[3] for _ in range(3)]
    env.close()
    assert truncations == [False, False, True]


# --------------------------------------------------------------- truncation
def test_direct_construction_truncates(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model, max_episode_steps=5)
    for _ in range(2):  # and again after a reset
        env.reset(seed=0)
        truncations = [env.step(np.zeros(3, np.float32))[3] for _ in range(5)]
        assert truncations == [False] * 4 + [True]


def test_direct_construction_has_no_horizon_unless_given(tiny_model):
    # As CartPole: the 1000-step horizon belongs to the registration (gym.make's TimeLimit).
    assert DreamCarRacingEnv(model=tiny_model).max_episode_steps is None
    assert gym.make(DREAM_ID, model=tiny_model).spec.max_episode_steps == 1000


def test_no_horizon_never_truncates(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model, max_episode_steps=None)
    env.reset(seed=0)
    assert not any(env.step(np.zeros(3, np.float32))[3] for _ in range(30))


def test_gym_make_truncates(tiny_model):
    env = gym.make(DREAM_ID, model=tiny_model, max_episode_steps=5)
    assert env.spec.max_episode_steps == 5
    env.reset(seed=0)
    truncations = [env.step(env.action_space.sample())[3] for _ in range(5)]
    assert truncations == [False] * 4 + [True]


def test_real_env_truncates(tiny_model):
    env = RealCarRacingEnv(model=tiny_model, max_episode_steps=3)
    env.reset(seed=0)
    truncations = [env.step(np.array([0, 0.3, 0], np.float32))[3] for _ in range(3)]
    assert truncations == [False, False, True]
    env.close()


# --------------------------------------------------------------- rendering
def test_render_rgb_array(tiny_model):
    env = DreamCarRacingEnv(model=tiny_model, render_mode="rgb_array")
    assert env.render() is None  # nothing to show before reset
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
    env.step(np.array([0.0, 1.0, 0.0], np.float32))
    frame2 = env.render()
    assert frame2.shape == (256, 256, 3) and frame2.dtype == np.uint8
    assert not np.array_equal(frame, frame2)


def test_render_shows_the_decoded_latent(tiny_model):
    """A latent-mode env renders the frame a pixel-mode env observes, upscaled 4x."""
    latent = DreamCarRacingEnv(model=tiny_model, render_mode="rgb_array")
    pixels = DreamCarRacingEnv(model=tiny_model, obs_mode="pixels", render_mode="rgb_array")
    actions = _actions(4)
    obs, _ = pixels.reset(seed=6)
    latent.reset(seed=6)
    for t in range(len(actions) + 1):
        np.testing.assert_array_equal(latent.render(), upscale(obs))
        np.testing.assert_array_equal(pixels.render(), upscale(obs))
        np.testing.assert_array_equal(latent.render()[::4, ::4], obs)
        if t < len(actions):
            obs, *_ = pixels.step(actions[t])
            latent.step(actions[t])


def test_render_human_headless(tiny_model):
    env = gym.make(DREAM_ID, model=tiny_model, render_mode="human", obs_mode="pixels")
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    assert env.render() is None  # human mode draws into a window and returns nothing
    # The window shows the 64x64 dream upscaled 4x, and it is not blank.
    window = pygame.display.get_surface()
    assert window.get_size() == (256, 256) and pygame.surfarray.array3d(window).std() > 0
    env.close()
    assert not pygame.display.get_init()  # close() takes the window down


def test_real_render_rgb_array(tiny_model):
    env = RealCarRacingEnv(model=tiny_model, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env.close()


def test_real_render_human_headless(tiny_model):
    env = RealCarRacingEnv(model=tiny_model, render_mode="human")
    env.reset(seed=0)
    obs, *_ = env.step(np.array([0, 0.5, 0], np.float32))
    assert obs.shape == env.observation_space.shape and env.render() is None
    # CarRacing's own window, drawn on every step in human mode.
    window = pygame.display.get_surface()
    assert window.get_size() == (1000, 800) and pygame.surfarray.array3d(window).std() > 0
    env.close()
    assert not pygame.display.get_init()


# --------------------------------------------------------------- the real env
def _encode_by_hand(model, frame):
    small = preprocess_frames(frame, 64, crop_dashboard=True)
    images = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        mu, _ = model.vae.encode(images)
    return mu, small


def _lstm_by_hand(model, z, action, h, c):
    with torch.no_grad():
        x = torch.cat([z, torch.as_tensor(action, dtype=torch.float32)[None]], dim=-1)[:, None]
        _, (h, c) = model.rnn.lstm(x, (h[None], c[None]))
    return h[0], c[0]


@pytest.mark.parametrize("continuous", [True, False])
def test_real_episode_latent(tiny_model, continuous):
    env = RealCarRacingEnv(model=tiny_model, continuous=continuous)
    car = CarRacing(continuous=continuous)  # the real env, side by side
    if continuous:
        actions = [np.array([0.3 * np.sin(t), 0.6, 0.0], np.float32) for t in range(10)]
    else:
        actions = [3, 3, 3, 1, 1, 3, 2, 2, 0, 4]
    try:
        obs, _ = env.reset(seed=17)
        frame, _ = car.reset(seed=17)
        z, _ = _encode_by_hand(tiny_model, frame)
        h = c = torch.zeros(1, 16)
        np.testing.assert_allclose(obs, torch.cat([z[0], h[0]]).numpy(), rtol=1e-5, atol=1e-6)
        rewards, hs = [], [obs[8:]]
        for action in actions:
            obs, reward, terminated, truncated, _ = env.step(action)
            frame, real_reward, real_terminated, _, _ = car.step(action)
            mapped = action if continuous else DISCRETE_ACTIONS[action]
            h, c = _lstm_by_hand(tiny_model, z, mapped, h, c)
            z, _ = _encode_by_hand(tiny_model, frame)
            assert obs.shape == (OBS_DIM,) and obs.dtype == np.float32
            assert env.observation_space.contains(obs)
            np.testing.assert_allclose(obs, torch.cat([z[0], h[0]]).numpy(), rtol=1e-5, atol=1e-6)
            assert reward == real_reward and isinstance(reward, float)
            assert terminated == real_terminated is False and truncated is False
            rewards.append(reward)
            hs.append(obs[8:])
    finally:
        env.close()
        car.close()
    # CarRacing's rewards: -0.1 per frame, plus tile bonuses.
    assert any(r == pytest.approx(-0.1) for r in rewards)
    assert all(r > -1 for r in rewards)
    # M's hidden state moves with every step.
    assert not np.any(hs[0])
    assert all(not np.array_equal(a, b) for a, b in zip(hs[:-1], hs[1:], strict=True))


def test_real_episode_pixels(tiny_model):
    env = gym.make(REAL_ID, model=tiny_model, obs_mode="pixels", max_episode_steps=5)
    car = CarRacing()
    try:
        obs, info = env.reset(seed=3)
        frame, _ = car.reset(seed=3)
        for t in range(5):
            z, small = _encode_by_hand(tiny_model, frame)
            np.testing.assert_array_equal(info["frame"], small)
            assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
            np.testing.assert_array_equal(obs, tiny_model.decode(z)[0].numpy())
            action = np.array([0.0, 0.5, 0.0], np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            frame, real_reward, *_ = car.step(action)
            assert reward == real_reward
            assert truncated is (t == 4)
    finally:
        env.close()
        car.close()


def test_real_env_same_seed_same_episode(tiny_model):
    actions = _actions(5, seed=3)
    env = RealCarRacingEnv(model=tiny_model)
    try:
        a = _rollout(env, 2, actions)
        b = _rollout(env, 2, actions)
    finally:
        env.close()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_package_exports():
    from dreamgym.hub import load_world_model
    from dreamgym.models.world_model import WorldModel
    from dreamgym.version import __version__

    # The torch-backed names load on first use, and are the very objects of their modules.
    assert dreamgym.WorldModel is WorldModel and dreamgym.load_world_model is load_world_model
    assert dreamgym.__version__ == __version__ and __version__.count(".") == 2
    assert all(hasattr(dreamgym, name) for name in dreamgym.__all__)
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        dreamgym.NoSuchThing  # noqa: B018
