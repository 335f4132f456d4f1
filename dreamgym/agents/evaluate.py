"""Scoring an agent in the real CarRacing seen through the world model, and the dream-vs-real gap.

Episode ``i`` of an evaluation is ``RealCarRacing-v0`` reset with seed ``seed + i``, and
agents act deterministically, so an evaluation is a function of (agent, model, seeds) alone,
whichever worker runs which episode. With ``dream=True`` the agent also drives
``DreamCarRacing-v0`` for the same seeds; the difference of the two means is the gap
between what the agent believes it scores and what it really scores.

Agents are named by a spec string, so that worker processes can load them themselves:

- a folder written by :meth:`~dreamgym.agents.controller.LinearController.save`
  (``controller:<folder>`` also works);
- ``reference``: the controller shipped with dreamgym;
- a folder written by :meth:`~dreamgym.agents.mlp_policy.MlpPolicyAgent.save`: an SB3
  policy exported as safetensors + JSON (``dreamgym export-policy``), loaded without SB3;
- ``sb3:<path/to/agent.zip>``: a Stable-Baselines3 agent (loaded by
  :func:`dreamgym.agents.sb3.load_sb3_agent`, driven with ``predict(obs, deterministic=True)``).
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

import numpy as np

from dreamgym.backends import Backend, LocalBackend, TaskError, WorkerDiedError, headless, make_backend

__all__ = ["DREAM_ENV_ID", "REAL_ENV_ID", "AgentSpec", "evaluate", "load_agent", "parse_agent_spec", "run_episode"]

REAL_ENV_ID = "dreamgym/RealCarRacing-v0"
DREAM_ENV_ID = "dreamgym/DreamCarRacing-v0"
RESULTS_FILE = "results.json"

Agent = Callable[[np.ndarray], np.ndarray]


# --------------------------------------------------------------------------- agents
@dataclass(frozen=True)
class AgentSpec:
    """A parsed agent spec: ``kind`` is ``"controller"``, ``"mlp"`` (an exported policy) or ``"sb3"``, ``path`` what to load.

    ``allow_pickle`` lets an SB3 zip be loaded by unpickling it (see
    :func:`~dreamgym.agents.sb3.load_sb3_agent`); controllers are never unpickled.
    """

    kind: str
    path: str
    spec: str
    allow_pickle: bool = False


def parse_agent_spec(spec: str, allow_pickle: bool = False) -> AgentSpec:
    """Parse an agent spec (see the module doc) without loading anything heavy.

    ``allow_pickle`` is recorded for an SB3 agent: load its zip with SB3's unpickling ``load``.

    :raises ValueError: an empty or unrecognised spec.
    :raises FileNotFoundError: the named file or folder does not exist, or ``reference``
        is asked for and none is installed.
    """
    from dreamgym.agents.controller import CONFIG_FILE, REFERENCE_DIR, reference_controller_installed
    from dreamgym.agents.mlp_policy import CONFIG_FILE as POLICY_CONFIG_FILE

    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"agent spec must be a non-empty string, got {spec!r}")
    if spec == "reference":
        if not reference_controller_installed():
            raise FileNotFoundError(
                f"no reference controller is installed (expected one in {str(REFERENCE_DIR)!r}); "
                "pass a controller folder written by `dreamgym train-controller` instead"
            )
        return AgentSpec("controller", str(REFERENCE_DIR), spec)
    if spec.startswith("sb3:"):
        path = spec[len("sb3:") :]
        if not path:
            raise ValueError("agent spec 'sb3:' needs a path, as in 'sb3:path/to/agent.zip'")
        expanded = os.path.expanduser(path)
        if not os.path.isfile(expanded) and os.path.isfile(expanded + ".zip"):
            expanded += ".zip"  # as SB3's own load does
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"no SB3 agent at {path!r} (agent spec {spec!r})")
        return AgentSpec("sb3", expanded, spec, allow_pickle=bool(allow_pickle))
    path = spec[len("controller:") :] if spec.startswith("controller:") else spec
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded) and os.path.isfile(os.path.join(expanded, POLICY_CONFIG_FILE)):
        return AgentSpec("mlp", expanded, spec)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, CONFIG_FILE)):
            raise ValueError(f"folder {path!r} holds no {CONFIG_FILE}: it is not a controller written by `dreamgym train-controller`")
        return AgentSpec("controller", expanded, spec)
    if expanded.endswith(".zip") and os.path.isfile(expanded):
        raise ValueError(f"{spec!r} looks like a Stable-Baselines3 agent: name it 'sb3:{spec}'")
    if os.path.exists(expanded):
        raise ValueError(
            f"unknown agent spec {spec!r}: expected a controller folder, 'reference' or 'sb3:path/to/agent.zip'"
        )
    raise FileNotFoundError(
        f"agent {spec!r} not found: expected a controller folder, 'reference' or 'sb3:path/to/agent.zip'"
    )


def load_agent(spec: AgentSpec | str) -> tuple[Agent, Any]:
    """Load the agent a spec names.

    :return: ``(act, loaded)``: ``act(obs) -> action`` drives one env deterministically;
        ``loaded`` is the :class:`~dreamgym.agents.controller.LinearController` or SB3 model.
    """
    if isinstance(spec, str):
        spec = parse_agent_spec(spec)
    if spec.kind == "controller":
        from dreamgym.agents.controller import LinearController

        controller = LinearController.load(spec.path)
        return controller.act, controller
    if spec.kind == "mlp":
        from dreamgym.agents.mlp_policy import MlpPolicyAgent

        policy = MlpPolicyAgent.load(spec.path)
        return policy.act, policy
    try:
        from dreamgym.agents.sb3 import load_sb3_agent
    except ImportError as err:
        raise ValueError(f"agent {spec.spec!r} needs dreamgym.agents.sb3, which cannot be imported: {err}") from err
    model = load_sb3_agent(spec.path, device="cpu", allow_pickle=spec.allow_pickle)

    def act(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        return action

    return act, model


def _observation_dim(loaded: Any) -> int | None:
    if hasattr(loaded, "obs_dim"):
        return int(loaded.obs_dim)
    space = getattr(loaded, "observation_space", None)
    shape = getattr(space, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 1 else None


def check_agent_fits(loaded: Any, world_model: Any, spec: str) -> None:
    cfg = world_model.config
    expected = cfg.z_dim + cfg.rnn_hidden
    got = _observation_dim(loaded)
    if got is not None and got != expected:
        raise ValueError(
            f"agent {spec!r} acts on observations of size {got}, but the world model's [z, h] has size {expected} "
            f"(z_dim {cfg.z_dim} + rnn_hidden {cfg.rnn_hidden}); pass the world model it was trained in with model="
        )


# ------------------------------------------------------------------------- episodes
def run_episode(env: Any, act: Agent, seed: int) -> tuple[float, int]:
    """Drive one episode of ``env`` (reset with ``seed``) with ``act``; return (return, length)."""
    obs, _ = env.reset(seed=seed)
    total, length = 0.0, 0
    while True:
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        total += float(reward)
        length += 1
        if terminated or truncated:
            return total, length


@dataclass(frozen=True)
class _EpisodeConfig:
    agent: AgentSpec
    model: Any  # a source for load_world_model: None, a folder, a Hub id or a WorldModel
    revision: str | None
    max_steps: int


def _make_real_env(config: _EpisodeConfig) -> Any:
    import gymnasium as gym

    import dreamgym  # noqa: F401  (registers the envs)

    return gym.make(REAL_ENV_ID, model=config.model, revision=config.revision, max_episode_steps=config.max_steps)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """One torch thread, as one env per core wants; in-process runs thus match the workers' bit for bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _real_worker(config: _EpisodeConfig) -> Iterator[Callable[[int], tuple[float, int]]]:
    """A worker's agent and real env; ``work(seed)`` plays the episode of ``seed``: (return, length)."""
    headless()
    act, _ = load_agent(config.agent)
    with _single_thread():
        env = _make_real_env(config)
        try:
            yield lambda seed: run_episode(env, act, seed)
        finally:
            env.close()


