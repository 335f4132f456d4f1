"""Drive the dream and the real car with the same random agent, through the same world model.

Usage:
    python examples/quickstart.py --model path/to/world_model --steps 200
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.cli import dataclass_args


@dataclass
class Args:
    model: str | None = None
    """world model folder or Hub repo id; None uses the model shipped with dreamgym"""
    temperature: float = 1.15
    """dream temperature tau"""
    steps: int = 200
    """steps per env"""
    seed: int = 0


def rollout(env: gym.Env, steps: int, seed: int) -> float:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    total = 0.0
    for _ in range(steps):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        total += float(reward)
        if terminated or truncated:
            break
    return total


if __name__ == "__main__":
    args = dataclass_args(Args, __doc__)
    dream = gym.make("dreamgym/DreamCarRacing-v0", model=args.model, temperature=args.temperature)
    real = gym.make("dreamgym/RealCarRacing-v0", model=dream.unwrapped.world_model)
    assert dream.observation_space == real.observation_space and dream.action_space == real.action_space
    print(f"observation: {dream.observation_space.shape} {dream.observation_space.dtype}, action: {dream.action_space}")
    print(f"dream return over {args.steps} steps: {rollout(dream, args.steps, args.seed):.1f}")
    print(f"real  return over {args.steps} steps: {rollout(real, args.steps, args.seed):.1f}")
    obs, _ = dream.reset(seed=args.seed)
    print("first dream observation [z, h]:", np.round(obs[:6], 3), "...")
