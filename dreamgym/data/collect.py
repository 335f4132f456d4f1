"""Collecting real CarRacing-v3 rollouts into an :class:`~dreamgym.data.storage.EpisodeStore`.

Episode ``i`` of a collection is reset with env seed ``seed + i`` and its policy is reseeded
with the same seed, so an episode depends on its seed alone. That is what makes collection
resumable: seeds already in the store are skipped, and a seed that was in flight when the
collector died is simply run again.

Workers run the env and write the shards (compressing an episode costs about as much as a
second of driving, so it is done in parallel too); the parent process alone owns the
manifest, and lists a shard only once its worker reports it fully written. Workers are local
processes or Ray tasks on a cluster (:mod:`dreamgym.backends`): the same seeds give the same
episodes on either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import filelock
import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from dreamgym.backends import Backend, headless, make_backend, run_episodes
from dreamgym.data.policies import Policy, make_policy
from dreamgym.episodes import PROVENANCE_KEYS, Episode, EpisodeStore, stored_crop_dashboard
from dreamgym.errors import CollectionConflictError, CollectorBusyError
from dreamgym.files import atomic_write_json, read_json
from dreamgym.preprocessing import CARRACING_FRAME_SHAPE, preprocess_frames
from dreamgym.validation import check_int

__all__ = ["DEFAULT_ENV_ID", "collect", "collector_lock", "make_env", "run_episode", "verify_store"]

logger = logging.getLogger(__name__)

DEFAULT_ENV_ID = "CarRacing-v3"
LOCK_NAME = ".collect.lock"


@dataclass(frozen=True)
class _WorkerConfig:
    env_id: str
    policy: str
    max_steps: int
    root: str
    crop_dashboard: bool = True


def make_env(env_id: str, max_steps: int) -> Any:
    """The env a collection worker drives: ``env_id`` with continuous actions, truncated after ``max_steps``."""
    return gym.make(env_id, continuous=True, max_episode_steps=max_steps)


def run_episode(env: Any, policy: Policy, seed: int, crop_dashboard: bool = True) -> Episode:
    """Drive one episode of ``env`` with ``policy`` and return it with preprocessed frames.

    Args:
        env: a continuous CarRacing-like env with 96x96x3 uint8 observations; it ends the
            episode itself (``max_episode_steps`` truncation included).
        policy: reset with ``seed``, then called on each raw 96x96 frame.
        seed: env and policy seed of the episode.
        crop_dashboard: cut CarRacing's dashboard strip before resizing (see
            :mod:`dreamgym.preprocessing`); a world model's V must see frames made the same way.

    Returns:
        the episode; frames go through :func:`~dreamgym.preprocessing.preprocess_frames`.
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
        frames=preprocess_frames(np.stack(raw), crop_dashboard=crop_dashboard),
        actions=np.stack(actions).astype(np.float32, copy=False),
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=np.asarray(terminated, dtype=bool),
        truncated=np.asarray(truncated, dtype=bool),
        seed=seed,
    )


@contextlib.contextmanager
def _collect_worker(config: _WorkerConfig) -> Iterator[Callable[[int], dict[str, Any]]]:
    """A worker's env, policy and store; ``work(seed)`` writes the episode's shard and returns its entry."""
    headless()
    env = make_env(config.env_id, config.max_steps)
    try:
        policy = make_policy(config.policy, 0)
        store = EpisodeStore(config.root)
        yield lambda seed: store.write_shard(run_episode(env, policy, seed, config.crop_dashboard))
    finally:
        env.close()


