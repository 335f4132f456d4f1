"""The ``dreamgym`` command line: one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np


def _cmd_demo(args: argparse.Namespace) -> int:
    """Drive one dream episode, report its speed and return, and write a GIF of it."""
    import gymnasium as gym
    import imageio.v3 as iio

    import dreamgym  # noqa: F401  (registers the envs)
    from dreamgym.data.policies import make_policy

    model = args.model
    if model is None:
        from dreamgym.hub import default_model_path

        model = default_model_path()
        if model is None:
            from dreamgym.models.world_model import WorldModel

            print("no default world model is installed: dreaming with an untrained one made here")
            model = WorldModel()
    env = gym.make("dreamgym/DreamCarRacing-v0", model=model, temperature=args.temperature)
    policy = make_policy("random", seed=args.seed)
    obs, _ = env.reset(seed=args.seed)
    policy.reset(args.seed)
    start, steps, episode_return, done = time.perf_counter(), 0, 0.0, False
    while not done:
        obs, reward, terminated, truncated, _ = env.step(policy(None))
        episode_return += reward
        steps += 1
        done = terminated or truncated
    elapsed = time.perf_counter() - start
    print(f"dream episode: {steps} steps, return {episode_return:.1f}, {steps / elapsed:,.0f} steps/s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pixels = gym.make("dreamgym/DreamCarRacing-v0", model=env.unwrapped.world_model, temperature=args.temperature,
                      render_mode="rgb_array")
    pixels.reset(seed=args.seed)
    policy.reset(args.seed)
    frames = [pixels.render()]
    for _ in range(args.gif_steps):
        _, _, terminated, truncated, _ = pixels.step(policy(None))
        frames.append(pixels.render())
        if terminated or truncated:
            break
    iio.imwrite(out / "dream.gif", np.stack(frames), duration=1000 / 25, loop=0)
    summary = {"steps": steps, "return": episode_return, "steps_per_second": steps / elapsed}
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out / 'dream.gif'} ({len(frames)} frames) and {out / 'demo.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="dream one CarRacing episode on the default world model and write a GIF")
    demo.add_argument("--model", default=None, help="world model folder or Hub repo id (default: the shipped one)")
    demo.add_argument("--temperature", type=float, default=1.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--gif-steps", type=int, default=200)
    demo.add_argument("--out", default="demo", help="folder for dream.gif and demo.json")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
