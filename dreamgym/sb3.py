"""Stable-Baselines3 in the dream: ``from dreamgym.sb3 import make_dream_vec_env``.

A public alias of :mod:`dreamgym.agents.sb3`; see there for the documentation.
"""

from dreamgym.agents.sb3 import DreamVecEnv, load_sb3_agent, make_dream_vec_env

__all__ = ["DreamVecEnv", "load_sb3_agent", "make_dream_vec_env"]
