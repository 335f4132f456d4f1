"""Every error dreamgym raises on purpose, in one place (as Gymnasium's ``gymnasium.error``).

All of them but the two a backend uses among its workers derive from :class:`DreamgymError`,
so ``except DreamgymError`` catches any expected failure: bad input, a corrupt or unsafe
file, work that would be overwritten. Each also derives from the built-in exception its
callers have always caught (``ValueError``, ``RuntimeError``, ``FileExistsError``, ...), so
existing ``except`` clauses keep working. An exception that is not a :class:`DreamgymError`
(nor a plain ``OSError`` from the file system) is a bug, and the ``dreamgym`` command shows
its traceback.

The modules that raise an error re-export it under its old name (``dreamgym.config.ConfigError``,
``dreamgym.models.world_model.WorldModelFormatError``, ...), so either import works.
"""

from __future__ import annotations

from typing import Any

from gymnasium.error import ResetNeeded

__all__ = [
    "ArgumentError",
    "ChecksumError",
    "CheckpointError",
    "CollectionConflictError",
    "CollectorBusyError",
    "ConfigError",
    "ControllerChecksumError",
    "ControllerFormatError",
    "DreamgymError",
    "FileFormatError",
    "NonFiniteDreamError",
    "PolicyFormatError",
    "ResetNeededError",
    "ShardCorruptError",
    "TaskError",
    "UnsafeAgentError",
    "UnsafePathError",
    "WorkerDiedError",
    "WorkerFailedError",
    "WorldModelChecksumError",
    "WorldModelFormatError",
    "WouldOverwriteError",
]


class DreamgymError(Exception):
    """Base of every error dreamgym raises on purpose; anything else is a bug."""


# --------------------------------------------------------------------------- bad input
class ArgumentError(DreamgymError, TypeError, ValueError):
    """An argument has the wrong type (a string where a number was expected, a bool for an int...).

    A ``TypeError``, and a ``ValueError`` too: the checks it replaced raised one or the other.
    """


class ConfigError(DreamgymError, ValueError):
    """A world-model configuration (or a build config) is malformed or from an unsupported version."""


# ------------------------------------------------------------------------ bad files
class FileFormatError(DreamgymError, ValueError):
    """A file dreamgym reads is not what it should be: not JSON, the wrong shape, an unknown format version."""


class ChecksumError(DreamgymError, ValueError):
    """A file's sha256 differs from the one recorded when it was written: it is corrupt."""


class WorldModelFormatError(FileFormatError):
    """A world model's files are missing, corrupt, or do not match its config."""


class WorldModelChecksumError(WorldModelFormatError, ChecksumError):
    """``model.safetensors`` does not hash to the sha256 its ``config.json`` records."""


class ControllerFormatError(FileFormatError):
    """A controller's files are corrupt, from an unknown format version, or do not match its config."""


class ControllerChecksumError(ControllerFormatError, ChecksumError):
    """``controller.safetensors`` does not hash to the sha256 its ``controller.json`` records."""


class PolicyFormatError(FileFormatError):
    """An exported policy's folder is malformed, from an unknown format version, or its weights do not fit."""


class ShardCorruptError(FileFormatError):
    """An episode shard is missing, truncated, fails its checksum, or does not hold a valid episode."""


class CheckpointError(DreamgymError, RuntimeError):
    """A training checkpoint is unreadable or belongs to a different run."""


class UnsafePathError(DreamgymError, ValueError):
    """A path would read from or write to outside the folder it belongs to (a symlink, the source itself)."""


class UnsafeAgentError(DreamgymError, ValueError):
    """An agent file can only be loaded by unpickling code from it, and that was not allowed."""


# --------------------------------------------------------------------- work in the way
class WouldOverwriteError(DreamgymError, FileExistsError):
    """A stage would write over finished work; nothing was written."""


class CollectionConflictError(DreamgymError, ValueError):
    """Episodes already stored were collected with other settings than those asked for now."""


class CollectorBusyError(DreamgymError, RuntimeError):
    """Another collector holds the episode store's lock."""


# -------------------------------------------------------------------------- running
class WorkerFailedError(DreamgymError, RuntimeError):
    """A worker process or Ray task failed on an episode, or died more often than it is retried."""


class NonFiniteDreamError(DreamgymError, RuntimeError):
    """The dream produced a NaN or infinite observation or reward."""


class TaskError(RuntimeError):
    """``make_worker`` or ``work`` raised in a backend's worker; not retried, as the same seed would raise again.

    Raised by :meth:`dreamgym.backends.Backend.run`; :func:`dreamgym.backends.run_episodes`
    turns it into the worker's own error (bad input) or a :class:`WorkerFailedError`.

    :ivar seed: the seed being run; None if the worker could not start (``make_worker`` raised).
    :ivar error: the exception raised in the worker, or None if it could not be sent back.
    :ivar remote_traceback: its traceback, as text.
    """

    def __init__(self, seed: int | None, error: BaseException | None, remote_traceback: str, summary: str) -> None:
        what = "could not start" if seed is None else f"failed on the episode of seed {seed}"
        super().__init__(f"a worker {what}: {summary}")
        self.seed, self.error, self.remote_traceback, self.summary = seed, error, remote_traceback, summary

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.seed, self.error, self.remote_traceback, self.summary)


class ResetNeededError(DreamgymError, ResetNeeded, RuntimeError):
    """An env was stepped or rendered before its first reset.

    Gymnasium's ``ResetNeeded`` (what ``OrderEnforcing`` raises) and a ``RuntimeError``, as
    the vector env raised before every front-end raised this one.
    """


class WorkerDiedError(RuntimeError):
    """A seed's worker died (killed, out of memory, crashed in native code) on every attempt.

    Raised by :meth:`dreamgym.backends.Backend.run`; :func:`dreamgym.backends.run_episodes`
    turns it into a :class:`WorkerFailedError`.

    :ivar seed: the seed that was running.
    :ivar attempts: how many times it was started.
    """

    def __init__(self, seed: int, attempts: int, detail: str) -> None:
        times = "once" if attempts == 1 else f"on all {attempts} attempts"
        super().__init__(
            f"the worker running the episode of seed {seed} died {times} ({detail}): killed, out of memory, "
            f"or crashed in native code"
        )
        self.seed, self.attempts, self.detail = seed, attempts, detail

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.seed, self.attempts, self.detail)
