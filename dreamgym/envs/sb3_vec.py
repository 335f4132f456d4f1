"""DreamCarRacing-v0 as a Stable-Baselines3 ``VecEnv``: a thin adapter over the Gymnasium vector env.

:class:`DreamVecEnv` steps a :class:`~dreamgym.envs.dream_vector.DreamCarRacingVectorEnv`
in Gymnasium's ``SAME_STEP`` autoreset mode and translates its results into SB3's
conventions (per-sub-env info dicts, ``terminal_observation``, ``TimeLimit.truncated``,
seeds set by :meth:`~stable_baselines3.common.vec_env.VecEnv.seed`, ``get_attr`` /
``set_attr`` / ``env_method``). The dreaming itself is the vector env's, so the Gymnasium
and the SB3 front-ends cannot drift apart, and sub-env ``i`` is still exactly
``DreamCarRacingEnv`` reset with seed ``seed + i``.

Example::

    from stable_baselines3 import PPO
    from dreamgym.sb3 import make_dream_vec_env

    venv = make_dream_vec_env(n_envs=64, model="path/to/world_model")
    agent = PPO("MlpPolicy", venv).learn(1_000_000)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from dreamgym.envs.common import check_max_episode_steps, upscale
from dreamgym.envs.dream_vector import DreamCarRacingVectorEnv
from dreamgym.envs.dynamics import LatentDream, check_temperature
from dreamgym.hub import ModelSource
from dreamgym.models.world_model import WorldModel
from dreamgym.validation import check_int, check_seed

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


class DreamVecEnv(VecEnv):
    """
    ``n_envs`` DreamCarRacing-v0 episodes stepped as one batch, as an SB3 ``VecEnv``.

    Episodes that end are reset within the same step (SB3's convention): their last
    observation is in ``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]``
    tells a time limit from a real end, and the returned observation is the first of the next
    episode. ``infos[i]["termination_probability"]`` holds M's termination probability.

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
        n_envs = check_int("n_envs", n_envs, 1)
        seed = check_seed(seed)
        self.vector_env = DreamCarRacingVectorEnv(
            n_envs,
            model=model,
            revision=revision,
            temperature=temperature,
            obs_mode=obs_mode,
            continuous=bool(continuous),
            max_episode_steps=max_episode_steps,
            sample_termination=sample_termination,
            render_mode=render_mode,
            device=device,
            start=start,
            dropout=dropout,
            ensemble=ensemble,
            disagreement_penalty=disagreement_penalty,
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        # VecEnv.__init__ asks get_attr("render_mode") of every sub-env, so all the state
        # get_attr reads must exist before it runs.
        self.num_envs = n_envs
        self.render_mode = render_mode
        self._custom_attrs: list[dict[str, Any]] = [{} for _ in range(n_envs)]
        self._actions: np.ndarray | None = None
        super().__init__(n_envs, self.vector_env.single_observation_space, self.vector_env.single_action_space)
        if seed is not None:
            self.seed(seed)

    # ------------------------------------------------------------------ settings
    @property
    def dream(self) -> LatentDream:
        """The batched dream every sub-env is a row of."""
        return self.vector_env.dream

    @property
    def world_model(self) -> WorldModel:
        """The world model that dreams."""
        return self.vector_env.world_model

    @property
    def obs_mode(self) -> str:
        """``"latent"`` or ``"pixels"``."""
        return self.vector_env.obs_mode

    @property
    def continuous(self) -> bool:
        """Whether actions are ``Box(3)`` rather than ``Discrete(5)``."""
        return self.vector_env.continuous

    @property
    def max_episode_steps(self) -> int | None:
        """Steps after which an episode is truncated, or None for never."""
        return self.vector_env.max_episode_steps

    @max_episode_steps.setter
    def max_episode_steps(self, value: int | None) -> None:
        self.vector_env.max_episode_steps = check_max_episode_steps(value)

    @property
    def temperature(self) -> float:
        """The dream's temperature tau, shared by all sub-envs."""
        return self.dream.temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self.dream.temperature = check_temperature(value)

    @property
    def sample_termination(self) -> bool:
        """Whether termination is drawn from M's probability rather than thresholded."""
        return self.dream.sample_termination

    @sample_termination.setter
    def sample_termination(self, value: bool) -> None:
        self.dream.sample_termination = bool(value)

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

    # ------------------------------------------------------------------ stepping
    def reset(self) -> VecEnvObs:
        """Reset every sub-env, with the seeds set by :meth:`seed` if any, and return the observations."""
        obs, _ = self.vector_env.reset(seed=self._seeds)
        # Seeds and options apply to one reset only (SB3's convention); the dream takes no options.
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        self._actions = None
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Keep ``actions`` (n_envs actions: (n_envs, 3) floats, or (n_envs,) ints if discrete) for :meth:`step_wait`."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env with the actions given to :meth:`step_async`; ended episodes restart at once.

        :return: observations, rewards (float32), dones (bool) and one info dict per sub-env.
        :raises ResetNeededError: before the first :meth:`reset`.
        :raises ValueError: actions of the wrong shape, NaN or inf, or an unknown discrete
            action; the dream is left as it was.
        """
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async()")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.vector_env.step(actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"termination_probability": float(p), "TimeLimit.truncated": bool(tr and not te)}
            for p, te, tr in zip(info["termination_probability"], terminated, truncated)
        ]
        if "disagreement" in info:
            for sub_env_info, u in zip(infos, info["disagreement"]):
                sub_env_info["disagreement"] = float(u)
        for i in np.flatnonzero(dones):
            infos[i]["terminal_observation"] = info["final_obs"][i]
            self.reset_infos[i] = {}
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        """Nothing to release: the world model may be shared with other envs."""
        self.vector_env.close()

    # ------------------------------------------------------------------ rendering
    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each sub-env's current frame as DreamCarRacingEnv renders it (V's decoding, upscaled 4x)."""
        if self.render_mode != "rgb_array":
            warnings.warn(
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images."
            )
            return [None for _ in range(self.num_envs)]
        return [upscale(frame) for frame in self.vector_env.frames()]

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
            rngs = self.vector_env.sub_env_np_random
            return [rngs[i] for i in index]
        if attr_name == "elapsed_steps":
            elapsed = self.vector_env.elapsed_steps
            return [int(elapsed[i]) for i in index]
        if attr_name in _SHARED_ATTRS:
            value = getattr(self, attr_name)
            return [value for _ in index]
        values = []
        for i in index:
            if attr_name not in self._custom_attrs[i]:
                raise AttributeError(f"dream sub-env {i} has no attribute {attr_name!r}")
            values.append(self._custom_attrs[i][attr_name])
        return values

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
            frames = self.vector_env.frames()
            return [upscale(frames[i]) for i in index]
        raise AttributeError(f"dream sub-envs have no method {method_name!r}; supported: {', '.join(_ENV_METHODS)}")

    def _env_reset(
        self, index: list[int], seed: int | None = None, options: dict[str, Any] | None = None
    ) -> list[tuple[np.ndarray, dict]]:
        """Restart the sub-envs ``index``, each with ``seed``, as ``env_method("reset")`` on a ``DummyVecEnv`` does."""
        mask = np.zeros(self.num_envs, dtype=bool)
        mask[index] = True
        seed = check_seed(seed)
        obs, _ = self.vector_env.reset(seed=[seed] * self.num_envs, options={"reset_mask": mask})
        for i in index:
            self.reset_infos[i] = {}
        return [(obs[i], {}) for i in index]

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
