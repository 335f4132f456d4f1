"""Scoring an agent in the real CarRacing seen through the world model, and the dream-vs-real gap.

Episode ``i`` of an evaluation is ``RealCarRacing-v0`` reset with seed ``seed + i``, and
agents act deterministically, so an evaluation is a function of (agent, model, seeds) alone,
whichever worker runs which episode. With ``dream=True`` the agent also drives
``DreamCarRacing-v0`` for the same seeds; the difference of the two means is the gap
between what the agent believes it scores and what it really scores.

Agents are named by a spec string (:mod:`dreamgym.agents.specs`), so that worker processes
can load them themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from dreamgym.agents.cmaes import evaluate_population
from dreamgym.agents.controller import LinearController

# AgentSpec, load_agent and parse_agent_spec were first here: still exported (see __all__).
from dreamgym.agents.specs import (
    Agent,
    AgentSpec,
    check_agent_fits,
    describe_model,
    load_agent,
    parse_agent_spec,
    resolve_agent_model,
    start_episode,
)
from dreamgym.backends import Backend, LocalBackend, headless, make_backend, run_episodes
from dreamgym.checkpoints import module_fingerprint
from dreamgym.envs.dynamics import check_temperature
from dreamgym.files import atomic_write_json
from dreamgym.hub import load_world_model
from dreamgym.validation import check_int
from dreamgym.version import __version__

__all__ = [
    "DREAM_ENV_ID",
    "REAL_ENV_ID",
    "AgentSpec",
    "RealEpisodeConfig",
    "evaluate",
    "load_agent",
    "make_dream_env",
    "parse_agent_spec",
    "play_real_episodes",
    "run_episode",
]

REAL_ENV_ID = "dreamgym/RealCarRacing-v0"
DREAM_ENV_ID = "dreamgym/DreamCarRacing-v0"
RESULTS_FILE = "results.json"


def make_dream_env(**kwargs: Any) -> gym.Env:
    """The dream env, made from its spec with ``kwargs`` (``model=`` names the world model).

    Made from the spec rather than the id so that Gymnasium's notice to users who name v0 that
    a v1 exists stays out of dreamgym's own runs, which always pass the model they dream in.
    """
    return gym.make(gym.spec(DREAM_ENV_ID), **kwargs)


# ------------------------------------------------------------------------- episodes
def run_episode(env: Any, act: Agent, seed: int) -> tuple[float, int]:
    """Drive one episode of ``env`` (reset with ``seed``) with ``act``; return (return, length)."""
    start_episode(act, seed)
    obs, _ = env.reset(seed=seed)
    total, length = 0.0, 0
    while True:
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, length


@dataclass(frozen=True)
class RealEpisodeConfig:
    """What a worker needs to play real episodes; picklable, so that it can be sent to one.

    Args:
        agent: the agent, by spec (the worker loads it).
        model: a source for :func:`~dreamgym.hub.load_world_model`: None (the shipped
            default), a folder, a Hub id, or a ``WorldModel`` (sent pickled).
        revision: branch, tag or commit when ``model`` is a Hub id.
        max_steps: truncate each episode after this many steps.
    """

    agent: AgentSpec
    model: Any
    revision: str | None
    max_steps: int


def _make_real_env(config: RealEpisodeConfig) -> Any:
    return gym.make(REAL_ENV_ID, model=config.model, revision=config.revision, max_episode_steps=config.max_steps)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread, as one env per core wants; in-process runs thus match the workers' bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _real_worker(config: RealEpisodeConfig) -> Iterator[Callable[[int], tuple[float, int]]]:
    """A worker's agent and real env; ``work(seed)`` plays the episode of ``seed``: (return, length)."""
    headless()
    act, _ = load_agent(config.agent)
    with single_thread():
        env = _make_real_env(config)
        try:
            yield lambda seed: run_episode(env, act, seed)
        finally:
            env.close()


