"""Every error dreamgym raises on purpose, in one place (as Gymnasium's ``gymnasium.error``).

All of them derive from :class:`DreamgymError`, so ``except DreamgymError`` catches any
expected failure: bad input, a corrupt or unsafe file, work that would be overwritten. Each
also derives from the built-in exception its callers have always caught (``ValueError``,
``RuntimeError``, ``FileExistsError``, ...), so existing ``except`` clauses keep working.
An exception that is not a :class:`DreamgymError` (nor a plain ``OSError`` from the file
system) is a bug, and the ``dreamgym`` command shows its traceback.

The errors defined next to the code that raises them (``ConfigError``,
``WorldModelFormatError``, ``ControllerFormatError``, ``CheckpointError``,
``ShardCorruptError``) are importable from here too; they load on first use so that this
module stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from gymnasium.error import ResetNeeded

__all__ = [
    "ArgumentError",
    "ChecksumError",
    "CheckpointError",
    "CollectionConflictError",
    "CollectorBusyError",
    "ConfigError",
    "ControllerFormatError",
    "DreamgymError",
    "NonFiniteDreamError",
    "ResetNeededError",
    "ShardCorruptError",
    "UnsafeAgentError",
    "UnsafePathError",
    "WorkerFailedError",
    "WorldModelFormatError",
    "WouldOverwriteError",
]


class DreamgymError(Exception):
    """Base of every error dreamgym raises on purpose; anything else is a bug."""


class ArgumentError(DreamgymError, TypeError):
    """An argument has the wrong type (a string where a number was expected, a bool for an int...)."""


class ChecksumError(DreamgymError, ValueError):
    """A file's sha256 differs from the one recorded when it was written: it is corrupt."""


class UnsafePathError(DreamgymError, ValueError):
    """A path would read from or write to outside the folder it belongs to (a symlink, the source itself)."""


class UnsafeAgentError(DreamgymError, ValueError):
    """An agent file can only be loaded by unpickling code from it, and that was not allowed."""


class WouldOverwriteError(DreamgymError, FileExistsError):
    """A stage would write over finished work; nothing was written."""


class CollectionConflictError(DreamgymError, ValueError):
    """Episodes already stored were collected with other settings than those asked for now."""


class CollectorBusyError(DreamgymError, RuntimeError):
    """Another collector holds the episode store's lock."""


class WorkerFailedError(DreamgymError, RuntimeError):
    """A worker process or Ray task failed on an episode, or died more often than it is retried."""


class NonFiniteDreamError(DreamgymError, RuntimeError):
    """The dream produced a NaN or infinite observation or reward."""


class ResetNeededError(DreamgymError, ResetNeeded, RuntimeError):
    """An env was stepped or rendered before its first reset.

    Gymnasium's ``ResetNeeded`` (what ``OrderEnforcing`` raises) and a ``RuntimeError``, as
    the vector env raised before every front-end raised this one.
    """


# Errors that live beside the code raising them, re-exported lazily (their modules import torch).
_ELSEWHERE = {
    "ConfigError": "dreamgym.config",
    "WorldModelFormatError": "dreamgym.models.world_model",
    "ControllerFormatError": "dreamgym.agents.controller",
    "CheckpointError": "dreamgym.training.common",
    "ShardCorruptError": "dreamgym.data.storage",
}


def __getattr__(name: str) -> Any:
    if name in _ELSEWHERE:
        return getattr(importlib.import_module(_ELSEWHERE[name]), name)
    raise AttributeError(f"module 'dreamgym.errors' has no attribute {name!r}")
