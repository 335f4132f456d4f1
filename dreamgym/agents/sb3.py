"""Stable-Baselines3 agents: loading a saved SB3 agent without unpickling it.

The SB3 ``VecEnv`` over the batched dream, :class:`~dreamgym.envs.sb3_vec.DreamVecEnv`, lives
with the envs; it and :func:`~dreamgym.envs.sb3_vec.make_dream_vec_env` are importable from
here too, as they were before (``from dreamgym.sb3 import ...`` is the public way).
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from typing import Any

import torch
from stable_baselines3.common.base_class import BaseAlgorithm

from dreamgym.agents.sb3_zip import safe_custom_objects
from dreamgym.envs.sb3_vec import DreamVecEnv, make_dream_vec_env

__all__ = ["DreamVecEnv", "load_sb3_agent", "make_dream_vec_env"]


def _algorithms() -> dict[str, type[BaseAlgorithm]]:
    from stable_baselines3 import A2C, DDPG, DQN, PPO, SAC, TD3

    return {cls.__name__: cls for cls in (PPO, A2C, SAC, TD3, DDPG, DQN)}


def _detect_algorithm(data: dict[str, Any]) -> str | None:
    """The SB3 algorithm that wrote a zip's ``data``, from plain JSON fields only (nothing unpickled)."""
    policy_class = data.get("policy_class")
    module = policy_class.get("__module__", "") if isinstance(policy_class, dict) else ""
    if module.startswith("stable_baselines3.sac."):
        return "SAC"
    if module.startswith("stable_baselines3.dqn."):
        return "DQN"
    if module.startswith("stable_baselines3.td3."):
        # DDPG is TD3 with one policy update per critic update and no target smoothing.
        is_ddpg = data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0
        return "DDPG" if is_ddpg else "TD3"
    if module == "stable_baselines3.common.policies":
        # PPO and A2C share their policy classes; only PPO has a clip range and epochs.
        return "PPO" if "clip_range" in data or "n_epochs" in data else "A2C"
    return None


def load_sb3_agent(
    path: str | os.PathLike,
    algo: str | type[BaseAlgorithm] | None = None,
    device: torch.device | str = "auto",
    allow_pickle: bool = False,
    **kwargs: Any,
) -> BaseAlgorithm:
    """Load a Stable-Baselines3 agent saved with ``model.save(path)``, by default without unpickling anything.

    SB3 zips hold pickled objects (the policy class, spaces, schedules), and SB3's own ``load``
    unpickles them, which runs any code the file's author put there. By default each pickled
    field is instead rebuilt from the readable JSON beside it, or replaced by a stand-in that
    acting never reads (see :mod:`dreamgym.agents.sb3_zip`); a zip with any other pickled
    field is refused. The agent then acts exactly as saved; continue training only an agent
    loaded with ``allow_pickle=True``.

    Args:
        path: the ``.zip`` written by SB3 (the suffix may be left out, as in SB3).
        algo: the algorithm class, or the name of one of SB3's (``"PPO"``, ``"A2C"``,
            ``"SAC"``, ``"TD3"``, ``"DDPG"``, ``"DQN"``). None detects it from the zip's JSON
            ``data`` (its policy class and hyperparameters) without unpickling anything; pass
            the class for algorithms outside SB3 itself, such as sb3-contrib's.
        device: torch device for the policy.
        allow_pickle: load with SB3's own ``load``, unpickling the zip's fields: only for a
            file you trust (warns).
        **kwargs: passed to ``BaseAlgorithm.load`` (``env``, ``custom_objects``, ...).

    Returns:
        the loaded agent; ``agent.predict(obs, deterministic=True)`` drives an env.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not an SB3 zip, an unknown algorithm name, or one that cannot be detected.
        UnsafeAgentError: (a ``ValueError``) without ``allow_pickle``, the zip has a pickled
            field that cannot be rebuilt safely.
    """
    file = os.fspath(path)
    if not os.path.isfile(file) and os.path.isfile(file + ".zip"):
        file += ".zip"
    if not os.path.isfile(file):
        raise FileNotFoundError(f"no SB3 agent at {os.fspath(path)!r}")
    algorithms = _algorithms()
    names = {k.upper(): k for k in algorithms}
    if isinstance(algo, type) and not issubclass(algo, BaseAlgorithm):
        raise ValueError(f"algo must be a stable_baselines3 BaseAlgorithm subclass, got {algo!r}")
    if isinstance(algo, str) and algo.upper() not in names:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; expected one of {sorted(algorithms)} or a class")
    try:
        with zipfile.ZipFile(file) as archive:
            data = json.load(io.TextIOWrapper(archive.open("data"), encoding="utf-8"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file!r} is not an SB3 agent zip (no readable 'data' entry): {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{file!r} is not an SB3 agent zip: its 'data' entry is not a JSON object")
    if isinstance(algo, type):
        cls = algo
    else:
        name = algo
        if name is None:
            name = _detect_algorithm(data)
            if name is None:
                raise ValueError(
                    f"cannot tell which algorithm saved {file!r}; pass algo= one of {sorted(algorithms)} or the class"
                )
        key = names.get(str(name).upper())
        if key is None:
            raise ValueError(f"unknown SB3 algorithm {name!r}; expected one of {sorted(algorithms)} or a class")
        cls = algorithms[key]
    if allow_pickle:
        warnings.warn(
            f"loading SB3 agent {file!r} with allow_pickle=True unpickles its fields, which runs any code they hold: "
            "do this only for files you trust",
            UserWarning,
            stacklevel=2,
        )
        return cls.load(file, device=device, **kwargs)
    custom = {**safe_custom_objects(data, cls, file), **(kwargs.pop("custom_objects", None) or {})}
    return cls.load(file, device=device, custom_objects=custom, **kwargs)
