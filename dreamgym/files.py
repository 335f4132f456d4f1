"""Files written so that a crash never leaves half of one, and JSON files read with one clear error.

Every file dreamgym writes (weights, configs, checkpoints, logs, episode shards, manifests,
results) goes through :func:`atomic_write`: the bytes go to a hidden temporary file in the
same folder (``.NAME.XXXXXXXX.tmp``), are flushed to disk, and the file is renamed into place,
so a reader, or a run after a crash, sees the old file or the new one, never a torn one. The
rename replaces a symlink at the destination instead of writing through it.

Every JSON file dreamgym reads goes through :func:`read_json`, which turns a file that is not
JSON, not the expected kind of value, or (:func:`check_format_version`) from a format version
this dreamgym does not read into one :class:`~dreamgym.errors.FileFormatError` (or the
subclass the caller names) with a one-line message naming the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from dreamgym.errors import ChecksumError, FileFormatError

__all__ = [
    "TMP_SUFFIX",
    "WEIGHTS_SHA256_KEY",
    "atomic_copy",
    "atomic_write",
    "atomic_write_json",
    "check_format_version",
    "check_sha256",
    "file_sha256",
    "read_json",
    "update_json",
]

TMP_SUFFIX = ".tmp"
"""Suffix of the temporary files :func:`atomic_write` renames into place (a crash may leave one)."""

WEIGHTS_SHA256_KEY = "weights_sha256"
"""Key of a JSON record (a world model's ``config.json``, a controller's ``controller.json``)
holding the sha256 of the weights file beside it."""

_MISSING = object()


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable. Windows cannot open a folder this way; there
    # os.replace is already durable enough for our purposes.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temporary(path: Path) -> Path:
    """A fresh, empty, hidden file next to ``path`` (made with the umask's permissions, unlike mkstemp's 0600)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[str], Any]) -> None:
    """Write ``path`` so that a crash at any moment leaves either the old file or the new one.

    Args:
        path: the file; its folder is created if missing.
        data: the bytes, or ``write(tmp_path)``, a function writing the file at the path it is
            given (``safetensors.torch.save_file``, ``np.savez``...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temporary(path)
    try:
        if callable(data):
            data(str(tmp))
            with open(tmp, "r+b") as f:
                os.fsync(f.fileno())
        else:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> None:
    """Copy the file ``source`` to ``path`` through :func:`atomic_write`.

    A symlink at ``path`` is replaced, not written through.
    """
    atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def atomic_write_json(path: str | os.PathLike, data: Any, *, sort_keys: bool = True, allow_nan: bool = True) -> None:
    """Write ``data`` as JSON indented by 2, with a final newline, through :func:`atomic_write`.

    Args:
        path: the file to write.
        data: any value JSON can hold.
        sort_keys: sort the keys of objects; False keeps their order (a record whose order
            means something, such as the stages of a build in the order they ran).
        allow_nan: write NaN and infinities as JSON's ``NaN`` / ``Infinity`` extension; False
            raises ``ValueError`` on one instead.
    """
    text = json.dumps(data, indent=2, sort_keys=sort_keys, allow_nan=allow_nan) + "\n"
    atomic_write(path, text.encode("utf-8"))


def read_json(
    path: str | os.PathLike,
    what: str = "JSON file",
    *,
    expect: type | tuple[type, ...] | None = dict,
    error: type[FileFormatError] = FileFormatError,
    default: Any = _MISSING,
) -> Any:
    """The JSON value in ``path``.

    Args:
        path: the file to read.
        what: what the file is, for the message (``"controller.json of controller 'runs/c'"``).
        expect: the type the value must have (``dict``: a JSON object, ``list``: an array);
            None accepts any.
        error: the :class:`~dreamgym.errors.FileFormatError` subclass to raise.
        default: returned when the file does not exist; without it, a missing file raises.

    Raises:
        FileNotFoundError: no such file (and no ``default``).
        FileFormatError: (``error``) the file is not UTF-8 JSON, or not of type ``expect``.
    """
    path = Path(path)
    where = what if str(path) in what else f"{what} ({path})"
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        if default is not _MISSING:
            return default
        raise FileNotFoundError(f"{where} does not exist") from None
    except UnicodeDecodeError as err:
        raise error(f"{where} is not valid JSON: {err}") from err
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{where} is not valid JSON: {err}") from err
    if expect is not None and not isinstance(value, expect):
        kinds = expect if isinstance(expect, tuple) else (expect,)
        names: dict[type, str] = {dict: "a JSON object", list: "a JSON array"}
        wanted = " or ".join(names.get(k, k.__name__) for k in kinds)
        raise error(f"{where} must be {wanted}, got {type(value).__name__}")
    return value


def check_format_version(
    record: dict[str, Any],
    what: str,
    versions: Collection[int],
    *,
    error: type[FileFormatError] = FileFormatError,
    key: str = "format_version",
    hint: str = "upgrade dreamgym or write the file again",
) -> int:
    """``record[key]``, refusing a version this dreamgym does not read (or a missing one).

    ``True`` and ``1.0`` are not version 1: the version must be an int.
    """
    version = record.get(key)
    if type(version) is not int or version not in versions:
        raise error(
            f"{what} has {key} {version!r}; this dreamgym reads versions {sorted(versions)}: {hint}"
        )
    return version


def update_json(path: str | os.PathLike, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into the JSON object at ``path`` and return it.

    The file is created if it is missing, or if it holds no JSON object.
    """
    try:
        current = read_json(path, default={})
    except FileFormatError:
        current = {}
    current.update(updates)
    atomic_write_json(path, current)
    return current


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str, what: str, error: type[Exception] = ChecksumError) -> None:
    """Raise ``error`` naming ``what`` unless ``path`` hashes to ``expected``.

    ``error`` is a :class:`~dreamgym.errors.ChecksumError` by default.
    """
    actual = file_sha256(path)
    if actual != expected:
        raise error(
            f"{what} is corrupt: its sha256 is {actual[:16]}..., but {expected[:16]}... was recorded when it was "
            f"saved ({os.fspath(path)})"
        )
