"""Train PPO entirely inside the dream, scoring it on the real car as it learns.

The agent only ever acts in the batched dream (``make_dream_vec_env``); an ``EvalCallback``
periodically drives ``dreamgym/RealCarRacing-v0`` (real Box2D physics seen through the same
world model) with it, so the logged ``eval/mean_reward`` is the agent's real score, and the
best agent by that score is kept.

    python examples/ppo_in_the_dream.py --model path/to/world_model --total-timesteps 2000000

Writes ``final_model.zip``, ``best_model.zip`` (best real score) and ``evaluations.npz`` to
``--out``. Load an agent with ``dreamgym.sb3.load_sb3_agent``.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

import gymnasium as gym
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.monitor import Monitor

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym import load_world_model
from dreamgym.cli import dataclass_args
from dreamgym.sb3 import make_dream_vec_env


def arg(default, help: str):
    """A dataclass field that carries its command-line help."""
    return field(default=default, metadata={"help": help})


@dataclass
class Args:
    model: str | None = arg(None, "world model folder or Hub repo id; default: the one shipped with dreamgym")
    total_timesteps: int = arg(2_000_000, "dream steps to train for, summed over envs")
    n_envs: int = arg(64, "dream episodes stepped side by side")
    temperature: float = arg(1.15, "dream temperature tau; above 1 makes the dream harder to exploit")
    max_episode_steps: int = arg(1000, "dream episode length cap (CarRacing's is 1000)")
    n_steps: int = arg(128, "PPO rollout length per env")
    batch_size: int = arg(1024, "PPO minibatch size (capped at n_steps * n_envs)")
    n_epochs: int = arg(10, "PPO epochs per rollout")
    learning_rate: float = arg(3e-4, "Adam learning rate")
    gamma: float = arg(0.99, "discount factor")
    gae_lambda: float = arg(0.95, "GAE lambda")
    ent_coef: float = arg(0.0, "entropy bonus coefficient")
    eval_freq: int = arg(100_000, "evaluate on the real car every this many timesteps")
    eval_episodes: int = arg(5, "real episodes per evaluation")
    eval_max_steps: int = arg(1000, "real episode length cap")
    seed: int = arg(0, "seed of PPO and the dream")
    device: str = arg("auto", "torch device of the PPO policy")
    out: str = arg("runs/ppo_in_the_dream", "folder for the agent zips and evaluations")
    progress_bar: bool = arg(False, "show a progress bar (needs tqdm and rich)")


if __name__ == "__main__":
    args = dataclass_args(Args, __doc__)
    os.makedirs(args.out, exist_ok=True)

    # One copy of the world model serves the dream and the real env, so both see the world alike.
    world_model = load_world_model(args.model)
    venv = make_dream_vec_env(
        n_envs=args.n_envs,
        model=world_model,
        temperature=args.temperature,
        max_episode_steps=args.max_episode_steps,
        seed=args.seed,
    )
    eval_env = Monitor(gym.make("dreamgym/RealCarRacing-v0", model=world_model, max_episode_steps=args.eval_max_steps))
    eval_env.reset(seed=args.seed + 10_000)  # real tracks the dream's seeds do not share

    # Training in one env and scoring in another is the point here, not a mistake to warn of.
    warnings.filterwarnings("ignore", message="Training and eval env are not of the same type")
    # EvalCallback counts vec-env steps, each n_envs timesteps.
    eval_callback = EvalCallback(
        eval_env,
        n_eval_episodes=args.eval_episodes,
        eval_freq=max(args.eval_freq // args.n_envs, 1),
        best_model_save_path=args.out,
        log_path=args.out,
        deterministic=True,
    )
    agent = PPO(
        "MlpPolicy",
        venv,
        n_steps=args.n_steps,
        # A minibatch larger than the rollout would only be truncated (with a warning).
        batch_size=min(args.batch_size, args.n_steps * args.n_envs),
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        ent_coef=args.ent_coef,
        seed=args.seed,
        device=args.device,
        verbose=1,
    )
    start = time.perf_counter()
    agent.learn(args.total_timesteps, callback=eval_callback, progress_bar=args.progress_bar)
    elapsed = time.perf_counter() - start
    agent.save(os.path.join(args.out, "final_model.zip"))
    print(f"trained {agent.num_timesteps} dream steps in {elapsed:.0f}s ({agent.num_timesteps / elapsed:.0f} steps/s)")
    print(f"best real mean return: {eval_callback.best_mean_reward:.1f}")
    print(f"saved {os.path.join(args.out, 'final_model.zip')} and best_model.zip")
    venv.close()
    eval_env.close()
