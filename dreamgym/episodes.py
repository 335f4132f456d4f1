"""Episodes on disk: one ``.npz`` shard per episode plus a manifest, written by collection, read by every stage.

Layout of a store folder::

    manifest.json            {"format_version": 1, "episodes": [{file, seed, length, return, sha256}, ...]}
    episode_00000000.npz     frames, actions, rewards, terminated, truncated, seed, format_version
    episode_00000001.npz
    ...

Crash safety rests on two rules:

1. A file only ever appears under its final name complete: shards and the manifest are
   written by :func:`dreamgym.files.atomic_write` (a hidden temporary file in the same
   folder, fsynced, then ``os.replace``-d into place, atomic on POSIX and Windows).
2. A shard is written before its manifest entry. So the manifest only lists shards that are
   fully on disk; a crash between the two leaves a complete shard the manifest does not list
   (an orphan), which :meth:`EpisodeStore.recover` adopts. Shard names are a function of the
   seed, so re-collecting a seed replaces its shard instead of adding a second one.

Only one process may write the manifest (:meth:`EpisodeStore.record`). Shards
(:meth:`EpisodeStore.write_shard`) may be written by many processes at once, as long as no
two write the same seed. Nothing is ever pickled: shards are read with ``allow_pickle=False``.

Training reads a store through the small protocol :class:`EpisodeStoreLike` (any object with
its four methods will do), opened and checked by :func:`open_store`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dreamgym.errors import FileFormatError, ShardCorruptError
from dreamgym.files import TMP_SUFFIX, atomic_write, check_format_version, read_json
from dreamgym.validation import check_int

__all__ = [
    "EPISODE_FORMAT_VERSION",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "CorruptShardWarning",
    "DataSource",
    "EpisodeLike",
    "EpisodeStoreLike",
    "EpisodeSubset",
    "Episode",
    "EpisodeStore",
    "PROVENANCE_KEYS",
    "ShardCorruptError",
    "episode_frame_counts",
    "iter_episodes",
    "load_episodes",
    "open_store",
    "shard_name",
    "check_store_preprocessing",
    "stored_crop_dashboard",
]

#: Version of both the manifest and the shard layout.
EPISODE_FORMAT_VERSION = 1
FORMAT_VERSION = EPISODE_FORMAT_VERSION  # its first name, from dreamgym.data.storage
MANIFEST_NAME = "manifest.json"
FRAME_SHAPE = (64, 64, 3)
ACTION_DIM = 3

_SHARD_RE = re.compile(r"^episode_(\d{8,})\.npz$")
_SHARD_KEYS = frozenset({"frames", "actions", "rewards", "terminated", "truncated", "seed", "format_version"})
_ENTRY_KEYS = ("file", "seed", "length", "return", "sha256")
# How an episode was collected, recorded by `collect` so that re-collecting its seed with other
# settings is refused instead of silently skipped (older manifests lack them).
PROVENANCE_KEYS = ("env_id", "policy", "max_steps", "crop_dashboard")


def shard_name(seed: int) -> str:
    """File name of the shard holding the episode of env seed ``seed``."""
    return f"episode_{seed:08d}.npz"


class CorruptShardWarning(UserWarning):
    """Warned when :meth:`EpisodeStore.episodes` skips a missing or corrupt shard."""


def _check_array(name: str, value: Any, dtype: type, shape: tuple[int | None, ...], shape_text: str) -> None:
    if not isinstance(value, np.ndarray):
        raise ValueError(f"Episode.{name} must be a numpy array of dtype {np.dtype(dtype)}, got {type(value).__name__}")
    if value.dtype != dtype:
        raise ValueError(f"Episode.{name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
    if value.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        raise ValueError(f"Episode.{name} must have shape {shape_text}, got {value.shape}")


@dataclass(eq=False)
class Episode:
    """One episode of the real env, as V and M are trained on it.

    Args:
        frames: uint8 ``(T + 1, 64, 64, 3)``: the preprocessed frame after ``reset``, then
            the frame after each step.
        actions: float32 ``(T, 3)``: (steer, gas, brake) of each step.
        rewards: float32 ``(T,)``.
        terminated: bool ``(T,)``; only the last step may be set.
        truncated: bool ``(T,)``; only the last step may be set.
        seed: the env seed the episode was reset with (a non-negative int).
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int

    def __post_init__(self) -> None:
        _check_array("frames", self.frames, np.uint8, (None, *FRAME_SHAPE), "(T + 1, 64, 64, 3)")
        steps = self.frames.shape[0] - 1
        if steps < 1:
            raise ValueError(
                f"Episode.frames must hold at least 2 frames (the reset frame and one step), got {self.frames.shape[0]}"
            )
        _check_array(
            "actions", self.actions, np.float32, (steps, ACTION_DIM), f"(T, 3) = ({steps}, 3) for {steps + 1} frames"
        )
        for name, dtype in (("rewards", np.float32), ("terminated", np.bool_), ("truncated", np.bool_)):
            _check_array(name, getattr(self, name), dtype, (steps,), f"(T,) = ({steps},) for {steps + 1} frames")
        if not np.isfinite(self.actions).all():
            raise ValueError("Episode.actions must be finite, got NaN or inf")
        if not np.isfinite(self.rewards).all():
            raise ValueError("Episode.rewards must be finite, got NaN or inf")
        done = self.terminated[:-1] | self.truncated[:-1]
        if done.any():
            raise ValueError(
                f"Episode has terminated/truncated set at step {int(np.argmax(done))} of {steps}; "
                "only the last step of an episode may end it"
            )
        self.seed = check_int("Episode.seed", self.seed, 0)

    @property
    def length(self) -> int:
        """Number of steps ``T``."""
        return int(self.actions.shape[0])

    @property
    def episode_return(self) -> float:
        """Sum of the rewards, accumulated in float64."""
        return float(self.rewards.sum(dtype=np.float64))

    def __repr__(self) -> str:
        return f"Episode(seed={self.seed}, length={self.length}, return={self.episode_return:.1f})"


