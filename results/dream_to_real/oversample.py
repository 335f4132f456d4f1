"""Build an episode store in which chosen episodes count several times, for a fine-tune of M that leans on them.

    python results/dream_to_real/oversample.py SOURCE OUT --min-seed 700000 --copies 3

OUT gets every episode of SOURCE, hard-linked (no copy on disk), and each episode whose seed
is at least ``--min-seed`` (the exploiting agents' episodes of the adversarial rounds)
``copies - 1`` more times, as the same episode under seed + ``k * 10_000_000`` (a store holds
one episode a seed). ``dreamgym train-rnn --data OUT`` then draws those episodes ``copies``
times as often: a few dozen episodes of a car leaving the road at speed are otherwise a few
percent of what M is fine-tuned on.
"""

import argparse
import dataclasses
import os
from pathlib import Path

from dreamgym.episodes import EpisodeStore

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("source", type=Path)
parser.add_argument("out", type=Path)
parser.add_argument("--min-seed", type=int, required=True, help="episodes with this seed or above are repeated")
parser.add_argument("--copies", type=int, default=3, help="times each such episode appears in OUT")
args = parser.parse_args()
if args.copies < 1:
    parser.error(f"--copies must be >= 1, got {args.copies}")
if args.out.exists():
    parser.error(f"{args.out} exists; choose a new folder (nothing finished is overwritten)")

source, out = EpisodeStore(args.source), EpisodeStore(args.out)
repeated = 0
for entry in source.entries():
    os.link(args.source / entry["file"], args.out / entry["file"])
    out.record(entry)
    if entry["seed"] >= args.min_seed:
        repeated += 1
        episode = source.load(entry["seed"])
        for k in range(1, args.copies):
            out.write(dataclasses.replace(episode, seed=entry["seed"] + k * 10_000_000))
print(f"{len(out)} episodes in {args.out}: {repeated} of {len(source)} appear {args.copies} times")
