"""Stable-Baselines3 in the dream: ``from dreamgym.sb3 import make_dream_vec_env``.

The public home of :class:`~dreamgym.envs.sb3_vec.DreamVecEnv` (SB3's ``VecEnv`` over the
batched dream), :func:`~dreamgym.envs.sb3_vec.make_dream_vec_env` and
:func:`~dreamgym.agents.sb3.load_sb3_agent`; see there for the documentation.
"""

from dreamgym.agents.sb3 import load_sb3_agent
from dreamgym.envs.sb3_vec import DreamVecEnv, make_dream_vec_env

__all__ = ["DreamVecEnv", "load_sb3_agent", "make_dream_vec_env"]
