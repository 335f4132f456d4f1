"""Gymnasium envs: the dream and the real env seen through V + M.

The dream is :class:`DreamCarRacingEnv` (and its batched vector env), the real env :class:`RealCarRacingEnv`.
"""

from dreamgym.envs.dream import DreamCarRacingEnv
from dreamgym.envs.real import RealCarRacingEnv

__all__ = ["DreamCarRacingEnv", "RealCarRacingEnv"]
