"""The batched DreamCarRacing-v0 VectorEnv: equality with single envs, autoreset, truncation, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import dreamgym  # noqa: F401
from dreamgym.envs import DreamCarRacingEnv
from dreamgym.envs.dream_vector import DreamCarRacingVectorEnv

from conftest import make_tiny_model

DREAM_ID = "dreamgym/DreamCarRacing-v0"


def random_actions(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform([-1, 0, 0], [1, 1, 1], (n, 3)).astype(np.float32)


def test_make_vec_uses_the_batched_entry_point_with_the_registered_horizon(tiny_model):
    envs = gym.make_vec(DREAM_ID, num_envs=3, model=tiny_model)
    assert isinstance(envs.unwrapped, DreamCarRacingVectorEnv)
    assert envs.unwrapped.max_episode_steps == 1000
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_observation_space == DreamCarRacingEnv(model=tiny_model).observation_space
    assert envs.observation_space.shape == (3, 24)
    assert envs.action_space.shape == (3, 3)


@pytest.mark.parametrize("obs_mode", ["latent", "pixels"])
def test_vector_matches_single_envs_for_the_same_seeds_and_actions(tiny_model, obs_mode):
    n, seed = 5, 42
    envs = DreamCarRacingVectorEnv(n, model=tiny_model, obs_mode=obs_mode, temperature=1.2)
    singles = [DreamCarRacingEnv(model=tiny_model, obs_mode=obs_mode, temperature=1.2) for _ in range(n)]
    obs, _ = envs.reset(seed=seed)
    single_obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(singles)])
    np.testing.assert_array_equal(obs, single_obs)
    rng = np.random.default_rng(0)
    for _ in range(25):
        actions = random_actions(rng, n)
        obs, rewards, terminations, _, _ = envs.step(actions)
        results = [env.step(actions[i]) for i, env in enumerate(singles)]
        atol = 1e-4 if obs_mode == "latent" else 1  # pixels may round differently by one level
        np.testing.assert_allclose(obs, np.stack([r[0] for r in results]), atol=atol)
        np.testing.assert_allclose(rewards, [r[1] for r in results], atol=1e-5)
        np.testing.assert_array_equal(terminations, [r[2] for r in results])


def test_seeded_resets_are_reproducible_and_seeds_differ(tiny_model):
    def run(seed):
        envs = DreamCarRacingVectorEnv(3, model=tiny_model)
        first, _ = envs.reset(seed=seed)
        rng = np.random.default_rng(1)
        return first, [envs.step(random_actions(rng, 3))[0] for _ in range(10)]

    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a[0], b[0])
    for x, y in zip(a[1], b[1], strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1][-1], c[1][-1])


def test_truncation_then_next_step_autoreset(tiny_model):
    envs = DreamCarRacingVectorEnv(2, model=tiny_model, max_episode_steps=3)
    envs.reset(seed=0)
    actions = np.zeros((2, 3), np.float32)
    for step in range(1, 4):
        obs, rewards, terminations, truncations, _ = envs.step(actions)
        assert list(truncations) == [step == 3] * 2
    # The step after the end resets: reward 0, no done flags, the obs of a fresh episode (h = 0).
    obs, rewards, terminations, truncations, _ = envs.step(actions)
    assert rewards.tolist() == [0.0, 0.0] and not terminations.any() and not truncations.any()
    np.testing.assert_array_equal(obs[:, 8:], 0.0)
    _, _, _, truncations, _ = envs.step(actions)
    assert not truncations.any()


def test_termination_from_m_and_autoreset_only_of_that_env(tiny_model):
    model = make_tiny_model()
    with torch.no_grad():
        model.rnn.head.bias[-1] = 10.0  # M is sure every episode ends at once
    envs = DreamCarRacingVectorEnv(3, model=model)
    envs.reset(seed=0)
    _, _, terminations, _, info = envs.step(np.zeros((3, 3), np.float32))
    assert terminations.all() and (info["termination_probability"] > 0.99).all()
    _, rewards, terminations, _, _ = envs.step(np.zeros((3, 3), np.float32))
    assert not terminations.any() and (rewards == 0).all()


def test_per_env_seed_list(tiny_model):
    envs = DreamCarRacingVectorEnv(2, model=tiny_model)
    obs, _ = envs.reset(seed=[3, 9])
    single = DreamCarRacingEnv(model=tiny_model)
    np.testing.assert_array_equal(obs[1], single.reset(seed=9)[0])
    with pytest.raises(ValueError, match="expected 2 seeds"):
        envs.reset(seed=[1, 2, 3])


def test_bad_input_is_refused(tiny_model):
    envs = DreamCarRacingVectorEnv(2, model=tiny_model)
    with pytest.raises(RuntimeError, match="reset"):
        envs.step(np.zeros((2, 3), np.float32))
    envs.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        envs.step(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        envs.step(np.full((2, 3), np.nan, np.float32))
    for bad in (dict(num_envs=0), dict(obs_mode="rgb"), dict(render_mode="human"), dict(temperature=0)):
        with pytest.raises(ValueError):
            DreamCarRacingVectorEnv(**{"num_envs": 2, "model": tiny_model, **bad})


def test_discrete_actions_and_render(tiny_model):
    envs = DreamCarRacingVectorEnv(2, model=tiny_model, continuous=False, render_mode="rgb_array")
    envs.reset(seed=0)
    envs.step(np.array([1, 4]))
    frames = envs.render()
    assert len(frames) == 2 and frames[0].shape == (256, 256, 3) and frames[0].dtype == np.uint8
    with pytest.raises(ValueError, match="discrete"):
        envs.step(np.array([0.5, 1.0]))


def test_same_step_autoreset_restarts_at_once_and_reports_the_last_observation(tiny_model):
    steps = 3
    same = DreamCarRacingVectorEnv(2, model=tiny_model, max_episode_steps=steps, autoreset_mode="SameStep")
    assert same.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert DreamCarRacingVectorEnv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # the class keeps its own
    reference = DreamCarRacingVectorEnv(2, model=tiny_model, max_episode_steps=None)
    same.reset(seed=4), reference.reset(seed=4)
    rng = np.random.default_rng(2)
    for step in range(1, steps + 1):
        actions = random_actions(rng, 2)
        obs, rewards, terminations, truncations, info = same.step(actions)
        expected, expected_rewards, *_ = reference.step(actions)
        np.testing.assert_array_equal(rewards, expected_rewards)
        assert list(truncations) == [step == steps] * 2 and not terminations.any()
    assert info["_final_obs"].all() and info["final_info"]["_termination_probability"].all()
    for i in range(2):
        np.testing.assert_array_equal(info["final_obs"][i], expected[i])
    # Already the next episode's first observation: the single env's second (unseeded) reset.
    for i in range(2):
        single = DreamCarRacingEnv(model=tiny_model)
        single.reset(seed=4 + i)
        np.testing.assert_array_equal(obs[i], single.reset()[0])
    _, rewards, _, truncations, info = same.step(random_actions(rng, 2))
    assert not truncations.any() and (rewards != 0).all() and "final_obs" not in info


def test_same_step_autoreset_of_only_the_sub_envs_that_ended(tiny_model):
    model = make_tiny_model()
    with torch.no_grad():
        model.rnn.head.bias[-1] = 10.0
    envs = DreamCarRacingVectorEnv(3, model=model, autoreset_mode=AutoresetMode.SAME_STEP, max_episode_steps=None)
    envs.reset(seed=0)
    obs, _, terminations, _, info = envs.step(np.zeros((3, 3), np.float32))
    assert terminations.all() and all(not np.array_equal(info["final_obs"][i], obs[i]) for i in range(3))
    np.testing.assert_array_equal(obs[:, 8:], 0.0)  # fresh episodes: h = 0


def test_a_reset_mask_resets_only_the_chosen_sub_envs(tiny_model):
    envs = DreamCarRacingVectorEnv(3, model=tiny_model)
    with pytest.raises(gym.error.ResetNeeded, match="reset every sub-env once"):
        envs.reset(options={"reset_mask": np.array([True, False, False])})
    before, _ = envs.reset(seed=0)
    rng = np.random.default_rng(3)
    for _ in range(2):
        before, *_ = envs.step(random_actions(rng, 3))
    obs, _ = envs.reset(seed=[None, 9, 5], options={"reset_mask": np.array([False, True, False])})
    np.testing.assert_array_equal(obs[[0, 2]], before[[0, 2]])  # seed 5 of an unchosen sub-env is ignored
    np.testing.assert_array_equal(obs[1], DreamCarRacingEnv(model=tiny_model).reset(seed=9)[0])
    assert envs.elapsed_steps.tolist() == [2, 0, 2]
    for bad in (np.array([1, 0, 0]), np.array([True, False]), np.zeros(3, bool)):
        with pytest.raises(ValueError, match="reset_mask"):
            envs.reset(options={"reset_mask": bad})


def test_autoreset_mode_is_checked(tiny_model):
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        DreamCarRacingVectorEnv(2, model=tiny_model, autoreset_mode=AutoresetMode.DISABLED)
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        DreamCarRacingVectorEnv(2, model=tiny_model, autoreset_mode="same")
