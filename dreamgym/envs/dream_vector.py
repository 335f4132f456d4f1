"""DreamCarRacing-v0 as a native Gymnasium ``VectorEnv``: every sub-env stepped in one torch call."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from dreamgym.envs.common import (
    carracing_action_space,
    check_env_arguments,
    continuous_actions,
    observation_space,
    upscale,
)
from dreamgym.envs.dynamics import LatentDream, episode_keys
from dreamgym.errors import ResetNeededError
from dreamgym.hub import ModelSource, load_world_model
from dreamgym.validation import check_int, check_seed


class DreamCarRacingVectorEnv(VectorEnv):
    """``num_envs`` DreamCarRacing-v0 episodes batched in one :class:`LatentDream`.

    Made by ``gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=N)``. Spaces, rewards,
    terminations and arguments are those of :class:`~dreamgym.envs.dream.DreamCarRacingEnv`;
    sub-env ``i`` reset with ``seed=s`` follows exactly the trajectory of a single env reset
    with ``seed=s + i`` under the same actions (up to float rounding of batched matmuls).

    ``autoreset_mode`` is one of Gymnasium's:

    - ``NEXT_STEP`` (default): the step after an episode ends resets that sub-env, ignores
      its action, and reports reward 0 with no termination or truncation.
    - ``SAME_STEP`` (what Stable-Baselines3 expects; :class:`~dreamgym.envs.sb3_vec.DreamVecEnv`
      runs on it): a sub-env whose episode ends is reset within the same step, and the
      observation returned is the next episode's first. The last one is in
      ``info["final_obs"]`` (an object array, None where no episode ended; ``info["_final_obs"]``
      is the mask) and the step's info in ``info["final_info"]``, as Gymnasium's own vector
      envs do.

    ``info["termination_probability"]`` holds M's termination probability of the step for
    every sub-env. The step horizon (``max_episode_steps``, 1000 by default, as registered)
    is applied here, since vector envs are not wrapped in ``TimeLimit``. With
    ``ensemble=True``, ``info["disagreement"]`` holds each sub-env's ensemble disagreement (0
    on a ``NEXT_STEP`` reset step).

    ``reset(seed=..., options={"reset_mask": mask})`` resets only the sub-envs where the
    boolean ``mask`` is True (each with its own seed from ``seed``, as Gymnasium's
    ``SyncVectorEnv``); the others keep their episodes.
    """

    metadata: dict[str, Any] = {
        "render_modes": ["rgb_array"],
        "render_fps": 50,
        "autoreset_mode": AutoresetMode.NEXT_STEP,
    }

    def __init__(
        self,
        num_envs: int = 1,
        model: ModelSource = None,
        revision: str | None = None,
        temperature: float = 1.0,
        obs_mode: str = "latent",
        continuous: bool = True,
        max_episode_steps: int | None = 1000,
        sample_termination: bool = False,
        render_mode: str | None = None,
        device: str = "cpu",
        start: str | float = "first_frame",
        dropout: float = 0.0,
        ensemble: bool = False,
        disagreement_penalty: float = 0.0,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
    ) -> None:
        num_envs = check_int("num_envs", num_envs, 1)  # numpy ints too, as DreamVecEnv takes them
        check_env_arguments(obs_mode, render_mode, self.metadata["render_modes"], max_episode_steps)
        self.autoreset_mode = _check_autoreset_mode(autoreset_mode)
        self.metadata = {**self.metadata, "autoreset_mode": self.autoreset_mode}
        self.world_model = load_world_model(model, revision=revision, device=device)
        self.num_envs = num_envs
        self.obs_mode = obs_mode
        self.continuous = continuous
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.dream = LatentDream(
            self.world_model, num_envs, temperature, sample_termination, start, dropout, ensemble, disagreement_penalty
        )
        self.single_action_space = carracing_action_space(continuous)
        self.single_observation_space = observation_space(self.world_model, obs_mode)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._rngs = [seeding.np_random()[0] for _ in range(num_envs)]
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._started = False
        # The observations last returned (kept for partial resets and, with pixels, as the
        # frames); none before the first reset.
        self._obs: np.ndarray = np.zeros(0, np.float32)

    @property
    def temperature(self) -> float:
        return self.dream.temperature

    @property
    def sub_env_np_random(self) -> tuple[np.random.Generator, ...]:
        """Each sub-env's Generator, seeded as Gymnasium seeds an env; its episodes' dream keys are drawn from it."""
        return tuple(self._rngs)

    @property
    def elapsed_steps(self) -> np.ndarray:
        """Steps taken in each sub-env's current episode (a copy)."""
        return self._elapsed.copy()

    def _observations(self, index: np.ndarray | None = None) -> np.ndarray:
        """Observations of the sub-envs in ``index`` (all if None), in one device-to-host copy."""
        z, h = self.dream.z, self.dream.h
        if index is not None:
            rows = torch.from_numpy(index).to(z.device)
            z, h = z[rows], h[rows]
        if self.obs_mode == "latent":
            return torch.cat([z, h], dim=1).cpu().numpy()
        return self.world_model.decode(z).cpu().numpy()

    def _start_episodes(self, index: np.ndarray) -> None:
        """New episodes in the sub-envs ``index``, each keyed from its sub-env's Generator."""
        self.dream.reset(index, episode_keys([self._rngs[i] for i in index]))
        self._elapsed[index] = 0
        self._autoreset[index] = False

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        mask = _reset_mask(options, self.num_envs)
        if mask is not None and not self._started:
            raise ResetNeededError("reset every sub-env once before resetting some with options['reset_mask']")
        if seed is not None:
            if isinstance(seed, (list, tuple, np.ndarray)):
                seeds = [check_seed(s) for s in seed]
            else:
                first = check_int("seed", seed, 0)  # a Python or numpy int
                seeds = [first + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            chosen = mask if mask is not None else np.ones(self.num_envs, dtype=bool)
            self._rngs = [
                seeding.np_random(s)[0] if s is not None and reseed else rng
                for s, rng, reseed in zip(seeds, self._rngs, chosen, strict=True)
            ]
        if mask is None:
            self._start_episodes(np.arange(self.num_envs))
            self._started = True
            self._obs = self._observations()
        else:
            index = np.flatnonzero(mask)
            self._start_episodes(index)
            self._obs = self._obs.copy()
            self._obs[index] = self._observations(index)
        return self._obs, {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise ResetNeededError("call reset() before step()")
        actions = continuous_actions(actions, self.continuous, self.num_envs)
        out = self.dream.step(torch.from_numpy(actions).to(self.world_model.device))
        rewards = out.reward.cpu().numpy().astype(np.float64)
        terminations = out.terminated.cpu().numpy()
        probabilities = out.termination_probability.cpu().numpy()
        self._elapsed += 1
        if self.max_episode_steps is None:
            truncations = np.zeros_like(terminations)
        else:
            truncations = self._elapsed >= self.max_episode_steps
        info: dict[str, Any] = {"termination_probability": probabilities}
        if out.disagreement is not None:
            info["disagreement"] = out.disagreement.cpu().numpy()
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            self._obs = self._same_step_autoreset(terminations | truncations, info)
            return self._obs, rewards, terminations, truncations, info
        restarting = np.flatnonzero(self._autoreset)
        if len(restarting):
            # NEXT_STEP autoreset: these sub-envs ended last step, so this step only resets them.
            self._start_episodes(restarting)
            rewards[restarting] = 0.0
            terminations[restarting] = False
            truncations[restarting] = False
            if out.disagreement is not None:
                info["disagreement"][restarting] = 0.0  # a reset step, as its reward
        self._autoreset = terminations | truncations
        self._obs = self._observations()
        return self._obs, rewards, terminations, truncations, info

    def _same_step_autoreset(self, ended: np.ndarray, info: dict[str, Any]) -> np.ndarray:
        """The observations after a ``SAME_STEP`` step: ended episodes' last ones moved to ``info``, then restarted."""
        obs = self._observations()
        index = np.flatnonzero(ended)
        if len(index):
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in index:
                final_obs[i] = obs[i].copy()
            # Gymnasium's layout (its _add_info): values of the ended sub-envs, zero elsewhere, and a mask.
            final_info: dict[str, Any] = {}
            for key, value in info.items():
                final_info[key], final_info[f"_{key}"] = np.where(ended, value, 0).astype(value.dtype), ended
            info.update(final_obs=final_obs, _final_obs=ended, final_info=final_info, _final_info=ended)
            self._start_episodes(index)
            # Only the new episodes' rows are observed again (and decoded, with pixels).
            obs[index] = self._observations(index)
        return obs

    def frames(self) -> np.ndarray:
        """Every sub-env's current frame, V's decoding of its ``z``: (num_envs, 64, 64, 3) uint8.

        Raises:
            ResetNeededError: before the first reset.
        """
        if not self._started:
            raise ResetNeededError("call reset() before render()")
        if self.obs_mode == "pixels":
            return self._obs  # already decoded
        return self.world_model.decode(self.dream.z).cpu().numpy()

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array" or not self._started:
            return None
        return tuple(upscale(frame) for frame in self.frames())


def _check_autoreset_mode(mode: Any) -> AutoresetMode:
    """``NEXT_STEP`` or ``SAME_STEP``, given as an ``AutoresetMode`` or its value."""
    modes = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)
    try:
        parsed = AutoresetMode(mode)
    except ValueError:
        parsed = None
    if parsed not in modes:
        raise ValueError(f"autoreset_mode must be one of {[m.value for m in modes]}, got {mode!r}")
    return parsed


def _reset_mask(options: dict[str, Any] | None, num_envs: int) -> np.ndarray | None:
    """``options["reset_mask"]`` checked as Gymnasium's ``SyncVectorEnv`` checks it, or None."""
    if not options or "reset_mask" not in options:
        return None
    mask = options["reset_mask"]
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape ({num_envs},), got {mask!r}")
    if not mask.any():
        raise ValueError("options['reset_mask'] resets no sub-env: it must hold at least one True")
    return mask
