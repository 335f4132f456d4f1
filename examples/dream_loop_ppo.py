r"""The paper's iterative loop with a PPO agent: collect with the best agent, fine-tune M, retrain PPO.

Ha & Schmidhuber's loop (and Olesen et al.'s, which went from 356 to 708 real) grows the
data where the agent drives: each round

1. **collects** ``--episodes`` real episodes with the previous round's agent plus
   exploration noise (``agent:SPEC?noise=..&model=..``, seeds ``collect_seed + 1000 k``);
2. **fine-tunes M** on everything collected so far, starting from the previous round's M
   (``train_rnn(init_from=...)``; V stays the same);
3. **trains PPO from scratch** in the new M's dream, scoring a checkpoint on the real
   *validation* seeds every ``--eval-freq`` dream steps
   (:class:`~dreamgym.agents.real_validation.RealValidationCallback`), and exports the best
   one as safetensors + JSON (``round-K/agent``), the next round's collector.

Round 0 is the starting point: ``--model`` (default: the shipped world model) and
``--agent``, with the validation record of that agent (``--agent-validation``). After every
round ``loop.json`` and ``loop.png`` (real score and dream-vs-real gap per round) are
rewritten. Every stage resumes or is skipped when finished, so a killed run goes on where it
stopped: run the same command again. The final test belongs to other seeds:
``dreamgym evaluate OUT/round-K/agent --episodes 100 --seed 30000``.

    python examples/dream_loop_ppo.py --data data/carracing --agent results/dream_to_real/ppo-ff-shipped-3M \
        --agent-validation results/dream_to_real/ppo-ff-shipped.json --rounds 6 --out runs/loop
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from stable_baselines3 import PPO

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.mlp_policy import MlpPolicyAgent
from dreamgym.agents.real_validation import VALIDATION_SEED, RealValidationCallback, load_validation
from dreamgym.agents.sb3 import load_sb3_agent
from dreamgym.cli import arg, dataclass_args
from dreamgym.data.collect import collect
from dreamgym.episodes import EpisodeStore, EpisodeSubset
from dreamgym.files import atomic_write_json
from dreamgym.hub import DEFAULT_MODEL_DIR
from dreamgym.sb3 import make_dream_vec_env
from dreamgym.training.rnn import train_rnn


@dataclass
class Args:
    data: str = arg("data/carracing", "episode store: its episodes are round 0's data; rounds collect into it")
    out: str = arg("runs/dream_loop", "folder of the rounds (round-K/model, round-K/ppo, round-K/agent)")
    model: str | None = arg(None, "round 0's world model (V is kept for every round); default: the shipped one")
    agent: str = arg("results/dream_to_real/ppo-ff-shipped-3M", "round 0's agent, the first collector")
    agent_validation: str | None = arg(None, "validation.json of round 0's agent, for the round-0 point of the plot")
    rounds: int = arg(6, "rounds to run")
    episodes: int = arg(30, "real episodes collected per round")
    noise: float = arg(0.3, "largest per-episode exploration noise of the collector")
    collect_seed: int = arg(300_000, "round K collects seeds collect_seed + 1000 K + i")
    workers: int = arg(2, "worker processes for collection and validation")
    rnn_epochs: int = arg(15, "epochs of M fine-tuning per round")
    rnn_lr: float = arg(5e-4, "learning rate of M fine-tuning")
    reward_weight: float = arg(3.0, "weight of the reward loss of M (the shipped M used 3)")
    total_timesteps: int = arg(2_000_000, "PPO dream steps per round")
    eval_freq: int = arg(1_000_000, "score on the real validation seeds every this many dream steps")
    eval_episodes: int = arg(30, "real validation episodes per checkpoint")
    eval_seed: int = arg(VALIDATION_SEED, "first validation seed (never the final test seeds)")
    n_envs: int = arg(64, "dream episodes stepped side by side")
    seed: int = arg(0, "seed of PPO, the dream and M's fine-tuning")


ROUND_SETTINGS = ("episodes", "noise", "rnn_epochs", "rnn_lr", "reward_weight", "total_timesteps", "eval_freq",
                  "eval_episodes", "eval_seed", "n_envs", "seed")


def round_seeds(args: Args, k: int) -> range:
    start = args.collect_seed + 1000 * k
    return range(start, start + args.episodes)


def data_of_round(args: Args, k: int) -> EpisodeSubset:
    """Round k trains on round 0's episodes and those of rounds 1..k, never on a later round's."""
    later = {s for j in range(k + 1, args.rounds + 1) for s in round_seeds(args, j)}
    return EpisodeSubset(args.data, set(EpisodeStore(args.data).seeds()) - later)


def fine_tune_world_model(args: Args, k: int, previous_model: str) -> Path:
    folder = Path(args.out) / f"round-{k}" / "model"
    if (folder / "metrics.json").is_file():
        return folder
    train_rnn(
        data=data_of_round(args, k), vae=previous_model, out=folder, init_from=previous_model,
        epochs=args.rnn_epochs, lr=args.rnn_lr, reward_weight=args.reward_weight, seed=args.seed,
        device="cpu", progress=False,
    )
    return folder


def train_agent(args: Args, k: int, model: Path) -> tuple[Path, dict]:
    """PPO from scratch in round k's dream; the best validation checkpoint, exported."""
    run, exported = Path(args.out) / f"round-{k}" / "ppo", Path(args.out) / f"round-{k}" / "agent"
    if exported.is_dir():
        return exported, load_validation(run)
    venv = make_dream_vec_env(n_envs=args.n_envs, model=str(model), seed=args.seed)
    validation = RealValidationCallback(
        run, model=str(model), eval_freq=args.eval_freq, episodes=args.eval_episodes,
        seed=args.eval_seed, workers=args.workers,
    )
    agent = PPO("MlpPolicy", venv, n_steps=128, batch_size=1024, seed=args.seed, device="cpu", verbose=0)
    agent.learn(args.total_timesteps, callback=validation)
    venv.close()
    best = load_sb3_agent(validation.best["checkpoint"], device="cpu")
    record = {"model": str(model.resolve()), "revision": None}
    MlpPolicyAgent.from_sb3(best, world_model=record, training={
        "exported_from": validation.best["checkpoint"], "round": k,
    }).save(exported)
    return exported, load_validation(run)


