"""Publishing a world model to the Hugging Face Hub: stage one folder as Hub users expect, upload it.

The staged folder holds ``config.json`` and ``model.safetensors`` (what
:meth:`WorldModel.from_pretrained` reads), ``README.md`` (the model card, naming the repo
id), ``metrics.json``, the preview images and videos found next to the model, and, when
given, ``controller/`` (a controller trained in this dream) and ``results.json`` (its score
from ``dreamgym evaluate``). The upload itself is a thin use of :class:`huggingface_hub.HfApi`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from dreamgym.models.world_model import CONFIG_FILE, WEIGHTS_FILE, WorldModel, WorldModelFormatError
from dreamgym.safe_files import check_destination, copy_inside, merge_into

PREVIEW_PATTERNS = ("*.png", "*.gif", "*.mp4")
CONTROLLER_FILES = ("controller.safetensors", "controller.json")


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"repo id must look like 'org/name', got {repo_id!r}")


def _read_results(results: str | os.PathLike) -> dict[str, Any]:
    path = Path(results)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist (write it with dreamgym evaluate --out)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"results file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or "mean" not in data or "std" not in data:
        raise ValueError(f"results file {str(path)!r} must be a JSON object with 'mean' and 'std' (from dreamgym evaluate)")
    return data


def stage_repo(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    controller: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    repo_id: str = "org/name",
) -> Path:
    """Lay out ``out_dir`` as the Hub repo of the world model in ``model_dir``; returns ``out_dir``.

    Args:
        model_dir: a folder written by ``save_pretrained`` / ``dreamgym package``.
        out_dir: where to stage (created; files already there with the same names are replaced,
            symlinks among them replaced rather than written through).
        controller: a controller folder (``controller.safetensors`` + ``controller.json``) to ship
            alongside, under ``controller/``.
        results: a results.json from ``dreamgym evaluate``, copied and cited in the card.
        repo_id: the Hub repo id, used in the card as the name users pass to ``gym.make``.

    Raises:
        WorldModelFormatError: ``model_dir`` is not a loadable dreamgym world model.
        FileNotFoundError: ``model_dir``, ``controller`` or ``results`` does not exist.
        UnsafePathError: a file to stage is a symlink leading out of its folder, or ``out_dir``
            is a symlink, a source folder or inside one.
    """
    from dreamgym.card import make_model_card

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"world model folder {str(model_dir)!r} does not exist")
    try:
        WorldModel.from_pretrained(model_dir)
    except (WorldModelFormatError, ValueError, OSError) as err:
        raise WorldModelFormatError(f"refusing to push {str(model_dir)!r}: it does not load as a world model: {err}") from err
    results_data = _read_results(results) if results is not None else None
    controller_dir = Path(controller) if controller is not None else None
    if controller_dir is not None:
        missing = [name for name in CONTROLLER_FILES if not (controller_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"controller folder {str(controller_dir)!r} lacks {missing}")

    out = Path(out_dir)
    check_destination(out, [model_dir, controller_dir], flag="staging folder", replace=False)

    def write(stage: Path) -> None:
        # Every source file must lie inside its folder: a symlink to ~/.ssh is never staged, so never uploaded.
        for name in (CONFIG_FILE, WEIGHTS_FILE, "metrics.json"):
            if (model_dir / name).is_file():
                copy_inside(model_dir / name, model_dir, stage / name)
        for pattern in PREVIEW_PATTERNS:
            for path in sorted(model_dir.glob(pattern)):
                copy_inside(path, model_dir, stage / path.name)
        if controller_dir is not None:
            for name in CONTROLLER_FILES:
                copy_inside(controller_dir / name, controller_dir, stage / "controller" / name)
        if results_data is not None:
            (stage / "results.json").write_text(json.dumps(results_data, indent=2))
        # The card is built from the model folder (its build record and metrics) but names the repo.
        make_model_card(model_dir, model_ref=repo_id, results=results_data).save(stage / "README.md")

    # Staged in a fresh folder and moved into place: nothing is written through a symlink planted in out_dir.
    merge_into(out, write)
    return out


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    controller: str | os.PathLike | None = None,
    results: str | os.PathLike | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload dreamgym world model",
) -> str:
    """Stage the world model in a temporary folder and upload it to the Hub repo ``repo_id``.

    Creates the repo if needed. Returns the URL of the commit.
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="dreamgym-push-") as tmp:
        folder = stage_repo(model_dir, tmp, controller=controller, results=results, repo_id=repo_id)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                                 commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
