"""Collecting real CarRacing-v3 rollouts into an :class:`~dreamgym.data.storage.EpisodeStore`.

Episode ``i`` of a collection is reset with env seed ``seed + i`` and its policy is reseeded
with the same seed, so an episode depends on its seed alone. That is what makes collection
resumable: seeds already in the store are skipped, and a seed that was in flight when the
collector died is simply run again.

Worker processes run the env and write the shards (compressing an episode costs about as
much as a second of driving, so it is done in parallel too); the parent process alone owns
the manifest, and lists a shard only once its worker reports it fully written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from dreamgym.data.policies import Policy, make_policy
from dreamgym.data.storage import Episode, EpisodeStore
from dreamgym.preprocessing import CARRACING_FRAME_SHAPE, preprocess_frames

__all__ = ["DEFAULT_ENV_ID", "collect", "run_episode"]

logger = logging.getLogger(__name__)

DEFAULT_ENV_ID = "CarRacing-v3"
LOCK_NAME = ".collect.lock"

# Workers never open a window or a sound device, and each is one env on one core: BLAS
# threads (numpy's resize matmuls) would only fight the other workers.
_HEADLESS_ENV = {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class _WorkerConfig:
    env_id: str
    policy: str
    max_steps: int
    root: str


def _make_env(env_id: str, max_steps: int) -> Any:
    import gymnasium as gym

    return gym.make(env_id, continuous=True, max_episode_steps=max_steps)


def run_episode(env: Any, policy: Policy, seed: int) -> Episode:
    """
    Drive one episode of ``env`` with ``policy`` and return it with preprocessed frames.

    :param env: a continuous CarRacing-like env with 96x96x3 uint8 observations; it ends the
        episode itself (``max_episode_steps`` truncation included).
    :param policy: reset with ``seed``, then called on each raw 96x96 frame.
    :param seed: env and policy seed of the episode.
    :return: the episode; frames go through :func:`~dreamgym.preprocessing.preprocess_frames`.
    """
    obs, _ = env.reset(seed=seed)
    policy.reset(seed)
    raw = [obs]
    actions, rewards, terminated, truncated = [], [], [], []
    while True:
        action = np.asarray(policy(obs), dtype=np.float32)
        obs, reward, term, trunc, _ = env.step(action)
        raw.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminated.append(term)
        truncated.append(trunc)
        if term or trunc:
            break
    # One batched resize per episode is several times faster than one per step.
    return Episode(
        frames=preprocess_frames(np.stack(raw)),
        actions=np.stack(actions).astype(np.float32, copy=False),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        seed=seed,
    )


def _worker_main(conn: Connection, config: _WorkerConfig) -> None:
    """Run episodes for the seeds the parent sends, until it sends None or dies."""
    # Ctrl-C reaches the whole process group; the parent decides what to do about it and
    # terminates the workers, so a worker must not die half-way through on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(_HEADLESS_ENV)
    parent = mp.parent_process()
    try:
        env = _make_env(config.env_id, config.max_steps)
        policy = make_policy(config.policy, 0)
        store = EpisodeStore(config.root)
    except Exception:
        with contextlib.suppress(OSError):
            conn.send(("error", None, traceback.format_exc()))
        return
    try:
        while True:
            # Without the parent's sentinel a worker orphaned by a SIGKILL-ed parent would
            # block on recv forever.
            ready = wait([conn, parent.sentinel] if parent is not None else [conn])
            if conn not in ready:
                return
            seed = conn.recv()
            if seed is None:
                return
            try:
                episode = run_episode(env, policy, seed)
                entry = store.write_shard(episode)
            except Exception:
                conn.send(("error", seed, traceback.format_exc()))
                return
            conn.send(("done", entry, None))
    except (EOFError, OSError):
        return  # the parent is gone; a shard written meanwhile is adopted on resume
    finally:
        env.close()


@contextlib.contextmanager
def _child_environ() -> Iterator[None]:
    """Environment for spawned workers, which inherit os.environ as it is when they start."""
    overrides = dict(_HEADLESS_ENV)
    overrides.update({name: os.environ.get(name, "1") for name in _THREAD_ENV})
    saved = {name: os.environ.get(name) for name in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _exclusive(store: EpisodeStore) -> Iterator[None]:
    """Hold the store's collector lock: two collectors would fight over its manifest."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one collector per store is on the user
        yield
        return
    with open(store.root / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another collector is writing to {store.root}; wait for it or stop it") from None
        yield  # the lock goes with the file descriptor, also when the process is killed


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_env(env_id: str, max_steps: int) -> None:
    """Accept env ids other than CarRacing-v3 only if they look like it to the collector."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string, got {type(env_id).__name__}")
    if env_id == DEFAULT_ENV_ID:
        return
    import gymnasium as gym

    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"unknown env id {env_id!r}: {exc}") from exc
    for name, value in _HEADLESS_ENV.items():
        os.environ.setdefault(name, value)
    try:
        env = _make_env(env_id, max_steps)
    except TypeError as exc:
        raise ValueError(
            f"env {env_id!r} cannot be made with continuous=True, max_episode_steps={max_steps}: {exc}"
        ) from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and obs_space.shape == CARRACING_FRAME_SHAPE and obs_space.dtype == np.uint8):
        raise ValueError(
            f"env {env_id!r} observes {obs_space}; the collector needs CarRacing's uint8 (96, 96, 3) frames"
        )
    if not (isinstance(act_space, gym.spaces.Box) and act_space.shape == (3,)):
        raise ValueError(f"env {env_id!r} acts with {act_space}; the collector needs CarRacing's continuous (3,) actions")


COLLECT_LOG = "collect_log.json"


def _log_run(root: Path, **run: Any) -> None:
    """Append a finished collection run to the store's log, which model cards quote for timing."""
    path = Path(root) / COLLECT_LOG
    runs = json.loads(path.read_text()) if path.is_file() else []
    runs.append({**run, "seconds": round(run["seconds"], 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(runs, indent=2))
    os.replace(tmp, path)


def collect(
    env_id: str = DEFAULT_ENV_ID,
    episodes: int | None = None,
    out: str | os.PathLike[str] | None = None,
    workers: int = 2,
    policy: str = "random",
    seed: int = 0,
    max_steps: int = 1000,
    progress: bool = True,
) -> EpisodeStore:
    """
    Collect ``episodes`` episodes of the real env into the store at ``out``, resuming.

    Episode ``i`` uses env seed ``seed + i``; seeds already in the store are skipped, so
    re-running the same call after a crash, a Ctrl-C or a kill collects only what is missing
    (at most the episodes in flight were lost). Raising ``episodes`` extends a collection.
    Throughput (episodes/s, steps/s) is logged at INFO level on ``dreamgym.data.collect``.

    Workers are started with the "spawn" method, which re-imports the main module: in a
    script, call this under ``if __name__ == "__main__":``.

    :param env_id: ``"CarRacing-v3"``, or another env id with CarRacing's spaces (uint8
        ``(96, 96, 3)`` frames, ``(3,)`` continuous actions) that accepts ``continuous=True``.
    :param episodes: number of episodes the store should hold for seeds ``seed .. seed+episodes-1``.
    :param out: folder of the :class:`EpisodeStore` (created if needed).
    :param workers: worker processes running envs in parallel (spawned, so safe with
        threads and CUDA in the parent); 1 runs the episodes in this process.
    :param policy: policy spec for :func:`~dreamgym.data.policies.make_policy`: ``"random"``, or
        ``"controller:PATH?noise=0.3"`` for the paper's iterative collection with a trained controller.
    :param seed: env seed of the first episode.
    :param max_steps: truncate each episode after this many steps.
    :param progress: show a tqdm bar over episodes.
    :return: the store.
    """
    if episodes is None or out is None:
        raise TypeError("collect() needs episodes= (how many) and out= (the store folder)")
    episodes = _check_int("episodes", episodes, 1)
    workers = _check_int("workers", workers, 1)
    seed = _check_int("seed", seed, 0)
    max_steps = _check_int("max_steps", max_steps, 1)
    make_policy(policy, seed)  # a bad spec, option or controller path fails here, not in every worker
    _check_env(env_id, max_steps)

    store = EpisodeStore(out)
    with _exclusive(store):
        adopted = store.recover()
        if adopted:
            logger.info("adopted %d finished shards the manifest had missed: seeds %s", len(adopted), adopted)
        done = store.seeds()
        todo = [s for s in range(seed, seed + episodes) if s not in done]
        config = _WorkerConfig(env_id=env_id, policy=policy, max_steps=max_steps, root=str(store.root))
        start, steps = time.perf_counter(), 0
        with tqdm(total=episodes, initial=episodes - len(todo), desc="collect", unit="ep", disable=not progress) as bar:
            for entry in _run(config, todo, workers):
                store.record(entry)
                steps += int(entry["length"])
                elapsed = time.perf_counter() - start
                bar.set_postfix(steps_per_s=f"{steps / elapsed:.0f}", ret=f"{entry['return']:.0f}", refresh=False)
                bar.update(1)
        elapsed = time.perf_counter() - start
        if todo:
            logger.info(
                "collected %d episodes (%d steps) in %.1f s with %d workers: %.2f episodes/s, %.0f steps/s",
                len(todo), steps, elapsed, min(workers, len(todo)), len(todo) / elapsed, steps / elapsed,
            )
            _log_run(store.root, episodes=len(todo), steps=steps, seconds=elapsed, workers=min(workers, len(todo)))
        else:
            logger.info("nothing to collect: %s already holds seeds %d..%d", store.root, seed, seed + episodes - 1)
    return store


def _run(config: _WorkerConfig, seeds: list[int], workers: int) -> Iterator[dict[str, Any]]:
    """Yield the manifest entry of each episode as soon as its shard is on disk."""
    if not seeds:
        return
    if workers == 1:
        # Inline: no process to spawn, and the easiest way to debug a policy.
        for name, value in _HEADLESS_ENV.items():
            os.environ.setdefault(name, value)
        env = _make_env(config.env_id, config.max_steps)
        try:
            policy = make_policy(config.policy, 0)
            store = EpisodeStore(config.root)
            for seed in seeds:
                yield store.write_shard(run_episode(env, policy, seed))
        finally:
            env.close()
        return
    yield from _run_pool(config, seeds, min(workers, len(seeds)))


def _run_pool(config: _WorkerConfig, seeds: list[int], workers: int) -> Iterator[dict[str, Any]]:
    # spawn, not fork: the parent may hold threads (tqdm's monitor, torch) or CUDA state,
    # which fork copies in a broken state; spawn starts clean everywhere.
    ctx = mp.get_context("spawn")
    pending = list(reversed(seeds))
    procs: dict[Connection, mp.process.BaseProcess] = {}
    in_flight: dict[Connection, int] = {}
    finished = False
    try:
        with _child_environ():
            for _ in range(workers):
                parent_conn, child_conn = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, args=(child_conn, config), daemon=True, name="dreamgym-collect")
                proc.start()
                child_conn.close()
                procs[parent_conn] = proc
        for conn in procs:
            seed = pending.pop()
            conn.send(seed)
            in_flight[conn] = seed
            if not pending:
                break
        sentinels = {proc.sentinel: conn for conn, proc in procs.items()}
        while in_flight:
            ready = wait(list(in_flight) + [s for s, c in sentinels.items() if c in in_flight])
            for obj in ready:
                conn = obj if isinstance(obj, Connection) else sentinels[obj]
                if conn not in in_flight:
                    continue  # already handled through its other handle in this round
                seed = in_flight.pop(conn)
                try:
                    kind, payload, error = conn.recv()
                except (EOFError, OSError):
                    proc = procs[conn]
                    proc.join(timeout=1)
                    raise RuntimeError(
                        f"collection worker pid {proc.pid} died (exit code {proc.exitcode}) while running "
                        f"the episode of seed {seed}; finished episodes are kept, run collect again to resume"
                    ) from None
                if kind == "error":
                    what = "could not start" if payload is None else f"failed on the episode of seed {seed}"
                    raise RuntimeError(f"a collection worker {what}:\n{error}")
                yield payload
                if pending:
                    next_seed = pending.pop()
                    conn.send(next_seed)
                    in_flight[conn] = next_seed
        finished = True
    finally:
        for conn, proc in procs.items():
            if finished:
                with contextlib.suppress(OSError):
                    conn.send(None)
            else:
                # Ctrl-C or an error: drop the episodes in flight rather than wait for them.
                proc.terminate()
        for conn, proc in procs.items():
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            conn.close()
