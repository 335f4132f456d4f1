"""Join `dreamgym evaluate` results of one run's checkpoints into a validation record that the curves read.

    python results/dream_to_real/join_evaluations.py OUT.json STEPS=RESULTS.json [STEPS=RESULTS.json ...]

Each results file must be scored on the same real seeds; ``STEPS`` is the checkpoint's dream
steps. ``OUT.json`` has the form of the ``validation.json`` that ``RealValidationCallback``
writes, so ``examples/real_vs_dream_training.py --runs "LABEL=OUT.json"`` draws it.
"""

import json
import sys

from dreamgym.agents.real_validation import validation_entry, validation_record
from dreamgym.files import atomic_write_json

out, parts = sys.argv[1], [arg.partition("=") for arg in sys.argv[2:]]
results = [(int(steps), path, json.load(open(path, encoding="utf-8"))) for steps, _, path in parts]
first = results[0][2]
if any((r["seeds"], r["max_steps"]) != (first["seeds"], first["max_steps"]) for _, _, r in results):
    raise SystemExit("the results were not scored on the same seeds and step cap")
entries = [validation_entry(r, timesteps=steps, checkpoint=r["agent"], results=path) for steps, path, r in results]
history = sorted(entries, key=lambda e: e["timesteps"])
atomic_write_json(out, validation_record(history, episodes=len(first["seeds"]), seed=first["seed"],
                                         max_steps=first["max_steps"], temperature=first.get("temperature")))
for e in history:
    dream = e.get("dream_mean", float("nan"))
    print(f"{e['timesteps']:>9,} steps: real {e['mean']:.1f} +/- {e['stderr']:.1f}, dream {dream:.1f}")
