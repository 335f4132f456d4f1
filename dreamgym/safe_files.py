"""Writing a folder from another without ever losing either: what ``package`` and ``push`` share.

Three rules:

1. A source file is read only if it really lies inside its folder: a symlink that leads out of
   it (to ``~/.ssh/id_rsa``, say) is refused, so it is never staged, packaged or uploaded.
2. The destination is built in a fresh temporary folder and renamed into place at the end
   (as a whole, or file by file), so nothing is ever written through a symlink planted in it,
   and a failure half-way leaves the old destination as it was.
3. The destination may not be a source, lie inside one, or hold one; and a non-empty folder is
   only replaced if it is itself a world model folder (a previous package or staging).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from dreamgym.errors import UnsafePathError, WouldOverwriteError
from dreamgym.files import atomic_copy

__all__ = ["check_destination", "check_inside", "check_model_folder", "copy_inside", "merge_into", "replace_folder"]

T = TypeVar("T")
# What marks a folder as a world model (that may be replaced as a whole).
MARKER = "config.json"


def check_model_folder(path: str | os.PathLike, doing: str) -> Path:
    """``path`` as a world model folder: one holding ``config.json``.

    Args:
        path: the folder.
        doing: what needs the folder, for the message (``"nothing to inspect"``).

    Raises:
        FileNotFoundError: no such folder, or one without ``config.json``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"world model folder {str(folder)!r} does not exist; {doing}")
    if not (folder / MARKER).is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} holds no {MARKER}: it is not a world model folder (written by train-vae, "
            "train-rnn, build or package)"
        )
    return folder


def check_inside(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """``path`` resolved, refusing one that leads outside ``root`` (through a symlink or ``..``).

    Raises:
        UnsafePathError: ``path`` resolves outside ``root``.
    """
    resolved = Path(path).resolve()
    base = Path(root).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise UnsafePathError(
            f"{os.fspath(path)} leads outside {os.fspath(root)} (to {resolved}, through a symlink): "
            "refusing to read it; copy the file into the folder instead of linking it"
        )
    return resolved


def copy_inside(src: str | os.PathLike, root: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` (which must lie inside ``root``) to ``dst`` through a temporary file and a rename.

    The rename replaces whatever is at ``dst``, a symlink included, instead of writing through it.
    """
    atomic_copy(check_inside(src, root), dst)


def check_destination(
    dest: str | os.PathLike, sources: Iterable[str | os.PathLike | None], flag: str = "--out", replace: bool = True
) -> None:
    """Refuse a destination folder that would overwrite its sources or someone else's files.

    Args:
        dest: the folder about to be written.
        sources: the folders it is made from (None entries are ignored).
        flag: how the user named ``dest``, for the message.
        replace: ``dest`` will be replaced as a whole (:func:`replace_folder`), so a non-empty
            folder must be a world model folder; False for :func:`merge_into`, which only
            replaces the files it writes.

    Raises:
        UnsafePathError: ``dest`` is a symlink, a source, inside a source, or holds one.
        WouldOverwriteError: ``dest`` is a file, or a non-empty folder that is not a world model folder.
    """
    dest = Path(dest)
    if dest.is_symlink():
        raise UnsafePathError(f"{flag} {dest} is a symlink; refusing to write through it: give a real folder")
    target = dest.resolve()
    for source in sources:
        if source is None:
            continue
        origin = Path(source).resolve()
        if target == origin or target.is_relative_to(origin):
            raise UnsafePathError(
                f"{flag} {dest} is {'the source folder' if target == origin else 'inside the source folder'} "
                f"{source}; writing it would destroy the source: choose a folder outside it"
            )
        if origin.is_relative_to(target):
            raise UnsafePathError(
                f"{flag} {dest} holds the source folder {source}; replacing it would destroy the source"
            )
    if dest.exists() and not dest.is_dir():
        raise WouldOverwriteError(f"{flag} {dest} is a file, not a folder; refusing to replace it")
    if replace and dest.is_dir() and any(dest.iterdir()) and not (dest / MARKER).is_file():
        raise WouldOverwriteError(
            f"{flag} {dest} is a non-empty folder that is not a world model folder (no {MARKER}); "
            "it would be replaced as a whole: choose a new or empty folder"
        )


def replace_folder(dest: str | os.PathLike, build: Callable[[Path], T]) -> T:
    """Run ``build`` on a fresh temporary folder next to ``dest``, then move it into place as ``dest``.

    Call :func:`check_destination` first. If ``build`` fails, ``dest`` is left as it was.

    Returns:
        What ``build`` returned.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.new-"))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the result should be an ordinary one
    try:
        result = build(stage)
        if os.path.lexists(dest):
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            os.replace(dest, old / "previous")
            os.replace(stage, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return result


def merge_into(dest: str | os.PathLike, build: Callable[[Path], T]) -> T:
    """Run ``build`` on a fresh temporary folder, then move each file it wrote into ``dest``.

    Files of ``dest`` with other names are kept (a git clone of a Hub repo keeps its ``.git``);
    a file with the same name, or a symlink in its place, is replaced by a rename, never
    written through. A sub-folder of ``dest`` that is a symlink is refused.

    Raises:
        UnsafePathError: a sub-folder to write into is a symlink.

    Returns:
        What ``build`` returned.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=dest, prefix=".dreamgym-stage-"))
    try:
        result = build(stage)
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(stage)
            for parent in reversed(relative.parents[:-1]):
                folder = dest / parent
                if folder.is_symlink():
                    raise UnsafePathError(f"{folder} is a symlink; refusing to write {relative} through it")
                folder.mkdir(exist_ok=True)
        for path in files:
            os.replace(path, dest / path.relative_to(stage))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return result
