"""Gymnasium envs: the dream (:class:`DreamCarRacingEnv`) and the real env seen through V + M (:class:`RealCarRacingEnv`)."""

from dreamgym.envs.dream import DreamCarRacingEnv
from dreamgym.envs.real import RealCarRacingEnv

__all__ = ["DreamCarRacingEnv", "RealCarRacingEnv"]
