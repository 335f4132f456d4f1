"""Stage 1: train V, the convolutional VAE, on the frames of collected episodes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dreamgym.checkpoints import CHECKPOINT_DIR, epoch_checkpoint, load_checkpoint, resume_training, run_stage
from dreamgym.config import WorldModelConfig
from dreamgym.episodes import DataSource, check_store_preprocessing, open_store, stored_crop_dashboard
from dreamgym.errors import CheckpointError, DreamgymError, WouldOverwriteError
from dreamgym.files import read_json
from dreamgym.models.vae import vae_loss
from dreamgym.models.world_model import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, WorldModel
from dreamgym.training.common import batches, seed_everything, split_seeds
from dreamgym.training.metrics import evaluate_world_model, write_metrics
from dreamgym.validation import check_int, pick_device

STAGE = "vae"
# Held-out frames scored after every epoch for the curve; the full set is scored in metrics.json.
CURVE_HELDOUT_FRAMES = 1000


def load_frames(store: Any, train_seeds: list[int], heldout_seeds: list[int]) -> tuple[np.ndarray, np.ndarray, int]:
    """All frames of the training and of the held-out episodes, in one pass over the store.

    Returns (train frames, held-out frames), each uint8 (N, 64, 64, 3), and the number of
    training episodes read (corrupt ones are skipped).
    """
    train, heldout = set(train_seeds), set(heldout_seeds)
    train_chunks, heldout_chunks = [], []
    for episode in store.episodes(skip_corrupt=True):
        seed = int(episode.seed)
        if seed in train:
            train_chunks.append(np.asarray(episode.frames, dtype=np.uint8))
        elif seed in heldout:
            heldout_chunks.append(np.asarray(episode.frames, dtype=np.uint8))
    empty = np.zeros((0, 64, 64, 3), dtype=np.uint8)
    join = lambda chunks: np.concatenate(chunks) if chunks else empty  # noqa: E731
    return join(train_chunks), join(heldout_chunks), len(train_chunks)


def to_images(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 64, 64, 3) -> float (N, 3, 64, 64) in [0, 1]."""
    return frames.permute(0, 3, 1, 2).float().div_(255.0)


def vae_step(
    model: WorldModel, optimizer: torch.optim.Optimizer, images: torch.Tensor, kl_free_bits: float
) -> tuple[float, float, float]:
    """One gradient step of V on a batch of images; returns (loss, reconstruction, KL) as floats."""
    reconstruction, mu, logvar = model.vae(images)
    loss, recon, kl = vae_loss(images, reconstruction, mu, logvar, kl_free_bits)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), recon.item(), kl.item()


@torch.no_grad()
def reconstruction_mse(model: WorldModel, frames: torch.Tensor, batch_size: int = 256) -> float | None:
    """Per-pixel MSE (pixels in [0, 1]) of V's reconstruction from ``mu``; None for no frames."""
    if len(frames) == 0:
        return None
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(0, len(frames), batch_size):
        images = to_images(frames[i : i + batch_size].to(model.device))
        mu, _ = model.vae.encode(images)
        total += (model.vae.decode(mu) - images).pow(2).sum().item()
    model.train(was_training)
    return total / (len(frames) * frames[0].numel())


