"""One world model whose M is an ensemble of the Ms of several world models that share V.

An ensemble need not be trained in one go (``train-rnn --ensemble-size K``): the Ms of
separate runs on the same V (other seeds, other data, the rounds of the paper's iterative
loop) can dream together. Each dream episode then draws one of them (``ensemble=True``), so
an agent has to drive well in every one, and their disagreement can be charged
(``disagreement_penalty``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dreamgym.checkpoints import module_fingerprint
from dreamgym.config import MAX_ENSEMBLE_SIZE
from dreamgym.hub import load_world_model
from dreamgym.models.world_model import WorldModel
from dreamgym.training.common import check_new_model_folder


def _source_name(source: str | Path) -> str:
    """How a source is recorded: a local folder as its absolute path, a Hub id as it is."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else str(source)


def _check_compatible(first: WorldModel, other: WorldModel, name: str, first_name: str) -> None:
    """Refuse a model whose V differs from the first's, or whose M has other sizes."""
    sizes = ("z_dim", "action_dim", "rnn_hidden", "num_mixtures")
    got = {key: getattr(other.config, key) for key in sizes}
    expected = {key: getattr(first.config, key) for key in sizes}
    if got != expected:
        raise ValueError(f"M of {name!r} has sizes {got}, expected those of {first_name!r}: {expected}")
    if module_fingerprint(other.vae) != module_fingerprint(first.vae):
        raise ValueError(
            f"V of {name!r} differs from V of {first_name!r}: an ensemble's Ms must all dream in one V's "
            "latent space (train them on the same V, e.g. with train-rnn --vae or --init-from)"
        )


def combine_world_models(models: Sequence[str | Path], out: str | Path, revision: str | None = None) -> WorldModel:
    """Save a world model whose M is the ensemble of the Ms of ``models``, and return it.

    The first model gives everything but M: V, the first-frame starts, the config, and
    member 0, the observation member whose ``h`` agents see in the dream and in the real
    env (so an agent trained on that model alone keeps the observations it knows). The Ms
    of the others follow in order; a model that is itself an ensemble brings all its
    members. Every model must share the first one's V, bit for bit. A bank of trajectory
    starts is not carried over (its states are the first model's Ms' only): add one with
    ``dreamgym start-bank``. The sources are never written to; ``out`` is a new folder, and
    the config records where each member came from (``training["ensemble_of"]``).

    Args:
        models: two or more world model folders or Hub repo ids.
        out: the new folder.
        revision: Hub revision of the models given by repo id.

    Raises:
        ValueError: fewer than two models, more than the largest ensemble's members, a model
            with another V or other M sizes, or ``out`` already holding a world model.
    """
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least two world models, got {len(models)}")
    out = check_new_model_folder(out, models)
    names = [_source_name(source) for source in models]
    loaded = [load_world_model(source, revision=revision) for source in models]
    first = loaded[0]
    for name, model in zip(names[1:], loaded[1:], strict=True):
        _check_compatible(first, model, name, names[0])
    members = [member for model in loaded for member in model.members]
    sources = [{"model": name, "members": model.ensemble_size} for name, model in zip(names, loaded, strict=True)]
    if len(members) > MAX_ENSEMBLE_SIZE:
        raise ValueError(f"these models hold {len(members)} Ms; an ensemble has at most {MAX_ENSEMBLE_SIZE}")
    first.set_members(members)
    training: dict[str, Any] = dict(first.config.training)
    training.pop("trajectory_starts", None)
    training["ensemble_of"] = sources
    first.config.training = training
    first.save_pretrained(out)
    return first
