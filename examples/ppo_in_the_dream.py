"""Train PPO entirely inside the dream, scoring it on the real car as it learns.

The agent only ever acts in the batched dream (``make_dream_vec_env``). Every
``--eval-freq`` dream steps a :class:`~dreamgym.agents.real_validation.RealValidationCallback`
saves it, drives ``dreamgym/RealCarRacing-v0`` (real Box2D physics seen through the same
world model) with it over fixed *validation* seeds in parallel workers, and keeps the best
checkpoint by that real score. The final score belongs on other seeds:
``dreamgym evaluate sb3:OUT/best_model.zip --model MODEL --episodes 100 --seed 30000``.

    python examples/ppo_in_the_dream.py --model path/to/world_model --total-timesteps 2000000
    python examples/ppo_in_the_dream.py --start trajectory --max-episode-steps 200   # short dreams from real states
    python examples/ppo_in_the_dream.py --start 0.5   # half the episodes from real states, half from first frames
    python examples/ppo_in_the_dream.py --ensemble --disagreement-penalty 1.0       # an ensemble of Ms, pessimism
    python examples/ppo_in_the_dream.py --out RUN --total-timesteps 5000000 --resume  # train RUN on to 5M steps
    python examples/ppo_in_the_dream.py --eval-sample   # validate as `export-policy --sample` will drive
    python examples/ppo_in_the_dream.py --log-std-init -0.36 --fixed-std --eval-sample   # action noise kept at std 0.7

Writes ``checkpoints/step-N.zip``, ``best_model.zip`` (best validation score),
``final_model.zip`` and ``validation.json`` (real and dream score against dream steps) to
``--out``. Load an agent with ``dreamgym.sb3.load_sb3_agent``. A folder that holds a run is
never written over: ``--resume`` trains that run on from its furthest agent to
``--total-timesteps`` (with the PPO settings it was made with), keeping its validation record
and its earlier final agent as ``checkpoints/step-N.zip`` (give ``--fixed-std`` again if the
run had it). SB3 loads the run's zip with pickle, so resume only runs you made yourself.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from stable_baselines3 import PPO

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym import load_world_model
from dreamgym.agents.real_validation import VALIDATION_SEED, RealValidationCallback
from dreamgym.cli import arg, dataclass_args
from dreamgym.sb3 import make_dream_vec_env
from dreamgym.validation import parse_start


@dataclass
class Args:
    model: str | None = arg(None, "world model folder or Hub repo id; default: the one shipped with dreamgym")
    total_timesteps: int = arg(2_000_000, "dream steps to train for, summed over envs")
    n_envs: int = arg(64, "dream episodes stepped side by side")
    temperature: float = arg(1.0, "dream temperature tau")
    max_episode_steps: int = arg(1000, "dream episode length cap (CarRacing's is 1000); short with --start trajectory")
    start: str = arg(
        "first_frame",
        "where dream episodes start: first_frame, trajectory (real states; needs a bank), "
        "or a number p: from trajectory states with probability p, else from first frames",
    )
    dropout: float = arg(0.0, "dream-time dropout of M, a new mask per episode (for an M trained with dropout)")
    ensemble: bool = arg(False, "dream with the model's ensemble of Ms (train-rnn --ensemble-size K), one per episode")
    disagreement_penalty: float = arg(0.0, "with --ensemble: reward minus this times the Ms' disagreement")
    n_steps: int = arg(128, "PPO rollout length per env")
    batch_size: int = arg(1024, "PPO minibatch size (capped at n_steps * n_envs)")
    n_epochs: int = arg(10, "PPO epochs per rollout")
    learning_rate: float = arg(3e-4, "Adam learning rate")
    gamma: float = arg(0.99, "discount factor")
    gae_lambda: float = arg(0.95, "GAE lambda")
    ent_coef: float = arg(0.0, "entropy bonus coefficient")
    log_std_init: float = arg(0.0, "initial log std of the policy's Gaussian (SB3's default 0: std 1)")
    fixed_std: bool = arg(
        False, "keep the policy's std at exp(--log-std-init) throughout: it never shrinks, so the agent learns to "
        "drive under that much action noise (pair with --eval-sample and export-policy --sample)"
    )
    eval_freq: int = arg(500_000, "save and score on the real car every this many dream timesteps")
    eval_episodes: int = arg(30, "real validation episodes per checkpoint")
    eval_seed: int = arg(VALIDATION_SEED, "first real validation seed (keep the final test seeds apart)")
    eval_workers: int = arg(2, "real validation episodes run at once, in worker processes")
    eval_max_steps: int = arg(1000, "real episode length cap")
    eval_sample: bool = arg(
        False, "score checkpoints drawing actions from the policy's Gaussian, as `export-policy --sample` drives"
    )
    seed: int = arg(0, "seed of PPO and the dream")
    device: str = arg("auto", "torch device of the PPO policy")
    out: str = arg("runs/ppo_in_the_dream", "folder for the agent zips and evaluations")
    progress_bar: bool = arg(False, "show a progress bar (SB3 draws it with rich: pip install rich)")
    resume: bool = arg(False, "train the run in --out on (loads its own SB3 zip, with pickle) to --total-timesteps")


def furthest_agent(out: str) -> Path | None:
    """The run's furthest-trained agent: final_model.zip, else its latest checkpoint; None for a new folder."""
    final = Path(out) / "final_model.zip"
    if final.is_file():
        return final
    checkpoints = sorted((Path(out) / "checkpoints").glob("step-*.zip"), key=lambda p: int(p.stem.split("-")[1]))
    return checkpoints[-1] if checkpoints else None


