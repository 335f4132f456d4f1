"""Collection throughput on each backend, with 1 and 2 workers, for the same seeds, side by side.

    python benchmarks/bench_backends.py                          # 4 episodes of 300 steps
    python benchmarks/bench_backends.py --episodes 8 --max-steps 1000 --workers 1 2 4
    python benchmarks/bench_backends.py --address auto --out results/bench_backends.json

Each run is one ``dreamgym.data.collect.collect`` call into a fresh temporary store, timed
from call to return: the local backend's times include spawning its worker processes, the
Ray backend's include starting (or reusing) Ray's workers, but not starting Ray itself,
which is reported apart. Every run must give the very same episodes (the manifest
entries, sha256 included, are compared), or the script fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from dreamgym.backends import make_backend
from dreamgym.data.collect import collect


@dataclass
class Args:
    episodes: int = 4
    """episodes per run (seeds seed .. seed+episodes-1, the same for every run)"""
    max_steps: int = 300
    """steps per episode (the random policy rarely ends one earlier)"""
    seed: int = 0
    workers: list[int] = field(default_factory=lambda: [1, 2])
    """worker counts to measure on each backend"""
    backends: list[str] = field(default_factory=lambda: ["local", "ray"])
    policy: str = "random"
    address: str | None = None
    """Ray cluster to use ("auto", "ray://host:10001"); default: a local Ray instance of max(workers) CPUs"""
    out: str | None = None
    """optional JSON file for the figures"""


def parse_args() -> Args:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=Args.episodes)
    parser.add_argument("--max-steps", type=int, default=Args.max_steps)
    parser.add_argument("--seed", type=int, default=Args.seed)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", choices=["local", "ray"], default=["local", "ray"])
    parser.add_argument("--policy", default=Args.policy)
    parser.add_argument("--address", default=None)
    parser.add_argument("--out", default=None)
    return Args(**vars(parser.parse_args()))


def start_ray(args: Args) -> float:
    """Start (or connect to) Ray once for all the Ray runs; return the seconds it took."""
    import ray

    start = time.perf_counter()
    if args.address is None:
        ray.init(address="local", num_cpus=max(args.workers), include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=args.address, log_to_driver=False)
    return time.perf_counter() - start


def run(args: Args, backend: str, workers: int, root: Path) -> tuple[dict, list[dict]]:
    runner = make_backend(backend, workers)  # the Ray one uses the Ray started above
    start = time.perf_counter()
    store = collect(episodes=args.episodes, out=root, workers=workers, policy=args.policy, seed=args.seed,
                    max_steps=args.max_steps, progress=False, backend=runner)
    seconds = time.perf_counter() - start
    entries = store.entries()
    steps = sum(int(e["length"]) for e in entries)
    row = {"backend": backend, "workers": workers, "episodes": len(entries), "steps": steps,
           "seconds": round(seconds, 2), "steps_per_s": round(steps / seconds, 1),
           "episodes_per_s": round(len(entries) / seconds, 3)}
    return row, entries


def main() -> None:
    args = parse_args()
    ray_init_s = start_ray(args) if "ray" in args.backends else None
    rows, reference = [], None
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as tmp:
        for backend in args.backends:
            for workers in args.workers:
                row, entries = run(args, backend, workers, Path(tmp) / f"{backend}-{workers}")
                if reference is None:
                    reference = entries
                elif entries != reference:
                    raise SystemExit(f"{backend} with {workers} workers collected other episodes than the first run")
                rows.append(row)
                print(f"  {backend:5s} x{workers}: {row['seconds']:.1f} s", flush=True)

    base = rows[0]["steps_per_s"]
    print(f"\ncollection of {args.episodes} x {args.max_steps} steps, seeds {args.seed}.."
          f"{args.seed + args.episodes - 1}, policy {args.policy!r}; {os.cpu_count()} CPUs here, "
          f"load average {os.getloadavg()[0]:.2f}" + (f"; ray.init took {ray_init_s:.1f} s" if ray_init_s else ""))
    print(f"{'backend':8s} {'workers':>7s} {'seconds':>8s} {'steps/s':>8s} {'episodes/s':>10s} {'vs first':>8s}")
    for row in rows:
        print(f"{row['backend']:8s} {row['workers']:7d} {row['seconds']:8.2f} {row['steps_per_s']:8.1f} "
              f"{row['episodes_per_s']:10.3f} {row['steps_per_s'] / base:7.2f}x")
    print("every run collected the same episodes (manifest entries and sha256 identical)")

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"args": asdict(args), "ray_init_seconds": ray_init_s, "cpus": os.cpu_count(),
                  "processor": platform.processor() or platform.machine(), "results": rows}
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
