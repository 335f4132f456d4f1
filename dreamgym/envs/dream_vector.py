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
from dreamgym.hub import ModelSource, load_world_model
from dreamgym.validation import check_int, check_seed


class DreamCarRacingVectorEnv(VectorEnv):
    """``num_envs`` DreamCarRacing-v0 episodes batched in one :class:`LatentDream`.

    Made by ``gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=N)``. Spaces, rewards,
    terminations and arguments are those of :class:`~dreamgym.envs.dream.DreamCarRacingEnv`;
    sub-env ``i`` reset with ``seed=s`` follows exactly the trajectory of a single env reset
    with ``seed=s + i`` under the same actions (up to float rounding of batched matmuls).

    Autoreset follows Gymnasium's ``NEXT_STEP`` mode: the step after an episode ends resets
    that sub-env, ignores its action, and reports reward 0 with no termination or truncation.
    The step horizon (``max_episode_steps``, 1000 by default, as registered) is applied here,
    since vector envs are not wrapped in ``TimeLimit``. With ``ensemble=True``,
    ``info["disagreement"]`` holds each sub-env's ensemble disagreement (0 on a reset step).
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
        start: str = "first_frame",
        dropout: float = 0.0,
        ensemble: bool = False,
        disagreement_penalty: float = 0.0,
    ) -> None:
        num_envs = check_int("num_envs", num_envs, 1)  # numpy ints too, as DreamVecEnv takes them
        check_env_arguments(obs_mode, render_mode, self.metadata["render_modes"], max_episode_steps)
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

    @property
    def temperature(self) -> float:
        return self.dream.temperature

    def _observations(self) -> np.ndarray:
        if self.obs_mode == "latent":
            return torch.cat([self.dream.z, self.dream.h], dim=1).cpu().numpy()
        return self.world_model.decode(self.dream.z).cpu().numpy()

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            if isinstance(seed, (list, tuple, np.ndarray)):
                seeds = [check_seed(s) for s in seed]
            else:
                first = check_seed(seed)  # a Python or numpy int
                seeds = [first + i for i in range(self.num_envs)]
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            self._rngs = [seeding.np_random(s)[0] if s is not None else rng for s, rng in zip(seeds, self._rngs)]
        everyone = np.arange(self.num_envs)
        self.dream.reset(everyone, episode_keys(self._rngs))
        self._elapsed[:] = 0
        self._autoreset[:] = False
        self._started = True
        return self._observations(), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        actions = continuous_actions(actions, self.continuous, self.num_envs)
        out = self.dream.step(torch.from_numpy(actions).to(self.world_model.device))
        rewards = out.reward.cpu().numpy().astype(np.float64)
        terminations = out.terminated.cpu().numpy()
        probabilities = out.termination_probability.cpu().numpy()
        self._elapsed += 1
        truncations = (
            self._elapsed >= self.max_episode_steps if self.max_episode_steps is not None else np.zeros_like(terminations)
        )
        restarting = np.flatnonzero(self._autoreset)
        if len(restarting):
            # NEXT_STEP autoreset: these sub-envs ended last step, so this step only resets them.
            self.dream.reset(restarting, episode_keys([self._rngs[i] for i in restarting]))
            self._elapsed[restarting] = 0
            rewards[restarting] = 0.0
            terminations[restarting] = False
            truncations[restarting] = False
        info: dict[str, Any] = {"termination_probability": probabilities}
        if out.disagreement is not None:
            disagreement = out.disagreement.cpu().numpy()
            if len(restarting):
                disagreement[restarting] = 0.0  # a reset step, as its reward
            info["disagreement"] = disagreement
        self._autoreset = terminations | truncations
        return self._observations(), rewards, terminations, truncations, info

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode != "rgb_array" or not self._started:
            return None
        frames = self.world_model.decode(self.dream.z).cpu().numpy()
        return tuple(upscale(frame) for frame in frames)
