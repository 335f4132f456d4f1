"""The backends (:mod:`dreamgym.backends`): local processes and a real local Ray cluster.

One Ray instance (``ray.init(num_cpus=2)``) serves the whole module. Real CarRacing episodes
are capped at 20 steps; most of the time goes to starting Ray and its worker processes. Local
workers import this module (spawn), so torch-heavy imports stay inside the tests using them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dreamgym.backends import (
    Backend,
    LocalBackend,
    RayBackend,
    TaskError,
    WorkerDiedError,
    make_backend,
)
from dreamgym.data.collect import collect
from dreamgym.data.storage import EpisodeStore, shard_name

MAX_STEPS = 20
OBS_DIM = 8 + 16  # the tiny world model's z_dim + rnn_hidden

pytestmark = [
    pytest.mark.slow,  # a real Ray cluster
    # Box2D's SWIG bindings warn on import, from whichever test first makes a CarRacing env.
    pytest.mark.filterwarnings("ignore:builtin type (SwigPy|swigvarlink):DeprecationWarning"),
]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A real local Ray cluster of 2 CPUs for the whole module."""
    import ray
    import ray.cloudpickle

    # Ray workers cannot import this test module (tests/ is not on their path): the helpers
    # below travel to them by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    saved = os.environ.pop("RAY_ADDRESS", None)
    # address="local": a new instance of our own, never a cluster someone runs on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def ray_backend(workers: int = 2, max_retries: int = 3) -> RayBackend:
    return RayBackend(workers=workers, max_retries=max_retries)


def make(kind: str, workers: int = 2, max_retries: int = 3) -> Backend:
    return LocalBackend(workers, max_retries) if kind == "local" else ray_backend(workers, max_retries)


# -- toy workers, fast to start: the backend contract itself --------------------------------


@contextlib.contextmanager
def affine_worker(config: tuple[int, int, Any]) -> Iterator[Callable[[int], int]]:
    """work(seed) = a * seed + b; fails to start if ``fail == "start"``, raises on seed ``fail``."""
    a, b, fail = config
    if fail == "start":
        raise ValueError("this worker cannot start")

    def work(seed: int) -> int:
        if seed == fail:
            raise KeyError(f"no episode for seed {seed}")
        return a * seed + b

    yield work


@contextlib.contextmanager
def kill_once(make_worker: Callable, marker: str, victim: int, config: Any) -> Iterator[Callable[[int], Any]]:
    """Wraps a worker: its process dies (os._exit) right after finishing ``victim`` the first time.

    The episode is done, and for collection its shard written, but the result never comes
    back: the worst moment for duplicates. Every attempt after that (``marker`` exists) runs normally.
    """
    with make_worker(config) as work:

        def run(seed: int) -> Any:
            result = work(seed)
            if seed == victim:
                try:
                    with open(marker, "x"):
                        pass
                except FileExistsError:
                    return result
                os._exit(17)
            return result

        yield run


@contextlib.contextmanager
def always_dies(config: int) -> Iterator[Callable[[int], int]]:
    def work(seed: int) -> int:
        if seed == config:
            os._exit(17)
        return seed

    yield work


class KillOnce(Backend):
    """Another backend, with one worker process killed mid-task on its first attempt at ``victim``."""

    def __init__(self, inner: Backend, marker: Path, victim: int) -> None:
        self.inner, self.marker, self.victim = inner, str(marker), victim
        self.name, self.workers, self.max_retries = inner.name, inner.workers, inner.max_retries

    def run(self, make_worker: Callable, config: Any, seeds: Iterable[int]) -> Iterator[tuple[int, Any]]:
        return self.inner.run(functools.partial(kill_once, make_worker, self.marker, self.victim), config, seeds)


def results(backend: Backend, make_worker: Callable, config: Any, seeds: list[int]) -> list[tuple[int, Any]]:
    return list(backend.run(make_worker, config, seeds))


