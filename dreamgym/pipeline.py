"""The pipeline: ``dreamgym build`` (collect, train V, M and C, iterate) from one YAML config, and ``dreamgym package``.

It drives every layer below it (collection, training, agents, the pictures), so it sits at
the top of the package, beside the command line. What ``package`` and ``push`` ship is laid
out by the same two functions, :func:`stage_model_files` and :func:`ship_controller`.

The stages follow the paper:

1. ``collect`` random rollouts, train V (``vae``) and M (``rnn``) into ``out``;
2. with a ``controller`` section, train C with CMA-ES in that M's dream (``out/controller``);
3. each entry of ``iterations`` is one round of the paper's iterative training: collect more
   real rollouts (typically with the previous round's controller plus exploration noise, as
   ``policy: "controller:{controller}?noise=0.3"``; ``{controller}`` names the previous
   round's selected controller), retrain M from scratch on all the data so far into
   ``out/round-K`` (V is kept), and train C again in the new dream (``out/round-K/controller``).

The last round's folder is the built world model. Each stage resumes on its own (collection
skips finished episodes, training continues from the last epoch's or generation's
checkpoint), so re-running a build after a crash or Ctrl-C picks up where it stopped, and
re-running a finished build does nothing but report.
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import yaml

from dreamgym import hub
from dreamgym.agents.cmaes import STAGE as CMAES_STAGE
from dreamgym.agents.cmaes import select_controller, train_controller
from dreamgym.agents.controller import CONTROLLER_CONFIG_FILE, CONTROLLER_WEIGHTS_FILE
from dreamgym.card import make_model_card
from dreamgym.checkpoints import LOG_DIR
from dreamgym.config import WorldModelConfig
from dreamgym.data.collect import collect
from dreamgym.episodes import EpisodeSubset
from dreamgym.errors import ConfigError, FileFormatError
from dreamgym.files import WEIGHTS_SHA256_KEY, atomic_copy, atomic_write_json, file_sha256, read_json
from dreamgym.models.world_model import WorldModel
from dreamgym.safe_files import check_destination, copy_inside, replace_folder
from dreamgym.training.metrics import evaluate_world_model, write_metrics
from dreamgym.training.rnn import train_rnn
from dreamgym.training.vae import train_vae
from dreamgym.visualize import inspect_world_model, plot_curves, read_log

SECTIONS = ("out", "collect", "model", "vae", "rnn", "controller", "iterations")
ROUND_SECTIONS = ("collect", "rnn", "controller")
# What `dreamgym inspect` draws next to a built model; packaging ships them for the card.
PREVIEW_IMAGES = ("reconstruction.png", "open_loop.png", "curves_vae.png", "curves_rnn.png", "curves_controller.png")
# Results of agents trained in the model, shipped next to it for the card.
RESULT_RECORDS = ("results.json", "temperature_sweep.json")


def _stage_kwargs(section: str, values: Any, func: Callable, reserved: tuple[str, ...]) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"build config section {section!r} must be a mapping, got {type(values).__name__}")
    accepted = set(inspect.signature(func).parameters) - set(reserved) - {"progress"}
    unknown = sorted(set(values) - accepted)
    if unknown:
        raise ConfigError(
            f"build config section {section!r} has unknown keys {unknown}; expected some of {sorted(accepted)}"
        )
    return dict(values)


def load_build_config(path: str | Path) -> dict[str, Any]:
    """Read and check a build config, raising :class:`ConfigError` on anything malformed."""
    path = Path(path)
    raw = _read_sections(path)
    if not isinstance(raw.get("out"), str):
        raise ConfigError(f"build config {str(path)!r} needs 'out': the folder the world model is written to")
    collect_kwargs = _stage_kwargs("collect", raw.get("collect"), collect, ())
    if "out" not in collect_kwargs or "episodes" not in collect_kwargs:
        raise ConfigError(f"build config {str(path)!r}: section 'collect' needs 'out', the data folder, and 'episodes'")
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError("build config section 'model' must be a mapping of WorldModelConfig fields")
    if "crop_dashboard" in collect_kwargs:
        # V must see the frames as they are collected: one setting, in either section, serves both.
        if model.get("crop_dashboard", collect_kwargs["crop_dashboard"]) != collect_kwargs["crop_dashboard"]:
            raise ConfigError(
                f"build config {str(path)!r}: collect.crop_dashboard is {collect_kwargs['crop_dashboard']} but "
                f"model.crop_dashboard is {model['crop_dashboard']}; V must see frames as they are collected"
            )
        model = {**model, "crop_dashboard": collect_kwargs["crop_dashboard"]}
    model_config = WorldModelConfig.from_dict({"format_version": 1, **model}, complete=False)
    controller_kwargs = _stage_kwargs(
        "controller", raw.get("controller"), train_controller, ("model", "out", "revision")
    )
    rounds = raw.get("iterations") or []
    if not isinstance(rounds, list):
        raise ConfigError(
            f"build config {str(path)!r}: 'iterations' must be a list of rounds, got {type(rounds).__name__}"
        )
    if rounds and "controller" not in raw:
        raise ConfigError(
            f"build config {str(path)!r} has 'iterations' but no 'controller' section: each round retrains C, "
            "and its collection drives with the previous round's controller"
        )
    if "{controller}" in str(collect_kwargs.get("policy", "")):
        raise ConfigError(
            f"build config {str(path)!r}: section 'collect' is round 0, which has no previous controller; "
            "'{controller}' can only be used in the collections of 'iterations'"
        )
    claimed: list[tuple[str, range]] = []
    _claim_seeds(claimed, "collect", collect_kwargs, path)
    iterations = [
        _read_round(f"iterations[{k}]", entry, collect_kwargs, claimed, path) for k, entry in enumerate(rounds)
    ]
    return {
        "out": raw["out"],
        "collect": collect_kwargs,
        "model": model_config,
        "vae": _stage_kwargs("vae", raw.get("vae"), train_vae, ("data", "out", "config")),
        "rnn": _stage_kwargs("rnn", raw.get("rnn"), train_rnn, ("data", "vae", "out")),
        "controller": controller_kwargs if "controller" in raw else None,
        "iterations": iterations,
        "source": str(path),
    }


def _read_sections(path: Path) -> dict[str, Any]:
    """The sections of the YAML build config at ``path``, checked to be known ones."""
    if not path.is_file():
        raise FileNotFoundError(f"build config {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"build config {str(path)!r} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"build config {str(path)!r} must be a mapping with sections {list(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"build config {str(path)!r} has unknown sections {unknown}; expected {list(SECTIONS)}")
    return raw


def _read_round(
    where: str, entry: Any, collect_kwargs: dict[str, Any], claimed: list[tuple[str, range]], path: Path
) -> dict[str, Any]:
    """One round of ``iterations`` (``where``), checked: its collections, and its M and C options."""
    if not isinstance(entry, dict) or not set(entry) <= set(ROUND_SECTIONS):
        raise ConfigError(f"build config {str(path)!r}: {where} must be a mapping with some of {list(ROUND_SECTIONS)}")
    collections = entry.get("collect") or []
    collections = [collections] if isinstance(collections, dict) else collections
    if not isinstance(collections, list):
        raise ConfigError(f"build config {str(path)!r}: {where}.collect must be a mapping or a list of them")
    for c in collections:
        if not isinstance(c, dict) or "episodes" not in c:
            raise ConfigError(f"build config {str(path)!r}: every collection of {where}.collect needs 'episodes'")
    # The data store is shared by every round: M is retrained on all of it.
    collections = [_stage_kwargs(f"{where}.collect", c, collect, ("out",)) for c in collections]
    for j, c in enumerate(collections):
        _claim_seeds(claimed, f"{where}.collect[{j}]", {**collect_kwargs, **c}, path)
    return {
        "collect": collections,
        "rnn": _stage_kwargs(f"{where}.rnn", entry.get("rnn"), train_rnn, ("data", "vae", "out")),
        "controller": _stage_kwargs(
            f"{where}.controller", entry.get("controller"), train_controller, ("model", "out", "revision")
        ),
    }


def _collection_seeds(kwargs: dict[str, Any]) -> range:
    return range(int(kwargs.get("seed", 0)), int(kwargs.get("seed", 0)) + int(kwargs["episodes"]))


def _claim_seeds(claimed: list[tuple[str, range]], where: str, kwargs: dict[str, Any], path: Path) -> None:
    """Refuse a collection whose seeds overlap an earlier one's, and note its seeds in ``claimed``.

    The store already holds those episodes, so it would silently collect nothing new (a
    round inherits round 0's ``seed``).
    """
    try:
        seeds = _collection_seeds(kwargs)
    except (TypeError, ValueError):
        return  # not numbers: collect itself explains
    for name, other in claimed:
        if seeds.start < other.stop and other.start < seeds.stop:
            raise ConfigError(
                f"build config {str(path)!r}: {where} collects seeds {seeds.start}-{seeds.stop - 1}, which overlap "
                f"{name}'s {other.start}-{other.stop - 1}; episodes already stored are not collected again, "
                f"so give it a 'seed' of {max(o.stop for _, o in claimed)} or more"
            )
    claimed.append((where, seeds))


def round_folder(out: str | Path, k: int) -> Path:
    """Where round ``k`` of a build writes its world model (round 0 is ``out`` itself)."""
    return Path(out) if k == 0 else Path(out) / f"round-{k}"


def build(config_path: str | Path, progress: bool = True) -> Path:
    """Run every stage of the build described by ``config_path``; return the final model folder.

    The final folder is ``out`` without iterations, else the last round's ``out/round-K``;
    its controller (with a ``controller`` section) is in ``<folder>/controller``, and
    :func:`~dreamgym.agents.cmaes.select_controller` picks the ES mean or the best candidate.
    """
    cfg = load_build_config(config_path)
    out = Path(cfg["out"])
    timings: dict[str, float] = {}
    # Every round collects into the same store; each trains on its own rounds' seeds only, so
    # re-running a finished round after later ones added episodes changes nothing.
    seeds = set(_collection_seeds(cfg["collect"]))
    _timed(timings, "collect", collect, progress=progress, **cfg["collect"])
    round_data = EpisodeSubset(cfg["collect"]["out"], seeds)
    _timed(
        timings, "train-vae", train_vae, data=round_data, out=out, config=cfg["model"], progress=progress, **cfg["vae"]
    )
    _timed(timings, "train-rnn", train_rnn, data=round_data, vae=out, out=out, progress=progress, **cfg["rnn"])
    # Inspected on its own rounds' episodes too, so a re-run draws the same held-out episodes.
    _timed(timings, "inspect", inspect_world_model, out, data=round_data)
    if cfg["controller"] is not None:
        _train_controller_stage(timings, cfg, out, {}, "", progress)
    final = out
    for k, iteration in enumerate(cfg["iterations"], 1):
        final = _build_round(k, iteration, cfg, seeds, timings, progress)
    _record_build(out, cfg, timings)
    if final != out:
        # The record of every run of the build travels with the model that ships.
        atomic_copy(out / "build.json", final / "build.json")
    return final


def _timed(timings: dict[str, float], stage: str, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
    """Run ``func(*args, **kwargs)`` as the build stage ``stage``: announce it, and keep its seconds in ``timings``."""
    start = time.perf_counter()
    print(f"[build] {stage}", flush=True)
    func(*args, **kwargs)
    timings[stage] = round(time.perf_counter() - start, 1)


def _train_controller_stage(
    timings: dict[str, float], cfg: dict[str, Any], folder: Path, overrides: dict[str, Any], prefix: str, progress: bool
) -> None:
    """Train C in the world model in ``folder`` into ``folder/controller``, and draw its curves."""
    kwargs = {**cfg["controller"], **overrides}
    _timed(
        timings, f"{prefix}train-controller", train_controller,
        model=str(folder), out=folder / "controller", progress=progress, **kwargs,
    )
    # Only C's curves: V's and M's were drawn by the inspect stage.
    log_path = folder / "controller" / "logs" / "cmaes.json"
    _timed(
        timings, f"{prefix}inspect-controller",
        lambda: plot_curves(read_log(log_path), f"controller CMA-ES ({log_path})", folder / "curves_controller.png"),
    )


def _build_round(
    k: int, iteration: dict[str, Any], cfg: dict[str, Any], seeds: set[int], timings: dict[str, float], progress: bool
) -> Path:
    """Round ``k`` >= 1: collect with the last round's controller, retrain M on all rounds' episodes, train C.

    V is the first round's. ``seeds`` (the episodes of the rounds so far) gains this round's.
    """
    out, data = Path(cfg["out"]), cfg["collect"]["out"]
    previous = select_controller(round_folder(out, k - 1) / "controller")
    folder = round_folder(out, k)
    for j, entry in enumerate(iteration["collect"]):
        entry = {**cfg["collect"], **entry}
        entry["policy"] = entry.get("policy", "random").replace("{controller}", str(previous.resolve()))
        _timed(timings, f"round-{k}/collect-{j}", collect, progress=progress, **entry)
        seeds |= set(_collection_seeds(entry))
    # V is shared by every round: its log travels with each round's model for the curves.
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    if (out / "logs" / "vae.json").is_file():
        atomic_copy(out / "logs" / "vae.json", folder / "logs" / "vae.json")
    rnn_kwargs = {**cfg["rnn"], **iteration["rnn"]}
    round_data = EpisodeSubset(data, seeds)
    _timed(
        timings, f"round-{k}/train-rnn", train_rnn,
        data=round_data, vae=out, out=folder, progress=progress, **rnn_kwargs,
    )
    _timed(timings, f"round-{k}/inspect", inspect_world_model, folder, data=round_data)
    _train_controller_stage(timings, cfg, folder, iteration["controller"], f"round-{k}/", progress)
    return folder


def _record_build(out: Path, cfg: dict[str, Any], timings: dict[str, float]) -> None:
    """Append this run's stage timings and the hardware to ``build.json`` for the model card."""
    record_path = out / "build.json"
    record = read_json(record_path, "build record", default={"runs": []})
    record["config"] = cfg["source"]
    record["settings"] = {k: cfg[k] for k in ("collect", "vae", "rnn", "controller", "iterations")}
    record["runs"].append(
        {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "stage_seconds": timings,
            "hardware": {
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "cpu_threads": torch.get_num_threads(),
                "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            },
        }
    )
    atomic_write_json(record_path, record, sort_keys=False)  # the stages in the order they ran


def package_world_model(
    model_dir: str | Path,
    dest: str | Path,
    model_ref: str,
    data: str | Path | None = None,
    half: bool = True,
    card_copies: tuple[str | Path, ...] = (),
    controller: str | Path | None = None,
    results: str | Path | None = None,
    sweep: str | Path | None = None,
) -> Path:
    """Write a built world model as a shippable folder: weights (fp16 by default), config, records, card.

    When ``data`` is given the metrics are measured again on the packaged weights, so the
    card describes exactly what ships.

    Args:
        model_dir: a folder written by ``dreamgym build``.
        dest: the folder to write, e.g. ``dreamgym/assets/DreamCarRacing-v0``.
        model_ref: how users name the model in ``gym.make(..., model=...)``, for the card.
        data: the episode store the model was built from.
        half: store the weights as float16 (halves the size; loading casts back to float32).
        card_copies: more paths to write the model card to, such as ``model_cards/X.md``.
        controller: a controller trained in this model's dream (a ``train-controller`` folder;
            :func:`~dreamgym.agents.cmaes.select_controller` picks its ES mean or best
            candidate), shipped under ``controller/`` with its CMA-ES log, and its curves
            drawn as ``curves_controller.png``. It is recorded as trained in the packaged
            model, so ``dreamgym evaluate DEST/controller`` dreams in the shipped weights.
        results: the controller's ``dreamgym evaluate`` results.json, for the card's score.
        sweep: a ``temperature_sweep.json`` (``examples/temperature_sweep.py``), for the
            card's dream-vs-real table.
    """
    model_dir, dest = Path(model_dir), Path(dest)
    # Before anything is written: the destination must not be (or hold, or lie in) a source.
    check_destination(dest, [model_dir, controller])
    model = WorldModel.from_pretrained(model_dir)
    results_data = read_results(results) if results is not None else None
    if dest.resolve() == hub.DEFAULT_MODEL_DIR.resolve():  # read now: a test may move it
        trained_in = {"model": None, "revision": None, "source": "default"}
    else:
        trained_in = {"model": str(dest.resolve()), "revision": None, "source": "path"}

    def write(stage: Path) -> Any:
        (model.half() if half else model).save_pretrained(stage)
        (stage / "README.md").unlink(missing_ok=True)  # the mixin's generic card; ours is written below
        stage_model_files(stage, model_dir, ("build.json", "metrics.json", *PREVIEW_IMAGES), results=results_data)
        if controller is not None:
            ship_controller(Path(controller), stage, record_as=trained_in)
        if sweep is not None:
            atomic_copy(sweep, stage / RESULT_RECORDS[1])
        if data is not None:
            shipped = WorldModel.from_pretrained(stage)
            write_metrics(stage, evaluate_world_model(shipped, data))
        card = make_model_card(stage, model_ref=model_ref, results=results_data)
        card.save(stage / "README.md")
        return card

    # Built in a temporary folder and moved into place: a failure leaves the old package whole.
    card = replace_folder(dest, write)
    for path in map(Path, card_copies):
        card.save(path)
    return dest


# ----------------------------------------------------------------- what ships (package, push)
def stage_model_files(
    stage: Path, model_dir: Path, patterns: Iterable[str], results: dict[str, Any] | None = None
) -> None:
    """Copy into ``stage`` the files of ``model_dir`` that match ``patterns``, and the agent's results.

    Each file must lie inside ``model_dir``: a symlink leading out of it (to ``~/.ssh``, say)
    is refused, so it is never packaged or uploaded. ``results`` (from :func:`read_results`)
    is written as ``results.json``.
    """
    for pattern in patterns:
        for path in sorted(model_dir.glob(pattern)):
            if path.is_file():
                copy_inside(path, model_dir, stage / path.name)
    if results is not None:
        atomic_write_json(stage / RESULT_RECORDS[0], results, sort_keys=False)


def read_results(results: str | os.PathLike) -> dict[str, Any]:
    """A ``dreamgym evaluate`` results.json, checked to hold the agent's ``mean`` and ``std``.

    Raises:
        FileNotFoundError: no such file.
        FileFormatError: (a ``ValueError``) not JSON, or without ``mean`` and ``std``.
    """
    path = Path(results)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist (write it with dreamgym evaluate --out)")
    data = read_json(path, f"results file {str(path)!r}")
    if "mean" not in data or "std" not in data:
        raise FileFormatError(
            f"results file {str(path)!r} must be a JSON object with 'mean' and 'std' (from dreamgym evaluate)"
        )
    return data


def check_controller_folder(folder: Path) -> Path:
    """``folder``, if it holds a controller's two files.

    Raises:
        FileNotFoundError: naming the files it lacks.
    """
    missing = [name for name in (CONTROLLER_WEIGHTS_FILE, CONTROLLER_CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"controller folder {str(folder)!r} lacks {missing}")
    return folder


def ship_controller(controller: Path, stage: Path, record_as: dict[str, Any] | None = None) -> Path:
    """Copy a controller into ``stage/controller``: its ``controller.safetensors`` and ``controller.json``.

    Args:
        controller: a controller folder, or the output folder of a CMA-ES run.
        stage: the folder being staged.
        record_as: when packaging, where ``stage`` will end up, as ``controller.json`` records
            a world model: the run's selected controller
            (:func:`~dreamgym.agents.cmaes.select_controller`) is shipped, its record names
            ``record_as`` as its world model (the one it was trained in is kept as
            ``training.trained_in``), and its CMA-ES log and curves go along. None (pushing a
            controller folder): its two files are copied as they are.

    Raises:
        FileNotFoundError: the folder lacks one of the two files.
    """
    chosen = check_controller_folder(select_controller(controller) if record_as is not None else controller)
    target = stage / "controller"
    copy_inside(chosen / CONTROLLER_WEIGHTS_FILE, controller, target / CONTROLLER_WEIGHTS_FILE)
    if record_as is None:
        copy_inside(chosen / CONTROLLER_CONFIG_FILE, controller, target / CONTROLLER_CONFIG_FILE)
        return target
    record = read_json(chosen / CONTROLLER_CONFIG_FILE, f"{CONTROLLER_CONFIG_FILE} of controller {str(chosen)!r}")
    # Where it was trained before packaging (the float32 build), for the record.
    record.setdefault("training", {})["trained_in"] = record.get("world_model", {})
    record["world_model"] = record_as
    record[WEIGHTS_SHA256_KEY] = file_sha256(target / CONTROLLER_WEIGHTS_FILE)
    atomic_write_json(target / CONTROLLER_CONFIG_FILE, record)
    log = controller / LOG_DIR / f"{CMAES_STAGE}.json"
    if log.is_file():
        copy_inside(log, controller, target / "training_log.json")
        plot_curves(read_log(log), "reference controller: CMA-ES in the dream", stage / "curves_controller.png")
    return target