def _encode(episode: Episode) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        frames=episode.frames,
        actions=episode.actions,
        rewards=episode.rewards,
        terminated=episode.terminated,
        truncated=episode.truncated,
        seed=np.int64(episode.seed),
        format_version=np.int64(EPISODE_FORMAT_VERSION),
    )
    return buffer.getvalue()


def _decode(data: bytes, where: str) -> Episode:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys = set(npz.files)
            if keys != _SHARD_KEYS:
                raise ValueError(f"expected arrays {sorted(_SHARD_KEYS)}, found {sorted(keys)}")
            version = int(npz["format_version"])
            if version != EPISODE_FORMAT_VERSION:
                raise ValueError(f"shard format_version is {version}, this dreamgym reads {EPISODE_FORMAT_VERSION}")
            arrays = {key: npz[key] for key in keys - {"format_version"}}
        return Episode(
            frames=arrays["frames"],
            actions=arrays["actions"],
            rewards=arrays["rewards"],
            terminated=arrays["terminated"],
            truncated=arrays["truncated"],
            seed=int(arrays["seed"]),
        )
    except Exception as exc:  # zip, zlib, npy header and Episode errors all mean the same here
        raise ShardCorruptError(f"shard {where} is unreadable: {type(exc).__name__}: {exc}") from exc


