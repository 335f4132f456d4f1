"""Which world model's observation knows the car's speed? Linear probes along replayed real episodes.

    python results/dream_to_real/speed_probe_models.py DATA FIRST_SEED EPISODES MODEL [MODEL ...]

Replays EPISODES stored episodes of DATA (seeds FIRST_SEED on; their stored actions, so every
model sees the very same real trajectories), records the car's true speed (Box2D's hull
velocity) at each step, and each MODEL's observation ``[z, h]`` through
:class:`~dreamgym.envs.observer.LatentObserver` (each model's own preprocessing: a V that keeps
the dashboard sees its speed bar). For each model it fits ridge regressions from ``z``, ``h``
and ``[z, h]`` to the speed on all episodes but one, and reports R^2 on that one, averaged over
which is held out. Steps before 50 (CarRacing's zoom-in) are left out.
"""

import sys

import gymnasium as gym
import numpy as np
from probes import held_out_r_squared

from dreamgym.data.policies import ReplayPolicy
from dreamgym.envs.observer import LatentObserver
from dreamgym.models.world_model import WorldModel

data, first_seed, episodes, model_paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
models = [WorldModel.from_pretrained(path).eval() for path in model_paths]
observers = [LatentObserver(model) for model in models]
replay = ReplayPolicy(0, data)
env = gym.make("CarRacing-v3", continuous=True, max_episode_steps=1000)
observations: list[list[np.ndarray]] = [[] for _ in models]
speeds: list[np.ndarray] = []
for seed in range(first_seed, first_seed + episodes):
    replay.reset(seed)
    frame, _ = env.reset(seed=seed)
    for observer in observers:
        observer.reset(frame)
    xs: list[list[np.ndarray]] = [[] for _ in models]
    vs = []
    while True:
        action = replay(frame)
        frame, _, terminated, truncated, _ = env.step(action)
        for observer, x in zip(observers, xs, strict=True):
            observer.step(action, frame)
            x.append(observer.observation())
        vs.append(float(np.linalg.norm(env.unwrapped.car.hull.linearVelocity)))
        if terminated or truncated:
            break
    for kept, x in zip(observations, xs, strict=True):
        kept.append(np.array(x[50:]))
    speeds.append(np.array(vs[50:]))


every = np.concatenate(speeds)
print(f"{episodes} replayed episodes of {data} (seeds {first_seed}..{first_seed + episodes - 1}), "
      f"{len(every)} steps; speed mean {every.mean():.1f}, max {every.max():.1f}")
print("R^2 of the speed on held-out episodes (ridge penalty 1 / 100 / 1000)")
for path, model, xs in zip(model_paths, models, observations, strict=True):
    z_dim = model.config.z_dim
    dashboard = "kept" if not model.config.crop_dashboard else "cut"
    for name, columns in (("z", slice(0, z_dim)), ("h", slice(z_dim, None)), ("[z, h]", slice(None))):
        scores = " / ".join(f"{held_out_r_squared(xs, speeds, columns, alpha):.3f}" for alpha in (1.0, 100.0, 1000.0))
        print(f"{path} (dashboard {dashboard}): from {name:6s} {scores}")
