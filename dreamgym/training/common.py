"""What the two training stages share: the held-out split, seeding per epoch, and batches.

The split (:func:`split_seeds`) is the one every stage and every picture uses, so V, M and the
metrics all hold out the same episodes.

The names this module held before the split into :mod:`dreamgym.files` (atomic writes),
:mod:`dreamgym.checkpoints` (checkpoints), :mod:`dreamgym.episodes` (reading a store) and
:mod:`dreamgym.validation` (the device) are still importable from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

# Their old home: importable from here too.
from dreamgym.checkpoints import (  # noqa: F401
    CHECKPOINT_DIR,
    CHECKPOINT_FORMAT,
    LOG_DIR,
    checkpoint_paths,
    load_checkpoint,
    module_fingerprint,
    read_checkpoint,
    restore_optimizer,
    save_checkpoint,
    write_checkpoint,
    write_log,
)
from dreamgym.episodes import (  # noqa: F401
    DataSource,
    EpisodeLike,
    EpisodeStoreLike,
    episode_frame_counts,
    iter_episodes,
    load_episodes,
    open_store,
)
from dreamgym.errors import CheckpointError  # noqa: F401
from dreamgym.files import atomic_write as atomic_write_bytes  # noqa: F401
from dreamgym.files import atomic_write_json, update_json  # noqa: F401
from dreamgym.models.world_model import MODEL_WEIGHTS_FILE
from dreamgym.validation import pick_device  # noqa: F401

__all__ = ["batches", "seed_everything", "split_seeds"]


def seed_everything(seed: int, *parts: int) -> np.random.Generator:
    """Seed torch from ``(seed, *parts)`` and return a numpy generator keyed the same way.

    Keying each epoch by ``(seed, epoch)`` makes a resumed run draw exactly what an
    uninterrupted one would, without storing RNG states in the checkpoint.
    """
    key = np.random.SeedSequence([seed, *parts])
    torch.manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return np.random.default_rng(key)


def _seed_score(episode_seed: int, split_seed: int) -> bytes:
    # A hash, not Python's hash() or an RNG stream: the same on every machine and version,
    # and an episode's score does not depend on which other episodes exist.
    return hashlib.blake2b(f"{split_seed}:{episode_seed}".encode(), digest_size=8).digest()


def split_seeds(seeds: Iterable[int], holdout: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split episode seeds into (train, held-out), each sorted; the one split every stage uses.

    Episodes are ranked by a hash of ``(seed, episode seed)`` and the lowest
    ``round(holdout * n)`` are held out (at least one when ``holdout > 0`` and there are
    two or more episodes; never all of them). Ranking by a per-episode hash keeps the split
    stable as episodes are added: a new episode moves at most one old one across.

    Args:
        seeds: the episode seeds of a store.
        holdout: fraction of episodes held out, in [0, 1).
        seed: picks which episodes are held out.
    """
    if not 0.0 <= holdout < 1.0:
        raise ValueError(f"holdout must be a fraction in [0, 1), got {holdout!r}")
    unique = sorted({int(s) for s in seeds})
    n = len(unique)
    n_held = int(round(holdout * n))
    if holdout > 0 and n >= 2:
        n_held = max(n_held, 1)
    n_held = min(n_held, max(n - 1, 0))
    ranked = sorted(unique, key=lambda s: _seed_score(s, seed))
    held = set(ranked[:n_held])
    return [s for s in unique if s not in held], [s for s in unique if s in held]


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches over ``range(n)``, shuffled by ``rng`` if given; the last may be smaller."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def check_new_model_folder(out: str | Path, sources: Iterable[str | Path]) -> Path:
    """Refuse an ``out`` that is one of the source models' folders or already holds a world model.

    Commands that derive a world model from others write a new folder and never touch their
    sources or a finished model. Returns ``out`` as a Path.
    """
    out = Path(out)
    for source in sources:
        if Path(source).expanduser().resolve() == out.resolve():
            raise ValueError(f"--out {str(out)!r} is the source model's folder; give a new folder")
    if (out / MODEL_WEIGHTS_FILE).exists():
        raise ValueError(f"{str(out)!r} already holds a world model; give a new folder")
    return out
