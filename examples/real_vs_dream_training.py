r"""Real score against dream training: does what an agent learns in the dream carry to the real car?

Each run is a folder with a ``validation.json``: an SB3 run of ``examples/ppo_in_the_dream.py``
(its validation callback writes one), or a CMA-ES run of ``dreamgym train-controller`` whose
ES-mean snapshots this script scores on the real validation seeds first (``--validate``,
resumable: snapshots already scored are kept).

    python examples/real_vs_dream_training.py \
        --runs "PPO, first frame=runs/ppo-ff" "PPO, trajectory H=200=runs/ppo-traj" \
        --cmaes "CMA-ES, trajectory H=200=runs/cma-traj" --model runs/wm --validate \
        --out results/real_vs_dream_training

Writes ``OUT.png`` (real return, solid, and dream return, dashed, against dream steps; one
panel for SB3 runs and one for CMA-ES runs) and ``OUT.md`` (a table per run), from the
``validation.json`` files alone: no number in them is typed by hand.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dreamgym.agents.real_validation import load_validation, validate_controller_snapshots
from dreamgym.cli import arg, dataclass_args


@dataclass
class Args:
    runs: list[str] = arg(
        [], "SB3 runs as LABEL=FOLDER (folders with validation.json, or copies of one: LABEL=FILE.json); "
        "LABEL=A+B joins the records of a run trained on in a second process",
    )
    cmaes: list[str] = arg([], "CMA-ES runs as LABEL=FOLDER (train-controller output folders with snapshots/)")
    model: str | None = arg(None, "world model the CMA-ES controllers see the real car through (default: recorded)")
    validate: bool = arg(False, "score the CMA-ES snapshots that are not scored yet (real env; slow)")
    episodes: int = arg(30, "real validation episodes per snapshot")
    seed: int = arg(20_000, "first real validation seed")
    workers: int = arg(2, "real episodes run at once")
    out: str = arg("results/real_vs_dream_training", "path of the .png and .md to write, without suffix")


def split_run(text: str) -> tuple[str, Path]:
    label, sep, folder = text.rpartition("=")
    if not sep or not label or not folder:
        raise SystemExit(f"a run must be LABEL=FOLDER, got {text!r}")
    return label, Path(folder)


def load_one(path: Path) -> dict:
    """A run's validation record: its folder's validation.json, or a copy of one (a .json file)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else load_validation(path)


def load(path: Path) -> dict:
    """One run's record, from one record or from several joined by '+' (a run trained on in a later process).

    The parts must be scored on the same validation seeds; their checkpoints are merged in
    order of dream steps, and the best is the best of all.
    """
    parts = [load_one(Path(part)) for part in str(path).split("+")]
    record = dict(parts[0])
    for part in parts[1:]:
        if (part["seed"], part["episodes"]) != (record["seed"], record["episodes"]):
            raise SystemExit(f"the parts of {str(path)!r} were scored on different validation seeds")
        record["history"] = record["history"] + part["history"]
    record["history"] = sorted(record["history"], key=lambda e: e["timesteps"])
    record["best"] = max((part["best"] for part in parts), key=lambda best: best["mean"])
    return record


def table(label: str, record: dict) -> list[str]:
    lines = [f"**{label}** (real: {record['episodes']} validation episodes from seed {record['seed']})", "",
             "| dream steps | generation | real | dream | dream - real |", "|---:|---:|---:|---:|---:|"]
    for e in record["history"]:
        generation = e.get("generation", "")
        dream = e.get("dream_mean")
        lines.append(
            f"| {e['timesteps']:,} | {generation} | {e['mean']:.1f} +/- {e['stderr']:.1f} | "
            + (f"{dream:.1f} | {dream - e['mean']:+.1f} |" if dream is not None else "| |")
        )
    best = record["best"]
    lines += ["", f"best on validation: {best['timesteps']:,} dream steps, real {best['mean']:.1f}", ""]
    return lines


if __name__ == "__main__":
    args = dataclass_args(Args, __doc__)
    groups = {"SB3": [split_run(r) for r in args.runs], "CMA-ES": [split_run(r) for r in args.cmaes]}
    if args.validate:
        for _, folder in groups["CMA-ES"]:
            validate_controller_snapshots(folder, model=args.model, episodes=args.episodes, seed=args.seed,
                                          workers=args.workers)
    records = {kind: [(label, load(folder)) for label, folder in runs] for kind, runs in groups.items()}
    panels = [kind for kind in records if records[kind]]
    if not panels:
        raise SystemExit("give at least one run with --runs or --cmaes")
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 5.0), squeeze=False)
    lines = ["# Real score against dream training", ""]
    for ax, kind in zip(axes[0], panels, strict=True):
        for i, (label, record) in enumerate(records[kind]):
            history = record["history"]
            x = [e["timesteps"] / 1e6 for e in history]
            colour = f"C{i}"
            ax.errorbar(x, [e["mean"] for e in history], yerr=[e["stderr"] for e in history], color=colour,
                        marker="o", capsize=3, label=f"{label}: real")
            if all("dream_mean" in e for e in history):
                ax.plot(x, [e["dream_mean"] for e in history], color=colour, linestyle="--", marker=".",
                        label=f"{label}: dream")
            lines += table(label, record)
        ax.set_title(f"{kind}: real (solid) and dream (dashed) return")
        ax.set_xlabel("dream steps trained (millions)")
        ax.set_ylabel("mean return over the validation seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    fig.tight_layout()
    out = Path(args.out)
    os.makedirs(out.parent, exist_ok=True)
    fig.savefig(out.with_suffix(".png"), dpi=110, bbox_inches="tight")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.md')}")