def _real_pool(
    config: _EpisodeConfig, seeds: Sequence[int], backend: Backend[Any, Any] | int, bar: Any
) -> Iterator[tuple[int, float, int]]:
    """Play the real episodes of ``seeds`` on ``backend`` (an int: that many local workers).

    :return: an iterator of (index in ``seeds``, return, length), as episodes finish.
    """
    if isinstance(backend, int):
        backend = LocalBackend(backend)
    index = {seed: i for i, seed in enumerate(seeds)}
    try:
        for seed, (total, length) in backend.run(_real_worker, config, seeds):
            bar.update(1)
            yield index[seed], total, length
    except TaskError as err:
        if isinstance(err.error, (ValueError, FileNotFoundError, ImportError)):
            raise err.error from err  # bad input, already explained: let the CLI print it as one line
        what = "could not start" if err.seed is None else f"failed on the episode of seed {err.seed}"
        raise RuntimeError(f"an evaluation worker {what}: {err.summary}") from err
    except WorkerDiedError as err:
        raise RuntimeError(f"evaluation stopped: {err}; nothing was written") from None


def _dream_returns(
    act: Agent, loaded: Any, world_model: Any, seeds: Sequence[int], temperature: float, max_steps: int, progress: bool
) -> tuple[list[float], list[int]]:
    """Dream episodes for ``seeds``: one batch for a controller, one by one for any other agent."""
    from dreamgym.agents.controller import LinearController

    if isinstance(loaded, LinearController):
        from dreamgym.agents.cmaes import evaluate_population

        # All episodes in one batched dream, as in training: the same episodes as
        # DreamCarRacing-v0 reset with each seed (up to float rounding), many times faster.
        returns, lengths = evaluate_population(
            world_model, loaded.flat()[None], seeds, temperature, max_steps, return_lengths=True
        )
        return [float(r) for r in returns[0]], [int(n) for n in lengths[0]]

    import gymnasium as gym
    from tqdm.auto import tqdm

    import dreamgym  # noqa: F401

    env = gym.make(DREAM_ENV_ID, model=world_model, temperature=temperature, max_episode_steps=max_steps)
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
def resolve_agent_model(spec: AgentSpec, loaded: Any, model: Any, revision: str | None) -> tuple[Any, str | None]:
    """The world model to score in: ``model`` if given, else the one a controller records."""
    if model is not None or spec.kind not in ("controller", "mlp"):
        return model, revision
    record = getattr(loaded, "world_model", None) or {}
    if record.get("source") == "in-memory":
        raise ValueError(
            f"controller {spec.spec!r} was trained in an in-memory world model that its controller.json cannot "
            "name; pass the world model with model= (--model)"
        )
    recorded = record.get("model")
    if recorded is None:
        return None, None  # the default world model shipped with dreamgym
    return recorded, record.get("revision")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _absolute(model: Any) -> Any:
    """A model folder given by a relative path, made absolute; anything else (a Hub id, a WorldModel) as it is."""
    if isinstance(model, (str, os.PathLike)) and os.path.isdir(os.path.expanduser(model)):
        return os.path.abspath(os.path.expanduser(model))
    return model


