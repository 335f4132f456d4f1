"""Extend snapshots of a validation record with `dreamgym evaluate` results on more seeds.

    python results/dream_to_real/join_seeds.py VALIDATION.json EXTRA.json [EXTRA.json ...] --out OUT.json

Each ``EXTRA.json`` scored one checkpoint of ``VALIDATION.json`` (matched by its path) on
seeds the record does not hold yet, with the same step cap. ``OUT.json`` is a validation
record of those checkpoints only, each over the record's episodes and the extra ones (so 30
+ 70 = 100), with its mean, standard error and dream score recomputed from all of them.
"""

import json
import sys

import numpy as np

from dreamgym.agents.real_validation import validation_entry, validation_record
from dreamgym.files import atomic_write_json


def scored_checkpoint(checkpoint: str, agent: str) -> bool:
    """Whether ``agent`` is ``checkpoint`` or the policy a sampling validation exported beside it."""
    agent = agent.rstrip("/")
    return checkpoint.endswith(agent) or agent.endswith(checkpoint.removesuffix(".zip") + "-sample")


args = sys.argv[1:]
out = args[args.index("--out") + 1]
paths = [a for a in args if a not in ("--out", out)]
record = json.load(open(paths[0], encoding="utf-8"))
extras = [json.load(open(p, encoding="utf-8")) for p in paths[1:]]
history = []
for extra in extras:
    (entry,) = [e for e in record["history"] if scored_checkpoint(e["checkpoint"], extra["agent"])]
    if set(entry["seeds"]) & set(extra["seeds"]) or extra["max_steps"] != record["max_steps"]:
        raise SystemExit(f"{extra['agent']}: the extra episodes must be on new seeds with the same step cap")
    returns = list(entry["returns"]) + list(extra["returns"])
    joined = {"returns": returns, "seeds": list(entry["seeds"]) + list(extra["seeds"]),
              "mean": float(np.mean(returns)), "std": float(np.std(returns))}
    if "dream" in extra and "dream_mean" in entry:
        # The record keeps the dream's mean and std, not its episodes: pool the two parts' moments.
        parts = [(len(entry["returns"]), entry["dream_mean"], entry["dream_std"]),
                 (len(extra["returns"]), extra["dream"]["mean"], extra["dream"]["std"])]
        n = sum(k for k, _, _ in parts)
        mean = sum(k * m for k, m, _ in parts) / n
        second_moment = sum(k * (s**2 + m**2) for k, m, s in parts) / n
        joined["dream"] = {"mean": mean, "std": float(np.sqrt(max(second_moment - mean**2, 0.0)))}
    where = {k: entry[k] for k in ("timesteps", "generation", "checkpoint") if k in entry}
    history.append(validation_entry(joined, **where))
history.sort(key=lambda e: e["timesteps"])
atomic_write_json(out, validation_record(history, episodes=len(history[0]["returns"]), seed=record["seed"],
                                         max_steps=record["max_steps"], temperature=record.get("temperature")))
for e in history:
    print(f"{e['checkpoint']}: real {e['mean']:.1f} +/- {e['stderr']:.1f} over {len(e['returns'])}, "
          f"dream {e.get('dream_mean', float('nan')):.1f}")
