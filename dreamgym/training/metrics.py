"""How good a world model is on held-out episodes: V's reconstructions, M's predictions, M's rollouts.

Everything here scores the episodes :func:`~dreamgym.training.common.split_seeds` holds out,
so the numbers written by ``train-vae``, ``train-rnn`` and a later evaluation agree on what
"held out" means. ``z`` is always V's mean ``mu`` (no sampling), so the scores are
deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgym.envs.observer import teacher_forced_states
from dreamgym.episodes import (
    DataSource,
    check_store_preprocessing,
    episode_frame_counts,
    load_episodes,
    open_store,
)
from dreamgym.files import update_json
from dreamgym.models.mdnrnn import MDNRNN, MDNOutput, mixture_nll
from dreamgym.models.world_model import WorldModel
from dreamgym.training.common import split_seeds

METRICS_FILE = "metrics.json"
OPEN_LOOP_HORIZONS = (1, 10, 50)
ENCODE_BATCH = 256


def mixture_mean(out: MDNOutput) -> torch.Tensor:
    """M's point prediction of the next ``z``: the mixture mean ``sum_k pi_k mu_k`` per dim.

    The mixture mean (rather than the mean of the likeliest component) is the prediction
    that minimises the expected squared error under M's own distribution, which is what the
    open-loop MSE measures.
    """
    return (out.log_pi.exp() * out.mu).sum(-1)


@torch.no_grad()
def encode_frames(model: WorldModel, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """V's (mu, logvar) of uint8 frames (N, 64, 64, 3), in batches, on the model's device."""
    mus, logvars = [], []
    for i in range(0, len(frames), ENCODE_BATCH):
        mu, logvar = model.encode(np.ascontiguousarray(frames[i : i + ENCODE_BATCH]))
        mus.append(mu.clone())
        logvars.append(logvar.clone())
    return torch.cat(mus), torch.cat(logvars)


@torch.no_grad()
def teacher_forced(rnn: MDNRNN, z: torch.Tensor, actions: torch.Tensor) -> MDNOutput:
    """M over one episode fed the real latents: z (T+1, z_dim), actions (T, action_dim) -> outputs (T, ...)."""
    out, _ = rnn(z[None, :-1], actions[None])
    return MDNOutput(*(t[0] for t in out))


@torch.no_grad()
def open_loop_errors(
    rnn: MDNRNN, z: torch.Tensor, actions: torch.Tensor, horizons: Sequence[int] = OPEN_LOOP_HORIZONS, starts: int = 8
) -> dict[int, list[float]]:
    """Squared errors of M's k-step open-loop predictions along one episode.

    For a start ``t`` M is warmed up on the real ``z[0..t-1]`` (teacher forced) to reach
    ``h_t``, then fed the real ``z_t`` and its own mixture-mean predictions after that,
    under the real actions, for ``k`` steps; the prediction of ``z[t+k]`` is scored against
    V's ``mu`` by the mean squared error over dims. Up to ``starts`` start points per horizon
    are spread evenly over the episode.

    Returns ``{k: [mse per start]}``; a horizon longer than the episode has no entries.
    """
    steps = len(actions)
    # (h_t, c_t) for every t, by stepping the LSTM cell: nn.LSTM only returns h.
    h_all, c_all = teacher_forced_states(rnn, z, actions)
    errors: dict[int, list[float]] = {}
    for k in horizons:
        if k > steps:
            errors[k] = []
            continue
        t0 = np.unique(np.linspace(0, steps - k, num=min(starts, steps - k + 1)).round().astype(np.int64))
        index = torch.from_numpy(t0).to(z.device)
        h, c, z_in = h_all[index], c_all[index], z[index]
        for j in range(k):
            h, c = rnn.step(z_in, actions[index + j], h, c)
            z_in = mixture_mean(rnn.heads(h))
        errors[k] = (z_in - z[index + k]).pow(2).mean(-1).tolist()
    return errors


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


@torch.no_grad()
def evaluate_world_model(
    model: WorldModel,
    data: DataSource,
    holdout: float = 0.1,
    seed: int = 0,
    max_episodes: int | None = None,
    parts: Sequence[str] = ("vae", "rnn"),
    open_loop_starts: int = 8,
) -> dict[str, Any]:
    """Score ``model`` on the held-out episodes of ``data``.

    Keys (None where undefined, e.g. no held-out episode or no positive):

    - ``vae_recon_mse``: per-pixel MSE (pixels in [0, 1]) of V's reconstruction from ``mu``.
    - ``rnn_nll``: M's mixture negative log-likelihood per latent dim and step, teacher forced.
    - ``reward_mae``, ``reward_rmse``: per-step error of M's reward head, teacher forced.
    - ``return_correlation``: Pearson correlation of predicted (sum of teacher-forced reward
      predictions) and real episode returns; None with fewer than 2 episodes. ``return_mae``.
    - ``termination_precision``, ``termination_recall``: of ``sigmoid(logit) > 0.5`` against
      real terminations; ``termination_positives``, ``termination_predicted``: their counts.
    - ``open_loop_latent_mse_k{1,10,50}``: see :func:`open_loop_errors` (mixture-mean rollouts).
    - ``train_episodes``, ``train_frames`` (from the store's manifest), ``heldout_episodes``,
      ``heldout_frames``: counts; the held-out ones are those scored (after ``max_episodes``,
      without corrupt shards), the training ones those of the split.

    Args:
        model: the world model to score.
        data: a folder written by ``dreamgym collect`` or an ``EpisodeStore``.
        holdout: the held-out fraction used in training (the split is recomputed from it).
        seed: the split seed used in training.
        max_episodes: score only the first this many held-out episodes (seed order).
        parts: ``"vae"`` and/or ``"rnn"``: which networks to score.
        open_loop_starts: start points per held-out episode and horizon for the rollouts.
    """
    unknown = set(parts) - {"vae", "rnn"}
    if unknown:
        raise ValueError(f"parts must be among 'vae' and 'rnn', got {sorted(unknown)}")
    store = open_store(data)
    check_store_preprocessing(store, model.config.crop_dashboard, "this world model's V")
    train_seeds, heldout_seeds = split_seeds(store.seeds(), holdout, seed)
    if max_episodes is not None:
        heldout_seeds = heldout_seeds[:max_episodes]
    was_training = model.training
    model.eval()
    scores = _HeldOutScores()
    for episode in load_episodes(store, heldout_seeds):
        frames = np.asarray(episode.frames)
        scores.n_episodes += 1
        scores.n_frames += len(frames)
        mu, _ = encode_frames(model, frames)
        if "vae" in parts:
            scores.add_reconstructions(model, frames, mu)
        if "rnn" in parts and len(episode.actions):
            scores.add_predictions(model, episode, mu, open_loop_starts)
    model.train(was_training)

    metrics: dict[str, Any] = {
        "holdout": holdout,
        "split_seed": seed,
        "train_episodes": len(train_seeds),
        "train_frames": episode_frame_counts(store, train_seeds),
        "heldout_episodes": scores.n_episodes,
        "heldout_frames": scores.n_frames,
    }
    if "vae" in parts:
        pixels = scores.n_frames * 3 * model.config.image_size**2
        metrics["vae_recon_mse"] = _finite(_ratio(scores.recon_sq, pixels))
    if "rnn" in parts:
        metrics.update(scores.rnn_metrics())
    return metrics


class _HeldOutScores:
    """The sums :func:`evaluate_world_model` scores from, gathered episode by episode."""

    def __init__(self) -> None:
        self.n_episodes = self.n_frames = 0
        self.recon_sq = 0.0
        self.nll_sum, self.n_steps = 0.0, 0
        self.reward_abs, self.reward_sq = 0.0, 0.0
        self.true_returns: list[float] = []
        self.pred_returns: list[float] = []
        self.tp = self.fp = self.fn = 0
        self.open_loop: dict[int, list[float]] = {k: [] for k in OPEN_LOOP_HORIZONS}

    def add_reconstructions(self, model: WorldModel, frames: np.ndarray, mu: torch.Tensor) -> None:
        """V's squared reconstruction error of an episode's ``frames`` from their ``mu``."""
        for i in range(0, len(frames), ENCODE_BATCH):
            batch = torch.as_tensor(frames[i : i + ENCODE_BATCH], device=model.device)
            images = batch.permute(0, 3, 1, 2).float() / 255
            self.recon_sq += (model.vae.decode(mu[i : i + ENCODE_BATCH]) - images).pow(2).sum().item()

    def add_predictions(self, model: WorldModel, episode: Any, mu: torch.Tensor, open_loop_starts: int) -> None:
        """M's teacher-forced errors on an episode of at least one step (``mu``: V's means of its frames)."""
        actions = torch.as_tensor(np.asarray(episode.actions, dtype=np.float32), device=model.device)
        rewards = np.asarray(episode.rewards, dtype=np.float64)
        terminated = np.asarray(episode.terminated, dtype=bool)
        out = teacher_forced(model.rnn, mu, actions)
        self.nll_sum += mixture_nll(out, mu[1:]).mean(-1).sum().item()
        self.n_steps += len(episode.actions)
        pred_reward = out.reward.double().cpu().numpy()
        self.reward_abs += np.abs(pred_reward - rewards).sum()
        self.reward_sq += np.square(pred_reward - rewards).sum()
        self.true_returns.append(rewards.sum())
        self.pred_returns.append(pred_reward.sum())
        predicted = (torch.sigmoid(out.termination_logit) > 0.5).cpu().numpy()
        self.tp += int((predicted & terminated).sum())
        self.fp += int((predicted & ~terminated).sum())
        self.fn += int((~predicted & terminated).sum())
        for k, errs in open_loop_errors(model.rnn, mu, actions, starts=open_loop_starts).items():
            self.open_loop[k].extend(errs)

    def rnn_metrics(self) -> dict[str, Any]:
        """M's scores from the sums so far."""
        t_ret, p_ret = np.array(self.true_returns), np.array(self.pred_returns)
        tp, fp, fn, n_steps = self.tp, self.fp, self.fn, self.n_steps
        metrics = {
            "rnn_nll": _finite(_ratio(self.nll_sum, n_steps)),
            "reward_mae": _finite(_ratio(self.reward_abs, n_steps)),
            "reward_rmse": _finite(math.sqrt(self.reward_sq / n_steps)) if n_steps else None,
            "return_correlation": _pearson(p_ret, t_ret),
            "return_mae": float(np.abs(p_ret - t_ret).mean()) if len(t_ret) else None,
            "termination_precision": _ratio(tp, tp + fp),
            "termination_recall": _ratio(tp, tp + fn),
            "termination_positives": tp + fn,
            "termination_predicted": tp + fp,
            "heldout_steps": n_steps,
        }
        for k, errs in self.open_loop.items():
            metrics[f"open_loop_latent_mse_k{k}"] = _finite(float(np.mean(errs))) if errs else None
        return metrics


def write_metrics(out: str | Path, metrics: dict[str, Any]) -> Path:
    """Merge ``metrics`` into ``out/metrics.json``, keeping keys written by the other stage."""
    path = Path(out) / METRICS_FILE
    update_json(path, metrics)
    return path