@contextlib.contextmanager
def collector_lock(store: EpisodeStore) -> Iterator[None]:
    """Hold the store's collector lock: two collectors would fight over its manifest.

    An OS file lock (``filelock``: ``flock`` on POSIX, ``msvcrt`` on Windows), so it goes with
    the process, also when the process is killed.
    """
    lock = filelock.FileLock(store.root / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise CollectorBusyError(f"another collector is writing to {store.root}; wait for it or stop it") from None
    try:
        yield
    finally:
        lock.release()


def _check_env(env_id: str, max_steps: int) -> None:
    """Accept env ids other than CarRacing-v3 only if they look like it to the collector."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a string, got {type(env_id).__name__}")
    if env_id == DEFAULT_ENV_ID:
        return
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise ValueError(f"unknown env id {env_id!r}: {exc}") from exc
    headless()
    try:
        env = make_env(env_id, max_steps)
    except TypeError as exc:
        raise ValueError(
            f"env {env_id!r} cannot be made with continuous=True, max_episode_steps={max_steps}: {exc}"
        ) from exc
    try:
        obs_space, act_space = env.observation_space, env.action_space
    finally:
        env.close()
    frame_shaped = isinstance(obs_space, gym.spaces.Box) and obs_space.shape == CARRACING_FRAME_SHAPE
    if not (frame_shaped and obs_space.dtype == np.uint8):
        raise ValueError(
            f"env {env_id!r} observes {obs_space}; the collector needs CarRacing's uint8 (96, 96, 3) frames"
        )
    if not (isinstance(act_space, gym.spaces.Box) and act_space.shape == (3,)):
        raise ValueError(
            f"env {env_id!r} acts with {act_space}; the collector needs CarRacing's continuous (3,) actions"
        )


COLLECT_LOG = "collect_log.json"


def _log_run(root: Path, **run: Any) -> None:
    """Append a finished collection run to the store's log, which model cards quote for timing."""
    path = Path(root) / COLLECT_LOG
    runs = read_json(path, "collection log", expect=list, default=[])
    runs.append({**run, "seconds": round(run["seconds"], 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    atomic_write_json(path, runs, sort_keys=False)


def collect(
    env_id: str = DEFAULT_ENV_ID,
    episodes: int | None = None,
    out: str | os.PathLike[str] | None = None,
    workers: int = 2,
    policy: str = "random",
    seed: int = 0,
    max_steps: int = 1000,
    progress: bool = True,
    backend: str | Backend[Any, Any] = "local",
    address: str | None = None,
    verify: bool = True,
    crop_dashboard: bool = True,
) -> EpisodeStore:
    """Collect ``episodes`` episodes of the real env into the store at ``out``, resuming.

    Episode ``i`` uses env seed ``seed + i``; seeds already in the store are skipped, so
    re-running the same call after a crash, a Ctrl-C or a kill collects only what is missing
    (at most the episodes in flight were lost). Raising ``episodes`` extends a collection.
    Throughput (episodes/s, steps/s) is logged at INFO level on ``dreamgym.data.collect``.

    Local workers are started with the "spawn" method, which re-imports the main module: in a
    script, call this under ``if __name__ == "__main__":``. On a Ray cluster
    (``backend="ray"``), Ray tasks write the shards to ``out``, which must therefore be on
    storage that this machine and every node see at the same path; this process alone writes
    the manifest, as locally. A task whose worker or node dies is run again (its shard is
    rewritten atomically and listed once); the shards are the same as the local backend's.

    Args:
        env_id: ``"CarRacing-v3"``, or another env id with CarRacing's spaces (uint8
            ``(96, 96, 3)`` frames, ``(3,)`` continuous actions) that accepts ``continuous=True``.
        episodes: number of episodes the store should hold for seeds ``seed .. seed+episodes-1``.
        out: folder of the :class:`EpisodeStore` (created if needed).
        workers: episodes run in parallel: worker processes (spawned, so safe with threads
            and CUDA in the parent; 1 runs the episodes in this process), or Ray tasks in flight.
        policy: policy spec for :func:`~dreamgym.data.policies.make_policy`: ``"random"``, or
            ``"controller:PATH?noise=0.3"`` for the paper's iterative collection with a trained controller.
        seed: env seed of the first episode.
        max_steps: truncate each episode after this many steps.
        progress: show a tqdm bar over episodes (driven here, whichever backend runs them).
        backend: ``"local"`` (worker processes on this machine), ``"ray"`` (Ray tasks; needs
            ``pip install "dreamgym[ray]"``), or a :class:`~dreamgym.backends.Backend`, which
            brings its own workers.
        address: the Ray cluster for ``backend="ray"``: ``"auto"``, ``"ray://host:10001"``;
            None: ``RAY_ADDRESS``, else a cluster running on this machine, else a new one (unless Ray
            is already initialised in this process).
        verify: before resuming, re-hash the stored shards of the requested seeds and collect
            again those that fail their sha256 (a corrupt or truncated shard); hashing is cheap
            next to driving.
        crop_dashboard: cut the dashboard strip off every frame before resizing, as V of the
            paper and of the shipped models sees them (the default); False keeps it, for a V
            that sees the speed, ABS and steering bars. Recorded in the manifest: one store
            holds frames made one way only.

    Returns:
        the store.

    Raises:
        CollectionConflictError: seeds of this call are already stored, collected with
            another ``env_id``, ``policy``, ``max_steps`` or ``crop_dashboard``, or the store
            holds frames made the other way; nothing is collected.
        WorkerFailedError: (a ``RuntimeError``) a worker failed on an episode, or died on
            it more than the backend's ``max_retries`` times; the episodes finished before are kept.
    """
    if episodes is None or out is None:
        raise TypeError("collect() needs episodes= (how many) and out= (the store folder)")
    episodes = check_int("episodes", episodes, 1)
    workers = check_int("workers", workers, 1)
    seed = check_int("seed", seed, 0)
    max_steps = check_int("max_steps", max_steps, 1)
    if not isinstance(crop_dashboard, bool):
        raise TypeError(f"crop_dashboard must be True or False, got {crop_dashboard!r}")
    runner = make_backend(backend, workers, address)
    # A bad spec, option or controller path fails here, not in every worker.
    checked = make_policy(policy, seed)
    check_seeds = getattr(checked, "check_seeds", None)
    if check_seeds is not None:
        check_seeds(range(seed, seed + episodes))
    _check_env(env_id, max_steps)

    store = EpisodeStore(out)
    with collector_lock(store):
        _check_preprocessing(store, crop_dashboard)
        settings = {"env_id": env_id, "policy": policy, "max_steps": max_steps, "crop_dashboard": crop_dashboard}
        todo = _seeds_to_collect(store, range(seed, seed + episodes), settings, verify)
        # Absolute: a Ray worker may not share this process's working directory.
        config = _WorkerConfig(
            env_id=env_id, policy=policy, max_steps=max_steps, root=os.path.abspath(store.root),
            crop_dashboard=crop_dashboard,
        )
        used = min(runner.workers, len(todo))
        if todo:
            runner.start()  # starting or joining a Ray cluster is not collection time
        start = time.perf_counter()
        with tqdm(total=episodes, initial=episodes - len(todo), desc="collect", unit="ep", disable=not progress) as bar:
            steps = _collect_into(store, runner, config, todo, settings, bar)
        elapsed = time.perf_counter() - start
        if todo:
            logger.info(
                "collected %d episodes (%d steps) in %.1f s with %d %s workers: %.2f episodes/s, %.0f steps/s",
                len(todo), steps, elapsed, used, runner.name, len(todo) / elapsed, steps / elapsed,
            )
            _log_run(store.root, episodes=len(todo), steps=steps, seconds=elapsed, workers=used, backend=runner.name)
        else:
            logger.info("nothing to collect: %s already holds seeds %d..%d", store.root, seed, seed + episodes - 1)
    return store


def _check_preprocessing(store: EpisodeStore, crop_dashboard: bool) -> None:
    """Refuse to add frames made one way to a store of frames made the other: V trains on them all."""
    stored = stored_crop_dashboard(store)
    if stored is not None and stored != crop_dashboard:
        kept = "cut" if stored else "kept"
        raise CollectionConflictError(
            f"{store.root} holds frames with the dashboard {kept}, and one store holds frames made one way only; "
            f"collect {'without' if stored else 'with'} --keep-dashboard, or into another --out"
        )


def _seeds_to_collect(store: EpisodeStore, wanted: range, settings: dict[str, Any], verify: bool) -> list[int]:
    """The seeds of ``wanted`` the store lacks, after repairing it (and dropping corrupt shards, with ``verify``)."""
    adopted = store.recover()
    if adopted:
        logger.info("adopted %d finished shards the manifest had missed: seeds %s", len(adopted), adopted)
    _check_conflicts(store, wanted, settings)
    if verify:
        dropped = store.drop_corrupt(wanted)
        if dropped:
            logger.warning(
                "collecting again %d episodes whose shards failed their checksum: seeds %s", len(dropped), dropped
            )
    done = store.seeds()
    return [s for s in wanted if s not in done]


def _collect_into(
    store: EpisodeStore,
    runner: Backend[Any, Any],
    config: _WorkerConfig,
    todo: list[int],
    settings: dict[str, Any],
    bar: Any,
) -> int:
    """Run the episodes of ``todo`` on ``runner`` and list each in the store as it finishes; return their steps."""
    start, steps = time.perf_counter(), 0
    for _, entry in run_episodes(
        runner, _collect_worker, config, todo, job="collection",
        on_stop="finished episodes are kept, run collect again to resume",
    ):
        if not (store.root / entry["file"]).is_file():
            raise RuntimeError(
                f"a {runner.name} worker wrote {entry['file']}, but it is not in {store.root} here: "
                f"the store must be on storage that every node sees at the same path"
            )
        store.record({**entry, **settings})
        steps += int(entry["length"])
        elapsed = time.perf_counter() - start
        bar.set_postfix(steps_per_s=f"{steps / elapsed:.0f}", ret=f"{entry['return']:.0f}", refresh=False)
        bar.update(1)
    return steps


def _check_conflicts(store: EpisodeStore, seeds: range, settings: dict[str, Any]) -> None:
    """Refuse to "resume" seeds that are stored with other settings: they would silently not be collected."""
    conflicts: dict[tuple[tuple[str, Any, Any], ...], list[int]] = {}
    for entry in store.entries():
        if int(entry["seed"]) not in seeds:
            continue
        differ = tuple((k, entry[k], settings[k]) for k in PROVENANCE_KEYS if k in entry and entry[k] != settings[k])
        if differ:
            conflicts.setdefault(differ, []).append(int(entry["seed"]))
    if not conflicts:
        return
    differ, clashing = next(iter(conflicts.items()))
    total = sum(len(v) for v in conflicts.values())
    stored = ", ".join(f"{k}={old!r}" for k, old, _ in differ)
    asked = ", ".join(f"{k}={new!r}" for k, _, new in differ)
    first_free = max(max(s for s in store.seeds()) + 1, seeds.stop)
    raise CollectionConflictError(
        f"{total} of the requested seeds are already in {store.root} but were collected with other settings "
        f"(seeds {clashing[0]}..{clashing[-1]} with {stored}; this run asks for {asked}); stored episodes are not "
        f"collected again, so nothing would change: use other seeds (--seed {first_free}) or another --out"
    )


def verify_store(root: str | os.PathLike[str], repair: bool = False) -> tuple[list[int], list[str], list[int]]:
    """Check every shard of an episode store; with ``repair``, fix what can be fixed.

    Repair (under the collector lock) deletes shards that fail their checksum or do not load
    and drops them and missing ones from the manifest, so ``collect`` runs those seeds again,
    and lists shards the manifest lacks after checking that they load: also all of them when
    ``manifest.json`` was deleted.

    Args:
        root: the store folder.
        repair: fix the store instead of only reporting.

    Returns:
        (seeds whose shard is intact, one line per remaining problem, seeds adopted by the repair).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    if not Path(root).is_dir():
        raise FileNotFoundError(f"episode store {os.fspath(root)!r} does not exist")
    store = EpisodeStore(root)
    adopted: list[int] = []
    if repair:
        with collector_lock(store):
            adopted = store.recover(verify=True)
    good, problems = store.verify()
    return good, problems, adopted
