"""How well does M's memory know the car's speed? A linear probe from [z, h] to the real speed.

    python results/dream_to_real/speed_probe.py AGENT [EPISODES]

Drives AGENT for EPISODES real episodes (seeds 50100 on) through the world model it was
trained in, records each step's observation ``[z, h]`` and the car's true speed (Box2D's hull
velocity), fits ridge regressions on all episodes but one and reports R^2 on that one (averaged over which is held out),
from ``z`` alone, ``h`` alone and both. V crops the dashboard, whose bar shows the speed, so
``z`` should know little of it; if ``h`` does not either, M cannot tell a fast car from a slow
one, and cannot foresee a spin at speed.
"""

import sys

import gymnasium as gym
import numpy as np
from probes import held_out_r_squared

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.specs import load_agent, parse_agent_spec, resolve_agent_model, start_episode

spec = parse_agent_spec(sys.argv[1])
episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 4
act, agent = load_agent(spec)
model, revision = resolve_agent_model(spec, agent, None, None)
env = gym.make("dreamgym/RealCarRacing-v0", model=model, revision=revision)
observations, speeds = [], []
for seed in range(50100, 50100 + episodes):
    start_episode(act, seed)
    obs, _ = env.reset(seed=seed)
    xs, vs = [], []
    for _ in range(1000):
        obs, _, terminated, truncated, _ = env.step(act(obs))
        xs.append(obs)
        vs.append(float(np.linalg.norm(env.unwrapped.car.car.hull.linearVelocity)))
        if terminated or truncated:
            break
    observations.append(np.array(xs[50:]))  # after CarRacing's zoom-in
    speeds.append(np.array(vs[50:]))
z_dim = env.unwrapped.world_model.config.z_dim


every = np.concatenate(speeds)
print(f"speed over {len(every)} steps: mean {every.mean():.1f}, max {every.max():.1f}")
for name, columns in (("z", slice(0, z_dim)), ("h", slice(z_dim, None)), ("[z, h]", slice(None))):
    scores = ", ".join(
        f"{held_out_r_squared(observations, speeds, columns, alpha):.3f}" for alpha in (1.0, 100.0, 1000.0)
    )
    print(f"R^2 of the speed from {name:6s} on held-out episodes (ridge penalty 1, 100, 1000): {scores}")
