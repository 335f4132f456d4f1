"""Drive the reference agent's real episode of a seed and print how it goes: return, speed, heading, tiles, action.

    python results/dream_to_real/look_episode.py SEED [AGENT [mean]]

With ``mean`` a sampling policy drives with its mean action instead, as every agent was
scored before the reference drew its actions (``20001 reference mean`` shows the freeze).

Prints every 25th step and writes ``episode-SEED.png``, a frame every 40 steps; with it the
frozen-after-a-spin failure of the mean-action agent was found (seeds 20001 and 20022).
"""

import sys

import gymnasium as gym
import imageio.v2 as imageio
import numpy as np

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.specs import load_agent, parse_agent_spec, resolve_agent_model, start_episode

seed = int(sys.argv[1])
spec = parse_agent_spec(sys.argv[2] if len(sys.argv) > 2 else "reference")
act, agent = load_agent(spec)
if len(sys.argv) > 3 and sys.argv[3] == "mean":
    agent.sample = False
# The agent sees the car through the world model it was trained in, as `dreamgym evaluate` does.
model, revision = resolve_agent_model(spec, agent, None, None)
env = gym.make("dreamgym/RealCarRacing-v0", model=model, revision=revision, render_mode="rgb_array")
car_racing = env.unwrapped.car  # the CarRacing-v3 env inside
start_episode(act, seed)
obs, _ = env.reset(seed=seed)
total, frames = 0.0, []
for t in range(1000):
    action = act(obs)
    obs, reward, terminated, truncated, _ = env.step(action)
    total += float(reward)
    if t % 40 == 0:
        frames.append(env.render())
    hull = car_racing.car.hull
    if t % 25 == 0:
        speed = float(np.linalg.norm(hull.linearVelocity))
        print(f"step {t:4d}  return {total:6.1f}  speed {speed:5.1f}  heading {hull.angle:5.2f}  "
              f"tiles {car_racing.tile_visited_count:3d}  action {np.round(action, 2).tolist()}")
    if terminated or truncated:
        break
print(f"return {total:.1f}; tiles {car_racing.tile_visited_count} of {len(car_racing.track)}")
rows = [np.concatenate(frames[i : i + 5], 1) for i in range(0, len(frames) - len(frames) % 5, 5)]
imageio.imwrite(f"episode-{seed}.png", np.concatenate(rows, 0)[::2, ::2])
