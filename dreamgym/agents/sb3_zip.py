"""Loading a Stable-Baselines3 zip without unpickling anything from it.

SB3 saves an agent as a zip whose ``data`` entry is JSON, except that every value JSON cannot
hold (the policy class, the spaces, the schedules, buffers...) is a base64 cloudpickle under a
``":serialized:"`` key, next to a readable copy of its attributes. ``BaseAlgorithm.load``
unpickles those, and unpickling runs whatever code the file's author put there. (The tensors,
in the ``.pth`` entries, are read by ``torch.load(weights_only=True)``, which runs none.)

:func:`safe_custom_objects` rebuilds each pickled field from its readable copy, or replaces it
by a stand-in that acting never reads, and hands them to SB3's ``custom_objects``, which SB3
uses *instead of* unpickling. A field it does not know is refused with
:class:`~dreamgym.errors.UnsafeAgentError`, naming it. What is rebuilt and what is a stand-in:

- ``observation_space``, ``action_space``: rebuilt (``Box`` and ``Discrete``) from their shape,
  dtype and bounds.
- ``policy_class``: the class of the algorithm's own policies (``MlpPolicy``, ``CnnPolicy``...)
  whose module and name the readable copy shows; any other class is refused.
- ``policy_kwargs``: rebuilt from its JSON values; classes in it are accepted only from
  ``torch.nn`` activations, ``torch.optim`` and SB3's feature extractors.
- schedules (``lr_schedule``, ``learning_rate``, ``clip_range``, ``clip_range_vf``,
  ``exploration_schedule``): rebuilt when constant or linear, else a constant stand-in.
- ``train_freq``, ``rollout_buffer_class``, ``replay_buffer_class``, ``action_noise``, and the
  state of an interrupted ``learn`` (``_last_obs``, ``ep_info_buffer``...): SB3's defaults.

So a safely loaded agent *acts* exactly as saved; to continue *training* it, load it with
``allow_pickle=True`` from a file you trust.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

from dreamgym.errors import UnsafeAgentError

__all__ = ["safe_custom_objects"]

SCHEDULE_FIELDS = ("lr_schedule", "learning_rate", "clip_range", "clip_range_vf", "exploration_schedule")
# Read by learn() only, never by predict(): None lets SB3 pick its defaults.
DEFAULT_FIELDS = (
    "_last_obs",
    "_last_episode_starts",
    "_last_original_obs",
    "ep_info_buffer",
    "ep_success_buffer",
    "action_noise",
    "rollout_buffer_class",
    "replay_buffer_class",
)
# Modules whose classes may appear in policy_kwargs: importing a name from them runs no foreign code.
ALLOWED_CLASS_MODULES = ("torch.nn.modules.", "torch.optim.", "stable_baselines3.common.torch_layers")
_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")
_METHOD_REPR = re.compile(r"<function (\w+)\.\w+ at 0x")


class _CannotRebuild(Exception):
    pass


def _type_name(value: dict[str, Any]) -> str:
    match = _CLASS_REPR.fullmatch(str(value.get(":type:", "")))
    return match.group(1) if match else ""


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value)
    return tuple(int(v) for v in re.findall(r"\d+", str(value)))


def _array(text: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A space bound from numpy's printed form; a summarised one ("...") only if it is uniform."""
    if isinstance(text, (list, int, float)):
        return np.broadcast_to(np.asarray(text, dtype=np.float64), shape).astype(dtype)
    numbers = np.array(str(text).replace("[", " ").replace("]", " ").replace("...", " ").split(), dtype=np.float64)
    if "..." in str(text):
        if len(numbers) == 0 or not (numbers == numbers[0]).all():
            raise _CannotRebuild("its bounds are summarised and not uniform")
        return np.full(shape, numbers[0]).astype(dtype)
    if numbers.size != int(np.prod(shape)):
        raise _CannotRebuild(f"its bounds hold {numbers.size} numbers for shape {shape}")
    return numbers.reshape(shape).astype(dtype)


def _space(value: dict[str, Any]) -> gym.Space:
    kind = _type_name(value)
    if kind == "gymnasium.spaces.box.Box":
        dtype = np.dtype(str(value["dtype"]))
        shape = _shape(value["_shape"])
        return gym.spaces.Box(_array(value["low"], shape, dtype), _array(value["high"], shape, dtype), shape, dtype)
    if kind == "gymnasium.spaces.discrete.Discrete":
        return gym.spaces.Discrete(int(value["n"]), start=int(value.get("start", 0)))
    raise _CannotRebuild(f"a {kind or 'unknown'} space (only Box and Discrete are rebuilt)")


