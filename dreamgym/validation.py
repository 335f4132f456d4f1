"""Checks of arguments at dreamgym's boundaries, each failing with one line that says what was expected.

Python ints and numpy integers are the same to every check here (``np.int64(2)`` is an int
count), and a bool is never a number (``True`` is not a count of envs).
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from dreamgym.errors import ArgumentError

if TYPE_CHECKING:
    import torch

__all__ = ["check_device", "check_int", "check_number", "check_seed", "parse_start", "pick_device"]


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an int: a Python or numpy integer, not a bool, in ``[minimum, maximum]``.

    The one check of integer arguments: every count, seed and size dreamgym takes goes through it.

    Raises:
        ArgumentError: not an integer (a ``TypeError``, and a ``ValueError``).
        ValueError: below ``minimum`` or above ``maximum``.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    below = minimum is not None and value < minimum
    if maximum is not None and (below or value > maximum):
        raise ValueError(f"{name} must be an int in [{minimum}, {maximum}], got {value}")
    if below:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(name: str, value: Any) -> float:
    """``value`` as a finite float: an int or float (numpy's included), not a bool or a string.

    Raises:
        ArgumentError: not a number (a ``TypeError``).
        ValueError: NaN or infinite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ArgumentError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def check_seed(value: Any) -> int | None:
    """A Gymnasium seed: None, or a non-negative Python or numpy integer."""
    if value is None:
        return None
    return check_int("seed", value, 0)


def check_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` this machine has; None stays None.

    Raises:
        ValueError: not a device name torch knows, or a CUDA / MPS device this torch build or
            machine lacks (``--device cuda`` on a CPU-only install).
    """
    import torch  # deferred here and below: `import dreamgym` loads this module, and stays free of torch

    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise ArgumentError(
            f"device must be a string such as 'cpu' or 'cuda:0', got {type(device).__name__} {device!r}"
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"unknown torch device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} asks for CUDA, but this torch build or machine has no CUDA GPU; use 'cpu'"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif parsed.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(
            f"device {str(device)!r} asks for Apple MPS, which this torch build or machine lacks; use 'cpu'"
        )
    return parsed


def pick_device(device: Any = None) -> torch.device:
    """The torch device to train or dream on: ``device`` if given, else CUDA when available, else CPU.

    Raises:
        ValueError: ``device`` is not a device name, or one this machine lacks (see :func:`check_device`).
    """
    import torch

    parsed = check_device(device)
    if parsed is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return parsed


def parse_start(text: str) -> str | float:
    """A dream's ``start`` from the command line: a number is the fraction of trajectory starts, anything else a mode.

    The dream checks it (:func:`dreamgym.envs.dynamics.check_start`).
    """
    try:
        return float(text)
    except ValueError:
        return text
