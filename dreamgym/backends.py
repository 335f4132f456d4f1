"""Where episodes run: worker processes on this machine, or tasks on a Ray cluster.

Collection (:func:`dreamgym.data.collect.collect`) and evaluation
(:func:`dreamgym.agents.evaluate.evaluate`) hand a backend the same three things:

- ``make_worker``: a picklable function that turns ``config`` into a context manager whose
  value is ``work(seed) -> result``. A worker enters it once, before its first seed, keeps
  what it built (an env, a policy, a model) for all the seeds it runs, and leaves it when it
  is done;
- ``config``: the picklable settings ``make_worker`` needs;
- ``seeds``: the episodes to run. An episode is a function of its seed alone, so which
  worker runs a seed, and how often, does not change its result.

:meth:`Backend.run` yields ``(seed, result)`` in the order the episodes finish, each seed
exactly once. A seed whose worker died (killed, out of memory, crashed in native code) is run
again in another worker, up to ``max_retries`` times; an exception raised by ``work`` or
``make_worker`` is not retried (the same seed would raise again) and stops the run with a
:class:`TaskError`. When the run stops early (an error, Ctrl-C, the caller stops iterating),
the episodes in flight are dropped at once, and whatever they wrote is the caller's to adopt.

- :class:`LocalBackend`: spawned worker processes on this machine (``workers == 1``: in this
  process, the easiest way to debug).
- :class:`RayBackend`: Ray tasks on a Ray cluster (``pip install "dreamgym[ray]"``); every
  node needs dreamgym installed, and every path in ``config`` must mean the same on every node.
"""

from __future__ import annotations

import abc
import atexit
import collections
import contextlib
import logging
import multiprocessing as mp
import os
import pickle
import signal
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar, cast

from dreamgym.errors import DreamgymError, TaskError, WorkerDiedError, WorkerFailedError
from dreamgym.validation import check_int

__all__ = [
    "BACKENDS",
    "Backend",
    "LocalBackend",
    "RayBackend",
    "TaskError",
    "WorkerDiedError",
    "WorkerFactory",
    "make_backend",
    "run_episodes",
]

logger = logging.getLogger(__name__)

C = TypeVar("C")
R = TypeVar("R")

#: ``make_worker(config)``: a context manager whose value runs one episode, ``work(seed) -> result``.
WorkerFactory = Callable[[C], AbstractContextManager[Callable[[int], R]]]

#: The names :func:`make_backend` (and the CLI's ``--backend``) accepts.
BACKENDS = ("local", "ray")

RAY_INSTALL_HINT = 'pip install "dreamgym[ray]"'

