"""The real env seen through V + M: the one place where real frames become ``(z, h, c)``.

A frame is cut to V's input by :func:`~dreamgym.preprocessing.preprocess_frames` and
encoded to V's posterior mean ``z``; M's LSTM state ``(h, c)`` is stepped with ``z`` and the
action actually taken. ``RealCarRacing-v0``, the controller collection policy, the open-loop
metrics, the videos and the dream's bank of trajectory starts all run this code, so the
states a dream starts from are exactly those an agent meets in the real env.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamgym.models.mdnrnn import MDNRNN
from dreamgym.models.world_model import WorldModel
from dreamgym.preprocessing import preprocess_frames


class LatentObserver:
    """V's ``z`` of the current real frame and M's ``(h, c)`` after the actions taken so far.

    Args:
        world_model: the V + M bundle to see through.

    Example::

        observer = LatentObserver(world_model)
        observer.reset(frame)                 # the env's first 96x96 frame
        obs = observer.observation()          # [z, h], float32
        observer.step(action, next_frame)     # M steps with (z, action), V encodes next_frame
    """

    def __init__(self, world_model: WorldModel) -> None:
        self.world_model = world_model
        cfg = world_model.config
        device = world_model.device
        self.z = torch.zeros(1, cfg.z_dim, device=device)
        self.h = torch.zeros(1, cfg.rnn_hidden, device=device)
        self.c = torch.zeros(1, cfg.rnn_hidden, device=device)
        self.frame: np.ndarray | None = None  # the last preprocessed 64x64 frame

    def encode(self, frame: np.ndarray) -> torch.Tensor:
        """Set ``z`` to V's mean for a raw CarRacing frame (96, 96, 3) and return it, shape (1, z_dim)."""
        cfg = self.world_model.config
        self.frame = preprocess_frames(frame, cfg.image_size, cfg.crop_dashboard)
        self.z = self.world_model.encode(self.frame[None])[0]
        return self.z

    def reset(self, frame: np.ndarray) -> torch.Tensor:
        """Start an episode at ``frame``: M's state back to zero, ``z`` from V."""
        self.h = torch.zeros_like(self.h)
        self.c = torch.zeros_like(self.c)
        return self.encode(frame)

    @torch.inference_mode()
    def advance(self, action: Any) -> None:
        """Step M's ``(h, c)`` with the current ``z`` and the ``action`` (3,) taken from it."""
        a = torch.as_tensor(np.asarray(action, dtype=np.float32).reshape(1, -1), device=self.z.device)
        self.h, self.c = self.world_model.rnn.step(self.z, a, self.h, self.c)

    def step(self, action: Any, frame: np.ndarray) -> torch.Tensor:
        """:meth:`advance` with ``action``, then :meth:`encode` the frame it led to."""
        self.advance(action)
        return self.encode(frame)

    def observation(self) -> np.ndarray:
        """``[z, h]`` as float32 numpy, the latent observation of both envs."""
        return torch.cat([self.z[0], self.h[0]]).float().cpu().numpy()


@torch.no_grad()
def teacher_forced_states(rnn: MDNRNN, z: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """M's ``(h_t, c_t)`` along a real episode: what :class:`LatentObserver` holds at each step.

    Args:
        rnn: M (``world_model.rnn``).
        z: V's means of the episode's frames, (T+1, z_dim) or at least (T, z_dim); or a batch
            of episodes padded to one length, (B, T+1, z_dim).
        actions: the actions taken, (T, action_dim), or (B, T, action_dim).

    Returns:
        ``h`` and ``c``, each (T+1, hidden) (or (B, T+1, hidden)): row ``t`` is the state after
        ``t`` actions. Padding after an episode's end only affects rows after its end.
    """
    batched = actions.ndim == 3
    if not batched:
        z, actions = z[None], actions[None]
    h = torch.zeros(len(actions), rnn.hidden, device=z.device)
    c = torch.zeros_like(h)
    hs, cs = [h], [c]
    for t in range(actions.shape[1]):
        h, c = rnn.step(z[:, t], actions[:, t], h, c)
        hs.append(h)
        cs.append(c)
    h_all, c_all = torch.stack(hs, dim=1), torch.stack(cs, dim=1)
    return (h_all, c_all) if batched else (h_all[0], c_all[0])
