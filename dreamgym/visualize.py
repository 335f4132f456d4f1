"""Pictures of a world model: real vs reconstruction vs dream videos, and inspection plots.

- :func:`make_video`: from one real start, drive the real CarRacing with an agent and
  record the preprocessed frame, V's reconstruction and the action; then dream open loop
  from the same start (V's ``z`` of the first frame, ``h = 0``) under the same actions.
  Each video frame shows the three side by side.
- :func:`inspect_world_model`: ``reconstruction.png`` (held-out frames vs V),
  ``open_loop.png`` (k-step open-loop predictions of M vs the truth) and training curves
  from the JSON logs written by ``train-vae``, ``train-rnn`` and ``train-controller``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image, ImageDraw

from dreamgym.agents.specs import check_agent_fits, load_agent, parse_agent_spec
from dreamgym.envs.common import upscale
from dreamgym.envs.observer import teacher_forced_states
from dreamgym.envs.real import RealCarRacingEnv
from dreamgym.episodes import load_episodes, open_store
from dreamgym.files import read_json
from dreamgym.hub import load_world_model
from dreamgym.safe_files import check_model_folder
from dreamgym.training.common import split_seeds
from dreamgym.training.metrics import encode_frames, mixture_mean

PANEL_SCALE = 4
LABEL_HEIGHT = 16  # keeps the frame height a multiple of 16 for video codecs
PANEL_LABELS = ("real", "V reconstruction", "dream")
OPEN_LOOP_KS = (0, 1, 5, 10, 20, 50)
VIDEO_FPS = 25


# ----------------------------------------------------------------------------- video
def record_real(
    world_model: Any, act: Callable[[np.ndarray], np.ndarray], seed: int, steps: int
) -> dict[str, np.ndarray]:
    """Drive RealCarRacing-v0 for up to ``steps`` steps from ``reset(seed)``.

    Returns ``frames`` (T+1, 64, 64, 3) real preprocessed frames, ``recon`` V's
    reconstructions of them, ``z`` V's means (T+1, z_dim) and ``actions`` (T, 3) taken.
    Stops early when the episode ends.
    """
    cfg = world_model.config
    env = RealCarRacingEnv(model=world_model)
    frames: list[Any] = []  # the observer's frames, never None once the env is reset
    zs, actions = [], []
    try:
        obs, _ = env.reset(seed=seed)
        for t in range(steps + 1):
            frames.append(env.observer.frame)
            zs.append(np.asarray(obs[: cfg.z_dim], dtype=np.float32))
            if t == steps:
                break
            action = np.asarray(act(obs), dtype=np.float32).reshape(3)
            actions.append(action)
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                frames.append(env.observer.frame)
                zs.append(np.asarray(obs[: cfg.z_dim], dtype=np.float32))
                break
    finally:
        env.close()
    z = np.stack(zs)
    recon = world_model.decode(torch.from_numpy(z)).cpu().numpy()
    taken = np.asarray(actions, np.float32).reshape(-1, 3)
    return {"frames": np.stack(frames), "recon": recon, "z": z, "actions": taken}


def dream_open_loop(world_model: Any, z0: np.ndarray, actions: np.ndarray, temperature: float = 1.0,
                    seed: int = 0) -> np.ndarray:
    """Dream from ``z0`` with ``h = 0`` under ``actions``; return the decoded frames (T+1, 64, 64, 3)."""
    from dreamgym.envs.dynamics import LatentDream

    dream = LatentDream(world_model, 1, temperature)
    slot = np.zeros(1, dtype=np.int64)
    dream.reset(slot, np.array([seed], dtype=np.uint64))
    hidden = np.zeros((1, dream.hidden), np.float32)
    dream.set_state(slot, np.asarray(z0, np.float32).reshape(1, -1), hidden, hidden)
    device = world_model.device
    with torch.inference_mode():
        zs = [dream.z[0].clone()]
        for action in actions:
            out = dream.step(torch.as_tensor(np.asarray(action, np.float32)[None], device=device))
            zs.append(out.z[0].clone())
    return world_model.decode(torch.stack(zs)).cpu().numpy()


def _draw_label(image: np.ndarray, text: str, x: int, y: int = 2) -> None:
    pil = Image.fromarray(image)
    ImageDraw.Draw(pil).text((x, y), text, fill=(255, 255, 255))
    image[...] = np.asarray(pil)


def compose_frame(
    panels: Sequence[np.ndarray], labels: Sequence[str], step: int, scale: int = PANEL_SCALE
) -> np.ndarray:
    """Panels (64x64x3 each) upscaled and side by side under a black label bar naming each and the step."""
    big = [upscale(p, scale) for p in panels]
    height, width = big[0].shape[:2]
    canvas = np.zeros((LABEL_HEIGHT + height, width * len(big), 3), dtype=np.uint8)
    for i, (panel, label) in enumerate(zip(big, labels, strict=True)):
        canvas[LABEL_HEIGHT:, i * width : (i + 1) * width] = panel
        _draw_label(canvas, label, i * width + 4)
    # The step goes under the first label, where it never overlaps a panel's name at small scales.
    _draw_label(canvas, f"t={step}", width // 2)
    return canvas


def panel_slices(scale: int = PANEL_SCALE, panels: int = 3) -> list[tuple[slice, slice]]:
    """(rows, cols) of each panel's picture in a composed frame (below the label bar)."""
    width = 64 * scale
    return [(slice(LABEL_HEIGHT, LABEL_HEIGHT + width), slice(i * width, (i + 1) * width)) for i in range(panels)]


