"""What both training stages share: device choice, the data split, episode access and checkpoints.

Checkpoints hold tensors in a ``.safetensors`` file and everything else (epoch, optimizer
step counts and hyper-parameters, the training curve) as JSON: nothing is ever pickled, so
a checkpoint can be opened without trusting whoever wrote it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dreamgym.errors import DreamgymError
from dreamgym.validation import check_device
from dreamgym.data.storage import CorruptShardWarning, EpisodeStore, ShardCorruptError

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
CHECKPOINT_FORMAT = 1
# The JSON state is also stored in the safetensors metadata under this key: the tensors and
# the scalars then land on disk in one atomic rename; the ``<name>_state.json`` sidecar is a
# readable copy of it.
_STATE_KEY = "dreamgym_state"


class EpisodeLike(Protocol):
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int


class EpisodeStoreLike(Protocol):
    """The part of :class:`~dreamgym.data.storage.EpisodeStore` training reads; any object with it will do."""

    def seeds(self) -> set[int]: ...

    def episodes(self, *, skip_corrupt: bool = True) -> Iterator[EpisodeLike]: ...

    def load(self, seed: int) -> EpisodeLike: ...

    def __len__(self) -> int: ...


DataSource = str | os.PathLike | EpisodeStoreLike


class CheckpointError(DreamgymError, RuntimeError):
    """A training checkpoint is unreadable or belongs to a different run."""


# --------------------------------------------------------------------------- device
def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device to train on: ``device`` if given, else CUDA when available, else CPU.

    Raises:
        ValueError: ``device`` is not a device name, or one this machine lacks (see
            :func:`dreamgym.validation.check_device`).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return check_device(device)


def seed_everything(seed: int, *parts: int) -> np.random.Generator:
    """Seed torch from ``(seed, *parts)`` and return a numpy generator keyed the same way.

    Keying each epoch by ``(seed, epoch)`` makes a resumed run draw exactly what an
    uninterrupted one would, without storing RNG states in the checkpoint.
    """
    key = np.random.SeedSequence([seed, *parts])
    torch.manual_seed(int(key.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1)))
    return np.random.default_rng(key)


# ---------------------------------------------------------------------------- data
def open_store(data: DataSource) -> EpisodeStoreLike:
    """Open ``data`` (a folder written by ``dreamgym collect``, or a store) and check it has episodes.

    Raises:
        FileNotFoundError: the folder does not exist or holds no episodes.
    """
    if isinstance(data, (str, os.PathLike)):
        root = Path(data)
        if not root.is_dir():
            raise FileNotFoundError(
                f"no episodes found in {str(root)!r} (no such folder), run `dreamgym collect` first"
            )
        store: EpisodeStoreLike = EpisodeStore(root)
        where = str(root)
    else:
        store = data
        where = str(getattr(store, "root", store))
    if len(store) == 0:
        unlisted = store.unlisted_shards() if isinstance(store, EpisodeStore) else []
        if unlisted:
            raise FileNotFoundError(
                f"{where!r} holds {len(unlisted)} episode shards but its manifest.json lists none (deleted or lost?); "
                f"run `dreamgym verify-data {where} --repair` to check them and list them again"
            )
        raise FileNotFoundError(f"no episodes found in {where!r}, run `dreamgym collect` first")
    return store


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


def iter_episodes(store: EpisodeStoreLike, seeds: Iterable[int]) -> Iterator[EpisodeLike]:
    """Episodes of ``store`` whose seed is in ``seeds``, in seed order, skipping corrupt ones."""
    wanted = set(int(s) for s in seeds)
    for episode in store.episodes(skip_corrupt=True):
        if int(episode.seed) in wanted:
            yield episode


def load_episodes(store: EpisodeStoreLike, seeds: Iterable[int]) -> Iterator[EpisodeLike]:
    """Episodes with the given seeds, loaded one by one (for a few among many), skipping corrupt ones.

    Skips (with a :class:`~dreamgym.data.storage.CorruptShardWarning`) the same episodes
    ``store.episodes(skip_corrupt=True)`` would.
    """
    for s in sorted(set(int(s) for s in seeds)):
        try:
            yield store.load(s)
        except ShardCorruptError as err:
            warnings.warn(f"skipping: {err}", CorruptShardWarning, stacklevel=2)


def episode_frame_counts(store: EpisodeStoreLike, seeds: Iterable[int]) -> int | None:
    """Total frames of the episodes with ``seeds`` from the store's manifest, None if it has none."""
    entries = getattr(store, "entries", None)
    if entries is None:
        return None
    wanted = set(int(s) for s in seeds)
    return sum(int(e["length"]) + 1 for e in entries() if int(e["seed"]) in wanted)


