"""Stable-Baselines3 on the batched dream.

:class:`DreamVecEnv` is an SB3 :class:`~stable_baselines3.common.vec_env.VecEnv` whose
``n_envs`` episodes are the rows of one :class:`~dreamgym.envs.dynamics.LatentDream`: a step
of all of them is one torch call, where a ``DummyVecEnv`` of ``DreamCarRacingEnv`` would make
``n_envs`` calls. Sub-env ``i`` is still exactly ``DreamCarRacingEnv`` reset with seed
``seed + i``, so what is trained here can be checked against the single env.

Example::

    from stable_baselines3 import PPO
    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=64, model="path/to/world_model")
    agent = PPO("MlpPolicy", venv).learn(1_000_000)
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from dreamgym.envs.common import (
    carracing_action_space,
    check_env_arguments,
    continuous_actions,
    observation_space,
    upscale,
)
from dreamgym.agents.sb3_zip import safe_custom_objects
from dreamgym.envs.dynamics import LatentDream, check_temperature, episode_keys
from dreamgym.hub import ModelSource, load_world_model

# Attributes that every sub-env shares because they live in the one batched dream.
_SHARED_ATTRS = (
    "render_mode",
    "temperature",
    "obs_mode",
    "continuous",
    "max_episode_steps",
    "sample_termination",
    "start",
    "dropout",
    "ensemble",
    "disagreement_penalty",
    "world_model",
    "observation_space",
    "action_space",
)
# Of those, the ones that can change after construction without changing the spaces.
_SETTABLE_SHARED_ATTRS = ("temperature", "max_episode_steps", "sample_termination")
_ENV_METHODS = ("reset", "render")


def _check_max_episode_steps(value: Any) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"max_episode_steps must be a positive int or None, got {value!r}")
    return value


class DreamVecEnv(VecEnv):
    """
    ``n_envs`` DreamCarRacing-v0 episodes stepped as one batch, as an SB3 ``VecEnv``.

    Each step converts the batch's tensors to numpy once, and episodes that end are reset
    within the same step (SB3's convention): their last observation is in
    ``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]`` tells a time
    limit from a real end, and the returned observation is the first of the next episode.
    ``infos[i]["termination_probability"]`` holds M's termination probability.

    Sub-env ``i`` reset with seed ``s`` follows ``DreamCarRacingEnv().reset(seed=s)`` exactly
    (up to float rounding of the batched matmuls): it owns a numpy Generator seeded as
    Gymnasium seeds an env, and draws each episode's dream key from it as the single env does.
    ``seed(s)`` (or the ``seed`` argument) gives sub-env ``i`` the seed ``s + i`` at the next
    reset; without one, fresh entropy is used.

    :param model: a :class:`~dreamgym.WorldModel`, a folder written by ``save_pretrained``,
        a Hugging Face Hub repo id, or None for the model shipped with dreamgym.
    :param n_envs: number of dream episodes run side by side.
    :param temperature: the dream's temperature tau (see ``DreamCarRacingEnv``).
    :param continuous: ``Box(3)`` actions (steer, gas, brake) if True, else ``Discrete(5)``.
    :param obs_mode: ``"latent"`` for ``[z, h]`` vectors, ``"pixels"`` for V's decoded
        ``(64, 64, 3)`` uint8 frames (SB3 wraps those in ``VecTransposeImage`` itself).
    :param max_episode_steps: steps after which an episode is truncated, or None for never.
    :param sample_termination: draw termination from M's probability instead of
        thresholding it at 0.5.
    :param seed: seed of the first reset (sub-env ``i`` gets ``seed + i``); None for fresh entropy.
    :param device: torch device of the world model.
    :param render_mode: None, or ``"rgb_array"`` for :meth:`render` to return a grid of the
        decoded frames (``render("human")`` then shows it with OpenCV, as SB3 does).
    :param revision: branch, tag or commit when ``model`` is a Hub repo id.
    :param start: ``"first_frame"`` or ``"trajectory"`` (see ``DreamCarRacingEnv``).
    :param dropout: dream-time dropout, one mask per episode (see ``DreamCarRacingEnv``).
    :param ensemble: dream with the world model's ensemble of Ms, one member per episode
        (see ``DreamCarRacingEnv``); ``infos[i]["disagreement"]`` then holds the members'
        disagreement for the step.
    :param disagreement_penalty: with ``ensemble=True``, reward minus this times the
        disagreement (see ``DreamCarRacingEnv``).
    """

    def __init__(
        self,
        model: ModelSource = None,
        n_envs: int = 64,
        temperature: float = 1.0,
        continuous: bool = True,
        obs_mode: str = "latent",
        max_episode_steps: int | None = 1000,
        sample_termination: bool = False,
        seed: int | None = None,
        device: str = "cpu",
        render_mode: str | None = None,
        revision: str | None = None,
        start: str = "first_frame",
        dropout: float = 0.0,
        ensemble: bool = False,
        disagreement_penalty: float = 0.0,
    ) -> None:
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs <= 0:
            raise ValueError(f"n_envs must be a positive int, got {n_envs!r}")
        check_env_arguments(obs_mode, render_mode, ["rgb_array"], max_episode_steps)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        n_envs = int(n_envs)
        self.world_model = load_world_model(model, revision=revision, device=device)
        self.dream = LatentDream(
            self.world_model, n_envs, temperature, sample_termination, start, dropout, ensemble, disagreement_penalty
        )
        self.obs_mode = obs_mode
        self.continuous = bool(continuous)
        self.max_episode_steps = _check_max_episode_steps(max_episode_steps)
        # VecEnv.__init__ asks get_attr("render_mode") of every sub-env, so all the state
        # get_attr reads must exist before it runs.
        self.num_envs = n_envs
        self.render_mode = render_mode
        self._rngs: list[np.random.Generator | None] = [None] * n_envs
        self._elapsed = np.zeros(n_envs, dtype=np.int64)
        self._custom_attrs: list[dict[str, Any]] = [{} for _ in range(n_envs)]
        self._actions: np.ndarray | None = None
        self._frames: np.ndarray | None = None  # decoded frames of the current z, if already computed
        self._needs_reset = True
        super().__init__(n_envs, observation_space(self.world_model, obs_mode), carracing_action_space(self.continuous))
        if seed is not None:
            self.seed(int(seed))

    # ------------------------------------------------------------------ properties
    @property
    def temperature(self) -> float:
        """The dream's temperature tau, shared by all sub-envs."""
        return self.dream.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.dream.temperature = check_temperature(value)

    @property
    def start(self) -> str:
        """Where episodes start, ``"first_frame"`` or ``"trajectory"``."""
        return self.dream.start

    @property
    def dropout(self) -> float:
        """Dream-time dropout of M, one mask per episode."""
        return self.dream.dropout

    @property
    def ensemble(self) -> bool:
        """Whether episodes are dreamt by the world model's ensemble of Ms, one member each."""
        return self.dream.ensemble

    @property
    def disagreement_penalty(self) -> float:
        """lambda of the reward ``M's reward - lambda * disagreement`` of an ensemble dream."""
        return self.dream.disagreement_penalty

    @property
    def sample_termination(self) -> bool:
        """Whether termination is drawn from M's probability rather than thresholded."""
        return self.dream.sample_termination

    @sample_termination.setter
    def sample_termination(self, value: bool) -> None:
        self.dream.sample_termination = bool(value)

    # ------------------------------------------------------------------ stepping
    def _draw_keys(self, index: np.ndarray, seeds: Sequence[int | None]) -> np.ndarray:
        """Dream keys for new episodes in ``index``, each drawn from its sub-env's Generator."""
        keys = np.empty(len(index), dtype=np.uint64)
        for k, (i, seed) in enumerate(zip(index, seeds)):
            if seed is not None or self._rngs[i] is None:
                # What gym.Env.reset(seed=seed) does: reseed when given a seed, else keep the
                # Generator, creating it from fresh entropy the first time.
                self._rngs[i] = seeding.np_random(seed)[0]
            keys[k] = episode_keys([self._rngs[i]])[0]
        return keys

    def _reset_envs(self, index: np.ndarray, seeds: Sequence[int | None] | None = None) -> None:
        """Start new episodes in ``index``; ``seeds`` None (as in an autoreset) keeps each Generator going."""
        self.dream.reset(index, self._draw_keys(index, seeds if seeds is not None else [None] * len(index)))
        self._elapsed[index] = 0
        for i in index:
            self.reset_infos[i] = {}

    def _observe(self, index: np.ndarray | None = None) -> np.ndarray:
        """Observations of the sub-envs in ``index`` (all if None), as one numpy array."""
        z = self.dream.z if index is None else self.dream.z[torch.from_numpy(index).to(self.dream.z.device)]
        if self.obs_mode == "pixels":
            return self.world_model.decode(z).cpu().numpy()
        h = self.dream.h if index is None else self.dream.h[torch.from_numpy(index).to(self.dream.h.device)]
        return torch.cat([z, h], dim=1).cpu().numpy()

    def reset(self) -> VecEnvObs:
        """Reset every sub-env, with the seeds set by :meth:`seed` if any, and return the observations."""
        self._reset_envs(np.arange(self.num_envs), self._seeds)
        # Seeds and options apply to one reset only (SB3's convention); the dream takes no options.
        self._reset_seeds()
        self._reset_options()
        self._needs_reset = False
        self._actions = None
        obs = self._observe()
        self._frames = obs if self.obs_mode == "pixels" else None
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Check ``actions`` (n_envs actions: (n_envs, 3) floats, or (n_envs,) ints if discrete) for :meth:`step_wait`.

        :raises ValueError: wrong shape, NaN or inf, or an unknown discrete action.
        """
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        self._actions = continuous_actions(actions, self.continuous, self.num_envs)

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env with the actions given to :meth:`step_async`; ended episodes restart at once.

        :return: observations, rewards (float32), dones (bool) and one info dict per sub-env.
        """
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async()")
        actions, self._actions = self._actions, None
        device = self.dream.z.device
        out = self.dream.step(torch.from_numpy(actions).to(device))
        self._elapsed += 1
        # One device-to-host transfer for the whole batch.
        columns = [out.reward.float(), out.termination_probability.float(), out.terminated.float()]
        if out.disagreement is not None:
            columns.append(out.disagreement.float())
        scalars = torch.stack(columns, dim=1)
        if self.obs_mode == "latent":
            width = out.z.shape[1] + out.h.shape[1]
            packed = torch.cat([out.z, out.h, scalars], dim=1).cpu().numpy()
            obs, scalars_np = np.ascontiguousarray(packed[:, :width]), packed[:, width:]
        else:
            obs = self.world_model.decode(out.z).cpu().numpy()
            scalars_np = scalars.cpu().numpy()
        rewards = scalars_np[:, 0].astype(np.float32)
        probabilities = scalars_np[:, 1]
        terminated = scalars_np[:, 2] > 0.5
        truncated = (
            self._elapsed >= self.max_episode_steps
            if self.max_episode_steps is not None
            else np.zeros(self.num_envs, dtype=bool)
        )
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"termination_probability": float(p), "TimeLimit.truncated": bool(tr and not te)}
            for p, te, tr in zip(probabilities, terminated, truncated)
        ]
        if out.disagreement is not None:
            for info, u in zip(infos, scalars_np[:, 3]):
                info["disagreement"] = float(u)
        done_index = np.flatnonzero(dones)
        if len(done_index):
            for i in done_index:
                infos[i]["terminal_observation"] = obs[i].copy()
            self._reset_envs(done_index)
            obs[done_index] = self._observe(done_index)
        self._frames = obs if self.obs_mode == "pixels" else None
        return obs, rewards, dones, infos

    def close(self) -> None:
        """Nothing to release but the frame cache: the world model may be shared with other envs."""
        self._frames = None

    # ------------------------------------------------------------------ rendering
    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each sub-env's current frame as DreamCarRacingEnv renders it (V's decoding, upscaled 4x)."""
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images."
            )
            return [None for _ in range(self.num_envs)]
        return [upscale(frame) for frame in self._current_frames()]

    def _current_frames(self) -> np.ndarray:
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before render()")
        if self._frames is None:
            self._frames = self.world_model.decode(self.dream.z).cpu().numpy()
        return self._frames

    # ------------------------------------------------------------------ sub-env access
    def _indices(self, indices: VecEnvIndices) -> list[int]:
        index = list(self._get_indices(indices))
        for i in index:
            if not 0 <= i < self.num_envs:
                raise IndexError(f"sub-env index {i} out of range for {self.num_envs} envs")
        return index

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Return an attribute of the sub-envs (see ``VecEnv.get_attr``).

        Shared settings (``render_mode``, ``temperature``, ``obs_mode``, ``continuous``,
        ``max_episode_steps``, ``sample_termination``, ``start``, ``dropout``, ``ensemble``,
        ``disagreement_penalty``, ``world_model`` and the spaces) are the
        same for all; ``np_random`` and ``elapsed_steps`` are per sub-env, as are attributes
        set earlier with :meth:`set_attr`.

        :raises AttributeError: the sub-envs have no such attribute.
        """
        index = self._indices(indices)
        if attr_name == "np_random":
            return [self._rng(i) for i in index]
        if attr_name == "elapsed_steps":
            return [int(self._elapsed[i]) for i in index]
        if attr_name in _SHARED_ATTRS:
            value = getattr(self, attr_name)
            return [value for _ in index]
        values = []
        for i in index:
            if attr_name not in self._custom_attrs[i]:
                raise AttributeError(f"dream sub-env {i} has no attribute {attr_name!r}")
            values.append(self._custom_attrs[i][attr_name])
        return values

    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i] = seeding.np_random(None)[0]
        return self._rngs[i]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the sub-envs (see ``VecEnv.set_attr``).

        ``temperature``, ``max_episode_steps`` and ``sample_termination`` are shared by the
        batch, so they can only be set for all sub-envs at once. Other names not used by the
        dream are stored per sub-env and read back by :meth:`get_attr`.

        :raises ValueError: a shared setting set for only some sub-envs, or an invalid value.
        :raises AttributeError: a setting fixed at construction (such as ``obs_mode``).
        """
        index = self._indices(indices)
        if attr_name in _SETTABLE_SHARED_ATTRS:
            if sorted(set(index)) != list(range(self.num_envs)):
                raise ValueError(
                    f"{attr_name!r} is shared by all {self.num_envs} dream sub-envs; set it with indices=None"
                )
            if attr_name == "max_episode_steps":
                value = _check_max_episode_steps(value)
            setattr(self, attr_name, value)
            return
        if attr_name in _SHARED_ATTRS or attr_name in ("np_random", "elapsed_steps"):
            raise AttributeError(f"{attr_name!r} of the dream sub-envs is fixed; create a new DreamVecEnv to change it")
        for i in index:
            self._custom_attrs[i][attr_name] = value

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a method of the sub-envs (see ``VecEnv.env_method``).

        Supported: ``reset(seed=None, options=None)``, which restarts the chosen sub-envs and
        returns ``(obs, info)`` for each as ``gym.Env.reset`` does, and ``render()``, which
        returns each chosen sub-env's frame.

        :raises AttributeError: any other method name.
        """
        index = self._indices(indices)
        if method_name == "reset":
            return self._env_reset(index, *method_args, **method_kwargs)
        if method_name == "render":
            if method_args or method_kwargs:
                raise TypeError("render() takes no arguments")
            frames = self._current_frames()
            return [upscale(frames[i]) for i in index]
        raise AttributeError(f"dream sub-envs have no method {method_name!r}; supported: {', '.join(_ENV_METHODS)}")

    def _env_reset(
        self, index: list[int], seed: int | None = None, options: dict[str, Any] | None = None
    ) -> list[tuple[np.ndarray, dict]]:
        if self._needs_reset:
            # The other sub-envs would be left with no episode to step.
            raise gym.error.ResetNeeded("call reset() on the whole DreamVecEnv before resetting single sub-envs")
        array = np.asarray(index, dtype=np.int64)
        self._reset_envs(array, [seed] * len(array))
        obs = self._observe(array)
        self._frames = None
        return [(obs[k], {}) for k in range(len(array))]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """The sub-envs are rows of one batch, never wrapped in a ``gym.Wrapper``."""
        return [False for _ in self._indices(indices)]


