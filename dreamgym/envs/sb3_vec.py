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
from collections.abc import Callable, Sequence
from typing import Any, Generic, Literal, TypeVar, cast, overload

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

_ENV_METHODS = ("reset", "render")
# Per sub-env, kept by the vector env; read with get_attr, never set.
_PER_SUB_ENV_ATTRS = ("np_random", "elapsed_steps")
_T = TypeVar("_T")


class _Shared(Generic[_T]):
    """A setting of :class:`DreamVecEnv` that every sub-env shares, since it lives in the one batched dream.

    It reads the attribute of the same name of the vector env (``of="vector_env"``) or of its
    :class:`LatentDream` (``of="dream"``). With a ``check`` it can be set, for all sub-envs at
    once, to what ``check`` makes of the value; without one it is fixed at construction.
    """

    def __init__(
        self, of: Literal["vector_env", "dream"], doc: str, check: Callable[[Any], _T] | None = None
    ) -> None:
        self.of, self.check, self.__doc__ = of, check, doc
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def _holder(self, venv: DreamVecEnv) -> Any:
        return venv.vector_env if self.of == "vector_env" else venv.vector_env.dream

    @overload
    def __get__(self, venv: None, owner: type | None = None) -> _Shared[_T]: ...

    @overload
    def __get__(self, venv: DreamVecEnv, owner: type | None = None) -> _T: ...

    def __get__(self, venv: DreamVecEnv | None, owner: type | None = None) -> _T | _Shared[_T]:
        if venv is None:
            return self
        return cast(_T, getattr(self._holder(venv), self.name))

    def __set__(self, venv: DreamVecEnv, value: Any) -> None:
        if self.check is None:
            raise AttributeError(f"{self.name!r} of the dream sub-envs is fixed; create a new DreamVecEnv to change it")
        setattr(self._holder(venv), self.name, self.check(value))


