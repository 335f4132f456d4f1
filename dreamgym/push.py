"""Publishing a world model to the Hugging Face Hub: stage one folder as Hub users expect, upload it.

The staged folder holds ``config.json`` and ``model.safetensors`` (what
:meth:`WorldModel.from_pretrained` reads), ``README.md`` (the model card, naming the repo
id), ``metrics.json``, the preview images and videos found next to the model, and, when
given, ``controller/`` (a controller trained in this dream) and ``results.json`` (its score
from ``dreamgym evaluate``): laid out by the same functions as ``dreamgym package``
(:func:`~dreamgym.pipeline.stage_model_files`, :func:`~dreamgym.pipeline.ship_controller`).

The upload is :meth:`huggingface_hub.HfApi.upload_folder` of the staged folder, which is what
the Hub mixin's own ``WorldModel.push_to_hub`` does with the folder ``save_pretrained`` writes;
dreamgym stages its own folder instead, because the mixin would upload the weights as loaded
(float32, where ``package`` shipped float16), without the card, previews or controller.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id

from dreamgym.agents.controller import CONTROLLER_CONFIG_FILE, CONTROLLER_WEIGHTS_FILE
from dreamgym.card import make_model_card
from dreamgym.models.world_model import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, WorldModel, WorldModelFormatError
from dreamgym.pipeline import check_controller_folder, read_results, ship_controller, stage_model_files
from dreamgym.safe_files import check_destination, merge_into

PREVIEW_PATTERNS = ("*.png", "*.gif", "*.mp4")
CONTROLLER_FILES = (CONTROLLER_WEIGHTS_FILE, CONTROLLER_CONFIG_FILE)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is a Hub model repo id, ``org/name``.

    Checked by :func:`huggingface_hub.utils.validate_repo_id`.

    Raises:
        ValueError: not of the form ``org/name``, or with characters the Hub refuses.
    """
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo id must look like 'org/name', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo id {repo_id!r} is not one the Hub accepts: {err}") from None
    return repo_id


_check_repo_id = check_repo_id  # its first, private name


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
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"world model folder {str(model_dir)!r} does not exist")
    try:
        WorldModel.from_pretrained(model_dir)
    except (WorldModelFormatError, ValueError, OSError) as err:
        raise WorldModelFormatError(
            f"refusing to push {str(model_dir)!r}: it does not load as a world model: {err}"
        ) from err
    results_data = read_results(results) if results is not None else None
    controller_dir = check_controller_folder(Path(controller)) if controller is not None else None

    out = Path(out_dir)
    check_destination(out, [model_dir, controller_dir], flag="staging folder", replace=False)

    def write(stage: Path) -> None:
        patterns = (MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, "metrics.json", *PREVIEW_PATTERNS)
        stage_model_files(stage, model_dir, patterns, results=results_data)
        if controller_dir is not None:
            ship_controller(controller_dir, stage)
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
    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="dreamgym-push-") as tmp:
        folder = stage_repo(model_dir, tmp, controller=controller, results=results, repo_id=repo_id)
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="model",
                                 commit_message=commit_message)
    return str(getattr(info, "commit_url", info))
