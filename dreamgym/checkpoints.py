"""Checkpoints and the resumable loop every training stage runs: V's and M's epochs, CMA-ES's generations.

A stage named ``name`` writing into ``out`` keeps:

- ``out/checkpoints/<name>.safetensors``: its tensors, with its JSON state (epoch or
  generation, history, options) inside the safetensors metadata, so that tensors and state
  land on disk in one atomic rename; ``<name>_state.json`` beside it is a readable copy;
- ``out/logs/<name>.json``: its curve, one entry per finished epoch or generation.

Nothing is ever pickled, so a checkpoint can be opened without trusting whoever wrote it.

:func:`run_stage` is the loop itself: it runs the steps left, checkpoints after each, writes
the log, and on Ctrl-C says how many steps are safe and where, so that calling the stage
again resumes after the last finished step.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from dreamgym.errors import CheckpointError
from dreamgym.files import atomic_write, atomic_write_json

__all__ = [
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "LOG_DIR",
    "checkpoint_paths",
    "load_checkpoint",
    "module_fingerprint",
    "read_checkpoint",
    "restore_optimizer",
    "resume_training",
    "epoch_checkpoint",
    "run_stage",
    "save_checkpoint",
    "write_checkpoint",
    "write_log",
]

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
CHECKPOINT_FORMAT = 1
"""The layout of a checkpoint's state; a stage may keep its own (``checkpoint_format=``)."""
# The JSON state is also stored in the safetensors metadata under this key: the tensors and
# the scalars then land on disk in one atomic rename; the ``<name>_state.json`` sidecar is a
# readable copy of it.
_STATE_KEY = "dreamgym_state"

Entry = dict[str, Any]


# ------------------------------------------------------------------------------ files
def checkpoint_paths(out: str | Path, name: str) -> tuple[Path, Path]:
    """(tensors, JSON state) paths of stage ``name``'s checkpoint under ``out``."""
    folder = Path(out) / CHECKPOINT_DIR
    return folder / f"{name}.safetensors", folder / f"{name}_state.json"


def write_log(out: str | Path, name: str, history: list[Entry]) -> Path:
    """Write a stage's training curve (one dict per finished epoch or generation) to ``out/logs/<name>.json``."""
    path = Path(out) / LOG_DIR / f"{name}.json"
    atomic_write_json(path, history)
    return path


def write_checkpoint(
    out: str | Path, name: str, tensors: dict[str, torch.Tensor], state: dict[str, Any],
    checkpoint_format: int = CHECKPOINT_FORMAT,
) -> None:
    """Write stage ``name``'s ``tensors`` and JSON-able ``state`` as one safetensors file.

    The state travels inside the safetensors metadata, so tensors and state land together in
    one atomic rename: an interrupted save leaves the previous checkpoint as it was. The JSON
    sidecar is a readable copy.
    """
    weights_path, state_path = checkpoint_paths(out, name)
    full_state = {**state, "checkpoint_format": checkpoint_format}
    blob = json.dumps(full_state, sort_keys=True)
    atomic_write(weights_path, lambda tmp: save_file(tensors, tmp, metadata={_STATE_KEY: blob}))
    atomic_write_json(state_path, full_state)


