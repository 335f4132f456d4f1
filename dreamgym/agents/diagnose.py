"""Where the dream lies to an agent: M's predictions checked along the agent's own real trajectories.

An agent trained in the dream can learn to exploit it: its dream return climbs while its real
return falls. :func:`diagnose` drives the agent in ``RealCarRacing-v0`` and asks, along those
real trajectories, three questions:

1. **Teacher-forced**: fed the real ``z`` and actions, does M predict the real reward and
   termination of each step? (M's ``(h, c)`` from
   :func:`~dreamgym.envs.observer.teacher_forced_states`, read by ``rnn.heads``.)
2. **Open-loop**: branched from a real state ``(z, h, c)`` and left to dream ``K`` steps on
   its own (M samples its own ``z``, the agent acts on the dream's observations), is the
   dream's ``K``-step return the one the real car got from the same state?
3. **Situations**: are the situations the agent meets in the dream (first-frame dream
   episodes with the same seeds) those it meets in the real env? On-road time, reward per
   step and episode length, with one road classifier (:func:`road_fraction`) applied the
   same way to V's decoding of the dream's ``z`` and of the real ``z``.

Results go to ``diagnose.json``, a plot ``diagnose.png`` and a printed table
(:func:`format_table`). Episode ``i`` uses seed ``seed + i`` in both envs, so the real
returns are those ``dreamgym evaluate`` reports for the same seeds and ``max_steps``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from dreamgym.agents.evaluate import DREAM_ENV_ID, REAL_ENV_ID, make_dream_env, single_thread
from dreamgym.agents.specs import (
    check_agent_fits,
    describe_model,
    load_agent,
    parse_agent_spec,
    resolve_agent_model,
    start_episode,
)
from dreamgym.envs.common import continuous_actions
from dreamgym.envs.dynamics import LatentDream, check_temperature
from dreamgym.envs.observer import teacher_forced_states
from dreamgym.files import atomic_write_json
from dreamgym.hub import load_world_model
from dreamgym.preprocessing import CARRACING_FRAME_SHAPE, DASHBOARD_ROWS
from dreamgym.validation import check_int
from dreamgym.version import __version__

__all__ = [
    "DIAGNOSE_FILE",
    "PLOT_FILE",
    "ZOOM_STEPS",
    "DreamEpisode",
    "RealEpisode",
    "branch_keys",
    "branch_starts",
    "car_box",
    "diagnose",
    "drive_dream",
    "drive_real",
    "format_table",
    "on_road",
    "open_loop_returns",
    "plot_diagnosis",
    "road_fraction",
    "teacher_forced",
]

DIAGNOSE_FILE = "diagnose.json"
PLOT_FILE = "diagnose.png"

# Where CarRacing draws the car in its 96x96 frame (rows, columns; end exclusive). The
# camera keeps the car at this place whatever the zoom or heading.
CAR_ROWS_96 = (66, 78)
CAR_COLS_96 = (45, 51)
# Pixels this far around the car's box are the ones tested for road.
RING = 3
# CarRacing zooms in over its first second (50 steps): until then the road is a line a pixel
# or two wide, too thin to cover the pixels around the car even when the car is on it.
ZOOM_STEPS = 50
ON_ROAD_THRESHOLD = 0.5


# ------------------------------------------------------------------ road classifier
def car_box(image_size: int = 64, crop_dashboard: bool = True) -> tuple[slice, slice]:
    """The car's rows and columns in a frame made by :func:`~dreamgym.preprocessing.preprocess_frames`.

    Args:
        image_size: side of the preprocessed frame.
        crop_dashboard: whether the dashboard strip was cut before resizing.
    """
    height = CARRACING_FRAME_SHAPE[0] - (DASHBOARD_ROWS if crop_dashboard else 0)
    row_scale, col_scale = image_size / height, image_size / CARRACING_FRAME_SHAPE[1]
    rows = slice(math.floor(CAR_ROWS_96[0] * row_scale), math.ceil(CAR_ROWS_96[1] * row_scale))
    cols = slice(math.floor(CAR_COLS_96[0] * col_scale), math.ceil(CAR_COLS_96[1] * col_scale))
    return rows, cols


def _ring_mask(image_size: int, crop_dashboard: bool) -> np.ndarray:
    rows, cols = car_box(image_size, crop_dashboard)
    mask = np.zeros((image_size, image_size), dtype=bool)
    mask[max(rows.start - RING, 0) : rows.stop + RING, max(cols.start - RING, 0) : cols.stop + RING] = True
    mask[rows, cols] = False  # the car's own red pixels are neither road nor grass
    return mask


def road_fraction(frames: np.ndarray, crop_dashboard: bool = True) -> np.ndarray | float:
    """The fraction of road pixels just around the car, per frame.

    Road is grey (R, G and B within 20 of each other, not black); grass is green and kerbs
    red or white, so neither counts. The test is the same for real frames and V's
    decodings, so that the dream and the real env are measured alike.

    Args:
        frames: uint8 preprocessed frames, (N, S, S, 3) or (S, S, 3).
        crop_dashboard: whether the frames were made with the dashboard cut (the world
            model's ``config.crop_dashboard``).

    Returns:
        float array (N,) in [0, 1] (a float for a single frame).

    Raises:
        ValueError: frames that are not uint8 square RGB images.
    """
    frames = np.asarray(frames)
    single = frames.ndim == 3
    if single:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"expected uint8 frames of shape (N, S, S, 3) or (S, S, 3), got {frames.dtype} {frames.shape}")
    mask = _ring_mask(frames.shape[1], crop_dashboard)
    pixels = frames[:, mask].astype(np.int16)  # (N, P, 3)
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    grey = (spread < 20) & (pixels.min(axis=-1) > 60)
    fraction = grey.mean(axis=1)
    return float(fraction[0]) if single else fraction


def on_road(frames: np.ndarray, crop_dashboard: bool = True) -> np.ndarray | bool:
    """Whether the car is on the road in each frame: at least half the pixels around it are road.

    Args:
        frames: as :func:`road_fraction`.
        crop_dashboard: as :func:`road_fraction`.

    Returns:
        bool array (N,) (a bool for a single frame).
    """
    fraction = road_fraction(frames, crop_dashboard)
    return bool(fraction >= ON_ROAD_THRESHOLD) if np.ndim(fraction) == 0 else fraction >= ON_ROAD_THRESHOLD


def _decode(world_model: Any, z: np.ndarray, batch: int = 256) -> np.ndarray:
    """V's decoding of latents (N, z_dim) as uint8 frames, in batches to bound memory."""
    if len(z) == 0:
        size = world_model.config.image_size
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    parts = [world_model.decode(torch.from_numpy(z[i : i + batch])).cpu().numpy() for i in range(0, len(z), batch)]
    return np.concatenate(parts)


# ------------------------------------------------------------------------ episodes
@dataclass
class RealEpisode:
    """One real episode as the agent lived it; ``T`` steps.

    Row ``t`` of ``z``, ``h``, ``c`` and ``frames`` is the state in which action ``t`` was
    taken (row ``T``: the final state).
    """

    seed: int
    z: np.ndarray  # (T+1, z_dim): V's means
    h: np.ndarray  # (T+1, hidden): M's state, as the env's observer held it
    c: np.ndarray  # (T+1, hidden)
    frames: np.ndarray  # (T+1, S, S, 3): the real preprocessed frames
    actions: np.ndarray  # (T, 3): the continuous actions the env applied
    rewards: np.ndarray  # (T,)
    terminated: bool

    @property
    def length(self) -> int:
        return len(self.rewards)


@dataclass
class DreamEpisode:
    """One dream episode: ``z`` (T, z_dim) where each action was taken, the rewards (T,)."""

    seed: int
    z: np.ndarray
    rewards: np.ndarray
    terminated: bool

    @property
    def length(self) -> int:
        return len(self.rewards)


def _row(tensor: torch.Tensor) -> np.ndarray:
    return tensor[0].detach().cpu().numpy().astype(np.float32)


def drive_real(env: Any, act: Callable[[np.ndarray], np.ndarray], seed: int) -> RealEpisode:
    """Drive one episode of ``RealCarRacing-v0`` (reset with ``seed``) and record it.

    The agent is driven exactly as :func:`~dreamgym.agents.evaluate.run_episode` drives it,
    so the return is the one ``dreamgym evaluate`` reports.

    Args:
        env: a ``dreamgym/RealCarRacing-v0`` env (wrapped or not) with latent observations.
        act: the agent, ``act(obs) -> action``.
        seed: the episode's seed.
    """
    base = env.unwrapped
    observer = base.observer
    zs, hs, cs, frames, actions, rewards = [], [], [], [], [], []
    start_episode(act, seed)
    obs, _ = env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        zs.append(_row(observer.z))
        hs.append(_row(observer.h))
        cs.append(_row(observer.c))
        frames.append(observer.frame.copy())
        action = act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        # The action M was stepped with: the env's clipped (or discrete-mapped) one.
        actions.append(continuous_actions(action, base.continuous))
        rewards.append(float(reward))
    zs.append(_row(observer.z))
    hs.append(_row(observer.h))
    cs.append(_row(observer.c))
    frames.append(observer.frame.copy())
    return RealEpisode(
        seed=seed, z=np.stack(zs), h=np.stack(hs), c=np.stack(cs), frames=np.stack(frames),
        actions=np.stack(actions).astype(np.float32), rewards=np.asarray(rewards, dtype=np.float64),
        terminated=bool(terminated),
    )


def drive_dream(env: Any, act: Callable[[np.ndarray], np.ndarray], seed: int) -> DreamEpisode:
    """Drive one episode of ``DreamCarRacing-v0`` (reset with ``seed``) and record the latents it visits.

    Args:
        env: a ``dreamgym/DreamCarRacing-v0`` env (wrapped or not) with latent observations.
        act: the agent, ``act(obs) -> action``.
        seed: the episode's seed.
    """
    dream = env.unwrapped.dream
    zs, rewards = [], []
    start_episode(act, seed)
    obs, _ = env.reset(seed=seed)
    terminated = truncated = False
    while not (terminated or truncated):
        zs.append(_row(dream.z))
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        rewards.append(float(reward))
    return DreamEpisode(seed, np.stack(zs), np.asarray(rewards, dtype=np.float64), bool(terminated))


# ----------------------------------------------------------------------- statistics
def _number(value: Any) -> float | None:
    """A finite float, or None for what is undefined (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: Sequence[float] | np.ndarray) -> float | None:
    values = np.asarray(values, dtype=np.float64)
    return _number(values.mean()) if values.size else None


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson's r; None with fewer than two points or a constant side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return None
    return _number(np.corrcoef(a, b)[0, 1])


def _road_labels(fraction: np.ndarray | float, skip: int) -> list[bool | None]:
    """On-road per step of a batch's ``road_fraction``; None for the zoom-in steps, which cannot be classified."""
    return [None if t < skip else bool(f >= ON_ROAD_THRESHOLD) for t, f in enumerate(np.atleast_1d(fraction))]


def _on_road_share(labels: Sequence[bool | None]) -> float | None:
    known = [label for label in labels if label is not None]
    return float(np.mean(known)) if known else None


def teacher_forced(world_model: Any, episode: RealEpisode) -> dict[str, np.ndarray]:
    """M's reward and termination predictions for each step of a real episode, fed the real ``z`` and actions.

    Args:
        world_model: the V + M bundle.
        episode: the real episode.

    Returns:
        ``reward`` (T,) and ``termination_probability`` (T,): M's heads on the state after
        step ``t``, which is what the dream reads as step ``t``'s outcome.
    """
    device = world_model.device
    z = torch.from_numpy(episode.z).to(device)
    actions = torch.from_numpy(episode.actions).to(device)
    with torch.no_grad():
        h, _ = teacher_forced_states(world_model.rnn, z, actions)
        out = world_model.rnn.heads(h[1:])
    return {
        "reward": out.reward.double().cpu().numpy(),
        "termination_probability": torch.sigmoid(out.termination_logit).double().cpu().numpy(),
    }


def branch_starts(length: int, terminated: bool, horizon: int, every: int) -> list[int]:
    """The steps of a real episode to branch a ``horizon``-step dream from.

    Every ``every`` steps, as long as the real episode shows what happened in the next
    ``horizon`` steps: it either lasted that long or ended by termination (a truncated
    episode says nothing about the steps it cut off).
    """
    return [t for t in range(0, length, every) if terminated or t + horizon <= length]


def branch_keys(seed: int, horizon: int, starts: Sequence[int]) -> np.ndarray:
    """The dream RNG keys of the branches from ``starts`` of the real episode of ``seed``.

    One per branch, and the same for the same arguments.
    """
    return np.array(
        [np.random.default_rng([seed, horizon, t]).integers(0, 2**64, dtype=np.uint64) for t in starts],
        dtype=np.uint64,
    )


def open_loop_returns(
    world_model: Any, predict: Callable[[np.ndarray], np.ndarray], episode: RealEpisode, starts: Sequence[int],
    horizon: int, temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Dream ``horizon`` steps from the real states at ``starts``, the agent acting on the dream's observations.

    All branches of the episode run as one batch of :class:`~dreamgym.envs.dynamics.LatentDream`;
    each branch's random stream is keyed by :func:`branch_keys`, so the result is
    reproducible and the same as a single dream with that key. A branch stops accumulating
    reward when the dream terminates it.

    Args:
        world_model: the V + M bundle.
        predict: the agent on a batch, ``predict(obs (B, obs_dim)) -> actions (B, 3)``.
        episode: the real episode to branch from.
        starts: steps of ``episode``.
        horizon: dream steps per branch.
        temperature: the dream's temperature.

    Returns:
        the dream returns (B,) and lengths (B,).
    """
    n = len(starts)
    index = np.arange(n)
    dream = LatentDream(world_model, n, temperature)
    dream.reset(index, branch_keys(episode.seed, horizon, starts))
    rows = np.asarray(starts, dtype=np.int64)
    dream.set_state(index, episode.z[rows], episode.h[rows], episode.c[rows])
    device = world_model.device
    z, h = dream.z.cpu().numpy(), dream.h.cpu().numpy()
    returns, lengths = np.zeros(n), np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    for _ in range(horizon):
        actions = continuous_actions(predict(np.concatenate([z, h], axis=1)), True, n)
        out = dream.step(torch.from_numpy(actions).to(device))
        returns += np.where(alive, out.reward.double().cpu().numpy(), 0.0)
        lengths += alive
        alive &= ~out.terminated.cpu().numpy()
        if not alive.any():
            break
        z, h = out.z.cpu().numpy(), out.h.cpu().numpy()
    return returns, lengths


def _batch_predict(loaded: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The agent on a batch of observations; controllers and SB3 models share ``predict``'s signature."""

    def predict(obs: np.ndarray) -> np.ndarray:
        actions, _ = loaded.predict(obs.astype(np.float32), deterministic=True)
        return np.asarray(actions, dtype=np.float32)

    return predict


# ------------------------------------------------------------------------- summary
def _teacher_forced_summary(
    real: Sequence[RealEpisode], predictions: Sequence[dict[str, np.ndarray]], road: Sequence[list[bool | None]]
) -> dict[str, Any]:
    rewards = np.concatenate([ep.rewards for ep in real])
    predicted = np.concatenate([p["reward"] for p in predictions])
    probability = np.concatenate([p["termination_probability"] for p in predictions])
    error = predicted - rewards
    labels = [label for labels in road for label in labels]
    by_road: dict[str, Any] = {}
    for name, wanted in (("on_road", True), ("off_road", False)):
        picked = np.array([label is wanted for label in labels], dtype=bool)
        by_road[name] = {"steps": int(picked.sum()), "reward_bias": _mean(error[picked])}
    # Termination: the real end (if the episode terminated) against M's probability there,
    # and every other step where M's probability would have ended the dream.
    at_end, false_alarms = [], 0
    for ep, p in zip(real, predictions, strict=True):
        probs = p["termination_probability"]
        if ep.terminated:
            at_end.append(float(probs[-1]))
            false_alarms += int((probs[:-1] > 0.5).sum())
        else:
            false_alarms += int((probs > 0.5).sum())
    return {
        "episodes": [
            {
                "seed": ep.seed,
                "real_rewards": ep.rewards.tolist(),
                "predicted_rewards": p["reward"].tolist(),
                "termination_probability": p["termination_probability"].tolist(),
                "real_return": float(ep.rewards.sum()),
                "predicted_return": float(p["reward"].sum()),
                "terminated": ep.terminated,
            }
            for ep, p in zip(real, predictions, strict=True)
        ],
        "steps": int(rewards.size),
        "reward_mae": _mean(np.abs(error)),
        "reward_rmse": _number(np.sqrt(np.mean(error**2))) if error.size else None,
        "reward_bias": _mean(error),
        "reward_correlation": _correlation(predicted, rewards),
        "by_road": by_road,
        "termination": {
            "real_terminations": int(sum(ep.terminated for ep in real)),
            "probability_at_real_end": at_end,
            "predicted_at_real_end": int(sum(p > 0.5 for p in at_end)),
            "false_alarm_steps": false_alarms,
            "mean_probability": _mean(probability),
        },
    }


def _open_loop_summary(
    horizon: int, starts: list[tuple[int, int]], dream: np.ndarray, real: np.ndarray, dream_lengths: np.ndarray,
    real_lengths: np.ndarray, start_on_road: list[bool | None],
) -> dict[str, Any]:
    error = dream - real
    by_road = {}
    for name, wanted in (("on_road", True), ("off_road", False)):
        picked = np.array([label is wanted for label in start_on_road], dtype=bool)
        by_road[name] = {"branches": int(picked.sum()), "bias": _mean(error[picked])}
    return {
        "horizon": horizon,
        "branches": len(starts),
        "starts": [{"seed": seed, "step": step} for seed, step in starts],
        "dream_returns": dream.tolist(),
        "real_returns": real.tolist(),
        "dream_lengths": dream_lengths.tolist(),
        "real_lengths": real_lengths.tolist(),
        "start_on_road": start_on_road,
        "dream_mean": _mean(dream),
        "real_mean": _mean(real),
        "bias": _mean(error),
        "mae": _mean(np.abs(error)),
        "correlation": _correlation(dream, real),
        "optimistic_fraction": _mean(error > 0),
        "by_road": by_road,
    }


def _situations(returns: list[float], lengths: list[int], on_road_shares: list[float | None]) -> dict[str, Any]:
    rates = [r / n for r, n in zip(returns, lengths, strict=True)]
    known = [s for s in on_road_shares if s is not None]
    return {
        "returns": returns,
        "lengths": lengths,
        "reward_rates": rates,
        "on_road_fractions": on_road_shares,
        "mean_return": _mean(returns),
        "mean_length": _mean(lengths),
        "mean_reward_rate": _mean(rates),
        "on_road_fraction": _mean(known),
    }


# ------------------------------------------------------------------------ diagnose
def _check_horizons(horizons: Sequence[int] | int, max_steps: int) -> list[int]:
    horizons = [horizons] if isinstance(horizons, (int, np.integer)) else list(horizons)
    if not horizons:
        raise ValueError("horizons must name at least one number of dream steps, e.g. [50, 200]")
    checked = []
    for horizon in horizons:
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon <= 0:
            raise ValueError(f"every horizon must be an int > 0, got {horizon!r}")
        if horizon > max_steps:
            raise ValueError(f"every horizon must be <= max_steps ({max_steps}), got {horizon}")
        checked.append(int(horizon))
    return sorted(set(checked))


def _drive_episodes(
    world_model: Any,
    act: Callable[[np.ndarray], np.ndarray],
    seeds: list[int],
    temperature: float,
    max_steps: int,
    log: Callable[[str], None],
) -> tuple[list[RealEpisode], list[DreamEpisode]]:
    """The agent's real episodes, then its first-frame dream episodes, one per seed."""
    real: list[RealEpisode] = []
    env = gym.make(REAL_ENV_ID, model=world_model, max_episode_steps=max_steps)
    try:
        for s in seeds:
            real.append(drive_real(env, act, s))
            log(f"real episode seed {s}: return {real[-1].rewards.sum():.1f} in {real[-1].length} steps")
    finally:
        env.close()

    dreams: list[DreamEpisode] = []
    env = make_dream_env(model=world_model, temperature=temperature, max_episode_steps=max_steps)
    try:
        for s in seeds:
            dreams.append(drive_dream(env, act, s))
    finally:
        env.close()
    log(f"dreamt {len(seeds)} first-frame episodes at temperature {temperature}")
    return real, dreams


def _open_loop(
    world_model: Any,
    predict: Callable[[np.ndarray], np.ndarray],
    real: list[RealEpisode],
    real_road: list[list[bool | None]],
    horizon: int,
    branch_every: int,
    temperature: float,
) -> dict[str, Any]:
    """Dream vs real ``horizon``-step returns from branch points every ``branch_every`` real steps, summarised."""
    starts, dream_returns, real_returns, dream_lengths, real_lengths, start_road = [], [], [], [], [], []
    for ep, road in zip(real, real_road, strict=True):
        points = branch_starts(ep.length, ep.terminated, horizon, branch_every)
        if not points:
            continue
        returns, lengths = open_loop_returns(world_model, predict, ep, points, horizon, temperature)
        starts += [(ep.seed, t) for t in points]
        dream_returns.append(returns)
        dream_lengths.append(lengths)
        real_returns.append([ep.rewards[t : t + horizon].sum() for t in points])
        real_lengths.append([min(horizon, ep.length - t) for t in points])
        start_road += [road[t] for t in points]
    return _open_loop_summary(
        horizon, starts,
        np.concatenate(dream_returns) if dream_returns else np.zeros(0),
        np.concatenate(real_returns) if real_returns else np.zeros(0),
        np.concatenate(dream_lengths) if dream_lengths else np.zeros(0, dtype=np.int64),
        np.concatenate(real_lengths) if real_lengths else np.zeros(0, dtype=np.int64),
        start_road,
    )


def _situation_summaries(
    real: list[RealEpisode],
    dreams: list[DreamEpisode],
    real_road: list[list[bool | None]],
    frame_road: list[list[bool | None]],
    dream_road: list[list[bool | None]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The situations met in the real episodes and in the dream ones: returns, lengths, time on the road."""
    real_summary = _situations(
        [float(ep.rewards.sum()) for ep in real], [ep.length for ep in real], [_on_road_share(r) for r in real_road]
    )
    frame_shares = [_on_road_share(r) for r in frame_road]
    real_summary["on_road_fractions_frame"] = frame_shares
    real_summary["on_road_fraction_frame"] = _mean([s for s in frame_shares if s is not None])
    real_summary["terminated"] = [ep.terminated for ep in real]
    dream_summary = _situations(
        [float(ep.rewards.sum()) for ep in dreams], [ep.length for ep in dreams],
        [_on_road_share(r) for r in dream_road],
    )
    dream_summary["terminated"] = [ep.terminated for ep in dreams]
    return real_summary, dream_summary


def diagnose(
    agent: str,
    model: Any = None,
    revision: str | None = None,
    episodes: int = 5,
    seed: int = 40000,
    temperature: float = 1.0,
    max_steps: int = 1000,
    horizons: Sequence[int] = (50, 200),
    branch_every: int = 25,
    zoom_steps: int = ZOOM_STEPS,
    out: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Show where the dream lies to ``agent``: M's predictions against what really happened on its real trajectories.

    Args:
        agent: a controller folder, ``"reference"``, or ``"sb3:path/to/agent.zip"``.
        model: the world model (a folder, a Hub id or a :class:`~dreamgym.WorldModel`); None:
            the one a controller records, else the shipped default.
        revision: branch, tag or commit when ``model`` is a Hub repo id.
        episodes: real episodes, and as many first-frame dream episodes; episode ``i`` uses
            seed ``seed + i`` in both.
        seed: seed of the first episode.
        temperature: the dream's temperature, for the dream episodes and the open-loop branches.
        max_steps: truncate every real and dream episode after this many steps.
        horizons: dream steps of the open-loop branches, each in ``1..max_steps``.
        branch_every: real steps between open-loop branch points.
        zoom_steps: first steps of each episode left out of the on/off-road figures
            (CarRacing's zoom-in; see :data:`ZOOM_STEPS`).
        out: a folder to write ``diagnose.json`` and ``diagnose.png`` into (created if missing).
        progress: print progress to stderr.

    Returns:
        the JSON-ready results: ``agent``, ``model``, ``seeds``, ``real`` and ``dream``
        (returns, lengths, reward rates, on-road fractions; ``real`` also the real frames'
        on-road fractions), ``teacher_forced`` (per-episode predicted vs real rewards and
        termination probabilities, error summaries, overall and split by road),
        ``open_loop`` (one entry per horizon: dream vs real K-step returns per branch, bias,
        MAE, correlation), and the settings.

    Raises:
        ValueError: a bad option or agent spec, or an agent that does not fit the world model.
        FileNotFoundError: the agent or the world model does not exist.
    """
    episodes = check_int("episodes", episodes, 1)
    seed = check_int("seed", seed, 0)
    max_steps = check_int("max_steps", max_steps, 1)
    branch_every = check_int("branch_every", branch_every, 1)
    zoom_steps = check_int("zoom_steps", zoom_steps, 0)
    temperature = check_temperature(temperature)
    horizons = _check_horizons(horizons, max_steps)
    started = time.perf_counter()

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr)

    spec = parse_agent_spec(agent)
    act, loaded = load_agent(spec)
    model, revision = resolve_agent_model(spec, loaded, model, revision)
    world_model = load_world_model(model, revision=revision)
    check_agent_fits(loaded, world_model, agent)
    crop = world_model.config.crop_dashboard
    seeds = [seed + i for i in range(episodes)]

    # One torch thread, as evaluate's episodes run: the same seeds give the same real returns.
    with single_thread():
        real, dreams = _drive_episodes(world_model, act, seeds, temperature, max_steps, log)
        # The situations: one classifier, applied alike to V's decodings of real and dream z.
        # Row t of a real episode is the state step t was taken in; its final row took no step.
        real_road = [_road_labels(road_fraction(_decode(world_model, ep.z[:-1]), crop), zoom_steps) for ep in real]
        frame_road = [_road_labels(road_fraction(ep.frames[:-1], crop), zoom_steps) for ep in real]
        dream_road = [_road_labels(road_fraction(_decode(world_model, ep.z), crop), zoom_steps) for ep in dreams]
        predictions = [teacher_forced(world_model, ep) for ep in real]
        predict = _batch_predict(loaded)
        open_loop = []
        for horizon in horizons:
            open_loop.append(_open_loop(world_model, predict, real, real_road, horizon, branch_every, temperature))
            log(f"open loop K={horizon}: {open_loop[-1]['branches']} branches")

    real_summary, dream_summary = _situation_summaries(real, dreams, real_road, frame_road, dream_road)
    result: dict[str, Any] = {
        "agent": agent,
        "agent_kind": spec.kind,
        "model": describe_model(model),
        "revision": revision,
        "episodes": episodes,
        "seed": seed,
        "seeds": seeds,
        "temperature": temperature,
        "max_steps": max_steps,
        "horizons": horizons,
        "branch_every": branch_every,
        "zoom_steps": zoom_steps,
        "real_env_id": REAL_ENV_ID,
        "dream_env_id": DREAM_ENV_ID,
        "real": real_summary,
        "dream": dream_summary,
        "teacher_forced": _teacher_forced_summary(real, predictions, real_road),
        "open_loop": open_loop,
        "dreamgym_version": __version__,
        "wall_seconds": time.perf_counter() - started,
    }
    if out is not None:
        _write_diagnosis(Path(out), result, log)
    return result


def _write_diagnosis(folder: Path, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """Write ``diagnose.json`` and ``diagnose.png`` into ``folder`` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / DIAGNOSE_FILE, result, sort_keys=False, allow_nan=False)
    plot_diagnosis(result, folder / PLOT_FILE)
    log(f"wrote {folder / DIAGNOSE_FILE} and {folder / PLOT_FILE}")


# ------------------------------------------------------------------- table and plot
def _fmt(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def format_table(result: dict[str, Any]) -> str:
    """The results of :func:`diagnose` as a plain-text table, dream beside real."""
    real, dream, tf = result["real"], result["dream"], result["teacher_forced"]
    rows = [
        ("", "dream", "real"),
        ("episode return", _fmt(dream["mean_return"], ".1f"), _fmt(real["mean_return"], ".1f")),
        ("episode length", _fmt(dream["mean_length"], ".0f"), _fmt(real["mean_length"], ".0f")),
        ("reward per step", _fmt(dream["mean_reward_rate"], ".3f"), _fmt(real["mean_reward_rate"], ".3f")),
        ("on road (V's decoding)", _fmt(dream["on_road_fraction"]), _fmt(real["on_road_fraction"])),
        ("on road (real frame)", "", _fmt(real["on_road_fraction_frame"])),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"where the dream lies to {result['agent']} ({result['episodes']} episodes, seeds "
        f"{result['seeds'][0]}..{result['seeds'][-1]}, temperature {result['temperature']}, "
        f"max {result['max_steps']} steps)",
        "",
        "situations met: first-frame dream episodes vs real episodes, same seeds",
    ]
    lines += [f"  {a:<{width}}  {b:>8}  {c:>8}" for a, b, c in rows]
    if result["zoom_steps"]:
        lines.append(f"  (on road: steps from {result['zoom_steps']} on, after CarRacing's zoom-in)")
    on, off = tf["by_road"]["on_road"], tf["by_road"]["off_road"]
    term = tf["termination"]
    predicted_return = sum(ep["predicted_return"] for ep in tf["episodes"]) / len(tf["episodes"])
    lines += [
        "",
        f"teacher-forced M along the real episodes ({tf['steps']} steps)",
        f"  reward per step: MAE {_fmt(tf['reward_mae'], '.3f')}, bias (predicted - real) "
        f"{_fmt(tf['reward_bias'], '+.3f')}, correlation {_fmt(tf['reward_correlation'])}",
        f"  reward bias on road {_fmt(on['reward_bias'], '+.3f')} ({on['steps']} steps), "
        f"off road {_fmt(off['reward_bias'], '+.3f')} ({off['steps']} steps)",
        f"  episode return: predicted {predicted_return:.1f} vs real {real['mean_return']:.1f}",
        f"  termination: {term['predicted_at_real_end']} of {term['real_terminations']} real ends predicted, "
        f"{term['false_alarm_steps']} steps where M would have ended the episode and the real env did not",
        "",
        "open loop: dream K steps from real states (agent acting in the dream) vs the real K steps",
        f"  {'K':>5}  {'branches':>8}  {'dream':>8}  {'real':>8}  {'bias':>8}  {'MAE':>8}  {'corr':>6}  "
        f"{'bias on/off road':>17}",
    ]
    for entry in result["open_loop"]:
        road = entry["by_road"]
        lines.append(
            f"  {entry['horizon']:>5}  {entry['branches']:>8}  {_fmt(entry['dream_mean'], '.1f'):>8}  "
            f"{_fmt(entry['real_mean'], '.1f'):>8}  {_fmt(entry['bias'], '+.1f'):>8}  {_fmt(entry['mae'], '.1f'):>8}  "
            f"{_fmt(entry['correlation']):>6}  "
            f"{_fmt(road['on_road']['bias'], '+.1f') + ' / ' + _fmt(road['off_road']['bias'], '+.1f'):>17}"
        )
    return "\n".join(lines)


def plot_diagnosis(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Draw the results of :func:`diagnose` into a PNG at ``path``.

    Panels: M's teacher-forced reward and cumulative return against the real ones along
    the first real episode; its termination probability there; dream against real K-step
    returns of the open-loop branches; on-road fraction, reward per step and episode
    length, dream against real.
    """
    import matplotlib  # deferred: half a second to import, and only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    real, dream, first = result["real"], result["dream"], result["teacher_forced"]["episodes"][0]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    _plot_rewards(axes[0][0], first)
    _plot_termination(axes[0][1], first)
    _plot_open_loop(axes[0][2], result["open_loop"])
    _bars(axes[1][0], "on-road fraction (dots: episodes)", [
        ("dream (V)", dream["on_road_fraction"], dream["on_road_fractions"]),
        ("real (V)", real["on_road_fraction"], real["on_road_fractions"]),
        ("real frame", real["on_road_fraction_frame"], real["on_road_fractions_frame"]),
    ])
    axes[1][0].set_ylim(0, 1.05)
    _bars(axes[1][1], "reward per step", [
        ("dream", dream["mean_reward_rate"], dream["reward_rates"]),
        ("real", real["mean_reward_rate"], real["reward_rates"]),
    ])
    _bars(axes[1][2], "episode length", [
        ("dream", dream["mean_length"], dream["lengths"]),
        ("real", real["mean_length"], real["lengths"]),
    ])
    for ax in axes.flat:
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"where the dream lies to {result['agent']} (temperature {result['temperature']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_rewards(ax: Any, first: dict[str, Any]) -> None:
    """M's teacher-forced rewards and return so far against the real ones, along the first real episode."""
    steps = np.arange(len(first["real_rewards"]))
    ax.plot(steps, first["real_rewards"], lw=0.8, label="real reward")
    ax.plot(steps, first["predicted_rewards"], lw=0.8, label="M's reward (teacher-forced)")
    twin = ax.twinx()
    twin.plot(steps, np.cumsum(first["real_rewards"]), ls="--", color="C0", lw=1)
    twin.plot(steps, np.cumsum(first["predicted_rewards"]), ls="--", color="C1", lw=1)
    twin.set_ylabel("return so far (dashed)", fontsize=8)
    ax.set_title(f"reward per step, real episode seed {first['seed']}", fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")


def _plot_termination(ax: Any, first: dict[str, Any]) -> None:
    """M's teacher-forced termination probability along the first real episode."""
    steps = np.arange(len(first["real_rewards"]))
    ax.plot(steps, first["termination_probability"], lw=0.8, color="C3")
    ax.axhline(0.5, color="grey", ls=":", lw=0.8)
    if first["terminated"]:
        ax.axvline(steps[-1], color="black", ls="--", lw=0.8, label="real termination")
        ax.legend(fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("M's termination probability (teacher-forced)", fontsize=9)
    ax.set_xlabel("step", fontsize=8)


def _plot_open_loop(ax: Any, open_loop: list[dict[str, Any]]) -> None:
    """Dream against real K-step returns of the open-loop branches, one colour per horizon."""
    values = []
    for i, entry in enumerate(open_loop):
        ax.scatter(entry["real_returns"], entry["dream_returns"], s=10, alpha=0.7, color=f"C{i}",
                   label=f"K={entry['horizon']} (bias {_fmt(entry['bias'], '+.1f')})")
        values += entry["real_returns"] + entry["dream_returns"]
    if values:
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], color="grey", lw=0.8, ls=":")
        ax.legend(fontsize=7)
    ax.set_xlabel("real K-step return", fontsize=8)
    ax.set_ylabel("dream K-step return", fontsize=8)
    ax.set_title("open loop from real states: dream vs real", fontsize=9)


def _bars(ax: Any, title: str, named: list[tuple[str, Any, list[Any]]]) -> None:
    """One bar per ``(name, mean, points)``, with the points (one per episode) as dots on it."""
    for i, (_name, mean, points) in enumerate(named):
        ax.bar(i, 0.0 if mean is None else mean, color=f"C{i}", alpha=0.6)
        known = [p for p in points if p is not None]
        ax.scatter([i] * len(known), known, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(named)), [n for n, _, _ in named], fontsize=8)
    ax.set_title(title, fontsize=9)