# Workers never open a window or a sound device, and each is one env on one core: BLAS
# threads (numpy's resize matmuls) would only fight the other workers.
HEADLESS_ENV = {"SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def headless() -> None:
    """Keep a worker away from windows and sound devices (unless the user chose otherwise)."""
    for name, value in HEADLESS_ENV.items():
        os.environ.setdefault(name, value)


# ------------------------------------------------------------------ the worker side
# A worker answers each seed with one message, the same on both backends:
# ("done", seed, result), or ("error", seed, (exception or None, traceback text, summary)),
# where seed is None if make_worker raised.
Message = tuple[str, "int | None", Any]


def _failure(exc: BaseException) -> tuple[BaseException | None, str, str]:
    """What a worker sends back about ``exc``.

    The exception itself if it survives pickling, its traceback, and a summary.
    """
    text = "".join(traceback.format_exception(exc))
    try:
        error: BaseException | None = pickle.loads(pickle.dumps(exc))
    except Exception:  # an exception that does not survive pickling travels as text only
        error = None
    return error, text, f"{type(exc).__name__}: {exc}"


class _Worker:
    """Worker side of both backends: enters ``make_worker(config)`` on the first seed, then runs seeds."""

    def __init__(self, make_worker: WorkerFactory[Any, Any], config: Any) -> None:
        self._make_worker, self._config = make_worker, config
        self._stack = contextlib.ExitStack()
        self._work: Callable[[int], Any] | None = None

    def __call__(self, seed: int) -> Message:
        if self._work is None:
            try:
                self._work = self._stack.enter_context(self._make_worker(self._config))
            except Exception as exc:
                return "error", None, _failure(exc)
        try:
            return "done", seed, self._work(seed)
        except Exception as exc:
            return "error", seed, _failure(exc)

    def close(self) -> None:
        self._work = None
        with contextlib.suppress(Exception):  # a worker on its way out has no one to tell
            self._stack.close()


def _unpack(message: Message) -> tuple[int, Any]:
    """The driver's side of a message: ``(seed, result)``, or the worker's error raised as a :class:`TaskError`."""
    kind, seed, payload = message
    if kind == "done":
        return cast(int, seed), payload  # a "done" message always names its seed
    raise TaskError(seed, *payload)


def _unique(seeds: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(int(s) for s in seeds))


# ---------------------------------------------------------------------- interface
class Backend(abc.ABC, Generic[C, R]):
    """Runs one episode per seed on some workers and yields the results as they finish.

    :ivar name: ``"local"`` or ``"ray"``.
    :ivar workers: how many episodes run at once.
    :ivar max_retries: how many times a seed whose worker died is started again.
    """

    name: str
    workers: int
    max_retries: int

    def start(self) -> None:
        """Get ready to run, e.g. connect to the cluster, so that the first :meth:`run` is not the one that waits."""

    @abc.abstractmethod
    def run(self, make_worker: WorkerFactory[C, R], config: C, seeds: Iterable[int]) -> Iterator[tuple[int, R]]:
        """Run ``work(seed)`` for each seed and yield ``(seed, result)`` as each finishes.

        Args:
            make_worker: a picklable module-level function; ``make_worker(config)`` is a
                context manager giving ``work(seed) -> result``, entered once per worker.
            config: picklable settings for ``make_worker``.
            seeds: the seeds to run; a seed given twice is run once.

        Returns:
            an iterator of ``(seed, result)``, in the order the episodes finish, each seed once.

        Raises:
            TaskError: ``make_worker`` or ``work`` raised in a worker.
            WorkerDiedError: a seed's worker died more than ``max_retries`` times.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers}, max_retries={self.max_retries})"


# ----------------------------------------------------------------- local processes
@contextlib.contextmanager
def _child_environ() -> Iterator[None]:
    """Environment for spawned workers, which inherit os.environ as it is when they start."""
    overrides = dict(HEADLESS_ENV)
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


def _local_worker_main(conn: Connection, make_worker: WorkerFactory[Any, Any], config: Any) -> None:
    """Run the seeds the parent sends, until it sends None, a seed fails, or the parent dies."""
    # Ctrl-C reaches the whole process group; the parent decides what to do about it and
    # terminates the workers, so a worker must not die half-way through on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp.parent_process()
    worker = _Worker(make_worker, config)
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
            message = worker(seed)
            conn.send(message)
            if message[0] == "error":
                return
    except (EOFError, OSError):
        return  # the parent is gone; what was written meanwhile is the caller's to adopt
    finally:
        worker.close()


class LocalBackend(Backend[C, R]):
    """Worker processes on this machine, started with the "spawn" method.

    Spawn re-imports the main module: in a script, run under ``if __name__ == "__main__":``.
    Workers are safe with threads and CUDA in the parent, ignore Ctrl-C (the parent
    terminates them), and get one BLAS thread each unless ``OMP_NUM_THREADS`` etc. are set.

    Args:
        workers: worker processes; 1 runs the episodes in this process, in order, and
            lets exceptions through as they are (no :class:`TaskError`, no retries).
        max_retries: how many times a seed whose worker process died is run again, each
            time in a fresh process.
    """

    name = "local"

    def __init__(self, workers: int = 2, max_retries: int = 3) -> None:
        self.workers = check_int("workers", workers, 1)
        self.max_retries = check_int("max_retries", max_retries, 0)

    def run(self, make_worker: WorkerFactory[C, R], config: C, seeds: Iterable[int]) -> Iterator[tuple[int, R]]:
        seeds = _unique(seeds)
        if not seeds:
            return
        if self.workers == 1:
            with make_worker(config) as work:
                for seed in seeds:
                    yield seed, work(seed)
            return
        yield from self._pool(make_worker, config, seeds)

    def _pool(self, make_worker: WorkerFactory[C, R], config: C, seeds: list[int]) -> Iterator[tuple[int, R]]:
        # spawn, not fork: the parent may hold threads (tqdm's monitor, torch) or CUDA state,
        # which fork copies in a broken state; spawn starts clean everywhere.
        ctx = mp.get_context("spawn")
        pending = collections.deque(seeds)
        deaths: collections.Counter[int] = collections.Counter()
        procs: dict[Connection, Any] = {}
        in_flight: dict[Connection, int] = {}
        finished = False

        def start() -> Connection:
            parent_conn, child_conn = ctx.Pipe()
            with _child_environ():
                proc = ctx.Process(
                    target=_local_worker_main, args=(child_conn, make_worker, config), daemon=True,
                    name="dreamgym-worker",
                )
                proc.start()
            child_conn.close()
            procs[parent_conn] = proc
            return parent_conn

        def send_next(conn: Connection) -> None:
            seed = pending.popleft()
            in_flight[conn] = seed
            with contextlib.suppress(OSError):  # a worker that just died is found by the wait below
                conn.send(seed)

        try:
            for _ in range(min(self.workers, len(seeds))):
                send_next(start())
            while in_flight:
                sentinels = {procs[conn].sentinel: conn for conn in in_flight}
                for obj in wait([*in_flight, *sentinels]):
                    conn = obj if isinstance(obj, Connection) else sentinels[obj]
                    if conn not in in_flight:
                        continue  # already handled through its other handle in this round
                    seed = in_flight.pop(conn)
                    try:
                        message = conn.recv()
                    except (EOFError, OSError):
                        proc = procs.pop(conn)
                        proc.join(timeout=1)
                        conn.close()
                        deaths[seed] += 1
                        detail = f"worker pid {proc.pid}, exit code {proc.exitcode}"
                        if deaths[seed] > self.max_retries:
                            raise WorkerDiedError(seed, deaths[seed], detail) from None
                        logger.warning("%s died running seed %d: running it again (retry %d of %d)",
                                       detail, seed, deaths[seed], self.max_retries)
                        pending.appendleft(seed)
                        send_next(start())
                        continue
                    yield _unpack(message)
                    if pending:
                        send_next(conn)
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


# ---------------------------------------------------------------------------- Ray
def import_ray() -> Any:
    """Import Ray, or say how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ImportError(
            f"the Ray backend needs Ray, which is not installed here: {RAY_INSTALL_HINT} "
            f"(and the same on every node of the cluster)"
        ) from err
    return ray


# The worker built by the current run, kept in each Ray worker process between tasks, so
# that a process builds its env once per run and not once per episode.
_RAY_STATE: dict[str, Any] = {}


def _close_ray_state() -> None:
    worker = _RAY_STATE.pop("worker", None)
    _RAY_STATE.pop("token", None)
    if worker is not None:
        worker.close()


def _ray_task(token: str, job: list[Any], seed: int) -> Message:
    """One episode in a Ray worker process; ``job`` holds the ObjectRef of ``(make_worker, config)``."""
    if _RAY_STATE.get("token") != token:
        import ray  # Ray is optional (dreamgym[ray]); this runs only in a Ray worker

        if not _RAY_STATE.get("atexit"):
            atexit.register(_close_ray_state)
            _RAY_STATE["atexit"] = True
        _close_ray_state()
        make_worker, config = ray.get(job[0])  # fetched once per process and run, not per episode
        _RAY_STATE.update(token=token, worker=_Worker(make_worker, config))
    message = _RAY_STATE["worker"](seed)
    if message[0] == "error" and message[1] is None:
        _close_ray_state()  # it could not start; the next task tries afresh
    return message


_REMOTE_TASK: list[Any] = []


class RayBackend(Backend[C, R]):
    """Ray tasks on a Ray cluster, one CPU each, at most ``workers`` in flight.

    Connects with ``ray.init(address=address)`` on the first run, unless Ray is already
    initialised in this process (then that cluster is used and ``address`` is ignored).
    Every node needs dreamgym (and what ``config`` names: controllers, world models, the
    episode store) at the same paths: a shared file system, or a Hub id for models.

    Args:
        workers: how many episodes run at once on the cluster.
        address: ``"auto"`` (a cluster started with ``ray start`` on this machine),
            ``"ray://host:10001"`` (Ray Client), ``"host:6379"``, ``"local"`` (always a new Ray
            instance on this machine); None: as ``ray.init()``, ``RAY_ADDRESS`` if set, else the
            cluster last started on this machine, else a new one.
        max_retries: how many times a task whose worker process or node died is run
            again (Ray's ``max_retries``).
        num_cpus: CPUs Ray reserves for each task.
        init_kwargs: more keyword arguments for ``ray.init`` (``num_cpus``,
            ``runtime_env``, ...).

    Raises:
        ImportError: Ray is not installed (``pip install "dreamgym[ray]"``).
    """

    name = "ray"

    def __init__(
        self,
        workers: int = 2,
        address: str | None = None,
        max_retries: int = 3,
        num_cpus: float = 1.0,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.workers = check_int("workers", workers, 1)
        self.max_retries = check_int("max_retries", max_retries, 0)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise ValueError(
                f"address must be a non-empty string such as 'auto' or 'ray://host:10001', got {address!r}"
            )
        self.address = address
        self.num_cpus = num_cpus
        self.init_kwargs = dict(init_kwargs or {})
        self._ray = import_ray()  # fail now, before any work, if Ray is missing

    def __repr__(self) -> str:
        return f"RayBackend(workers={self.workers}, address={self.address!r}, max_retries={self.max_retries})"

    def start(self) -> None:
        """Connect to the cluster (``ray.init``), unless Ray is already initialised in this process."""
        if not self._ray.is_initialized():
            self._ray.init(address=self.address, **self.init_kwargs)

    def _remote(self) -> Any:
        ray = self._ray
        self.start()
        if not _REMOTE_TASK:
            _REMOTE_TASK.append(ray.remote(_ray_task))
        # Only a died worker or node is retried: an exception in the task comes back as a
        # message, as it would raise again.
        return _REMOTE_TASK[0].options(num_cpus=self.num_cpus, max_retries=self.max_retries, retry_exceptions=False)

    def run(self, make_worker: WorkerFactory[C, R], config: C, seeds: Iterable[int]) -> Iterator[tuple[int, R]]:
        seeds = _unique(seeds)
        if not seeds:
            return
        ray = self._ray
        task = self._remote()
        token = uuid.uuid4().hex
        job = [ray.put((make_worker, config))]  # in a list, so that tasks fetch it only when they need it
        pending = collections.deque(seeds)
        in_flight: dict[Any, int] = {}
        finished = False

        def submit() -> None:
            seed = pending.popleft()
            in_flight[task.remote(token, job, seed)] = seed

        try:
            for _ in range(min(self.workers, len(seeds))):
                submit()
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    seed = in_flight.pop(ref)
                    try:
                        message = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:  # the task machinery itself failed
                        cause = getattr(err, "cause", None)
                        summary = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
                        raise TaskError(seed, cause, str(err), summary) from None
                    except ray.exceptions.RayError as err:  # worker, node or object lost, retries spent
                        raise WorkerDiedError(seed, self.max_retries + 1, f"{type(err).__name__}: {err}") from None
                    yield _unpack(message)
                    if pending:
                        submit()
            finished = True
        finally:
            if not finished:
                # Ctrl-C or an error: drop the episodes in flight rather than wait for them.
                for ref in in_flight:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)


# --------------------------------------------------------------------------- choice
def make_backend(
    backend: str | Backend[Any, Any] = "local",
    workers: int = 2,
    address: str | None = None,
    max_retries: int = 3,
) -> Backend[Any, Any]:
    """The backend a name (``--backend``) asks for.

    Args:
        backend: ``"local"``, ``"ray"``, or a :class:`Backend`, returned as it is (it has
            its own workers).
        workers: how many episodes run at once.
        address: the Ray cluster to connect to (``"auto"``, ``"ray://host:10001"``);
            only for ``"ray"``.
        max_retries: how many times a seed whose worker died is run again.

    Raises:
        ValueError: an unknown name, or an address for the local backend.
        ImportError: ``"ray"`` without Ray installed.
    """
    if isinstance(backend, Backend):
        if address is not None:
            raise ValueError(f"address={address!r} cannot apply to {backend!r}, which is already made")
        return backend
    if backend == "local":
        if address is not None:
            raise ValueError(
                f"address {address!r} (--address) is for the Ray backend: add backend='ray' (--backend ray)"
            )
        return LocalBackend(workers, max_retries)
    if backend == "ray":
        return RayBackend(workers, address, max_retries)
    raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(map(repr, BACKENDS))}")