def _describe(model: Any) -> str | None:
    from dreamgym.models.world_model import WorldModel

    if model is None:
        return None
    if isinstance(model, WorldModel):
        return "<in-memory WorldModel>"
    return os.fspath(model)


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
    """
    Score an agent over ``episodes`` episodes of ``dreamgym/RealCarRacing-v0``.

    Episode ``i`` is reset with seed ``seed + i``; real episodes run in ``workers`` spawned
    processes, or Ray tasks with ``backend="ray"`` (one torch thread each), and the returns
    depend neither on ``workers`` nor on the backend.

    Local workers are started with the "spawn" method, which re-imports the main module: in a
    script, call this under ``if __name__ == "__main__":``. On a Ray cluster, every node must
    see the agent and a world model folder at the same path (a shared file system), or name
    the model by Hub id; a task whose worker or node dies is run again.

    :param agent: a controller folder, ``"reference"``, or ``"sb3:path/to/agent.zip"``.
    :param allow_pickle: load an SB3 zip by unpickling it; only for a file you trust (without
        it, nothing from the zip is unpickled and a zip that needs it is refused).
    :param episodes: number of real episodes.
    :param seed: seed of the first episode.
    :param workers: real episodes run at once: processes (1 runs them in this process), or Ray
        tasks in flight.
    :param model: the world model the agent sees through (a folder, a Hub id or a
        :class:`~dreamgym.WorldModel`). None: the one a controller's ``controller.json``
        records, or for an SB3 agent the default shipped with dreamgym.
    :param revision: branch, tag or commit when ``model`` is a Hub repo id.
    :param dream: also score the agent in ``dreamgym/DreamCarRacing-v0`` for the same seeds
        (in this process; a controller's dream episodes run as one batch).
    :param temperature: the dream's temperature (used with ``dream=True`` only).
    :param max_steps: truncate each episode after this many steps.
    :param out: where to write the results as JSON (a file, or a folder to hold ``results.json``).
    :param progress: show tqdm bars (driven here, whichever backend runs the episodes).
    :param backend: where the real episodes run, as for :func:`~dreamgym.data.collect.collect`:
        ``"local"``, ``"ray"`` or a :class:`~dreamgym.backends.Backend`.
    :param address: the Ray cluster for ``backend="ray"``, as for :func:`~dreamgym.data.collect.collect`.
    :return: the results: ``agent``, ``model``, ``revision``, ``env_id``, ``episodes``,
        ``seed``, ``seeds``, ``returns``, ``lengths``, ``mean``, ``std`` (population std over
        episodes), ``max_steps``, ``dreamgym_version``, ``wall_seconds``; with ``dream=True``
        also ``dream`` (``returns``, ``lengths``, ``mean``, ``std``), ``gap`` (dream mean
        minus real mean) and ``temperature``.
    :raises ValueError: a bad agent spec or option, or an agent that does not fit the world model.
    :raises FileNotFoundError: the agent or the world model does not exist.
    :raises RuntimeError: a worker failed, or died more than the backend's ``max_retries`` times.
    :raises ImportError: ``backend="ray"`` without Ray installed.
    """
    from tqdm.auto import tqdm

    from dreamgym import __version__
    from dreamgym.envs.dynamics import check_temperature
    from dreamgym.hub import load_world_model
    from dreamgym.training.common import atomic_write_json, module_fingerprint

    episodes = _check_int("episodes", episodes, 1)
    seed = _check_int("seed", seed, 0)
    workers = _check_int("workers", workers, 1)
    max_steps = _check_int("max_steps", max_steps, 1)
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
    config = _EpisodeConfig(dataclasses.replace(spec, path=os.path.abspath(spec.path)), _absolute(model), revision, max_steps)
    returns, lengths, finished = [0.0] * episodes, [0] * episodes, []
    runner.start()
    with tqdm(total=episodes, desc="real", unit="ep", disable=not progress) as bar:
        for i, total, length in _real_pool(config, seeds, runner, bar):
            returns[i], lengths[i] = total, length
            finished.append(total)
            bar.set_postfix(mean=f"{np.mean(finished):.1f}", refresh=False)

    result: dict[str, Any] = {
        "agent": agent,
        "agent_kind": spec.kind,
        "model": _describe(model),
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
        path = Path(out)
        if path.is_dir():
            path = path / RESULTS_FILE
        atomic_write_json(path, result)
        if progress:
            print(f"wrote {path}", file=sys.stderr)
    return result