def _prepare_frames(
    store: Any,
    train_seeds: list[int],
    heldout_seeds: list[int],
    max_frames: int | None,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    frames_np, heldout_np, n_episodes = load_frames(store, train_seeds, heldout_seeds)
    total = len(frames_np)
    if max_frames is not None and total > max_frames:
        # Chosen once from `seed`, so a resumed run trains on the same subset.
        keep = np.sort(np.random.default_rng([seed, 0xF2A]).choice(total, max_frames, replace=False))
        frames_np = frames_np[keep]
    if len(heldout_np) > CURVE_HELDOUT_FRAMES:
        keep = np.linspace(0, len(heldout_np) - 1, CURVE_HELDOUT_FRAMES).astype(np.int64)
        heldout_np = heldout_np[keep]
    frames = torch.from_numpy(frames_np)
    if device.type == "cuda" and frames.numel() < 4 * 2**30:
        frames = frames.to(device)  # saves a host-to-device copy per batch
    record = {
        "train_episodes": n_episodes,
        "train_frames": total,
        "vae_frames_used": len(frames_np),
        "max_frames": max_frames,
    }
    return frames, torch.from_numpy(heldout_np), record


def _resolve_config(config: WorldModelConfig | None, saved: dict[str, Any] | None, out: Path) -> WorldModelConfig:
    if saved is None:
        # A copy: the training record written into it must not leak into the caller's config.
        return WorldModelConfig.from_dict(config.to_dict()) if config is not None else WorldModelConfig()
    saved_config = WorldModelConfig.from_dict(saved)
    if config is not None:
        mine = {k: v for k, v in config.to_dict().items() if k != "training"}
        theirs = {k: v for k, v in saved_config.to_dict().items() if k != "training"}
        if mine != theirs:
            changed = sorted(k for k in mine if mine[k] != theirs.get(k))
            raise CheckpointError(
                f"{out / CHECKPOINT_DIR} holds a V checkpoint with a different config (fields {changed} differ); "
                "use another output folder or delete the checkpoint to start over"
            )
    return saved_config


def _finished_model(out: Path, checkpoint_weights: dict[str, torch.Tensor] | None, done: bool) -> WorldModel | None:
    """The world model already in ``out`` if V's work is done and it holds this checkpoint's V, else None.

    Raises:
        WouldOverwriteError: ``out`` holds a world model whose M was trained (``train-rnn``
            wrote it), which this run would replace by a bundle with an untrained M.
    """
    config_path = out / MODEL_CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        trained = read_json(config_path, f"{MODEL_CONFIG_FILE} of world model {str(out)!r}").get("training", {})
    except (OSError, ValueError):
        trained = {}
    has_m = isinstance(trained, dict) and "rnn" in trained
    if done and checkpoint_weights is not None:
        try:
            existing = WorldModel.from_pretrained(out)
        except (DreamgymError, ValueError, OSError):
            existing = None  # a save that did not finish: written again below, unless M is at stake
        if existing is not None:
            saved = [(k, v) for k, v in existing.state_dict().items() if k.startswith("vae.")]
            if all(k in checkpoint_weights and torch.equal(v, checkpoint_weights[k].to(v.dtype)) for k, v in saved):
                return existing
    if has_m:
        raise WouldOverwriteError(
            f"{out} holds a finished world model (its {MODEL_CONFIG_FILE} records M's training) "
            + ("whose V is not the one checkpointed there" if done else "and train-vae has epochs left to train")
            + "; training V would replace it with an untrained M: write to another --out, or delete "
            f"{out / MODEL_CONFIG_FILE} and {out / MODEL_WEIGHTS_FILE} to start the model over"
        )
    return None


def _epoch_function(
    model: WorldModel,
    optimizer: torch.optim.Optimizer,
    frames: torch.Tensor,
    heldout: torch.Tensor,
    batch_size: int,
    epochs: int,
    seed: int,
    device: torch.device,
    progress: bool,
) -> Callable[[int], dict[str, Any]]:
    """``epoch(index)``: one pass of V over ``frames`` in the order keyed by ``(seed, index + 1)``; its log entry."""

    def epoch(index: int) -> dict[str, Any]:
        rng = seed_everything(seed, index + 1)
        model.train()
        started = time.perf_counter()
        sums = np.zeros(3)
        order = batches(len(frames), batch_size, rng)
        bar = tqdm(order, desc=f"V epoch {index + 1}/{epochs}", disable=not progress, leave=False)
        for rows in bar:
            images = to_images(frames[torch.from_numpy(rows).to(frames.device)].to(device, non_blocking=True))
            loss, recon, kl = vae_step(model, optimizer, images, model.config.kl_free_bits)
            sums += np.array([loss, recon, kl]) * len(rows)
            bar.set_postfix(loss=f"{loss:.1f}", recon=f"{recon:.1f}", kl=f"{kl:.2f}")
        bar.close()
        mean = sums / len(frames)
        return {
            "epoch": index + 1,
            "loss": float(mean[0]),
            "recon": float(mean[1]),
            "kl": float(mean[2]),
            "heldout_recon_mse": reconstruction_mse(model, heldout),
            "seconds": time.perf_counter() - started,
        }

    return epoch


def train_vae(
    data: DataSource,
    out: str | Path,
    config: WorldModelConfig | None = None,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-4,
    holdout: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_frames: int | None = None,
    progress: bool = True,
) -> WorldModel:
    """Train V on the frames of the collected episodes in ``data`` and save a world model to ``out``.

    The paper's recipe: Adam, batches of 100 frames, the summed squared error plus a KL
    floored at ``config.kl_free_bits``. A checkpoint is written after every epoch to
    ``out/checkpoints/vae.safetensors`` (+ ``vae_state.json``); calling again with the same
    ``out`` resumes after the last finished epoch, and skips training if all ``epochs`` are
    done, leaving the saved world model as it is. An interrupt loses at most the epoch in
    progress. A world model in ``out`` whose M was trained (by :func:`train_rnn`) is never
    overwritten: with V's epochs all done the call does nothing, otherwise it raises
    :class:`~dreamgym.errors.WouldOverwriteError` before training. The curve goes to
    ``out/logs/vae.json`` and held-out scores to ``out/metrics.json``.

    Args:
        data: a folder written by ``dreamgym collect`` or an ``EpisodeStore``.
        out: output folder; receives a world model (``save_pretrained``) whose V is
            trained and whose M is freshly initialised, ready for :func:`train_rnn`.
        config: sizes of the model; None means the paper's (or the checkpoint's on resume),
            with ``crop_dashboard`` as the data's frames were collected.
        epochs: total number of passes over the training frames.
        batch_size: frames per gradient step.
        lr: Adam learning rate.
        holdout: fraction of episodes (split by episode seed) kept out of training.
        seed: seeds the model init, the shuffling and the split.
        device: torch device; None picks CUDA when available, else CPU.
        max_frames: train on a random subset of at most this many frames.
        progress: show a tqdm progress bar.

    Returns:
        the trained world model, in eval mode on ``device``.
    """
    if epochs < 0 or batch_size <= 0:
        raise ValueError(f"epochs must be >= 0 and batch_size > 0, got epochs={epochs}, batch_size={batch_size}")
    if max_frames is not None:
        max_frames = check_int("max_frames", max_frames, 1)
    out = Path(out)
    device = pick_device(device)
    store = open_store(data)
    train_seeds, heldout_seeds = split_seeds(store.seeds(), holdout, seed)
    if not train_seeds:
        raise ValueError(f"no training episodes left after holding out {holdout:.0%} of {len(store)}")

    checkpoint = load_checkpoint(out, STAGE)
    stored_crop = stored_crop_dashboard(store)
    if config is None and checkpoint is None and stored_crop is not None:
        config = WorldModelConfig(crop_dashboard=stored_crop)  # V sees frames as they were collected
    config = _resolve_config(config, checkpoint[2]["config"] if checkpoint else None, out)
    check_store_preprocessing(store, config.crop_dashboard, f"the V of {out}")

    seed_everything(seed)
    model = WorldModel(config)
    optimizer = torch.optim.Adam(model.vae.parameters(), lr=lr)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        start_epoch, history = resume_training(model, optimizer, checkpoint, lr, device)
    model.to(device)

    # A finished stage does nothing; above all it never writes a V-only bundle over a finished one.
    done = start_epoch >= epochs and checkpoint is not None
    finished = _finished_model(out, checkpoint[0] if checkpoint else None, done)
    if finished is not None:
        if progress:
            print(f"V is already trained for {start_epoch} epoch(s) in {out}: nothing to do", file=sys.stderr)
        return finished.to(device).eval()

    if done and checkpoint is not None:
        # Nothing left to train: the frames are not even loaded.
        training_record = dict(checkpoint[2]["training"])
        frames = heldout = torch.zeros((0, 64, 64, 3), dtype=torch.uint8)
    else:
        frames, heldout, training_record = _prepare_frames(store, train_seeds, heldout_seeds, max_frames, seed, device)
        training_record.update(epochs=epochs, batch_size=batch_size, lr=lr, holdout=holdout, seed=seed)
        if len(frames) == 0:
            raise ValueError(f"the {len(train_seeds)} training episodes in {data!s} hold no readable frames")
    epoch = _epoch_function(model, optimizer, frames, heldout, batch_size, epochs, seed, device, progress)
    line = (
        f"V epoch {{epoch}}/{epochs}: loss {{loss:.2f}} recon {{recon:.2f}} kl {{kl:.2f}} "
        "held-out mse {heldout_recon_mse}"
    )
    run_stage(
        out, STAGE, what="V", unit="epoch", done=start_epoch, total=epochs, history=history, step=epoch,
        save=epoch_checkpoint(out, STAGE, model, optimizer, config=config.to_dict(), training=training_record),
        report=line if progress else None,
    )
    model.config.training = {**model.config.training, "vae": {**training_record, "epochs_done": len(history)}}
    model.eval()
    model.save_pretrained(out)
    metrics = evaluate_world_model(model, store, holdout=holdout, seed=seed, parts=("vae",))
    metrics.update(train_frames=training_record["train_frames"], vae_frames_used=training_record["vae_frames_used"])
    write_metrics(out, metrics)
    return model