# A worker's error that means bad input (the parent would have raised the same, had it checked):
# shown as the worker raised it, one line.
_INPUT_ERRORS = (DreamgymError, ValueError, FileNotFoundError, ImportError)


def run_episodes(
    backend: Backend[C, R], make_worker: WorkerFactory[C, R], config: C, seeds: Iterable[int], *, job: str, on_stop: str
) -> Iterator[tuple[int, R]]:
    """``backend.run(make_worker, config, seeds)``, with a failure said as the user should see it.

    What collection and evaluation both do with a backend's errors:

    - a worker raised on bad input (a :class:`~dreamgym.errors.DreamgymError`, ``ValueError``,
      ``FileNotFoundError``, ``ImportError``): that very error is raised again;
    - a worker raised anything else: :class:`~dreamgym.errors.WorkerFailedError` naming the
      seed, with the worker's traceback;
    - a seed's worker died on every attempt: :class:`~dreamgym.errors.WorkerFailedError`
      saying so, and ``on_stop`` (what became of the finished episodes).

    Args:
        backend: runs the episodes.
        make_worker: as for :meth:`Backend.run`.
        config: as for :meth:`Backend.run`.
        seeds: as for :meth:`Backend.run`.
        job: what the workers do, for the message (``"collection"``, ``"evaluation"``).
        on_stop: what the user should know when the run stopped early.
    """
    try:
        yield from backend.run(make_worker, config, seeds)
    except TaskError as err:
        if isinstance(err.error, _INPUT_ERRORS):
            raise err.error from err
        what = "could not start" if err.seed is None else f"failed on the episode of seed {err.seed}"
        article = "an" if job[:1] in "aeiou" else "a"
        raise WorkerFailedError(f"{article} {job} worker {what}: {err.summary}\n{err.remote_traceback}") from None
    except WorkerDiedError as err:
        raise WorkerFailedError(f"{job} stopped: {err}; {on_stop}") from None