def read_checkpoint(
    out: str | Path, name: str, checkpoint_format: int = CHECKPOINT_FORMAT
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """Read what :func:`write_checkpoint` wrote: (tensors, state), or None if there is none.

    The state is read from the copy inside the safetensors file, not from the JSON sidecar:
    a crash between the two renames of a save may leave the sidecar one step behind.

    Raises:
        CheckpointError: the file is unreadable, or of another checkpoint format.
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


# ------------------------------------------------------------------ modules and optimizers
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


def save_checkpoint(
    out: str | Path, name: str, module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Save ``module``'s weights, ``optimizer`` and the JSON-able ``state`` of stage ``name``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    opt_tensors, opt_info = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    write_checkpoint(out, name, tensors, {**state, "optimizer": opt_info})


def load_checkpoint(
    out: str | Path, name: str
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


def resume_training(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    checkpoint: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]],
    lr: float,
    device: torch.device,
) -> tuple[int, list[Entry]]:
    """Put ``module`` and ``optimizer`` back as :func:`load_checkpoint`'s ``checkpoint`` left them.

    The module goes to ``device``; the learning rate is ``lr`` (this call's, which may differ
    from the checkpointed run's).

    Returns:
        (epochs done, training curve so far).
    """
    weights, opt_tensors, state = checkpoint
    module.load_state_dict(weights, strict=True)
    module.to(device)
    restore_optimizer(optimizer, {k: v.to(device) for k, v in opt_tensors.items()}, state)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return int(state["epoch"]), list(state["history"])


def epoch_checkpoint(
    out: str | Path, name: str, module: nn.Module, optimizer: torch.optim.Optimizer, **fields: Any
) -> Callable[[list[Entry]], None]:
    """The ``save`` of :func:`run_stage` for a stage trained by epochs: module, optimizer and state.

    The state is ``{"epoch": the last entry's epoch, "history": the curve, **fields}``, what
    :func:`resume_training` reads back.
    """

    def save(history: list[Entry]) -> None:
        save_checkpoint(out, name, module, optimizer, {**fields, "epoch": history[-1]["epoch"], "history": history})

    return save


def module_fingerprint(module: nn.Module) -> str:
    """A hash of ``module``'s weights: tells whether a cache or checkpoint was made with this module."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------- loop
def run_stage(
    out: str | Path,
    name: str,
    *,
    what: str,
    unit: str,
    done: int,
    total: int,
    history: list[Entry],
    step: Callable[[int], Entry],
    save: Callable[[list[Entry]], None],
    report: Callable[[Entry], None] | str | None = None,
) -> list[Entry]:
    """Run steps ``done`` to ``total - 1`` of stage ``name`` (epochs, generations), checkpointing after each.

    For each step ``i``: ``entry = step(i)`` is appended to ``history``, ``save(history)``
    writes the checkpoint (and whatever else the stage keeps, checkpoint first), the log is
    written to ``out/logs/<name>.json``, then ``report(entry)`` shows it. The log is written once
    more at the end, also when no step was left. On Ctrl-C the stage's finished steps are
    already checkpointed: that is said on stderr, and the ``KeyboardInterrupt`` goes on.

    Args:
        out: the output folder of the training.
        name: the stage's checkpoint and log name (``"vae"``, ``"rnn-member-1"``, ``"cmaes"``).
        what: the stage as the user knows it (``"V"``, ``"M member 1"``, ``"CMA-ES"``).
        unit: what a step is (``"epoch"``, ``"generation"``).
        done: steps already finished (resumed from the checkpoint).
        total: steps the stage should have finished when it returns.
        history: the log entries of the finished steps; new ones are appended to it.
        step: runs step ``i`` (0-based) and returns its log entry.
        save: writes the checkpoint after a step, given the history so far.
        report: shows a finished step: a function of its entry, or a line to print (above
            any progress bar) formatted with the entry's keys, ``"epoch {epoch}: loss {loss:.2f}"``.

    Returns:
        ``history``, with the new entries.
    """
    try:
        for index in range(done, total):
            entry = step(index)
            history.append(entry)
            save(history)
            write_log(out, name, history)
            if isinstance(report, str):
                tqdm.write(report.format(**entry))
            elif report is not None:
                report(entry)
    except KeyboardInterrupt:
        weights_path, _ = checkpoint_paths(out, name)
        print(
            f"\ninterrupted: {len(history)} {unit}(s) of {what} are checkpointed in {weights_path}; "
            "run again to resume",
            file=sys.stderr,
        )
        raise
    write_log(out, name, history)
    return history
