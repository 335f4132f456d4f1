"""``dreamgym demo`` (``make demo``): one agent, one seed, dreamt and driven for real.

The demo never shows a dream return alone: the same agent drives the dream and the real
CarRacing-v3 (through the same V + M) from the same seed, and both returns are printed side
by side, since the gap between them is what a dream-trained agent is judged by.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v3 as iio
import numpy as np

from dreamgym.agents.evaluate import REAL_ENV_ID, make_dream_env, run_episode
from dreamgym.agents.specs import load_agent, parse_agent_spec, resolve_agent_model
from dreamgym.data.policies import make_policy
from dreamgym.files import atomic_write_json
from dreamgym.hub import default_model_path, load_world_model
from dreamgym.models.world_model import WorldModel


def _driver(model: str | None, seed: int) -> tuple[Any, str, Any]:
    """The reference agent and the world model it was trained in, else correlated random actions in ``model``."""
    if model is None:
        try:
            spec = parse_agent_spec("reference")
        except FileNotFoundError:
            spec = None
        if spec is not None:
            act, loaded = load_agent(spec)
            dream, _ = resolve_agent_model(spec, loaded, None, None)
            return act, "the reference agent", dream
    random_policy = make_policy("random", seed=seed)
    return (lambda obs: random_policy(None)), "correlated random actions", model


def run_demo(
    model: str | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    gif_steps: int = 200,
    out: str | Path = "demo",
    real: bool = True,
    max_steps: int = 1000,
) -> dict[str, Any]:
    """Dream one episode and drive the same agent in the real env; write ``dream.gif`` and ``demo.json``.

    Args:
        model: world model folder or Hub id, driven by correlated random actions; None for the
            shipped reference agent in the world model it was trained in.
        temperature: the dream's temperature.
        seed: the episode's seed, in the dream and in the real env.
        gif_steps: dream steps drawn into the GIF.
        out: folder for ``dream.gif`` and ``demo.json``.
        real: also drive the real car (about ten seconds on a laptop CPU).
        max_steps: episode length cap, in the dream and in the real env.

    Returns:
        The summary written to ``demo.json``.
    """
    act, who, source = _driver(model, seed)
    source = source or default_model_path()
    if source is None:
        print("no default world model is installed: dreaming with an untrained one made here")
        world_model = WorldModel()
    else:
        world_model = load_world_model(source)

    env = make_dream_env(model=world_model, temperature=temperature, max_episode_steps=max_steps)
    started = time.perf_counter()
    dream_return, dream_steps = run_episode(env, act, seed)
    elapsed = time.perf_counter() - started
    summary: dict[str, Any] = {
        "driver": who, "seed": seed, "temperature": temperature,
        "dream": {"return": dream_return, "steps": dream_steps, "steps_per_second": dream_steps / elapsed},
    }
    speed = f"{dream_steps / elapsed:,.0f} steps/s"
    line = f"{who}, seed {seed}: dream return {dream_return:.1f} ({dream_steps} steps, {speed})"
    if real:
        real_env = gym.make(REAL_ENV_ID, model=world_model, max_episode_steps=max_steps)
        started = time.perf_counter()
        real_return, real_steps = run_episode(real_env, act, seed)
        real_env.close()
        summary["real"] = {"return": real_return, "steps": real_steps,
                           "steps_per_second": real_steps / (time.perf_counter() - started)}
        line += f"; real return {real_return:.1f} ({real_steps} steps) in CarRacing-v3"
    print(line)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pixels = make_dream_env(model=world_model, temperature=temperature, render_mode="rgb_array",
                      max_episode_steps=gif_steps)
    obs, _ = pixels.reset(seed=seed)
    frames: list[Any] = [pixels.render()]  # rgb_array frames
    for _ in range(gif_steps):
        obs, _, terminated, truncated, _ = pixels.step(act(obs))
        frames.append(pixels.render())
        if terminated or truncated:
            break
    iio.imwrite(out / "dream.gif", np.stack(frames), duration=1000 / 25, loop=0)
    atomic_write_json(out / "demo.json", summary, sort_keys=False)
    print(f"wrote {out / 'dream.gif'} ({len(frames)} frames) and {out / 'demo.json'}")
    return summary
