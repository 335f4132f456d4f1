"""RealCarRacing-v0: the real CarRacing-v3, seen through a world model's V and M."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.box2d.car_racing import CarRacing

from dreamgym.envs.common import WorldModelEnv
from dreamgym.envs.observer import LatentObserver
from dreamgym.hub import ModelSource
from dreamgym.validation import check_seed


class RealCarRacingEnv(WorldModelEnv):
    """The real CarRacing-v3, observed through a world model's V and M as the dream is.

    ## Description
    The real CarRacing-v3 (Box2D physics), observed the way the dream is. Each frame is cut
    to 64x64 by :func:`dreamgym.preprocessing.preprocess_frames` and encoded by V; M's hidden
    state is stepped with every action taken. An agent trained in
    ``dreamgym/DreamCarRacing-v0`` therefore runs here unchanged, and its score here is its
    real score.

    ## Action Space
    As CarRacing-v3 and DreamCarRacing-v0: ``Box([-1, 0, 0], [1, 1, 1], float32)`` or, with
    ``continuous=False``, ``Discrete(5)``.

    ## Observation Space
    - ``obs_mode="latent"`` (default): ``[z, h]``, float32, where ``z`` is V's posterior mean
      for the current frame and ``h`` M's hidden state.
    - ``obs_mode="pixels"``: V's reconstruction of the current frame, ``(64, 64, 3)`` uint8,
      the same kind of image the dream shows. ``info["frame"]`` holds the real 64x64 frame.

    ## Rewards
    CarRacing-v3's: -0.1 per frame, +1000/N per newly visited tile, -100 for leaving the
    playfield.

    ## Starting State
    CarRacing-v3's, with a random track per seed; M's state starts at zero.

    ## Episode End
    CarRacing-v3's: terminated when every tile is visited or the car leaves the playfield;
    truncated after 1000 steps (``gym.make``'s ``TimeLimit``, or ``max_episode_steps`` when
    constructed directly).

    ## Arguments
    - ``model``, ``revision``, ``obs_mode``, ``continuous``, ``max_episode_steps``, ``device``:
      as DreamCarRacing-v0.
    - ``render_mode``: ``"rgb_array"`` or ``"human"``, CarRacing's own rendering.
    - ``lap_complete_percent``, ``domain_randomize``: passed to CarRacing-v3.

    ## Version History
    - v0: initial version, on CarRacing-v3.
    """

    metadata: dict[str, Any] = {"render_modes": ["human", "rgb_array"], "render_fps": 50}

    def __init__(
        self,
        model: ModelSource = None,
        revision: str | None = None,
        obs_mode: str = "latent",
        continuous: bool = True,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        lap_complete_percent: float = 0.95,
        domain_randomize: bool = False,
        device: str = "cpu",
    ) -> None:
        super().__init__(model, revision, obs_mode, continuous, max_episode_steps, render_mode, device)
        self.car = CarRacing(
            render_mode=render_mode,
            continuous=continuous,
            lap_complete_percent=lap_complete_percent,
            domain_randomize=domain_randomize,
        )
        self.observer = LatentObserver(self.world_model)

    def _observe(self) -> tuple[np.ndarray, dict]:
        obs = self._observation(self.observer.z, self.observer.h)
        return obs, ({"frame": self.observer.frame} if self.obs_mode == "pixels" else {})

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        seed = check_seed(seed)  # numpy ints as Python ints, as the vector env takes them
        super().reset(seed=seed)
        frame, info = self.car.reset(seed=seed, options=options)
        self._elapsed = 0
        self.observer.reset(frame)
        obs, extra = self._observe()
        return obs, {**info, **extra}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        continuous_action = self._begin_step(action)
        raw = continuous_action if self.continuous else int(action)
        frame, reward, terminated, truncated, info = self.car.step(raw)
        self.observer.step(continuous_action, frame)
        obs, extra = self._observe()
        return obs, float(reward), bool(terminated), bool(truncated) or self._truncated(), {**info, **extra}

    def render(self) -> np.ndarray | None:
        return self.car.render()

    def close(self) -> None:
        self.car.close()
        super().close()