def play_real_episodes(
    config: RealEpisodeConfig, seeds: Sequence[int], backend: Backend[Any, Any] | int, bar: Any = None
) -> Iterator[tuple[int, float, int]]:
    """Play the real episodes of ``seeds`` on ``backend`` (an int: that many local workers).

    A worker's error comes back as the worker raised it when it means bad input (a missing
    agent, say), else as a :class:`~dreamgym.errors.WorkerFailedError` naming the seed (see
    :func:`~dreamgym.backends.run_episodes`).

    Args:
        config: the agent, world model and step cap every episode is played with.
        seeds: the episodes' seeds.
        backend: where the episodes run.
        bar: a progress bar, updated by one per finished episode; None for none.

    Returns:
        an iterator of (index in ``seeds``, return, length), as episodes finish.
    """
    if isinstance(backend, int):
        backend = LocalBackend(backend)
    index = {seed: i for i, seed in enumerate(seeds)}
    for seed, (total, length) in run_episodes(
        backend, _real_worker, config, seeds, job="evaluation", on_stop="nothing was written"
    ):
        if bar is not None:
            bar.update(1)
        yield index[seed], total, length


def _dream_returns(
    act: Agent, loaded: Any, world_model: Any, seeds: Sequence[int], temperature: float, max_steps: int, progress: bool
) -> tuple[list[float], list[int]]:
    """Dream episodes for ``seeds``: one batch for a controller, one by one for any other agent."""
    if isinstance(loaded, LinearController):
        # All episodes in one batched dream, as in training: the same episodes as
        # DreamCarRacing-v0 reset with each seed (up to float rounding), many times faster.
        returns, lengths = evaluate_population(
            world_model, loaded.flat()[None], seeds, temperature, max_steps, return_lengths=True
        )
        return [float(r) for r in returns[0]], [int(n) for n in lengths[0]]

    env = make_dream_env(model=world_model, temperature=temperature, max_episode_steps=max_steps)
    returns, lengths = [], []
    try:
        for seed in tqdm(seeds, desc="dream", unit="ep", disable=not progress):
            total, length = run_episode(env, act, seed)
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return returns, lengths


# ----------------------------------------------------------------------- evaluation
def _absolute(model: Any) -> Any:
    """A model folder given by a relative path, made absolute; anything else (a Hub id, a WorldModel) as it is."""
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(os.path.expanduser(model)):
        return os.path.abspath(os.path.expanduser(model))
    return model


