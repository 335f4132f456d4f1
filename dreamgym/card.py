"""Model cards generated from a world model's own records: config, metrics and build log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from dreamgym.files import read_json
from dreamgym.safe_files import check_model_folder

TEMPLATE = Path(__file__).parent / "assets" / "model_card_template.md"

IMAGE_CAPTIONS = {
    "reconstruction.png": "held-out frames (top) and V's reconstructions (bottom)",
    "open_loop.png": "M's open-loop predictions k steps ahead (bottom) against the truth (top)",
    "curves_vae.png": "V's training curves",
    "curves_rnn.png": "M's training curves",
    "curves_controller.png": (
        "the reference controller's CMA-ES run in the dream (return per generation, held-out scores)"
    ),
}

METRIC_LABELS = {
    "vae_recon_mse": "V reconstruction MSE per pixel (pixels in [0, 1])",
    "rnn_nll": "M mixture NLL per latent dimension",
    "reward_mae": "reward MAE per step",
    "reward_rmse": "reward RMSE per step",
    "return_correlation": "correlation of predicted and real episode returns",
    "return_mae": "episode return MAE",
    "termination_precision": "termination precision (p > 0.5)",
    "termination_recall": "termination recall (p > 0.5)",
    "termination_positives": "terminal steps in the held-out episodes",
    "open_loop_latent_mse_k1": "open-loop latent MSE, k = 1",
    "open_loop_latent_mse_k10": "open-loop latent MSE, k = 10",
    "open_loop_latent_mse_k50": "open-loop latent MSE, k = 50",
}


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# What each collection policy (data/policies.py) is, for the card's data line.
POLICY_DESCRIPTIONS = {
    "random": "temporally correlated random actions that lean towards the road ahead",
    "controller": "the previous round's controller plus exploration noise",
    "agent": "the previous round's agent plus exploration noise",
}


def _describe_collection(collect: dict[str, Any]) -> str:
    policy = collect.get("policy", "random")
    # The NAME of a "NAME[:ARG][?OPTIONS]" spec, without parse_policy_spec's registry check:
    # a card must also describe a model collected with a policy this install lacks.
    how = POLICY_DESCRIPTIONS.get(policy.partition("?")[0].partition(":")[0])
    seed, episodes = int(collect.get("seed", 0)), collect.get("episodes", "?")
    last = seed + int(episodes) - 1 if isinstance(episodes, int) else "?"
    return f"{episodes} episodes with `{policy}`" + (f" ({how})" if how else "") + f", seeds {seed}-{last}"


def _describe_build(build: dict[str, Any], metrics: dict[str, Any]) -> str:
    if not build.get("runs"):
        return "No build record was found next to the model."
    settings = build.get("settings", {})
    collect = settings.get("collect", {})
    rounds = settings.get("iterations") or []
    seconds: dict[str, float] = {}
    for run in build["runs"]:
        for stage, value in run["stage_seconds"].items():
            seconds[stage] = seconds.get(stage, 0.0) + value
    collect_runs = (
        read_json(Path(collect["out"]) / "collect_log.json", "collection log", expect=list, default=[])
        if collect.get("out") else []
    )
    if collect_runs:
        seconds["collect"] = sum(run["seconds"] for run in collect_runs)
    elif seconds.get("collect", 0.0) < 1.0:
        # The episodes were on disk before the build ran, from a collector that kept no log.
        seconds.pop("collect", None)
    hardware = build["runs"][-1]["hardware"]
    device = hardware.get("cuda") or f"CPU only, {hardware.get('cpu_threads')} threads ({hardware.get('processor')})"
    lines = [
        f"- **Data:** episodes of `{collect.get('env_id', 'CarRacing-v3')}` (up to {collect.get('max_steps', 1000)} "
        f"steps each): round 0, {_describe_collection(collect)}"
        + "".join(f"; round {k}, " + "; ".join(_describe_collection(c) for c in r.get("collect", []))
                  for k, r in enumerate(rounds, 1))
        + f". {metrics.get('train_episodes', '?')} for training, {metrics.get('heldout_episodes', '?')} held out.",
        f"- **V:** {json.dumps(settings.get('vae', {}))} (trained once, on round 0's episodes)",
        f"- **M:** {json.dumps(settings.get('rnn', {}))}"
        + "".join(f"; round {k} retrains it from scratch on all episodes so far with {json.dumps(r.get('rnn', {}))}"
                  for k, r in enumerate(rounds, 1)),
    ]
    if settings.get("controller"):
        lines.append(
            f"- **C:** CMA-ES in the dream, {json.dumps(settings['controller'])}"
            + "".join(f"; round {k}: {json.dumps(r.get('controller', {}))}" for k, r in enumerate(rounds, 1))
        )
    lines += [
        # Stages under a second were skipped as already done (a resumed build).
        "- **Time:** " + ", ".join(f"{stage} {value / 60:.1f} min" for stage, value in seconds.items() if value >= 1.0)
        + f" (total {sum(seconds.values()) / 60:.1f} min, summed over {len(build['runs'])} run(s) of the build)"
        + ("." if "collect" in seconds else "; the episodes were collected beforehand by `dreamgym collect`, "
           "whose time was not recorded."),
        f"- **Hardware:** {device}; {hardware.get('platform')}.",
    ]
    return "\n".join(lines)


def _eval_results(results: dict[str, Any]) -> list[EvalResult]:
    """The SB3-style ``model-index`` entry for a ``dreamgym evaluate`` results.json."""
    env_id = str(results.get("env_id") or "CarRacing-v3")
    try:
        value = f"{float(results['mean']):.2f} +/- {float(results['std']):.2f}"
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"results must hold numeric 'mean' and 'std' (as written by dreamgym evaluate): {err}"
        ) from err
    return [
        EvalResult(
            task_type="reinforcement-learning",
            task_name="reinforcement-learning",
            dataset_type=env_id,
            dataset_name=env_id,
            metric_type="mean_reward",
            metric_name="mean_reward",
            metric_value=value,
            verified=False,
        )
    ]


def _results_command(results: dict[str, Any], model_ref: str) -> str:
    """The ``dreamgym evaluate`` command that reproduces ``results``."""
    agent = "reference" if model_ref == "default" else "CONTROLLER_DIR"
    episodes, seed = results.get("episodes", 100), results.get("seed", 0)
    command = f"dreamgym evaluate {agent} --episodes {episodes} --seed {seed} --dream"
    if results.get("temperature") is not None:
        command += f" --temperature {results['temperature']}"
    return command


def make_model_card(
    model_dir: str | Path,
    model_ref: str,
    title: str = "DreamCarRacing-v0 world model",
    results: dict[str, Any] | str | Path | None = None,
) -> ModelCard:
    """Build the card of the world model in ``model_dir`` from its config, metrics and build record.

    Args:
        model_dir: a folder written by ``dreamgym build`` (config.json, metrics.json, build.json).
        model_ref: how users name the model in ``gym.make(..., model=...)``; ``"default"`` for
            the model shipped inside the package.
        title: the card's heading.
        results: a results.json written by ``dreamgym evaluate`` (or its dict: mean, std,
            episodes, env_id, agent); adds a ``model-index`` with the agent's mean_reward
            in the real env. Without it the card is unchanged.

    Raises:
        FileNotFoundError: ``model_dir`` does not exist or holds no ``config.json``.
    """
    model_dir = check_model_folder(model_dir, "nothing to write a card for")
    config = read_json(model_dir / "config.json", "world model config", default={})
    metrics = read_json(model_dir / "metrics.json", "metrics record", default={})
    build = read_json(model_dir / "build.json", "build record", default={})
    env_id = config.get("env_id", "CarRacing-v3")
    record: dict[str, Any] | None
    if results is None or isinstance(results, dict):
        record = results
    else:
        record = read_json(results, "results file")
    extra: dict[str, Any] = {}
    if record:
        extra = dict(model_name=model_ref, eval_results=_eval_results(record))
    card_data = ModelCardData(
        library_name="dreamgym",
        license="mit",
        tags=["world-model", "reinforcement-learning", "gymnasium", env_id, "dreamgym/DreamCarRacing-v0"],
        **extra,
    )
    rows = [(label, _format(metrics[key])) for key, label in METRIC_LABELS.items() if key in metrics]
    controller_record = read_json(model_dir / "controller" / "controller.json", "controller record", default={})
    config_path = build.get("config", "configs/carracing.yaml")
    metrics_model = "dreamgym/assets/DreamCarRacing-v0" if model_ref == "default" else model_ref
    metrics_data = build.get("settings", {}).get("collect", {}).get("out", "DATA")
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        title=title,
        env_id=env_id,
        config=config,
        model_ref=model_ref,
        build_command=f"dreamgym build --config {config_path}",
        build_description=_describe_build(build, metrics),
        metrics_command=f"dreamgym metrics {metrics_model} --data {metrics_data}",
        holdout_percent=10,
        images=[(name, caption) for name, caption in IMAGE_CAPTIONS.items() if (model_dir / name).is_file()],
        metrics_rows=rows,
        results=record or None,
        results_command=_results_command(record, model_ref) if record else None,
        sweep=read_json(model_dir / "temperature_sweep.json", "temperature sweep", default={}).get("rows") or None,
        # 3 * (z_dim + rnn_hidden) + 3: 867 for the paper's model; None without a shipped controller.
        controller_params=(3 * int(controller_record["obs_dim"]) + 3 if "obs_dim" in controller_record else None),
    )