# --------------------------------------------------------------------- file writes
def atomic_write_bytes(path: Path, write: Any) -> None:
    """Write a file through ``write(tmp_path)`` then rename it into place.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, allow_nan=True)
            f.write("\n")

    atomic_write_bytes(path, write)


def update_json(path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the JSON object at ``path`` (created if missing) and return it."""
    current: dict[str, Any] = {}
    if path.is_file():
        try:
            current = json.loads(path.read_text())
        except json.JSONDecodeError:
            current = {}
        if not isinstance(current, dict):
            current = {}
    current.update(updates)
    atomic_write_json(path, current)
    return current


def write_log(out: Path, name: str, history: list[dict[str, Any]]) -> Path:
    """Write a stage's training curve (one dict per finished epoch) to ``out/logs/<name>.json``."""
    path = Path(out) / LOG_DIR / f"{name}.json"
    atomic_write_json(path, history)
    return path


# ---------------------------------------------------------------------- checkpoints
def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        entry: dict[str, Any] = {}
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"optimizer.{param_id}.{key}"] = value.detach().cpu().contiguous()
            elif isinstance(value, torch.Tensor):
                # Adam's step is a 0-d tensor; it must come back as one or Adam stops counting.
                entry[key] = {"tensor": value.item(), "dtype": str(value.dtype).removeprefix("torch.")}
            else:
                entry[key] = value
        scalars[str(param_id)] = entry
    return tensors, {"state": scalars, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for param_id, entry in info["state"].items():
        restored: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, dict) and "tensor" in value:
                restored[key] = torch.tensor(value["tensor"], dtype=getattr(torch, value["dtype"]))
            else:
                restored[key] = value
        state[int(param_id)] = restored
    for name, tensor in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = tensor
    # JSON turned tuples (Adam's betas) into lists.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in info["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def checkpoint_paths(out: Path, name: str) -> tuple[Path, Path]:
    """(tensors, JSON state) paths of stage ``name``'s checkpoint under ``out``."""
    folder = Path(out) / CHECKPOINT_DIR
    return folder / f"{name}.safetensors", folder / f"{name}_state.json"


def write_checkpoint(
    out: Path, name: str, tensors: dict[str, torch.Tensor], state: dict[str, Any], checkpoint_format: int = CHECKPOINT_FORMAT
) -> None:
    """Write stage ``name``'s ``tensors`` and JSON-able ``state`` as one safetensors file.

    The state travels inside the safetensors metadata, so tensors and state land together in
    one atomic rename: an interrupted save leaves the previous checkpoint as it was. The JSON
    sidecar is a readable copy.
    """
    weights_path, state_path = checkpoint_paths(out, name)
    full_state = {**state, "checkpoint_format": checkpoint_format}
    blob = json.dumps(full_state, sort_keys=True)
    atomic_write_bytes(weights_path, lambda tmp: save_file(tensors, tmp, metadata={_STATE_KEY: blob}))
    atomic_write_json(state_path, full_state)


def read_checkpoint(
    out: Path, name: str, checkpoint_format: int = CHECKPOINT_FORMAT
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read what :func:`write_checkpoint` wrote: (tensors, state), or None if there is none.

    The state is read from the copy inside the safetensors file, not from the JSON sidecar:
    a crash between the two renames of a save may leave the sidecar one step behind.
    """
    weights_path, _ = checkpoint_paths(out, name)
    if not weights_path.is_file():
        return None
    try:
        tensors = load_file(str(weights_path), device="cpu")
        with safe_open(str(weights_path), framework="pt") as f:
            state = json.loads((f.metadata() or {})[_STATE_KEY])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"checkpoint {str(weights_path)!r} is unreadable ({err}); delete it to train this stage from scratch"
        ) from err
    if state.get("checkpoint_format") != checkpoint_format:
        raise CheckpointError(
            f"checkpoint {str(weights_path)!r} has format {state.get('checkpoint_format')!r}, "
            f"this dreamgym reads {checkpoint_format}; delete it to train from scratch"
        )
    return tensors, state


def save_checkpoint(
    out: Path, name: str, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Save ``module``'s weights, ``optimizer`` and the JSON-able ``state`` of stage ``name``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    opt_tensors, opt_info = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    write_checkpoint(out, name, tensors, {**state, "optimizer": opt_info})


def load_checkpoint(
    out: Path, name: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read stage ``name``'s checkpoint: (model tensors, optimizer tensors, state), or None if absent."""
    checkpoint = read_checkpoint(out, name)
    if checkpoint is None:
        return None
    tensors, state = checkpoint
    model = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    optim = {k: v for k, v in tensors.items() if k.startswith("optimizer.")}
    return model, optim, state


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Load the optimizer state saved by :func:`save_checkpoint` into ``optimizer``."""
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))


def module_fingerprint(module: nn.Module) -> str:
    """A hash of ``module``'s weights: tells whether a cache or checkpoint was made with this module."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def batches(n: int, batch_size: int, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Index batches over ``range(n)``, shuffled by ``rng`` if given; the last may be smaller."""
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