class DreamVecEnv(VecEnv):
    """``n_envs`` DreamCarRacing-v0 episodes stepped as one batch, as an SB3 ``VecEnv``.

    Episodes that end are reset within the same step (SB3's convention): their last
    observation is in ``infos[i]["terminal_observation"]``, ``infos[i]["TimeLimit.truncated"]``
    tells a time limit from a real end, and the returned observation is the first of the next
    episode. ``infos[i]["termination_probability"]`` holds M's termination probability.

    Sub-env ``i`` reset with seed ``s`` follows ``DreamCarRacingEnv().reset(seed=s)`` exactly
    (up to float rounding of the batched matmuls): it owns a numpy Generator seeded as
    Gymnasium seeds an env, and draws each episode's dream key from it as the single env does.
    ``seed(s)`` (or the ``seed`` argument) gives sub-env ``i`` the seed ``s + i`` at the next
    reset; without one, fresh entropy is used.

    The settings the dream holds (``temperature``, ``max_episode_steps``, ...) are shared by
    every sub-env; ``temperature``, ``max_episode_steps`` and ``sample_termination`` can be
    changed after construction (as attributes, or with :meth:`set_attr` for all sub-envs).

    Args:
        model: a :class:`~dreamgym.WorldModel`, a folder written by ``save_pretrained``, a
            Hugging Face Hub repo id, or None for the model shipped with dreamgym.
        n_envs: number of dream episodes run side by side.
        temperature: the dream's temperature tau (see ``DreamCarRacingEnv``).
        continuous: ``Box(3)`` actions (steer, gas, brake) if True, else ``Discrete(5)``.
        obs_mode: ``"latent"`` for ``[z, h]`` vectors, ``"pixels"`` for V's decoded
            ``(64, 64, 3)`` uint8 frames (SB3 wraps those in ``VecTransposeImage`` itself).
        max_episode_steps: steps after which an episode is truncated, or None for never.
        sample_termination: draw termination from M's probability instead of thresholding it
            at 0.5.
        seed: seed of the first reset (sub-env ``i`` gets ``seed + i``); None for fresh entropy.
        device: torch device of the world model.
        render_mode: None, or ``"rgb_array"`` for :meth:`render` to return a grid of the
            decoded frames (``render("human")`` then shows it with OpenCV, as SB3 does).
        revision: branch, tag or commit when ``model`` is a Hub repo id.
        start: ``"first_frame"``, ``"trajectory"`` or the fraction of trajectory starts (see ``DreamCarRacingEnv``).
        dropout: dream-time dropout, one mask per episode (see ``DreamCarRacingEnv``).
        ensemble: dream with the world model's ensemble of Ms, one member per episode (see
            ``DreamCarRacingEnv``); ``infos[i]["disagreement"]`` then holds the members'
            disagreement for the step.
        disagreement_penalty: with ``ensemble=True``, reward minus this times the
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
        start: str | float = "first_frame",
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

    world_model: _Shared[WorldModel] = _Shared("vector_env", "The world model that dreams.")
    obs_mode: _Shared[str] = _Shared("vector_env", '''``"latent"`` or ``"pixels"``.''')
    continuous: _Shared[bool] = _Shared("vector_env", "Whether actions are ``Box(3)`` rather than ``Discrete(5)``.")
    max_episode_steps: _Shared[int | None] = _Shared(
        "vector_env", "Steps after which an episode is truncated, or None for never.", check_max_episode_steps
    )
    temperature: _Shared[float] = _Shared("dream", "The dream's temperature tau.", check_temperature)
    sample_termination: _Shared[bool] = _Shared(
        "dream", "Whether termination is drawn from M's probability rather than thresholded.", bool
    )
    start: _Shared[str | float] = _Shared(
        "dream", '''Where episodes start: ``"first_frame"``, ``"trajectory"`` or the fraction of trajectory starts.'''
    )
    dropout: _Shared[float] = _Shared("dream", "Dream-time dropout of M, one mask per episode.")
    ensemble: _Shared[bool] = _Shared(
        "dream", "Whether episodes are dreamt by the world model's ensemble of Ms, one member each."
    )
    disagreement_penalty: _Shared[float] = _Shared(
        "dream", "Lambda of the reward ``M's reward - lambda * disagreement`` of an ensemble dream."
    )

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
        """Keep ``actions`` for :meth:`step_wait`: (n_envs, 3) floats, or (n_envs,) ints if discrete."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env with the actions given to :meth:`step_async`; ended episodes restart at once.

        Returns:
            observations, rewards (float32), dones (bool) and one info dict per sub-env.

        Raises:
            ResetNeededError: before the first :meth:`reset`.
            ValueError: actions of the wrong shape, NaN or inf, or an unknown discrete action;
                the dream is left as it was.
            RuntimeError: no :meth:`step_async` since the last step.
        """
        if self._actions is None:
            raise RuntimeError("step_wait() called without a pending step_async()")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.vector_env.step(actions)
        dones = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"termination_probability": float(p), "TimeLimit.truncated": bool(tr and not te)}
            for p, te, tr in zip(info["termination_probability"], terminated, truncated, strict=True)
        ]
        if "disagreement" in info:
            for sub_env_info, u in zip(infos, info["disagreement"], strict=True):
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
                f"The render mode is {self.render_mode}, but this method assumes it is `rgb_array` to obtain images.",
                stacklevel=2,
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

        Raises:
            AttributeError: the sub-envs have no such attribute.
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

        Raises:
            ValueError: a shared setting set for only some sub-envs, or an invalid value.
            AttributeError: a setting fixed at construction (such as ``obs_mode``).
        """
        index = self._indices(indices)
        if attr_name in _SETTABLE_SHARED_ATTRS:
            if sorted(set(index)) != list(range(self.num_envs)):
                raise ValueError(
                    f"{attr_name!r} is shared by all {self.num_envs} dream sub-envs; set it with indices=None"
                )
            setattr(self, attr_name, value)
            return
        if attr_name in _SHARED_ATTRS or attr_name in _PER_SUB_ENV_ATTRS:
            raise AttributeError(f"{attr_name!r} of the dream sub-envs is fixed; create a new DreamVecEnv to change it")
        for i in index:
            self._custom_attrs[i][attr_name] = value

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any
    ) -> list[Any]:
        """Call a method of the sub-envs (see ``VecEnv.env_method``).

        Supported: ``reset(seed=None, options=None)``, which restarts the chosen sub-envs and
        returns ``(obs, info)`` for each as ``gym.Env.reset`` does, and ``render()``, which
        returns each chosen sub-env's frame.

        Raises:
            AttributeError: any other method name.
            TypeError: ``render`` given arguments.
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

    Args:
        n_envs: number of dream episodes run side by side.
        model: the world model (see :class:`DreamVecEnv`); None for the one shipped with dreamgym.
        monitor: wrap in :class:`~stable_baselines3.common.vec_env.VecMonitor`, which adds
            ``info["episode"]`` (return ``r``, length ``l``, time ``t``) when an episode ends and
            gives SB3 its ``ep_rew_mean``.
        **kwargs: the other arguments of :class:`DreamVecEnv` (``temperature``, ``seed``, ...);
            ``device="auto"`` picks the device as SB3 does for its policies (CUDA when there is one).

    Returns:
        the vectorized dream.
    """
    if kwargs.get("device") == "auto":
        kwargs["device"] = str(get_device("auto"))
    venv: VecEnv = DreamVecEnv(model=model, n_envs=n_envs, **kwargs)
    return VecMonitor(venv) if monitor else venv


# The settings every sub-env shares: the dream's, and what VecEnv itself keeps for all.
_SETTINGS = {name: value for name, value in vars(DreamVecEnv).items() if isinstance(value, _Shared)}
_SHARED_ATTRS = ("render_mode", "observation_space", "action_space", *_SETTINGS)
_SETTABLE_SHARED_ATTRS = tuple(name for name, setting in _SETTINGS.items() if setting.check is not None)