# -- the backend interface, on both backends --------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_backend_runs_each_seed_once(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    got = results(make(kind), affine_worker, (3, 1, None), [4, 2, 7, 2, 4])
    assert sorted(got) == [(2, 7), (4, 13), (7, 22)]
    # One worker, in this process: in order, exceptions as they are.
    assert results(LocalBackend(1), affine_worker, (3, 1, None), [4, 2, 4]) == [(4, 13), (2, 7)]
    with pytest.raises(KeyError, match="seed 2"):
        results(LocalBackend(1), affine_worker, (3, 1, 2), [1, 2])


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_backend_reports_a_failing_task_with_its_seed(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    backend = make(kind)
    with pytest.raises(TaskError, match="failed on the episode of seed 5: KeyError") as info:
        results(backend, affine_worker, (1, 0, 5), [5])
    assert info.value.seed == 5 and isinstance(info.value.error, KeyError)
    assert "raise KeyError" in info.value.remote_traceback
    with pytest.raises(TaskError, match="could not start: ValueError: this worker cannot start") as info:
        results(backend, affine_worker, (1, 0, "start"), [1, 2])
    assert info.value.seed is None and isinstance(info.value.error, ValueError)


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_worker_that_always_dies_gives_up_after_its_retries(kind: str, request: pytest.FixtureRequest) -> None:
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    backend = make(kind, workers=2, max_retries=1)
    with pytest.raises(WorkerDiedError, match="seed 3 died on all 2 attempts") as info:
        results(backend, always_dies, 3, [1, 3])
    assert info.value.seed == 3 and info.value.attempts == 2


def test_make_backend() -> None:
    assert isinstance(make_backend("local", 3), LocalBackend) and make_backend("local", 3).workers == 3
    backend = LocalBackend(2)
    assert make_backend(backend) is backend
    with pytest.raises(ValueError, match="is for the Ray backend"):
        make_backend("local", 2, address="auto")
    with pytest.raises(ValueError, match="unknown backend 'dask'"):
        make_backend("dask")
    with pytest.raises(ValueError, match="workers must be >= 1"):
        LocalBackend(0)


def test_missing_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    from dreamgym.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "dreamgym\[ray\]"'):
        make_backend("ray", 2, address="auto")
    with pytest.raises(ImportError, match=r'pip install "dreamgym\[ray\]"'):
        collect(episodes=1, out=tmp_path / "store", max_steps=MAX_STEPS, progress=False, backend="ray")
    assert not (tmp_path / "store" / "manifest.json").exists()
    # The CLI: one clear line, no traceback.
    assert main(["collect", "--episodes", "1", "--out", str(tmp_path / "store"), "--backend", "ray"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "dreamgym[ray]"' in err and "Traceback" not in err
    assert main(["evaluate", "reference", "--backend", "local", "--address", "auto"]) == 2
    assert "--backend ray" in capsys.readouterr().err


# -- collection on Ray --------------------------------------------------------------------------


def assert_same_store(a: EpisodeStore, b: EpisodeStore) -> None:
    assert a.entries() == b.entries()  # file, seed, length, return and sha256: the very same bytes
    for x, y in zip(a.episodes(skip_corrupt=False), b.episodes(skip_corrupt=False), strict=True):
        for name in ("frames", "actions", "rewards", "terminated", "truncated"):
            assert getattr(x, name).tobytes() == getattr(y, name).tobytes(), name


def test_ray_collection_equals_local_collection(ray_cluster, tmp_path: Path) -> None:
    local = collect(episodes=3, out=tmp_path / "local", workers=1, seed=7, max_steps=MAX_STEPS, progress=False)
    on_ray = collect(
        episodes=3, out=tmp_path / "ray", workers=2, seed=7, max_steps=MAX_STEPS, progress=False, backend="ray"
    )
    assert on_ray.seeds() == {7, 8, 9}
    assert_same_store(local, on_ray)
    assert on_ray.verify() == ([7, 8, 9], [])
    log = json.loads((tmp_path / "ray" / "collect_log.json").read_text())
    assert [(run["backend"], run["episodes"], run["workers"]) for run in log] == [("ray", 3, 2)]


def test_ray_collection_resumes_with_the_missing_seeds_only(ray_cluster, tmp_path: Path) -> None:
    from dreamgym.cli import main

    root = tmp_path / "store"
    # Through the CLI; --address is not needed (nor used) where Ray is already initialised.
    command = ["collect", "--episodes", "2", "--out", str(root), "--max-steps", str(MAX_STEPS), "--backend", "ray"]
    assert main(command) == 0
    before = {p.name: p.stat().st_mtime_ns for p in root.glob("episode_*.npz")}
    store = collect(episodes=4, out=root, workers=2, max_steps=MAX_STEPS, progress=False, backend=ray_backend())
    assert [e["seed"] for e in json.loads((root / "manifest.json").read_text())["episodes"]] == [0, 1, 2, 3]
    assert {name: root.joinpath(name).stat().st_mtime_ns for name in before} == before  # untouched
    log = json.loads((root / "collect_log.json").read_text())
    assert [run["episodes"] for run in log] == [2, 2]  # the second run collected seeds 2 and 3 only
    assert store.verify() == ([0, 1, 2, 3], [])


@pytest.mark.parametrize("kind", ["local", "ray"])
def test_a_worker_killed_mid_task_is_retried_without_loss_or_duplicates(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "ray":
        request.getfixturevalue("ray_cluster")
    root, marker = tmp_path / "store", tmp_path / "killed"
    backend = KillOnce(make(kind), marker, victim=1)
    store = collect(episodes=4, out=root, max_steps=MAX_STEPS, progress=False, backend=backend)
    assert marker.exists(), "the worker was not killed"
    assert [e["seed"] for e in json.loads((root / "manifest.json").read_text())["episodes"]] == [0, 1, 2, 3]
    assert sorted(p.name for p in root.glob("episode_*.npz")) == [shard_name(s) for s in range(4)]
    assert not list(root.glob(".*.tmp"))
    assert store.verify() == ([0, 1, 2, 3], [])
    # The retried episode is the episode of its seed, as if nothing had happened.
    reference = collect(episodes=2, seed=0, out=tmp_path / "ref", workers=1, max_steps=MAX_STEPS, progress=False)
    assert store.entries()[:2] == reference.entries()


# -- evaluation on Ray ----------------------------------------------------------------------------


@pytest.fixture
def controller_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A controller that records the tiny world model as the one it was trained in."""
    from dreamgym.agents.controller import LinearController

    rng = np.random.default_rng(0)
    record = {"model": str(tiny_model_dir), "revision": None, "source": "path"}
    controller = LinearController.from_flat(rng.normal(0, 0.3, 3 * OBS_DIM + 3), OBS_DIM, world_model=record)
    return controller.save(tmp_path / "ctrl")


def test_ray_evaluation_equals_local_evaluation(ray_cluster, controller_dir: Path, tmp_path: Path) -> None:
    from dreamgym.agents.evaluate import evaluate

    local = evaluate(str(controller_dir), episodes=3, seed=4, workers=1, max_steps=MAX_STEPS, progress=False)
    on_ray = evaluate(
        str(controller_dir), episodes=3, seed=4, workers=2, max_steps=MAX_STEPS, progress=False, backend="ray",
        out=tmp_path / "results.json",
    )
    assert on_ray["seeds"] == [4, 5, 6]
    assert on_ray["returns"] == local["returns"] and on_ray["lengths"] == local["lengths"] == [MAX_STEPS] * 3
    assert len(set(on_ray["returns"])) > 1  # different seeds, different tracks
    assert json.loads((tmp_path / "results.json").read_text())["returns"] == local["returns"]


def test_ray_evaluation_surfaces_a_bad_agent_as_the_worker_raised_it(ray_cluster, controller_dir: Path) -> None:
    from dreamgym.agents.evaluate import AgentSpec, RealEpisodeConfig, play_real_episodes

    config = RealEpisodeConfig(AgentSpec("controller", str(controller_dir / "gone"), "gone"), None, None, MAX_STEPS)
    with pytest.raises(FileNotFoundError, match="no controller folder"):
        list(play_real_episodes(config, [0, 1], ray_backend()))
