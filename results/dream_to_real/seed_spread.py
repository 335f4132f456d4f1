"""Does the Done-when's exploitation test hold across training seeds? A table and a plot.

    python results/dream_to_real/seed_spread.py OUT \
        --group "NAME" --runs EARLY.json:LATE.json [EARLY.json:LATE.json ...] [--group ...]

Each ``EARLY.json:LATE.json`` pair is one training seed of a recipe, scored on the same real
validation seeds at two points of its dream training (2M and 5M steps, say). A record is a
``dreamgym evaluate`` result, or a validation record of one checkpoint (as ``join_seeds.py``
writes). The test is the Done-when's: the later checkpoint holds if its real mean is at
least the earlier one's minus the earlier one's standard error. The table also gives the
difference in standard errors of the difference, and each group's mean over seeds.

Writes ``OUT.md`` (the table) and ``OUT.png`` (early and late real scores, one line a seed).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


@dataclass
class Score:
    """The real returns of one checkpoint over its validation seeds."""

    path: str
    returns: np.ndarray
    seeds: list[int]

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def stderr(self) -> float:
        return float(self.returns.std(ddof=1) / np.sqrt(len(self.returns)))


def load_score(path: str) -> Score:
    """Read a `dreamgym evaluate` result, or a validation record of one checkpoint."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if "history" in record:
        if len(record["history"]) != 1:
            held = len(record["history"])
            raise SystemExit(f"{path}: a validation record of one checkpoint was expected, it holds {held}")
        record = record["history"][0]
    return Score(path, np.asarray(record["returns"], dtype=float), list(record["seeds"]))


def parse_groups(argv: list[str] | None = None) -> tuple[Path, dict[str, list[tuple[Score, Score]]]]:
    """The output path, and each recipe's (early, late) scores, one pair a training seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="OUT.md and OUT.png are written")
    parser.add_argument("--group", action="append", required=True, help="a recipe's name")
    parser.add_argument("--runs", action="append", nargs="+", required=True, help="EARLY.json:LATE.json, one per seed")
    args = parser.parse_args(argv)
    if len(args.group) != len(args.runs):
        parser.error("give one --runs after each --group")
    groups: dict[str, list[tuple[Score, Score]]] = {}
    for name, runs in zip(args.group, args.runs, strict=True):
        pairs = []
        for run in runs:
            if run.count(":") != 1:
                parser.error(f"{run!r}: expected EARLY.json:LATE.json")
            early, late = (load_score(p) for p in run.split(":"))
            if early.seeds != late.seeds:
                parser.error(f"{run!r}: the two records were scored on different real seeds")
            pairs.append((early, late))
        groups[name] = pairs
    return args.out, groups


def table(groups: dict[str, list[tuple[Score, Score]]]) -> str:
    """A markdown row per seed and a mean over the seeds per recipe, with the test's verdict."""
    lines = [
        "| recipe | run | early | late | late - early | in s.e. of the difference | holds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, pairs in groups.items():
        for early, late in pairs:
            diff = late.mean - early.mean
            z = diff / np.hypot(early.stderr, late.stderr)
            holds = "yes" if late.mean >= early.mean - early.stderr else "**no**"
            lines.append(
                f"| {name} | {Path(early.path).stem} | {early.mean:.1f} +/- {early.stderr:.1f} | "
                f"{late.mean:.1f} +/- {late.stderr:.1f} | {diff:+.1f} | {z:+.1f} | {holds} |"
            )
        early_means = np.array([e.mean for e, _ in pairs])
        late_means = np.array([lt.mean for _, lt in pairs])
        diffs = late_means - early_means
        spread = f" (seed s.d. of the difference {diffs.std(ddof=1):.1f})" if len(pairs) > 1 else ""
        lines.append(
            f"| {name} | **mean of {len(pairs)} seeds** | {early_means.mean():.1f} | {late_means.mean():.1f} | "
            f"{diffs.mean():+.1f}{spread} | | {sum(lt.mean >= e.mean - e.stderr for e, lt in pairs)} of {len(pairs)} |"
        )
    return "\n".join(lines) + "\n"


def plot(groups: dict[str, list[tuple[Score, Score]]], path: Path) -> None:
    """One panel per recipe: each seed's early and late real score, and their mean over seeds."""
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4), sharey=True, squeeze=False)
    for ax, (name, pairs) in zip(axes[0], groups.items(), strict=True):
        for early, late in pairs:
            means, errors = [early.mean, late.mean], [early.stderr, late.stderr]
            ax.errorbar([0, 1], means, yerr=errors, marker="o", capsize=3, alpha=0.8)
        ax.plot([0, 1], [np.mean([e.mean for e, _ in pairs]), np.mean([lt.mean for _, lt in pairs])],
                color="black", linewidth=3, label="mean over seeds")
        ax.set_xticks([0, 1], ["early", "late"])
        ax.set_xlim(-0.3, 1.3)
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    axes[0][0].set_ylabel("real return (validation seeds, mean +/- s.e.)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    """Print and write the table, and draw the plot."""
    out, groups = parse_groups()
    text = table(groups)
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    plot(groups, out.with_suffix(".png"))
    print(text)
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
