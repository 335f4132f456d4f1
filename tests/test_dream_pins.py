"""A given model's dream is the same, bit for bit, for the same seed: every front-end pinned to recorded arrays.

``tests/data/dream_pins.npz`` holds what :func:`record` returned at commit 6c63746, before
the SB3 ``DreamVecEnv`` became an adapter over the Gymnasium vector env and before the
dream's step was made faster: the single env (latent, pixels, discrete, temperature,
sampled termination), the Gymnasium vector env, the SB3 VecEnv (autoresets, terminations,
pixels, sub-env resets, an ensemble with dropout and trajectory starts), CMA-ES
(``evaluate_population`` and a short ``train_controller`` run) and
``visualize.dream_open_loop``, on the shipped world model and on tiny ones. Each is compared
with ``np.testing.assert_array_equal``: a refactoring that changes one bit of one step fails.

Float kernels differ between CPUs and torch builds, so the arrays only hold where they were
recorded: the file also holds a *canary*, the same kinds of ops (LSTM cell, linear, softmax,
exp, V's decoder, numpy's float32 log/sin/cos) on fixed inputs, and where this machine
computes the canary differently the pins are skipped, not failed.

Re-record only for an intended change of the dream, and say so in the commit:
``python tests/test_dream_pins.py --write`` (from the repository root).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.cmaes import evaluate_population, train_controller
from dreamgym.agents.controller import LinearController
from dreamgym.hub import default_model_path, load_world_model
from dreamgym.models.random import counter_normal, counter_uniform
from dreamgym.sb3 import DreamVecEnv
from dreamgym.visualize import dream_open_loop

from conftest import make_tiny_model  # tests/ is on the path under pytest, and as the script's folder

PINS = Path(__file__).resolve().parent / "data" / "dream_pins.npz"
DREAM_ID = "dreamgym/DreamCarRacing-v0"


# ------------------------------------------------------------------------------ models
def terminating_model():
    """A tiny model whose every dream step ends the episode."""
    model = make_tiny_model()
    with torch.no_grad():
        model.rnn.head.bias[-1] = 10.0
    return model


def ensemble_model(k: int = 3, bank: int = 12):
    """A tiny ensemble of ``k`` Ms with a bank of trajectory starts for every member."""
    model = make_tiny_model(1, ensemble_size=k)
    cfg = model.config
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for member in model.members:
            member.head.bias[-1] = -3.0  # a few episodes end within the pinned steps
    others = (bank, k - 1, cfg.rnn_hidden)
    model.set_trajectory_starts(
        torch.randn(bank, cfg.z_dim, generator=g), torch.full((bank, cfg.z_dim), -3.0),
        torch.rand(bank, cfg.rnn_hidden, generator=g) * 2 - 1, torch.randn(bank, cfg.rnn_hidden, generator=g),
        member_h=torch.rand(others, generator=g) * 2 - 1, member_c=torch.randn(others, generator=g),
    )  # fmt: skip
    return model


def actions(steps: int, n: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (steps, 3) if n is None else (steps, n, 3)
    return np.random.default_rng(seed).uniform([-1, 0, 0], [1, 1, 1], shape).astype(np.float32)


# ------------------------------------------------------------------------------ recording
def _single(env: gym.Env, steps: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    seen, rewards, ends, probabilities = [obs], [], [], []
    for action in steps:
        obs, reward, terminated, truncated, info = env.step(action)
        seen.append(obs), rewards.append(reward), ends.append((terminated, truncated))
        probabilities.append(info["termination_probability"])
        if terminated or truncated:
            seen.append(env.reset()[0])  # unseeded: the env's Generator goes on
    return {"obs": np.stack(seen), "rewards": np.array(rewards), "ends": np.array(ends),
            "probability": np.array(probabilities)}  # fmt: skip


def _vector(envs, steps: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    obs, _ = envs.reset(seed=seed)
    seen, rewards, ends, probabilities = [obs], [], [], []
    for a in steps:
        obs, reward, terminated, truncated, info = envs.step(a)
        seen.append(obs), rewards.append(reward), ends.append(np.stack([terminated, truncated]))
        probabilities.append(info["termination_probability"])
    return {"obs": np.stack(seen), "rewards": np.stack(rewards), "ends": np.stack(ends),
            "probability": np.stack(probabilities)}  # fmt: skip


def _sb3(venv: DreamVecEnv, steps: np.ndarray) -> dict[str, np.ndarray]:
    seen, rewards, dones, terminal, truncated, probabilities, disagreement = [venv.reset()], [], [], [], [], [], []
    for a in steps:
        obs, reward, done, infos = venv.step(a)
        seen.append(obs), rewards.append(reward), dones.append(done)
        for i, info in enumerate(infos):
            probabilities.append(info["termination_probability"])
            truncated.append(info["TimeLimit.truncated"])
            disagreement.append(info.get("disagreement", np.nan))
            if "terminal_observation" in info:
                terminal.append(np.concatenate([[i], info["terminal_observation"].reshape(-1)]))
    return {"obs": np.stack(seen), "rewards": np.stack(rewards), "dones": np.stack(dones),
            "terminal": np.stack(terminal) if terminal else np.zeros(0), "truncated": np.array(truncated),
            "probability": np.array(probabilities), "disagreement": np.array(disagreement)}  # fmt: skip


def canary() -> dict[str, np.ndarray]:
    """The kinds of float ops the dream is made of, on fixed inputs: equal here means the pins apply."""
    model = make_tiny_model()
    g = torch.Generator().manual_seed(0)
    x, h, c = torch.randn(3, 291, generator=g), torch.rand(3, 256, generator=g), torch.randn(3, 256, generator=g)
    w_ih, w_hh = torch.randn(1024, 291, generator=g) / 16, torch.randn(1024, 256, generator=g) / 16
    b_ih, b_hh = torch.randn(1024, generator=g), torch.randn(1024, generator=g)
    with torch.inference_mode():
        h1, c1 = torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
        head = torch.nn.functional.linear(h1, w_hh[:482], b_hh[:482])
        mixture = torch.softmax(head[:, :160].reshape(3, 32, 5), -1).cumsum(-1)
        frames = model.decode(torch.randn(2, 8, generator=g))
    uniform = counter_uniform(np.array([1, 2**63 + 5], np.uint64), np.array([0, 7], np.uint64), 64)
    return {"lstm": torch.cat([h1, c1]).numpy(), "head": head.numpy(), "mixture": mixture.numpy(),
            "exp": head.clamp(-7, 5).exp().numpy(), "sigmoid": torch.sigmoid(head).numpy(), "frames": frames.numpy(),
            "normal": counter_normal(uniform)}  # fmt: skip


def record() -> dict[str, np.ndarray]:
    """Everything pinned, as flat ``name/field`` arrays."""
    pins: dict[str, dict[str, np.ndarray]] = {"canary": canary()}
    shipped = load_world_model(default_model_path())
    tiny = make_tiny_model()

    env = gym.make(DREAM_ID, model=shipped, max_episode_steps=25)
    pins["single"] = _single(env, actions(60), seed=3)
    env = gym.make(DREAM_ID, model=shipped, obs_mode="pixels", temperature=1.3)
    pins["single_pixels"] = _single(env, actions(6, seed=1), seed=4)
    env = gym.make(DREAM_ID, model=tiny, continuous=False, temperature=0.7, sample_termination=True,
                   max_episode_steps=12)  # fmt: skip
    pins["single_discrete"] = _single(env, np.random.default_rng(2).integers(0, 5, 40), seed=5)
    env = gym.make(DREAM_ID, model=ensemble_model(), start="trajectory", dropout=0.2, ensemble=True,
                   disagreement_penalty=0.5, temperature=1.2)  # fmt: skip
    pins["single_ensemble"] = _single(env, actions(30, seed=3), seed=6)

    envs = gym.make_vec(DREAM_ID, num_envs=3, model=shipped, max_episode_steps=10)
    pins["vector"] = _vector(envs, actions(25, 3, seed=4), seed=7)

    pins["sb3"] = _sb3(DreamVecEnv(shipped, n_envs=3, seed=5, max_episode_steps=10), actions(25, 3, seed=5))
    pins["sb3_terminating"] = _sb3(DreamVecEnv(terminating_model(), n_envs=2, seed=0), actions(4, 2, seed=6))
    venv = DreamVecEnv(ensemble_model(), n_envs=4, seed=8, start="trajectory", dropout=0.2, ensemble=True,
                       disagreement_penalty=0.5, temperature=1.3, sample_termination=True,
                       max_episode_steps=7)  # fmt: skip
    pins["sb3_ensemble"] = _sb3(venv, actions(20, 4, seed=7))
    venv = DreamVecEnv(tiny, n_envs=3, seed=0, obs_mode="pixels", max_episode_steps=2, render_mode="rgb_array",
                       continuous=False)  # fmt: skip
    pins["sb3_pixels"] = _sb3(venv, np.random.default_rng(8).integers(0, 5, (5, 3)))
    (obs, _), = venv.env_method("reset", indices=[1], seed=11)
    step = venv.step(np.array([3, 3, 3]))
    pins["sb3_pixels"] |= {"sub_reset": obs, "after_sub_reset": step[0], "render": venv.render()}

    params = np.random.default_rng(9).normal(0, 0.1, (3, 3 * 288 + 3))
    returns, lengths = evaluate_population(shipped, params, seeds=[1, 2], max_steps=40, return_lengths=True)
    pins["cmaes"] = {"returns": returns, "lengths": lengths}
    params = np.random.default_rng(10).normal(0, 0.5, (4, 3 * 24 + 3))
    returns, lengths = evaluate_population(ensemble_model(), params, seeds=[3, 4, 5], max_steps=30,
                                           return_lengths=True, temperature=1.1, start="trajectory", dropout=0.1,
                                           ensemble=True, disagreement_penalty=0.3)  # fmt: skip
    pins["cmaes_ensemble"] = {"returns": returns, "lengths": lengths}
    with tempfile.TemporaryDirectory() as out:
        best = train_controller(tiny, out=out, generations=2, popsize=4, rollouts=2, max_steps=15, seed=3,
                                eval_every=1, eval_rollouts=2, progress=False)  # fmt: skip
        mean = LinearController.load(Path(out) / "mean")
    pins["train_controller"] = {
        "best": best.flat(), "mean": mean.flat(),
        "scores": np.array([best.training["best_fitness"], mean.training["held_out_return"]]),
    }

    z0 = shipped.start_mu[5].numpy()
    pins["open_loop"] = {"frames": dream_open_loop(shipped, z0, actions(8, seed=11), temperature=1.1, seed=4)}
    return {f"{name}/{field}": np.asarray(value) for name, fields in pins.items() for field, value in fields.items()}


# ------------------------------------------------------------------------------ the test
@pytest.fixture(scope="module")
def pinned() -> dict[str, np.ndarray]:
    with np.load(PINS) as stored:
        pins = dict(stored)
    for field, value in canary().items():
        if not np.array_equal(value, pins[f"canary/{field}"]):
            pytest.skip(f"this machine computes {field!r} differently from the one the dream was pinned on")
    return pins


@pytest.mark.skipif(default_model_path() is None, reason="no default world model in this checkout")
def test_every_front_end_dreams_exactly_what_it_dreamt_before(pinned):
    now = record()
    assert sorted(now) == sorted(pinned)
    differ = [name for name in sorted(pinned) if not np.array_equal(now[name], pinned[name], equal_nan=True)]
    assert not differ, f"the dream changed in {differ}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_dream_pins.py --write   (re-records tests/data/dream_pins.npz)")
    torch.set_num_threads(1)
    PINS.parent.mkdir(exist_ok=True)
    np.savez_compressed(PINS, **record())
    print(f"wrote {PINS}")