def evaluate(
    agent: str,
    episodes: int = 100,
    seed: int = 0,
    workers: int = 2,
    model: Any = None,
    revision: str | None = None,
    dream: bool = False,
    temperature: float = 1.0,
    max_steps: int = 1000,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    backend: str | Backend[Any, Any] = "local",
    address: str | None = None,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """Score an agent over ``episodes`` episodes of ``dreamgym/RealCarRacing-v0``.

    Episode ``i`` is reset with seed ``seed + i``; real episodes run in ``workers`` spawned
    processes, or Ray tasks with ``backend="ray"`` (one torch thread each), and the returns
    depend neither on ``workers`` nor on the backend.

    Local workers are started with the "spawn" method, which re-imports the main module: in a
    script, call this under ``if __name__ == "__main__":``. On a Ray cluster, every node must
    see the agent and a world model folder at the same path (a shared file system), or name
    the model by Hub id; a task whose worker or node dies is run again.

    Args:
        agent: a controller folder, ``"reference"``, or ``"sb3:path/to/agent.zip"``.
        allow_pickle: load an SB3 zip by unpickling it; only for a file you trust (without
            it, nothing from the zip is unpickled and a zip that needs it is refused).
        episodes: number of real episodes.
        seed: seed of the first episode.
        workers: real episodes run at once: processes (1 runs them in this process), or Ray
            tasks in flight.
        model: the world model the agent sees through (a folder, a Hub id or a
            :class:`~dreamgym.WorldModel`). None: the one a controller's ``controller.json``
            records, or for an SB3 agent the default shipped with dreamgym.
        revision: branch, tag or commit when ``model`` is a Hub repo id.
        dream: also score the agent in ``dreamgym/DreamCarRacing-v0`` for the same seeds
            (in this process; a controller's dream episodes run as one batch).
        temperature: the dream's temperature (used with ``dream=True`` only).
        max_steps: truncate each episode after this many steps.
        out: where to write the results as JSON (a file, or a folder to hold ``results.json``).
        progress: show tqdm bars (driven here, whichever backend runs the episodes).
        backend: where the real episodes run, as for :func:`~dreamgym.data.collect.collect`:
            ``"local"``, ``"ray"`` or a :class:`~dreamgym.backends.Backend`.
        address: the Ray cluster for ``backend="ray"``, as for :func:`~dreamgym.data.collect.collect`.

    Returns:
        the results: ``agent``, ``model``, ``revision``, ``env_id``, ``episodes``,
            ``seed``, ``seeds``, ``returns``, ``lengths``, ``mean``, ``std`` (population std over
            episodes), ``max_steps``, ``dreamgym_version``, ``wall_seconds``; with ``dream=True``
            also ``dream`` (``returns``, ``lengths``, ``mean``, ``std``), ``gap`` (dream mean
            minus real mean) and ``temperature``.

    Raises:
        ValueError: a bad agent spec or option, or an agent that does not fit the world model.
        FileNotFoundError: the agent or the world model does not exist.
        RuntimeError: a worker failed, or died more than the backend's ``max_retries`` times.
        ImportError: ``backend="ray"`` without Ray installed.
    """
    episodes = check_int("episodes", episodes, 1)
    seed = check_int("seed", seed, 0)
    workers = check_int("workers", workers, 1)
    max_steps = check_int("max_steps", max_steps, 1)
    temperature = check_temperature(temperature)
    runner = make_backend(backend, workers, address)
    started = time.perf_counter()

    # Load everything once here first: a bad spec or model fails now, with one clear error,
    # not in every worker.
    spec = parse_agent_spec(agent, allow_pickle=allow_pickle)
    act, loaded = load_agent(spec)
    model, revision = resolve_agent_model(spec, loaded, model, revision)
    world_model = load_world_model(model, revision=revision)
    check_agent_fits(loaded, world_model, agent)

    seeds = [seed + i for i in range(episodes)]
    # Workers load the model by name themselves (None: the shipped default); only an
    # in-memory WorldModel is sent to them, pickled. Paths go absolute: a Ray worker may not
    # share this process's working directory.
    absolute_spec = dataclasses.replace(spec, path=os.path.abspath(spec.path))
    config = RealEpisodeConfig(absolute_spec, _absolute(model), revision, max_steps)
    runner.start()
    returns, lengths = _play_real(config, seeds, runner, progress)
    result: dict[str, Any] = {
        "agent": agent,
        "agent_kind": spec.kind,
        "model": describe_model(model),
        "revision": revision,
        # Pins the exact weights, whatever name they were loaded by (None: the shipped default).
        "model_fingerprint": module_fingerprint(world_model),
        "env_id": REAL_ENV_ID,
        "episodes": episodes,
        "seed": seed,
        "seeds": seeds,
        "returns": returns,
        "lengths": lengths,
        "mean": float(np.mean(returns)),
        "std": float(np.std(returns)),
        "max_steps": max_steps,
        "workers": runner.workers,
    }
    if dream:
        dream_returns, dream_lengths = _dream_returns(act, loaded, world_model, seeds, temperature, max_steps, progress)
        result["dream"] = {
            "env_id": DREAM_ENV_ID,
            "returns": dream_returns,
            "lengths": dream_lengths,
            "mean": float(np.mean(dream_returns)),
            "std": float(np.std(dream_returns)),
        }
        result["gap"] = result["dream"]["mean"] - result["mean"]
        result["temperature"] = temperature
    result["dreamgym_version"] = __version__
    result["wall_seconds"] = time.perf_counter() - started
    if out is not None:
        _write_result(out, result, progress)
    return result


def _play_real(
    config: RealEpisodeConfig, seeds: list[int], runner: Backend[Any, Any], progress: bool
) -> tuple[list[float], list[int]]:
    """The real episodes of ``seeds``, played on ``runner``: their returns and lengths, in seed order."""
    returns, lengths, finished = [0.0] * len(seeds), [0] * len(seeds), []
    with tqdm(total=len(seeds), desc="real", unit="ep", disable=not progress) as bar:
        for i, total, length in play_real_episodes(config, seeds, runner, bar):
            returns[i], lengths[i] = total, length
            finished.append(total)
            bar.set_postfix(mean=f"{np.mean(finished):.1f}", refresh=False)
    return returns, lengths


def _write_result(out: str | os.PathLike, result: dict[str, Any], progress: bool) -> None:
    """Write ``result`` to the file ``out``, or to ``results.json`` in the folder ``out``."""
    path = Path(out)
    if path.is_dir():
        path = path / RESULTS_FILE
    atomic_write_json(path, result)
    if progress:
        print(f"wrote {path}", file=sys.stderr)
