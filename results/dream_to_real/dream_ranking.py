"""Does a dream rank agents as the real car does? Each agent's first-frame dream score in each world model.

    python results/dream_to_real/dream_ranking.py --models M1 M2 --agents A1 A2 [--episodes 30] [--seed 20000]

A dream that is hard to exploit scores an agent that the real env punishes (the PPO agent at
5M steps, the generation-30 CMA-ES controller that leaves the road at the first fast bend)
below one that drives; each agent's real score is in its validation record. The dream episodes
are those of ``dreamgym evaluate --dream`` (first-frame start, 1000 steps, temperature 1), for
seeds ``seed .. seed + episodes - 1``, with the agent seeing ``[z, h]`` of the model scored.
It takes a minute a model, with no real episode: a quick check of a new M before an agent
trains in it for an hour.
"""

import argparse

import numpy as np

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.evaluate import _dream_returns, load_world_model
from dreamgym.agents.specs import load_agent, parse_agent_spec

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--models", nargs="+", required=True, help="world model folders or Hub ids")
parser.add_argument("--agents", nargs="+", required=True, help="agents, as dreamgym evaluate takes them")
parser.add_argument("--episodes", type=int, default=30)
parser.add_argument("--seed", type=int, default=20000)
args = parser.parse_args()

seeds = list(range(args.seed, args.seed + args.episodes))
for model in args.models:
    world_model = load_world_model(model)
    for spec in args.agents:
        act, loaded = load_agent(parse_agent_spec(spec))
        returns = np.array(_dream_returns(act, loaded, world_model, seeds, 1.0, 1000, False)[0])
        sem = returns.std(ddof=1) / np.sqrt(len(returns))
        print(f"{model:40s} {spec:60s} dream {returns.mean():6.1f} +/- {sem:4.1f}", flush=True)