def fix_std(agent: PPO, args: Args) -> PPO:
    """With --fixed-std, take the policy's log std out of training (Adam skips a parameter without a gradient)."""
    if args.fixed_std:
        agent.policy.log_std.requires_grad_(False)
    return agent


def make_agent(args: Args, venv) -> PPO:
    return PPO(
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
        policy_kwargs={"log_std_init": args.log_std_init},
        seed=args.seed,
        device=args.device,
        verbose=0,
    )


def resume_agent(args: Args, venv, saved: Path) -> PPO:
    """Load the run's furthest agent to train on, keeping a final agent under its step count."""
    agent = PPO.load(saved, env=venv, device=args.device)
    if saved.name == "final_model.zip":
        kept = Path(args.out) / "checkpoints" / f"step-{agent.num_timesteps}.zip"
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(saved, kept)
    print(f"resuming {args.out} at {agent.num_timesteps} dream steps (from {saved})")
    return agent


if __name__ == "__main__":
    args = dataclass_args(Args, __doc__)
    saved = furthest_agent(args.out)
    if saved is not None and not args.resume:
        raise SystemExit(f"{args.out} already holds a run ({saved.name}); give --resume to train it on, or a new --out")
    os.makedirs(args.out, exist_ok=True)

    world_model = load_world_model(args.model)
    venv = make_dream_vec_env(
        n_envs=args.n_envs,
        model=world_model,
        temperature=args.temperature,
        max_episode_steps=args.max_episode_steps,
        start=parse_start(args.start),
        dropout=args.dropout,
        ensemble=args.ensemble,
        disagreement_penalty=args.disagreement_penalty,
        seed=args.seed,
    )
    # The validation workers load the world model by name, as the dream did (None: the default).
    validation = RealValidationCallback(
        args.out,
        model=args.model,
        eval_freq=args.eval_freq,
        episodes=args.eval_episodes,
        seed=args.eval_seed,
        workers=args.eval_workers,
        max_steps=args.eval_max_steps,
        temperature=args.temperature,
        sample=args.eval_sample,
    )
    agent = fix_std(resume_agent(args, venv, saved) if saved is not None else make_agent(args, venv), args)
    validation.resume(agent.num_timesteps)
    if agent.num_timesteps >= args.total_timesteps:
        raise SystemExit(f"{args.out} is trained to {agent.num_timesteps} dream steps already; "
                         f"give a larger --total-timesteps to train it on")
    start = time.perf_counter()
    agent.learn(args.total_timesteps - agent.num_timesteps, callback=validation, progress_bar=args.progress_bar,
                reset_num_timesteps=saved is None)
    elapsed = time.perf_counter() - start
    agent.save(os.path.join(args.out, "final_model.zip"))
    print(f"trained {agent.num_timesteps} dream steps in {elapsed:.0f}s, validations included")
    best = validation.best
    if best is not None:
        print(f"best validation checkpoint: {best['checkpoint']} (real {best['mean']:.1f} +/- {best['std']:.1f} "
              f"over {args.eval_episodes} episodes from seed {args.eval_seed})")
    venv.close()