def plot_rounds(rounds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r["round"] for r in rounds]
    real = [r["real_mean"] for r in rounds]
    err = [r["real_stderr"] for r in rounds]
    gap = [r["dream_mean"] - r["real_mean"] for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.errorbar(ks, real, yerr=err, marker="o", capsize=3)
    left.set(xlabel="round", ylabel="real return (validation seeds)", title="real score per round")
    right.bar(ks, gap)
    right.axhline(0, color="k", lw=0.8)
    right.set(xlabel="round", ylabel="dream - real", title="dream-vs-real gap of the chosen agent")
    for axis in (left, right):
        axis.set_xticks(ks)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def round_entry(k: int, model: str, agent: str, validation: dict, seconds: float | None) -> dict:
    best = validation["best"]
    return {
        "round": k, "model": model, "agent": agent, "checkpoint": best.get("checkpoint"),
        "real_mean": best["mean"], "real_std": best["std"],
        "real_stderr": best.get("stderr", best["std"] / max(len(best["returns"]) - 1, 1) ** 0.5),
        "dream_mean": best.get("dream_mean", float("nan")),
        "history": [{key: e.get(key) for key in ("timesteps", "mean", "stderr", "dream_mean")}
                    for e in validation["history"]],
        "seconds": seconds,
    }


if __name__ == "__main__":
    args = dataclass_args(Args, __doc__)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = str(Path(args.model) if args.model else DEFAULT_MODEL_DIR)
    agent = str(args.agent)
    rounds = []
    if args.agent_validation:
        rounds.append(round_entry(0, model, agent, json.loads(Path(args.agent_validation).read_text()), None))
    for k in range(1, args.rounds + 1):
        started = time.perf_counter()
        seeds = round_seeds(args, k)
        print(f"[round {k}] collect seeds {seeds.start}-{seeds.stop - 1} with {agent}", flush=True)
        collect(out=args.data, episodes=args.episodes, seed=seeds.start, workers=args.workers,
                policy=f"agent:{agent}?noise={args.noise}&model={model}", progress=False)
        print(f"[round {k}] fine-tune M from {model}", flush=True)
        model_folder = fine_tune_world_model(args, k, model)
        print(f"[round {k}] PPO in the round-{k} dream", flush=True)
        exported, validation = train_agent(args, k, model_folder)
        model, agent = str(model_folder), str(exported)
        record = out / f"round-{k}" / "round.json"
        if not record.is_file():
            # What this round ran with: a resumed loop may run its later rounds with other settings.
            settings = {key: getattr(args, key) for key in ROUND_SETTINGS}
            entry = round_entry(k, model, agent, validation, round(time.perf_counter() - started, 1))
            atomic_write_json(record, {**entry, "settings": settings})
        rounds.append(json.loads(record.read_text()))
        atomic_write_json(out / "loop.json", {"args": asdict(args), "rounds": rounds})
        plot_rounds(rounds, out / "loop.png")
        print(f"[round {k}] real {rounds[-1]['real_mean']:.1f} +/- {rounds[-1]['real_stderr']:.1f}, "
              f"dream {rounds[-1]['dream_mean']:.1f}", flush=True)