def write_frames(out: str | os.PathLike, frames: np.ndarray, fps: int = VIDEO_FPS) -> Path:
    """Write frames as MP4 (ffmpeg) or GIF, by ``out``'s suffix."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".gif":
        iio.imwrite(out, frames, duration=1000 / fps, loop=0)
    elif suffix in (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm"):
        try:
            import imageio_ffmpeg  # noqa: F401  (imageio's MP4 writer needs it; tell how to get it)
        except ImportError as err:
            raise ValueError(
                "writing a video needs imageio-ffmpeg: pip install imageio-ffmpeg (or write a .gif)"
            ) from err
        iio.imwrite(out, frames, plugin="FFMPEG", fps=fps, macro_block_size=16)
    else:
        raise ValueError(f"unknown video format {out.suffix!r}: name the output .mp4 or .gif")
    return out


def make_video(
    agent: str | None = None,
    steps: int = 300,
    out: str | os.PathLike = "dream.mp4",
    model: Any = None,
    seed: int = 0,
    temperature: float = 1.0,
    scale: int = PANEL_SCALE,
    allow_pickle: bool = False,
) -> tuple[Path, np.ndarray]:
    """Real | reconstruction | dream video of one start; see the module doc.

    Args:
        agent: agent spec as in ``dreamgym evaluate`` (controller folder, ``reference``,
            ``sb3:agent.zip``); None: the reference controller.
        steps: real steps from the start, and as many dream steps.
        out: the video file, ``.mp4`` or ``.gif``.
        model: world model (folder, Hub id or WorldModel); None: the shipped default.
        seed: seed of the real start (the track).
        temperature: the dream's temperature.
        scale: how many screen pixels each of a panel's 64x64 pixels becomes.
        allow_pickle: load an SB3 agent's zip by unpickling it (only for a file you trust).

    Returns:
        the written path and the composed frames (N, H, W, 3).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    spec = agent or "reference"
    act, loaded = load_agent(parse_agent_spec(spec, allow_pickle=allow_pickle))
    world_model = load_world_model(model)
    check_agent_fits(loaded, world_model, spec)
    real = record_real(world_model, act, seed, steps)
    dream = dream_open_loop(world_model, real["z"][0], real["actions"], temperature, seed)
    frames = np.stack([
        compose_frame((real["frames"][t], real["recon"][t], dream[t]), PANEL_LABELS, t, scale)
        for t in range(len(dream))
    ])
    return write_frames(out, frames), frames


