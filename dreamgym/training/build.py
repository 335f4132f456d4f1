"""``dreamgym build``: collect, train V, train M and package, from one YAML config.

Each stage resumes on its own (collection skips finished episodes, training continues from
the last epoch's checkpoint), so re-running a build after a crash or Ctrl-C picks up where
it stopped, and re-running a finished build does nothing but report.
"""

from __future__ import annotations

import inspect
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from dreamgym.config import ConfigError, WorldModelConfig

SECTIONS = ("out", "collect", "model", "vae", "rnn")
# What `dreamgym inspect` draws next to a built model; packaging ships them for the card.
PREVIEW_IMAGES = ("reconstruction.png", "open_loop.png", "curves_vae.png", "curves_rnn.png")


def _stage_kwargs(section: str, values: Any, func: Callable, reserved: tuple[str, ...]) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"build config section {section!r} must be a mapping, got {type(values).__name__}")
    accepted = set(inspect.signature(func).parameters) - set(reserved) - {"progress"}
    unknown = sorted(set(values) - accepted)
    if unknown:
        raise ConfigError(f"build config section {section!r} has unknown keys {unknown}; expected some of {sorted(accepted)}")
    return dict(values)


def load_build_config(path: str | Path) -> dict[str, Any]:
    """Read and check a build config, raising :class:`ConfigError` on anything malformed."""
    from dreamgym.data.collect import collect
    from dreamgym.training.rnn import train_rnn
    from dreamgym.training.vae import train_vae

    path = Path(path)
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
    if not isinstance(raw.get("out"), str):
        raise ConfigError(f"build config {str(path)!r} needs 'out': the folder the world model is written to")
    collect_kwargs = _stage_kwargs("collect", raw.get("collect"), collect, ())
    if "out" not in collect_kwargs:
        raise ConfigError(f"build config {str(path)!r}: section 'collect' needs 'out', the data folder")
    model = raw.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError("build config section 'model' must be a mapping of WorldModelConfig fields")
    model_config = WorldModelConfig.from_dict({"format_version": 1, **model})
    return {
        "out": raw["out"],
        "collect": collect_kwargs,
        "model": model_config,
        "vae": _stage_kwargs("vae", raw.get("vae"), train_vae, ("data", "out", "config")),
        "rnn": _stage_kwargs("rnn", raw.get("rnn"), train_rnn, ("data", "vae", "out")),
        "source": str(path),
    }


def build(config_path: str | Path, progress: bool = True) -> Path:
    """Run every stage of the build described by ``config_path``; return the model folder."""
    from dreamgym.data.collect import collect
    from dreamgym.training.rnn import train_rnn
    from dreamgym.training.vae import train_vae
    from dreamgym.visualize import inspect_world_model

    cfg = load_build_config(config_path)
    out = Path(cfg["out"])
    data = cfg["collect"]["out"]
    timings: dict[str, float] = {}

    def timed(stage: str, func: Callable[[], Any]) -> None:
        start = time.perf_counter()
        print(f"[build] {stage}", flush=True)
        func()
        timings[stage] = round(time.perf_counter() - start, 1)

    timed("collect", lambda: collect(progress=progress, **cfg["collect"]))
    timed("train-vae", lambda: train_vae(data=data, out=out, config=cfg["model"], progress=progress, **cfg["vae"]))
    timed("train-rnn", lambda: train_rnn(data=data, vae=out, out=out, progress=progress, **cfg["rnn"]))
    timed("inspect", lambda: inspect_world_model(out, data=data))
    _record_build(out, cfg, timings)
    return out


def _record_build(out: Path, cfg: dict[str, Any], timings: dict[str, float]) -> None:
    """Append this run's stage timings and the hardware to ``build.json`` for the model card."""
    import torch

    record_path = out / "build.json"
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"runs": []}
    record["config"] = cfg["source"]
    record["settings"] = {k: cfg[k] for k in ("collect", "vae", "rnn")}
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
    record_path.write_text(json.dumps(record, indent=2))


def package_world_model(
    model_dir: str | Path,
    dest: str | Path,
    model_ref: str,
    data: str | Path | None = None,
    half: bool = True,
    card_copies: tuple[str | Path, ...] = (),
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
    """
    import shutil

    from dreamgym.card import make_model_card
    from dreamgym.models.world_model import WorldModel
    from dreamgym.training.metrics import evaluate_world_model, write_metrics

    model_dir, dest = Path(model_dir), Path(dest)
    model = WorldModel.from_pretrained(model_dir)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "README.md").unlink(missing_ok=True)
    (model.half() if half else model).save_pretrained(dest)
    for record in ("build.json", "metrics.json", *PREVIEW_IMAGES):
        if (model_dir / record).is_file():
            shutil.copyfile(model_dir / record, dest / record)
    if data is not None:
        shipped = WorldModel.from_pretrained(dest)
        write_metrics(dest, evaluate_world_model(shipped, data))
    card = make_model_card(dest, model_ref=model_ref)
    for path in (dest / "README.md", *map(Path, card_copies)):
        card.save(path)
    return dest