class EpisodeStore:
    """Episodes on disk, one compressed ``.npz`` shard per episode, listed in ``manifest.json``.

    Reading never needs the collector: ``EpisodeStore(path).episodes()`` streams the finished
    episodes in seed order, checking each shard's sha256 on the way.

    Args:
        root: folder of the store; created if missing. A missing manifest means an empty
            store; it is first written by :meth:`write` or :meth:`record`.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"episode store root {self.root} exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / MANIFEST_NAME
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: dict[int, dict[str, Any]] = {}

    # -- manifest ------------------------------------------------------------------------

    def _entries(self) -> dict[int, dict[str, Any]]:
        """The manifest's entries by seed, re-read whenever the file changed on disk."""
        try:
            stat = self.manifest_path.stat()
        except FileNotFoundError:
            self._cache_key, self._cache = None, {}
            return self._cache
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key != self._cache_key:
            self._cache = self._read_manifest()
            self._cache_key = key
        return self._cache

    def _read_manifest(self) -> dict[int, dict[str, Any]]:
        """The manifest's entries by seed.

        Raises:
            FileFormatError: (a ``ValueError``) a manifest that is not JSON, not of this
                format version, or with a malformed entry.
        """
        what = f"manifest {self.manifest_path}"
        manifest = read_json(self.manifest_path, what)
        if "episodes" not in manifest or not isinstance(manifest["episodes"], list):
            raise FileFormatError(f"{what} must be a JSON object with 'format_version' and 'episodes'")
        check_format_version(manifest, what, (EPISODE_FORMAT_VERSION,), hint="upgrade dreamgym")
        entries: dict[int, dict[str, Any]] = {}
        for i, entry in enumerate(manifest["episodes"]):
            if not isinstance(entry, dict) or any(k not in entry for k in _ENTRY_KEYS):
                raise FileFormatError(f"{what}: entry {i} must have keys {list(_ENTRY_KEYS)}, got {entry!r}")
            # A manifest names files inside the store only; anything else is not ours to open.
            if Path(entry["file"]).name != entry["file"]:
                raise FileFormatError(f"{what}: entry {i} names a file outside the store: {entry['file']!r}")
            entries[int(entry["seed"])] = entry
        return entries

    def _write_manifest(self, entries: dict[int, dict[str, Any]]) -> None:
        # One entry per line: small diffs, greppable, still plain JSON.
        keys = (*_ENTRY_KEYS, *PROVENANCE_KEYS)
        lines = ",\n".join(json.dumps({k: entries[s][k] for k in keys if k in entries[s]}) for s in sorted(entries))
        text = f'{{"format_version": {EPISODE_FORMAT_VERSION}, "episodes": [\n{lines}\n]}}\n'
        atomic_write(self.manifest_path, text.encode())
        stat = self.manifest_path.stat()
        self._cache_key, self._cache = (stat.st_ino, stat.st_mtime_ns, stat.st_size), dict(entries)

    # -- writing ---------------------------------------------------------------------------

    def write_shard(self, episode: Episode) -> dict[str, Any]:
        """Write ``episode``'s shard atomically, without touching the manifest.

        Safe to call from several processes at once for different seeds (collection workers
        do). Pass the returned entry to :meth:`record`, in the one process that owns the
        manifest, to list the episode.

        Args:
            episode: the episode; its seed names the shard, replacing any shard of that seed.

        Returns:
            the manifest entry ``{file, seed, length, return, sha256}``.
        """
        if not isinstance(episode, Episode):
            raise TypeError(f"expected an Episode, got {type(episode).__name__}")
        data = _encode(episode)
        name = shard_name(episode.seed)
        atomic_write(self.root / name, data)
        return {
            "file": name,
            "seed": episode.seed,
            "length": episode.length,
            "return": episode.episode_return,
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    def record(self, entry: dict[str, Any]) -> None:
        """List a shard written by :meth:`write_shard` in the manifest (atomically rewritten).

        Only one process may call this for a store at a time. An entry for a seed already
        listed replaces the old one.
        """
        missing = [k for k in _ENTRY_KEYS if k not in entry]
        if missing:
            raise ValueError(f"manifest entry is missing keys {missing}: {entry!r}")
        if not (self.root / entry["file"]).is_file():
            raise FileNotFoundError(f"refusing to list {entry['file']}: it is not in {self.root}")
        entries = dict(self._entries())
        entries[int(entry["seed"])] = dict(entry)
        self._write_manifest(entries)

    def write(self, episode: Episode) -> Path:
        """Store ``episode``: write its shard atomically, then list it in the manifest.

        Args:
            episode: the episode; an episode of a seed already stored replaces it.

        Returns:
            path of the shard.
        """
        entry = self.write_shard(episode)
        self.record(entry)
        return self.root / entry["file"]

    def drop_corrupt(self, seeds: Iterable[int] | None = None) -> list[int]:
        """Re-hash the listed shards (of ``seeds``; all if None) and drop those that fail.

        A shard whose sha256 differs from its manifest entry, or that is missing, is deleted
        and dropped from the manifest (with a :class:`CorruptShardWarning`), so that ``collect``
        runs its seed again. Hashing is cheap next to decoding: this is what every resumed
        collection does. Call it only while nothing else writes to the store.

        Returns:
            the seeds dropped, in order.
        """
        entries = dict(self._entries())
        wanted = set(entries) if seeds is None else {int(s) for s in seeds} & set(entries)
        dropped = []
        for seed in sorted(wanted):
            path = self.root / entries[seed]["file"]
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                digest = None
            if digest == entries[seed]["sha256"]:
                continue
            problem = "is missing" if digest is None else "fails its checksum (corrupt or truncated)"
            warnings.warn(
                f"{path} {problem}: dropped from the manifest, seed {seed} will be collected again",
                CorruptShardWarning,
                stacklevel=2,
            )
            with contextlib.suppress(OSError):
                path.unlink()
            del entries[seed]
            dropped.append(seed)
        if dropped:
            self._write_manifest(entries)
        return dropped

    def unlisted_shards(self) -> list[Path]:
        """Shard files in the folder that the manifest does not list (orphans, or all of them without a manifest)."""
        listed = {entry["file"] for entry in self._entries().values()}
        return [p for p in sorted(self.root.glob("episode_*.npz")) if _SHARD_RE.match(p.name) and p.name not in listed]

    def recover(self, *, verify: bool = False) -> list[int]:
        """Repair the store after a crash; call it only while nothing else writes to the store.

        - deletes leftover temporary files of interrupted writes;
        - drops manifest entries whose shard is gone (with a warning), so they are collected
          again; with ``verify=True`` also those whose shard fails its checksum or does not
          load (the bad shard is deleted);
        - adopts orphans, shards that are complete on disk but not in the manifest (the
          writer was killed between the shard and the manifest update). An orphan that does
          not load is deleted instead, so its seed is collected again.

        Args:
            verify: read every listed shard in full (slow for big stores).

        Returns:
            the seeds adopted from orphans.
        """
        for tmp in self.root.glob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                tmp.unlink()
        entries = dict(self._entries())
        changed = False
        for seed, entry in sorted(entries.items()):
            path = self.root / entry["file"]
            problem = None
            if not path.is_file():
                problem = "is missing"
            elif verify:
                try:
                    self._read(entry)
                except ShardCorruptError as exc:
                    problem = f"is corrupt ({exc})"
                    path.unlink()
            if problem is not None:
                warnings.warn(
                    f"{path} {problem}: dropped from the manifest, seed {seed} will be collected again",
                    CorruptShardWarning,
                    stacklevel=2,
                )
                del entries[seed]
                changed = True
        adopted = []
        for path in sorted(self.root.glob("episode_*.npz")):
            match = _SHARD_RE.match(path.name)
            if match is None or int(match.group(1)) in entries:
                continue
            seed = int(match.group(1))
            data = path.read_bytes()
            try:
                episode = _decode(data, str(path))
                if episode.seed != seed:
                    raise ShardCorruptError(f"shard {path} holds seed {episode.seed}, its name says {seed}")
            except ShardCorruptError as exc:
                warnings.warn(f"deleting unlisted unreadable shard: {exc}", CorruptShardWarning, stacklevel=2)
                path.unlink()
                continue
            entries[seed] = {
                "file": path.name,
                "seed": seed,
                "length": episode.length,
                "return": episode.episode_return,
                "sha256": hashlib.sha256(data).hexdigest(),
            }
            adopted.append(seed)
            changed = True
        if changed:
            self._write_manifest(entries)
        return adopted

    # -- reading ---------------------------------------------------------------------------

    def _read(self, entry: dict[str, Any]) -> Episode:
        path = self.root / entry["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ShardCorruptError(f"shard {path} of seed {entry['seed']} is missing") from None
        except OSError as exc:
            raise ShardCorruptError(f"shard {path} of seed {entry['seed']} cannot be read: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise ShardCorruptError(
                f"shard {path} fails its checksum (sha256 {digest[:12]}..., manifest says "
                f"{str(entry['sha256'])[:12]}...; {len(data)} bytes): truncated or corrupted"
            )
        episode = _decode(data, str(path))
        if episode.seed != entry["seed"] or episode.length != entry["length"]:
            raise ShardCorruptError(
                f"shard {path} holds seed {episode.seed} with {episode.length} steps, "
                f"the manifest says seed {entry['seed']} with {entry['length']}"
            )
        return episode

    def seeds(self) -> set[int]:
        """Seeds of the episodes listed in the manifest (finished and fully written)."""
        return set(self._entries())

    def entries(self) -> list[dict[str, Any]]:
        """The manifest entries ``{file, seed, length, return, sha256}``, in seed order."""
        entries = self._entries()
        return [dict(entries[s]) for s in sorted(entries)]

    def load(self, seed: int) -> Episode:
        """Read one episode, checking its sha256.

        Raises:
            KeyError: if ``seed`` is not in the manifest.
            ShardCorruptError: if its shard is missing, corrupt or truncated.
        """
        entries = self._entries()
        if seed not in entries:
            raise KeyError(f"seed {seed} is not in the episode store at {self.root} ({len(entries)} episodes stored)")
        return self._read(entries[seed])

    def episodes(self, *, skip_corrupt: bool = True) -> Iterator[Episode]:
        """Stream the stored episodes in seed order, one in memory at a time.

        Args:
            skip_corrupt: warn (:class:`CorruptShardWarning`, naming the file) about a
                missing, truncated or corrupt shard and go on; with ``False``, raise instead.

        Raises:
            ShardCorruptError: on a bad shard, when ``skip_corrupt=False``.
        """
        entries = self._entries()
        for seed in sorted(entries):
            try:
                episode = self._read(entries[seed])
            except ShardCorruptError as exc:
                if not skip_corrupt:
                    raise
                warnings.warn(f"skipping: {exc}", CorruptShardWarning, stacklevel=2)
                continue
            yield episode

    def __iter__(self) -> Iterator[Episode]:
        return self.episodes()

    def __len__(self) -> int:
        return len(self._entries())

    def __contains__(self, seed: object) -> bool:
        return seed in self._entries()

    def verify(self) -> tuple[list[int], list[str]]:
        """Check every listed shard in full, and look for unlisted ones.

        Returns:
            (seeds whose shard is intact, in order; one line per problem found).
        """
        good, problems = [], []
        for entry in self.entries():
            try:
                self._read(entry)
            except ShardCorruptError as exc:
                problems.append(str(exc))
            else:
                good.append(int(entry["seed"]))
        listed = {entry["file"] for entry in self._entries().values()}
        for path in sorted(self.root.glob("episode_*.npz")):
            if _SHARD_RE.match(path.name) and path.name not in listed:
                problems.append(f"shard {path} is not in the manifest (recover() adopts it)")
        return good, problems

    def __repr__(self) -> str:
        return f"EpisodeStore({str(self.root)!r}, episodes={len(self)})"


class EpisodeSubset:
    """A read-only view of the episodes of an :class:`EpisodeStore` whose seeds are in ``seeds``.

    A build collects into one store round after round; each round's training must see the
    episodes of its own rounds only, also when it is re-run after later rounds added more
    (otherwise a finished stage would quietly retrain, re-split or re-measure on new data).
    Seeds that are not (yet) in the store are simply absent from the view.

    Args:
        store: the store, or its folder.
        seeds: the seeds to keep.
    """

    def __init__(self, store: EpisodeStore | str | os.PathLike[str], seeds: Iterable[int]) -> None:
        self.store = store if isinstance(store, EpisodeStore) else EpisodeStore(store)
        self.root = self.store.root
        self.only = frozenset(int(s) for s in seeds)

    def seeds(self) -> set[int]:
        """Seeds of the stored episodes that the view keeps."""
        return self.store.seeds() & self.only

    def episodes(self, *, skip_corrupt: bool = True) -> Iterator[Episode]:
        """Stream the kept episodes in seed order, as :meth:`EpisodeStore.episodes`."""
        for seed in sorted(self.seeds()):
            try:
                yield self.store.load(seed)
            except ShardCorruptError as exc:
                if not skip_corrupt:
                    raise
                warnings.warn(f"skipping: {exc}", CorruptShardWarning, stacklevel=2)

    def load(self, seed: int) -> Episode:
        """Read one kept episode; :class:`KeyError` for a seed outside the view."""
        if seed not in self.only:
            raise KeyError(f"seed {seed} is outside this view of {self.root}")
        return self.store.load(seed)

    def __iter__(self) -> Iterator[Episode]:
        return self.episodes()

    def __len__(self) -> int:
        return len(self.seeds())

    def __contains__(self, seed: object) -> bool:
        return seed in self.only and seed in self.store

    def __repr__(self) -> str:
        return f"EpisodeSubset({str(self.root)!r}, episodes={len(self)})"


# ----------------------------------------------------------------------- reading a store
EpisodeLike = Episode
"""What a store's episodes are read as (any object with :class:`Episode`'s fields will do)."""


class EpisodeStoreLike(Protocol):
    """The part of :class:`EpisodeStore` training reads; any object with it will do."""

    def seeds(self) -> set[int]: ...

    def episodes(self, *, skip_corrupt: bool = True) -> Iterator[EpisodeLike]: ...

    def load(self, seed: int) -> EpisodeLike: ...

    def __len__(self) -> int: ...


DataSource = str | os.PathLike | EpisodeStoreLike


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


def iter_episodes(store: EpisodeStoreLike, seeds: Iterable[int]) -> Iterator[EpisodeLike]:
    """Episodes of ``store`` whose seed is in ``seeds``, in seed order, skipping corrupt ones."""
    wanted = set(int(s) for s in seeds)
    for episode in store.episodes(skip_corrupt=True):
        if int(episode.seed) in wanted:
            yield episode


def load_episodes(store: EpisodeStoreLike, seeds: Iterable[int]) -> Iterator[EpisodeLike]:
    """Episodes with the given seeds, loaded one by one (for a few among many), skipping corrupt ones.

    Skips (with a :class:`CorruptShardWarning`) the same episodes
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


def stored_crop_dashboard(store: EpisodeStoreLike) -> bool | None:
    """Whether the store's frames were made with CarRacing's dashboard cut (True) or kept (False).

    ``collect`` records it in every manifest entry; entries written before it did were all
    cut (the only way then). None if the store has no manifest to tell (a store-like object
    without ``entries``).

    Raises:
        FileFormatError: the store mixes frames made both ways.
    """
    # A view of some seeds (EpisodeSubset) answers for the store it views.
    entries = getattr(getattr(store, "store", store), "entries", None)
    if entries is None:
        return None
    kinds = {bool(entry.get("crop_dashboard", True)) for entry in entries()}
    if len(kinds) > 1:
        where = getattr(store, "root", store)
        raise FileFormatError(
            f"episode store {where} mixes frames with the dashboard cut and kept; V must see one kind: "
            "collect them into separate stores"
        )
    return kinds.pop() if kinds else None


def check_store_preprocessing(store: EpisodeStoreLike, crop_dashboard: bool, who: str) -> None:
    """Refuse a store whose frames were made otherwise than ``who`` (a world model's V) expects.

    Raises:
        FileFormatError: the store's frames keep the dashboard where ``who`` cuts it, or the
            other way round.
    """
    stored = stored_crop_dashboard(store)
    if stored is None or stored == crop_dashboard:
        return
    where = getattr(store, "root", store)
    have, want = ("cut", "kept") if stored else ("kept", "cut")
    raise FileFormatError(
        f"the frames of {where} have the dashboard {have}, but {who} sees frames with it {want} "
        f"(crop_dashboard={crop_dashboard}); use data collected {'with' if not crop_dashboard else 'without'} "
        "`collect --keep-dashboard`"
    )
