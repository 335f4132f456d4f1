"""How much faster than the real car is the dream? Everything measured side by side in one run.

    python benchmarks/bench_dream.py                 # the shipped default world model
    python benchmarks/bench_dream.py --model runs/wm --vector-sizes 64 1024 4096

Prints steps per second of the real CarRacing-v3, of the single dream (latent and pixels),
of the batched vector dream, and each as a ratio to the real env measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import dreamgym  # noqa: E402, F401
from dreamgym.hub import default_model_path, load_world_model  # noqa: E402
from dreamgym.models.world_model import WorldModel  # noqa: E402


@dataclass
class Args:
    model: str | None = None
    """world model folder or Hub id (default: the shipped model, else an untrained one)"""
    real_steps: int = 500
    single_steps: int = 3000
    vector_sizes: list[int] = field(default_factory=lambda: [64, 1024, 4096])
    vector_seconds: float = 5.0
    """wall time spent per vector size"""
    cma_steps: int = 1000
    """steps per rollout of the timed CMA-ES generation (64 x 16 rollouts); 0 skips it"""
    out: str | None = None
    """optional JSON file for the figures"""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--real-steps", type=int, default=Args.real_steps)
    parser.add_argument("--single-steps", type=int, default=Args.single_steps)
    parser.add_argument("--vector-sizes", type=int, nargs="+", default=[64, 1024, 4096])
    parser.add_argument("--vector-seconds", type=float, default=Args.vector_seconds)
    parser.add_argument("--cma-steps", type=int, default=Args.cma_steps)
    parser.add_argument("--out", default=None)
    return Args(**vars(parser.parse_args()))


def steps_per_second(env: gym.Env, steps: int, actions: np.ndarray) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[t % len(actions)])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_steps_per_second(model: WorldModel, num_envs: int, seconds: float) -> float:
    envs = gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=num_envs, model=model)
    envs.reset(seed=0)
    actions = np.random.default_rng(0).uniform([-1, 0, 0], [1, 1, 1], (num_envs, 3)).astype(np.float32)
    envs.step(actions)  # warm-up
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(actions)
        steps += num_envs
    return steps / (time.perf_counter() - start)


def cma_generation_seconds(model: WorldModel, steps: int, popsize: int = 64, rollouts: int = 16) -> float:
    """Wall time of one CMA-ES generation: ask, the whole population x rollouts in one dream batch, tell."""
    import cma

    from dreamgym.agents.cmaes import evaluate_population

    obs_dim = model.config.z_dim + model.config.rnn_hidden
    es = cma.CMAEvolutionStrategy(np.zeros(3 * obs_dim + 3), 0.1, {"popsize": popsize, "seed": 1, "verbose": -9})
    start = time.perf_counter()
    candidates = es.ask()
    returns = evaluate_population(model, np.asarray(candidates), seeds=list(range(rollouts)), max_steps=steps)
    es.tell(candidates, (-returns.mean(axis=1)).tolist())
    return time.perf_counter() - start


if __name__ == "__main__":
    args = parse_args()
    source = args.model or default_model_path()
    model = load_world_model(source) if source is not None else WorldModel()
    actions = np.random.default_rng(0).uniform([-1, 0, 0], [1, 1, 1], (256, 3)).astype(np.float32)
    figures: dict[str, float] = {}
    figures["real CarRacing-v3"] = steps_per_second(gym.make("CarRacing-v3"), args.real_steps, actions)
    for mode in ("latent", "pixels"):
        env = gym.make("dreamgym/DreamCarRacing-v0", model=model, obs_mode=mode)
        figures[f"single dream, {mode}"] = steps_per_second(env, args.single_steps, actions)
    for n in args.vector_sizes:
        figures[f"vector dream, {n} envs"] = vector_steps_per_second(model, n, args.vector_seconds)

    cma_seconds = cma_generation_seconds(model, args.cma_steps) if args.cma_steps else None

    real = figures["real CarRacing-v3"]
    print(f"model: {source or 'untrained (no default installed)'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"{'':28s} {'steps/s':>12s} {'x real':>8s}")
    for name, value in figures.items():
        print(f"{name:28s} {value:12,.0f} {value / real:8.1f}")
    if cma_seconds is not None:
        print(f"one CMA-ES generation (64 x 16 rollouts x {args.cma_steps} steps): {cma_seconds:.1f} s")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": asdict(args), "steps_per_second": figures, "cma_generation_seconds": cma_seconds}, f,
                      indent=2)
