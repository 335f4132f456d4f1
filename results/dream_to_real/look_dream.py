"""Drive an agent through the dream of a seed and show what M shows it: return every 100 steps and a frame every 40.

    python results/dream_to_real/look_dream.py SEED AGENT OUT.png [MODEL]

The dream is the agent's own world model, or MODEL (first-frame start, 1000 steps, temperature 1), as
``dreamgym evaluate --dream`` scores it; ``look_episode.py SEED AGENT`` drives the real
episode of the same seed. Side by side they showed what CMA-ES exploits in v1's dream: the
real car leaves the road at the first fast bend and circles on the grass, while in the dream
the road bends gently under the car for 1000 steps (``cma-v1-gen30-*-20000.png``).
"""

import sys

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.specs import load_agent, parse_agent_spec, resolve_agent_model, start_episode

seed, spec, out = int(sys.argv[1]), parse_agent_spec(sys.argv[2]), sys.argv[3]
act, agent = load_agent(spec)
model, revision = resolve_agent_model(spec, agent, sys.argv[4] if len(sys.argv) > 4 else None, None)
env = gym.make("dreamgym/DreamCarRacing-v0", model=model, revision=revision, render_mode="rgb_array")
start_episode(act, seed)
obs, _ = env.reset(seed=seed)
total, frames = 0.0, []
for t in range(1000):
    action = act(obs)
    obs, reward, terminated, truncated, _ = env.step(action)
    total += float(reward)
    if t % 40 == 0:
        frames.append(env.render())
    if t % 100 == 0:
        print(f"step {t:4d}  dream return {total:6.1f}  action {np.round(action, 2).tolist()}")
    if terminated or truncated:
        break
print(f"dream return {total:.1f} in {t + 1} steps")
rows = [np.concatenate(frames[i : i + 5], 1) for i in range(0, len(frames) - len(frames) % 5, 5)]
imageio.imwrite(out, np.concatenate(rows, 0)[::2, ::2])
