"""The predicted spread of M's mixture along agents' dream episodes: would MOPO's one-model penalty flag an exploit?

    python results/dream_to_real/mixture_spread.py MODEL AGENT [AGENT ...]

For each agent, 10 first-frame dream episodes (seeds 20000-20009) in MODEL; after each step the
std of M's predicted distribution of the next ``z`` (per dimension by the law of total variance
over the mixture's components, then the norm over dimensions), which MOPO subtracts from the
reward when it has one model. If it does not differ between an agent that the real env punishes
and one that drives, such a penalty cannot steer an optimiser away from the exploit.
"""

import sys

import numpy as np
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.evaluate import make_dream_env
from dreamgym.agents.specs import load_agent, parse_agent_spec, start_episode


def mixture_std(out) -> torch.Tensor:
    """The std of M's mixture of the next z, the norm over dimensions, (batch,)."""
    weights = torch.softmax(out.log_pi, -1)
    mean = (weights * out.mu).sum(-1)
    variance = (weights * (out.log_sigma.exp() ** 2 + out.mu**2)).sum(-1) - mean**2
    return variance.clamp_min(0).sum(-1).sqrt()


model, agents = sys.argv[1], sys.argv[2:]
env = make_dream_env(model=model)
dream, rnn = env.unwrapped.dream, env.unwrapped.world_model.rnn
for spec in agents:
    act, _ = load_agent(parse_agent_spec(spec))
    spreads, rewards = [], []
    for seed in range(20000, 20010):
        start_episode(act, seed)
        obs, _ = env.reset(seed=seed)
        for _ in range(1000):
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            with torch.inference_mode():
                spreads.append(float(mixture_std(rnn.heads(dream.h))[0]))
            rewards.append(reward)
            if terminated or truncated:
                break
    u = np.array(spreads)
    print(
        f"{spec:60s} spread mean {u.mean():.3f} p90 {np.quantile(u, 0.9):.3f} p99 {np.quantile(u, 0.99):.3f}"
        f"  dream reward per step {np.mean(rewards):.3f}",
        flush=True,
    )
