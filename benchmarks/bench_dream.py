"""How much faster than the real car is the dream? Everything measured side by side in one run.

    python benchmarks/bench_dream.py                 # the shipped default world model
    python benchmarks/bench_dream.py --model runs/wm --vector-sizes 64 1024 4096

Prints steps per second of the real CarRacing-v3, of the single dream (latent and pixels),
of the batched vector dream, and each as a ratio to the real env measured in the same run.

The real env and the single dreams are stepped in alternating blocks, ``--rounds`` of them:
a change of load on the machine then slows both sides of a ratio alike. Each single-dream
ratio is the median of its rounds' ratios (each round's dream block against the real block
just before it), shown with the lowest and highest; steps/s are the medians of the rounds.
The vector dream runs after, and its ratio is to the real env's median rate.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import gymnasium as gym
import numpy as np
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.hub import default_model_path, load_world_model
from dreamgym.models.world_model import WorldModel

REAL = "real CarRacing-v3"


@dataclass
class Args:
    model: str | None = None
    """world model folder or Hub id (default: the shipped model, else an untrained one)"""
    real_steps: int = 500
    single_steps: int = 3000
    rounds: int = 10  # alternated blocks of real and single-dream steps
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
    parser.add_argument("--real-steps", type=int, default=Args.real_steps, help="real steps, over all the rounds")
    parser.add_argument("--single-steps", type=int, default=Args.single_steps,
                        help="steps of each single dream (latent, pixels), over all the rounds")
    parser.add_argument("--rounds", type=int, default=Args.rounds,
                        help="alternated blocks of real and single-dream steps; the ratios are their median")
    parser.add_argument("--vector-sizes", type=int, nargs="+", default=[64, 1024, 4096])
    parser.add_argument("--vector-seconds", type=float, default=Args.vector_seconds)
    parser.add_argument("--cma-steps", type=int, default=Args.cma_steps)
    parser.add_argument("--out", default=None)
    return Args(**vars(parser.parse_args()))


class BlockStepper:
    """An env stepped in timed blocks, its episode carrying on from one block to the next."""

    def __init__(self, env: gym.Env, actions: np.ndarray) -> None:
        self.env, self.actions, self.t = env, actions, 0
        env.reset(seed=0)  # outside the timing: the real env builds its track here

    def steps_per_second(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            _, _, terminated, truncated, _ = self.env.step(self.actions[self.t % len(self.actions)])
            self.t += 1
            if terminated or truncated:
                self.env.reset()
        return steps / (time.perf_counter() - start)


def interleaved_rates(
    envs: dict[str, gym.Env], steps: dict[str, int], rounds: int, actions: np.ndarray, warmup: int = 20
) -> dict[str, list[float]]:
    """Steps per second of each env in each of ``rounds`` rounds, the envs stepped one block after another."""
    steppers = {name: BlockStepper(env, actions) for name, env in envs.items()}
    for stepper in steppers.values():
        stepper.steps_per_second(warmup)
    rates: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(rounds):
        for name, stepper in steppers.items():
            rates[name].append(stepper.steps_per_second(max(1, steps[name] // rounds)))
    return rates


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
    if args.rounds < 1:
        raise SystemExit(f"--rounds must be >= 1, got {args.rounds}")
    source = args.model or default_model_path()
    model = load_world_model(source) if source is not None else WorldModel()
    actions = np.random.default_rng(0).uniform([-1, 0, 0], [1, 1, 1], (256, 3)).astype(np.float32)
    envs = {REAL: gym.make("CarRacing-v3")}
    steps = {REAL: args.real_steps}
    for mode in ("latent", "pixels"):
        envs[f"single dream, {mode}"] = gym.make("dreamgym/DreamCarRacing-v0", model=model, obs_mode=mode)
        steps[f"single dream, {mode}"] = args.single_steps
    rates = interleaved_rates(envs, steps, args.rounds, actions)
    real_rates = np.asarray(rates[REAL])
    figures = {name: float(np.median(r)) for name, r in rates.items()}
    # Each round's dream block against the real block just before it, so both see the same load.
    ratios = {name: np.asarray(r) / real_rates for name, r in rates.items() if name != REAL}
    for n in args.vector_sizes:
        figures[f"vector dream, {n} envs"] = vector_steps_per_second(model, n, args.vector_seconds)

    cma_seconds = cma_generation_seconds(model, args.cma_steps) if args.cma_steps else None

    real = figures[REAL]
    print(f"model: {source or 'untrained (no default installed)'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"real and single dreams interleaved in {args.rounds} rounds; x real: median of the rounds (lowest-highest)")
    print(f"{'':28s} {'steps/s':>12s} {'x real':>8s}")
    for name, value in figures.items():
        if name in ratios:
            ratio = ratios[name]
            spread = f"  ({ratio.min():.1f}-{ratio.max():.1f})"
            print(f"{name:28s} {value:12,.0f} {float(np.median(ratio)):8.1f}{spread}")
        else:
            print(f"{name:28s} {value:12,.0f} {value / real:8.1f}")
    if cma_seconds is not None:
        print(f"one CMA-ES generation (64 x 16 rollouts x {args.cma_steps} steps): {cma_seconds:.1f} s")
    if args.out:
        record = {
            "args": asdict(args),
            "steps_per_second": figures,
            "ratio_to_real": {name: float(np.median(r)) for name, r in ratios.items()},
            "rounds": {"steps_per_second": rates, "ratio_to_real": {n: r.tolist() for n, r in ratios.items()}},
            "cma_generation_seconds": cma_seconds,
        }
        with open(args.out, "w") as f:
            json.dump(record, f, indent=2)