def _policy_class(value: dict[str, Any], algorithm: type[BaseAlgorithm]) -> type:
    module = value.get("__module__")
    names = {m.group(1) for v in value.values() if isinstance(v, str) for m in _METHOD_REPR.finditer(v)}
    matches = [c for c in set(algorithm.policy_aliases.values()) if c.__module__ == module and c.__name__ in names]
    if len(matches) != 1:
        raise _CannotRebuild(
            f"not one of {algorithm.__name__}'s own policies (module {module!r}, classes {sorted(names)})"
        )
    return matches[0]


def _allowed_class(text: str) -> type:
    match = _CLASS_REPR.fullmatch(text)
    if not match or not match.group(1).startswith(ALLOWED_CLASS_MODULES):
        raise _CannotRebuild(f"{text} is not a torch.nn, torch.optim or SB3 feature-extractor class")
    module, _, name = match.group(1).rpartition(".")
    cls = getattr(importlib.import_module(module), name, None)
    if not isinstance(cls, type):
        raise _CannotRebuild(f"{text} is not a class")
    return cls


def _policy_kwargs(value: dict[str, Any]) -> dict[str, Any]:
    kwargs = {}
    for key, item in value.items():
        if key.startswith(":"):
            continue
        if isinstance(item, str) and item.startswith("<"):
            kwargs[key] = _allowed_class(item)  # a class, or the printed form of something unpicklable
        else:
            kwargs[key] = item  # JSON values stayed JSON
    return kwargs


def _schedule_from_text(text: str) -> Any:
    match = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", text)
    if not match:
        raise _CannotRebuild(text)
    args = {k: float(v) for k, v in re.findall(r"(\w+)=([-+\w.]+)", match.group(2))}
    if match.group(1) == "ConstantSchedule" and set(args) == {"val"}:
        return ConstantSchedule(args["val"])
    if match.group(1) == "LinearSchedule" and set(args) == {"start", "end", "end_fraction"}:
        return LinearSchedule(**args)
    raise _CannotRebuild(text)


def _schedule(value: dict[str, Any]) -> Any:
    kind = _type_name(value).rpartition(".")[2]
    try:
        if kind == "FloatSchedule":
            return FloatSchedule(_schedule_from_text(str(value["value_schedule"])))
        if kind in ("ConstantSchedule", "LinearSchedule"):
            fields = ", ".join(f"{k}={v}" for k, v in value.items() if not k.startswith((":", "_")))
            return _schedule_from_text(f"{kind}({fields})")
    except (_CannotRebuild, KeyError, ValueError):
        pass
    # Acting never reads a schedule; learning would. See the module doc.
    return FloatSchedule(ConstantSchedule(0.0))


def safe_custom_objects(data: dict[str, Any], algorithm: type[BaseAlgorithm], file: str) -> dict[str, Any]:
    """SB3 ``custom_objects`` that replace every pickled field of a zip's ``data``, so ``load`` unpickles nothing.

    Args:
        data: the zip's ``data`` entry, parsed as JSON.
        algorithm: the SB3 algorithm class that saved it.
        file: the zip, for the message.

    Raises:
        UnsafeAgentError: naming every pickled field that cannot be rebuilt safely.
    """
    custom: dict[str, Any] = {}
    refused = []
    for key, value in data.items():
        if not (isinstance(value, dict) and ":serialized:" in value):
            continue
        try:
            if key in ("observation_space", "action_space"):
                custom[key] = _space(value)
            elif key == "policy_class":
                custom[key] = _policy_class(value, algorithm)
            elif key == "policy_kwargs":
                custom[key] = _policy_kwargs(value)
            elif key in SCHEDULE_FIELDS:
                custom[key] = _schedule(value)
            elif key == "train_freq":
                custom[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
            elif key in DEFAULT_FIELDS:
                custom[key] = None
            else:
                refused.append(key)
        except (_CannotRebuild, KeyError, TypeError, ValueError, ImportError) as err:
            refused.append(f"{key} ({err})")
    if refused:
        raise UnsafeAgentError(
            f"SB3 agent {file!r} holds pickled fields dreamgym cannot rebuild safely: {refused}; loading them would "
            "run code from the file. Pass allow_pickle=True (--unsafe-pickle) only if you trust whoever made it"
        )
    return custom
