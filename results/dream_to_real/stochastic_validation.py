"""Score an SB3 checkpoint on real episodes driving with its stochastic policy, the one PPO optimised in the dream.

    python results/dream_to_real/stochastic_validation.py CHECKPOINT MODEL FIRST_SEED EPISODES OUT.json [STD_SCALE]

Each episode draws its actions with SB3's ``predict(obs, deterministic=False)``, torch seeded
with the episode's seed; ``STD_SCALE`` (default 1) multiplies the policy's std. The product
path is ``dreamgym export-policy --sample`` + ``dreamgym evaluate``; this script is what chose
it on the validation seeds. It loads the zip with dreamgym's pickle-free loader.
"""

import json
import sys
from multiprocessing import Pool

import gymnasium as gym
import numpy as np
import torch

CHECKPOINT, MODEL, FIRST, EPISODES, OUT = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
STD_SCALE = float(sys.argv[6]) if len(sys.argv) > 6 else 1.0


def episode(seed: int) -> tuple[int, float]:
    """One real episode of the seed, its actions drawn from the policy; (seed, return)."""
    torch.set_num_threads(1)
    import dreamgym  # noqa: F401  (registers the envs)
    from dreamgym.sb3 import load_sb3_agent

    agent = load_sb3_agent(CHECKPOINT, device="cpu")
    with torch.no_grad():
        agent.policy.log_std += float(np.log(STD_SCALE))
    torch.manual_seed(seed)
    env = gym.make("dreamgym/RealCarRacing-v0", model=MODEL)
    obs, _ = env.reset(seed=seed)
    total = 0.0
    for _ in range(1000):
        action, _ = agent.predict(obs, deterministic=False)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        if terminated or truncated:
            break
    return seed, total


if __name__ == "__main__":
    with Pool(2) as pool:
        results = pool.map(episode, range(FIRST, FIRST + EPISODES), chunksize=1)
    returns = np.array([r for _, r in results])
    stderr = returns.std(ddof=1) / np.sqrt(len(returns))
    print(f"{CHECKPOINT} std x {STD_SCALE}: mean {returns.mean():.1f} +/- {stderr:.1f} (s.e.), std {returns.std():.1f}")
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"checkpoint": CHECKPOINT, "scale": STD_SCALE, "seeds": [s for s, _ in results],
                   "returns": returns.tolist()}, f, indent=1)