# --------------------------------------------------------------------------- inspect
def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files, no window)."""
    import matplotlib  # deferred: half a second to import, and only the pictures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _heldout_episodes(data: Any, count: int) -> list[Any]:
    store = open_store(data)
    _, heldout = split_seeds(store.seeds())
    if not heldout:  # a one-episode store holds nothing out
        heldout = sorted(store.seeds())
    episodes = []
    for episode in load_episodes(store, heldout):
        episodes.append(episode)
        if len(episodes) >= count:
            break
    return episodes


def _image_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str], col_labels: Sequence[str],
                title: str, path: Path) -> Path:
    plt = _pyplot()
    n_rows, n_cols = len(rows), len(rows[0])
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(col_labels[c], fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reconstructions(world_model: Any, data: Any, out: Path, columns: int = 8) -> Path:
    """Held-out frames (top) against V's reconstructions from ``mu`` (bottom)."""
    episodes = _heldout_episodes(data, columns)
    picks: list[tuple[int, int, np.ndarray]] = []
    per_episode = max(1, -(-columns // len(episodes)))
    for episode in episodes:
        frames = np.asarray(episode.frames)
        # Spread over the episode, skipping its first frames (the zoom-in at the start all look alike).
        for t in ((np.arange(per_episode) + 0.5) / per_episode * (len(frames) - 1)).round().astype(int):
            picks.append((episode.seed, int(t), frames[t]))
    picks = picks[:columns]
    real = np.stack([f for _, _, f in picks])
    mu, _ = encode_frames(world_model, real)
    recon = world_model.decode(mu).cpu().numpy()
    mse = float(((recon.astype(np.float32) - real) / 255).__pow__(2).mean())
    return _image_grid([list(real), list(recon)], ["real", "V recon"], [f"ep {s} t={t}" for s, t, _ in picks],
                       f"held-out frames vs V's reconstructions (pixel MSE {mse:.4f})", out / "reconstruction.png")


@torch.no_grad()
def open_loop_frames(world_model: Any, frames: np.ndarray, actions: np.ndarray, start: int,
                     ks: Sequence[int] = OPEN_LOOP_KS) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Truth and M's open-loop predictions of frames ``start + k``.

    M is warmed up teacher forced on the real ``z[0..start-1]``, fed the real ``z[start]``,
    then its own mixture-mean predictions under the real actions, as
    :func:`dreamgym.training.metrics.open_loop_errors` does; predictions are decoded by V.
    """
    rnn = world_model.rnn
    device = world_model.device
    mu, _ = encode_frames(world_model, frames)
    acts = torch.as_tensor(np.asarray(actions, np.float32), device=device)
    h_all, c_all = teacher_forced_states(rnn, mu[:start], acts[:start])
    h, c = h_all[start : start + 1], c_all[start : start + 1]
    z = mu[start : start + 1]
    predicted = {0: z}
    for j in range(max(ks)):
        h, c = rnn.step(z, acts[start + j : start + j + 1], h, c)
        z = mixture_mean(rnn.heads(h))
        predicted[j + 1] = z
    preds = world_model.decode(torch.cat([predicted[k] for k in ks])).cpu().numpy()
    return [frames[start + k] for k in ks], list(preds)


def plot_open_loop(world_model: Any, data: Any, out: Path, ks: Sequence[int] = OPEN_LOOP_KS, warmup: int = 50) -> Path:
    """Truth (top) vs M's k-step open-loop prediction (bottom) for one held-out episode."""
    episode = _heldout_episodes(data, 1)[0]
    frames, actions = np.asarray(episode.frames), np.asarray(episode.actions)
    steps = len(actions)
    ks = [k for k in ks if k <= steps] or [0]
    start = max(0, min(warmup, steps - max(ks)))
    truth, preds = open_loop_frames(world_model, frames, actions, start, ks)
    return _image_grid([truth, preds], ["truth", "M open loop"], [f"k={k}" for k in ks],
                       f"episode {episode.seed}: open loop from step {start} (teacher forced before)",
                       out / "open_loop.png")


def read_log(path: Path) -> list[dict[str, Any]]:
    """The entries of a training log (``logs/<stage>.json``, or a record holding one, such as ``validation.json``)."""
    data = read_json(path, "training log", expect=(list, dict))
    if isinstance(data, dict):  # a log wrapped in an object, e.g. {"history": [...]}
        data = next((v for v in data.values() if isinstance(v, list)), [])
    return [row for row in data if isinstance(row, dict)]


def plot_curves(history: list[dict[str, Any]], title: str, path: Path) -> Path | None:
    """One small panel per numeric key of a per-epoch (or per-generation) log; None if nothing to plot."""
    plt = _pyplot()
    x_key = next((k for k in ("epoch", "generation", "step", "iteration") if history and k in history[0]), None)
    keys = sorted({k for row in history for k, v in row.items()
                   if k != x_key and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not history or not keys:
        return None
    x = [row.get(x_key, i + 1) if x_key is not None else i + 1 for i, row in enumerate(history)]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):  # the grid may have spare panels
        # Sparse keys (e.g. held-out scores every few generations) are plotted where present.
        points = [(xi, row[key]) for xi, row in zip(x, history, strict=True) if isinstance(row.get(key), (int, float))]
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o" if len(ys) < 30 else None, markersize=3)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel(x_key or "entry", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _controller_log(folder: Path) -> Path | None:
    for candidate in (folder / "logs" / "cmaes.json", folder / "training_log.json"):
        if candidate.is_file():
            return candidate
    return None


def inspect_world_model(
    model_dir: str | os.PathLike,
    data: Any = None,
    out: str | os.PathLike | None = None,
    controller: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Write the inspection images of a world model folder; return the paths written.

    ``data`` is an episode store folder or a store object (an ``EpisodeStore``, or the
    ``EpisodeSubset`` of a build round's episodes); its held-out episodes are drawn.
    """
    model_dir = check_model_folder(model_dir, "nothing to inspect")
    out = Path(out) if out is not None else model_dir
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if data is None:
        log("no --data given: skipping reconstruction.png and open_loop.png")
    elif isinstance(data, (str, os.PathLike)) and not Path(data).is_dir():
        log(f"no episode store at {str(data)!r}: skipping reconstruction.png and open_loop.png")
    else:
        world_model = load_world_model(model_dir).eval()
        written.append(plot_reconstructions(world_model, data, out))
        written.append(plot_open_loop(world_model, data, out))
    for stage in ("vae", "rnn"):
        path = model_dir / "logs" / f"{stage}.json"
        if not path.is_file():
            log(f"no training log {path}: skipping curves_{stage}.png")
            continue
        drawn = plot_curves(read_log(path), f"{stage.upper()} training ({path})", out / f"curves_{stage}.png")
        if drawn is None:
            log(f"{path} holds no numeric entries: skipping curves_{stage}.png")
        else:
            written.append(drawn)
    if controller is not None:
        found = _controller_log(Path(controller))
        if found is None:
            log(
                f"no controller log (logs/cmaes.json or training_log.json) in {controller}: "
                "skipping curves_controller.png"
            )
        else:
            drawn = plot_curves(read_log(found), f"controller CMA-ES ({found})", out / "curves_controller.png")
            if drawn is not None:
                written.append(drawn)
    for path in written:
        log(f"wrote {path}")
    return written
