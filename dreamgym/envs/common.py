"""What the dream and the real env share: spaces, action checks, model resolution, rendering."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from dreamgym.errors import ResetNeededError
from dreamgym.hub import ModelSource, load_world_model
from dreamgym.models.world_model import WorldModel
from dreamgym.validation import check_int

if TYPE_CHECKING:  # pygame is imported when a window opens, not with dreamgym
    import pygame

OBS_MODES = ("latent", "pixels")
RENDER_SCALE = 4

# CarRacing-v3's discrete actions as continuous (steer, gas, brake). CarRacing steers the
# car by the negated first component, so discrete "right" (car.steer(-0.6)) is steer +0.6.
DISCRETE_ACTIONS = np.array(
    [
        [0.0, 0.0, 0.0],  # 0: do nothing
        [0.6, 0.0, 0.0],  # 1: steer right
        [-0.6, 0.0, 0.0],  # 2: steer left
        [0.0, 0.2, 0.0],  # 3: gas
        [0.0, 0.0, 0.8],  # 4: brake
    ],
    dtype=np.float32,
)
CONTINUOUS_LOW = np.array([-1.0, 0.0, 0.0], dtype=np.float32)
CONTINUOUS_HIGH = np.array([1.0, 1.0, 1.0], dtype=np.float32)


def carracing_action_space(continuous: bool) -> spaces.Space:
    """CarRacing-v3's action space: Box(3) for (steer, gas, brake), or Discrete(5)."""
    if continuous:
        return spaces.Box(CONTINUOUS_LOW, CONTINUOUS_HIGH, dtype=np.float32)
    return spaces.Discrete(len(DISCRETE_ACTIONS))


def observation_space(world_model: WorldModel, obs_mode: str) -> spaces.Box:
    """``[z, h]`` as float32 for ``"latent"``, or a 64x64x3 uint8 frame for ``"pixels"``."""
    cfg = world_model.config
    if obs_mode == "latent":
        # z is a Gaussian sample, so unbounded (float32's max, as CartPole does, rather than inf);
        # h is an LSTM output in [-1, 1].
        unbounded = np.finfo(np.float32).max
        bound = np.concatenate([np.full(cfg.z_dim, unbounded), np.ones(cfg.rnn_hidden)]).astype(np.float32)
        return spaces.Box(-bound, bound, dtype=np.float32)
    size = cfg.image_size
    return spaces.Box(0, 255, (size, size, 3), dtype=np.uint8)


def continuous_actions(actions: Any, continuous: bool, num_envs: int | None = None) -> np.ndarray:
    """Check actions and turn them into CarRacing's continuous (steer, gas, brake).

    Continuous actions are clipped to the action space, as CarRacing's physics does for
    gas. Raises ValueError on a wrong shape, a NaN or inf, or an unknown discrete action.

    Args:
        actions: one action, or a batch of ``num_envs`` actions.
        continuous: whether the action space is Box(3) or Discrete(5).
        num_envs: None for a single action, else the batch size.
    """
    shape = (3,) if num_envs is None else (num_envs, 3)
    if continuous:
        array = np.asarray(actions, dtype=np.float32)
        if array.shape != shape:
            raise ValueError(
                f"expected a continuous action of shape {shape} (steer, gas, brake), got shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"action contains NaN or inf: {array}")
        # np.clip's bounds, without its Python-level dispatch (a dream step costs tens of microseconds).
        return np.minimum(np.maximum(array, CONTINUOUS_LOW), CONTINUOUS_HIGH)
    array = np.asarray(actions)
    expected = () if num_envs is None else (num_envs,)
    if array.shape != expected or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"expected discrete integer action(s) of shape {expected}, got {array.dtype} {array.shape}")
    if ((array < 0) | (array >= len(DISCRETE_ACTIONS))).any():
        raise ValueError(f"discrete actions must be in 0..{len(DISCRETE_ACTIONS) - 1}, got {array}")
    return DISCRETE_ACTIONS[array]


def check_env_arguments(
    obs_mode: str, render_mode: str | None, render_modes: list[str], max_episode_steps: int | None
) -> None:
    """Refuse an unknown ``obs_mode`` or ``render_mode`` and a non-positive step horizon."""
    if obs_mode not in OBS_MODES:
        raise ValueError(f"unknown obs_mode {obs_mode!r}; expected one of {OBS_MODES}")
    if render_mode is not None and render_mode not in render_modes:
        raise ValueError(f"unknown render_mode {render_mode!r}; expected None or one of {render_modes}")
    check_max_episode_steps(max_episode_steps)


def check_max_episode_steps(max_episode_steps: Any) -> int | None:
    """A step horizon: a positive int, or None for none."""
    if max_episode_steps is None:
        return None
    return check_int("max_episode_steps", max_episode_steps, 1)


def upscale(frame: np.ndarray, scale: int = RENDER_SCALE) -> np.ndarray:
    """Nearest-neighbour upscaling so a 64x64 frame is big enough to look at."""
    return np.repeat(np.repeat(frame, scale, axis=0), scale, axis=1)


class HumanWindow:
    """A pygame window showing RGB frames at a fixed frame rate."""

    def __init__(self, title: str, fps: int) -> None:
        import pygame

        self._pygame = pygame
        pygame.init()
        pygame.display.set_caption(title)
        self._screen: pygame.Surface | None = None
        self._clock = pygame.time.Clock()
        self._fps = fps

    def show(self, frame: np.ndarray) -> None:
        pygame = self._pygame
        screen = self._screen
        if screen is None:
            screen = self._screen = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
        pygame.event.pump()
        screen.blit(pygame.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
        pygame.display.flip()
        self._clock.tick(self._fps)

    def close(self) -> None:
        self._pygame.display.quit()


class WorldModelEnv(gym.Env):
    """Base of the dream and the real env: an env whose agent sees the world through V + M."""

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "render_fps": 50}

    def __init__(
        self,
        model: ModelSource,
        revision: str | None,
        obs_mode: str,
        continuous: bool,
        max_episode_steps: int | None,
        render_mode: str | None,
        device: str,
    ) -> None:
        check_env_arguments(obs_mode, render_mode, self.metadata["render_modes"], max_episode_steps)
        self.world_model = load_world_model(model, revision=revision, device=device)
        self.obs_mode = obs_mode
        self.continuous = continuous
        self.max_episode_steps = max_episode_steps
        self.render_mode = render_mode
        self.action_space = carracing_action_space(continuous)
        self.observation_space = observation_space(self.world_model, obs_mode)
        self._elapsed: int | None = None  # None until the first reset
        self._window: HumanWindow | None = None

    def _begin_step(self, action: Any) -> np.ndarray:
        if self._elapsed is None:
            raise ResetNeededError("call reset() before step()")
        action = continuous_actions(action, self.continuous)
        self._elapsed += 1
        return action

    def _truncated(self) -> bool:
        limit, elapsed = self.max_episode_steps, self._elapsed
        return limit is not None and elapsed is not None and elapsed >= limit

    def _observation(self, z: torch.Tensor, h: torch.Tensor) -> np.ndarray:
        if self.obs_mode == "latent":
            return torch.cat([z, h], dim=1).cpu().numpy()[0]
        return self.world_model.decode(z)[0].cpu().numpy()

    def _show(self, frame: np.ndarray) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return frame
        if self.render_mode == "human":
            if self._window is None:
                self._window = HumanWindow(type(self).__name__, self.metadata["render_fps"])
            self._window.show(frame)
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
