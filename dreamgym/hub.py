"""Finding a world model: an instance, a local folder, or a Hugging Face Hub repo id."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import httpx2
import torch
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from dreamgym.models.world_model import MODEL_WEIGHTS_FILE, WorldModel
from dreamgym.validation import check_device

ModelSource = WorldModel | str | os.PathLike | None

ASSETS_DIR = Path(__file__).parent / "assets"
DEFAULT_MODEL_DIR = ASSETS_DIR / "DreamCarRacing-v0"
#: The world models shipped inside the package, by the id of the env they are the default of.
#: ``load_world_model`` takes these names (as it takes Hub ids), so an agent that records one
#: names its dream the same way on every install.
EMBEDDED_MODELS = {
    "dreamgym/DreamCarRacing-v0": "DreamCarRacing-v0",
    "dreamgym/DreamCarRacing-v1": "DreamCarRacing-v1",
}


def embedded_model_path(name: str) -> Path | None:
    """The folder of the embedded world model ``name`` (a key of :data:`EMBEDDED_MODELS`), or None if not installed."""
    folder = DEFAULT_MODEL_DIR if name == "dreamgym/DreamCarRacing-v0" else ASSETS_DIR / EMBEDDED_MODELS[name]
    return folder if (folder / MODEL_WEIGHTS_FILE).is_file() else None


def default_model_path() -> Path | None:
    """The world model shipped inside the package (v0's), or None if this install has none."""
    return embedded_model_path("dreamgym/DreamCarRacing-v0")


def _looks_like_path(source: str) -> bool:
    # "org/name" is a Hub id; anything else with path syntax is meant as a folder.
    return (
        source.startswith((".", "/", "~"))
        or source.count("/") > 1
        or os.sep != "/" and os.sep in source
        or source.endswith("/")
    )


class UntrainedModelWarning(UserWarning):
    """A world model was loaded whose M was never trained: its dream is noise."""


def _warn_if_m_untrained(model: WorldModel, source: str) -> WorldModel:
    training = model.config.training
    if isinstance(training, dict) and "vae" in training and "rnn" not in training:
        warnings.warn(
            f"world model {source!r} has a trained V but an untrained M (its config.json records no 'rnn' "
            "training, only train-vae's): its dream is noise; run `dreamgym train-rnn` on it first",
            UntrainedModelWarning,
            stacklevel=3,
        )
    return model


def load_world_model(model: ModelSource, revision: str | None = None, device: str | torch.device = "cpu") -> WorldModel:
    """Resolve ``model`` into a :class:`WorldModel` on ``device``.

    Args:
        model: a loaded :class:`WorldModel`, a folder written by ``save_pretrained``, a Hub
            repo id such as ``"org/carracing-wm"``, the name of a world model shipped in the
            package (a key of :data:`EMBEDDED_MODELS`, such as ``"dreamgym/DreamCarRacing-v1"``),
            or None for the default, ``DreamCarRacing-v0``'s.
        revision: for a Hub repo, a branch, tag or full commit sha.
        device: torch device for the model.

    Raises:
        ValueError: ``model`` is None and no default world model is available; ``revision``
            with a local folder or a loaded model; a device this machine lacks.
        FileNotFoundError: the folder or Hub repo (or its revision) does not exist.
        ConnectionError: the Hub could not be reached and the model is not in the cache.
    """
    target = check_device(device)
    if isinstance(model, WorldModel):
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} was given with an in-memory WorldModel; "
                "a revision names a commit of a Hub repo"
            )
        return model.to(target).eval()
    if model is None:
        model = default_model_path()
    if model is None:
        raise ValueError(
            "no world model given: pass model= a WorldModel, a folder written by "
            "WorldModel.save_pretrained, or a Hugging Face Hub repo id like 'org/name'"
        )
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a WorldModel, a folder path or a Hub repo id, got {type(model).__name__}")
    source = os.fspath(model)
    if source in EMBEDDED_MODELS and revision is None:
        embedded = embedded_model_path(source)
        if embedded is None:
            raise FileNotFoundError(f"the embedded world model {source!r} is not installed with this dreamgym")
        return WorldModel.from_pretrained(embedded, map_location=target)
    expanded = os.path.expanduser(source)
    if os.path.isdir(expanded):
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} was given with the local folder {source!r}; a revision names a commit "
                "of a Hub repo, a folder has none: drop revision= (or pass the Hub repo id)"
            )
        return _warn_if_m_untrained(WorldModel.from_pretrained(Path(expanded), map_location=target), source)
    if os.path.exists(expanded) or _looks_like_path(source):
        raise FileNotFoundError(
            f"world model folder {source!r} does not exist (expected a folder with config.json and model.safetensors)"
        )
    return _warn_if_m_untrained(_from_hub(source, revision, target), source)


def _from_hub(source: str, revision: str | None, target: torch.device | None) -> WorldModel:
    """The world model in the Hub repo ``source``, each way the Hub can fail said as a FileNotFoundError."""
    at = f" at revision {revision!r}" if revision else ""
    try:
        return WorldModel.from_pretrained(source, revision=revision, map_location=target)
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"Hub repo {source!r} has no revision {revision!r}") from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(
            f"{source!r} is neither a local folder nor a Hub repo that can be reached (repository not found)"
        ) from err
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
        raise FileNotFoundError(
            f"{source!r} is not a local folder, and the Hub repo{at} could not be fetched or found in the cache: {err}"
        ) from err
    except HfHubHTTPError as err:
        raise FileNotFoundError(f"could not fetch world model {source!r}{at} from the Hub: {err}") from err
    except httpx2.TransportError as err:
        raise ConnectionError(f"could not reach the Hub to fetch world model {source!r}{at}: {err!r}") from err