def make_dream_vec_env(n_envs: int = 64, model: ModelSource = None, monitor: bool = True, **kwargs: Any) -> VecEnv:
    """Create a :class:`DreamVecEnv`, wrapped in ``VecMonitor`` so that SB3 logs episode returns.

    :param n_envs: number of dream episodes run side by side.
    :param model: the world model (see :class:`DreamVecEnv`); None for the one shipped with dreamgym.
    :param monitor: wrap in :class:`~stable_baselines3.common.vec_env.VecMonitor`, which adds
        ``info["episode"]`` (return ``r``, length ``l``, time ``t``) when an episode ends and
        gives SB3 its ``ep_rew_mean``.
    :param kwargs: the other arguments of :class:`DreamVecEnv` (``temperature``, ``seed``, ...);
        ``device="auto"`` picks the device as SB3 does for its policies (CUDA when there is one).
    :return: the vectorized dream.
    """
    if kwargs.get("device") == "auto":
        kwargs["device"] = str(get_device("auto"))
    venv: VecEnv = DreamVecEnv(model=model, n_envs=n_envs, **kwargs)
    return VecMonitor(venv) if monitor else venv


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

    :param path: the ``.zip`` written by SB3 (the suffix may be left out, as in SB3).
    :param algo: the algorithm class, or the name of one of SB3's (``"PPO"``, ``"A2C"``,
        ``"SAC"``, ``"TD3"``, ``"DDPG"``, ``"DQN"``). None detects it from the zip's JSON
        ``data`` (its policy class and hyperparameters) without unpickling anything; pass the
        class for algorithms outside SB3 itself, such as sb3-contrib's.
    :param device: torch device for the policy.
    :param allow_pickle: load with SB3's own ``load``, unpickling the zip's fields: only for a
        file you trust (warns).
    :param kwargs: passed to ``BaseAlgorithm.load`` (``env``, ``custom_objects``, ...).
    :return: the loaded agent; ``agent.predict(obs, deterministic=True)`` drives an env.
    :raises FileNotFoundError: no such file.
    :raises ValueError: not an SB3 zip, an unknown algorithm name, or one that cannot be detected.
    :raises UnsafeAgentError: (a ``ValueError``) without ``allow_pickle``, the zip has a pickled
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
