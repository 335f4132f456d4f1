"""Stage 2: train M, the MDN-RNN with reward and termination heads, on V's latents of the episodes."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn import functional as F
from tqdm.auto import tqdm

from dreamgym.checkpoints import (
    CHECKPOINT_DIR,
    epoch_checkpoint,
    load_checkpoint,
    module_fingerprint,
    resume_training,
    run_stage,
)
from dreamgym.config import MAX_ENSEMBLE_SIZE, WorldModelConfig
from dreamgym.envs.dynamics import check_dropout
from dreamgym.envs.observer import teacher_forced_states
from dreamgym.episodes import DataSource, EpisodeStoreLike, check_store_preprocessing, open_store
from dreamgym.errors import CheckpointError
from dreamgym.files import atomic_write
from dreamgym.models.mdnrnn import MDNRNN, MDNOutput, mixture_nll
from dreamgym.models.world_model import MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE, WorldModel
from dreamgym.training.common import batches, check_new_model_folder, seed_everything, split_seeds
from dreamgym.training.metrics import encode_frames, evaluate_world_model, teacher_forced, write_metrics
from dreamgym.validation import check_int, pick_device

STAGE = "rnn"
LATENTS_FILE = "latents.npz"


@dataclass
class EpisodeLatents:
    """V's encoding of every episode, flattened.

    Episode ``i`` owns frames ``frame_offsets[i]:frame_offsets[i+1]`` and steps
    ``step_offsets[i]:step_offsets[i+1]``.
    """

    seeds: np.ndarray  # int64 (E,)
    mu: np.ndarray  # float32 (F, z_dim)
    logvar: np.ndarray  # float32 (F, z_dim)
    actions: np.ndarray  # float32 (S, action_dim)
    rewards: np.ndarray  # float32 (S,)
    terminated: np.ndarray  # bool (S,)
    frame_offsets: np.ndarray  # int64 (E+1,)
    step_offsets: np.ndarray  # int64 (E+1,)

    def select(self, seeds: list[int]) -> list[int]:
        """Indices of the episodes with these seeds (those that were readable)."""
        wanted = set(seeds)
        return [i for i, s in enumerate(self.seeds.tolist()) if s in wanted]


def load_trained_vae(vae: str | Path) -> WorldModel:
    """Load the world model folder written by :func:`~dreamgym.training.train_vae`, refusing one without a trained V."""
    folder = Path(vae)
    if not (folder / MODEL_WEIGHTS_FILE).is_file() or not (folder / MODEL_CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"{str(folder)!r} is not a world model folder (it needs {MODEL_CONFIG_FILE} and {MODEL_WEIGHTS_FILE}); "
            "run `dreamgym train-vae` first and pass its output folder"
        )
    model = WorldModel.from_pretrained(folder)
    if "vae" not in model.config.training:
        raise ValueError(
            f"the world model in {str(folder)!r} has no trained V (its config.json records no 'vae' training); "
            "run `dreamgym train-vae` and pass its output folder"
        )
    return model


def encode_episodes(
    model: WorldModel, store: EpisodeStoreLike, cache: Path, progress: bool = True
) -> EpisodeLatents:
    """Encode every readable episode of ``store`` with V, or reuse ``cache`` if this V made it from these episodes."""
    key = json.dumps({"v": module_fingerprint(model.vae), "seeds": sorted(int(s) for s in store.seeds())})
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            if str(saved["key"]) == key:
                return EpisodeLatents(**{name: saved[name] for name in EpisodeLatents.__dataclass_fields__})
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("seeds", "mu", "logvar", "actions", "rewards", "terminated")}
    frame_lengths, step_lengths = [], []
    model.eval()
    episodes = store.episodes(skip_corrupt=True)
    for episode in tqdm(episodes, total=len(store), desc="encoding episodes with V", disable=not progress, leave=False):
        mu, logvar = encode_frames(model, np.asarray(episode.frames, dtype=np.uint8))
        parts["seeds"].append(np.array([episode.seed], dtype=np.int64))
        parts["mu"].append(mu.float().cpu().numpy())
        parts["logvar"].append(logvar.float().cpu().numpy())
        parts["actions"].append(np.asarray(episode.actions, dtype=np.float32).reshape(-1, model.config.action_dim))
        parts["rewards"].append(np.asarray(episode.rewards, dtype=np.float32))
        parts["terminated"].append(np.asarray(episode.terminated, dtype=bool))
        frame_lengths.append(len(mu))
        step_lengths.append(len(episode.actions))
    if not frame_lengths:
        raise FileNotFoundError("no readable episodes in the store, run `dreamgym collect` first")
    latents = EpisodeLatents(
        **{k: np.concatenate(v) for k, v in parts.items()},
        frame_offsets=np.concatenate([[0], np.cumsum(frame_lengths)]).astype(np.int64),
        step_offsets=np.concatenate([[0], np.cumsum(step_lengths)]).astype(np.int64),
    )
    arrays = {name: getattr(latents, name) for name in EpisodeLatents.__dataclass_fields__}

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=np.array(key), **arrays)

    atomic_write(cache, write)
    return latents


@dataclass
class Chunks:
    """Index tensors of fixed-length sequence chunks: row ``i`` of each is one chunk, padded to ``seq_len``."""

    frame: torch.Tensor  # int64 (C, L): index of the input z[t] in the flat latents
    step: torch.Tensor  # int64 (C, L): index of a[t], reward[t], terminated[t]
    mask: torch.Tensor  # float (C, L): 1 on real steps, 0 on padding


def make_chunks(latents: EpisodeLatents, episodes: list[int], seq_len: int, device: torch.device) -> Chunks:
    """Cut the episodes into chunks of ``seq_len`` steps (the last of each episode shorter, padded).

    Every chunk starts from a zero LSTM state, as a dream episode does.
    """
    rows_frame, rows_step, rows_mask = [], [], []
    offsets = np.arange(seq_len)
    for e in episodes:
        f0, s0 = latents.frame_offsets[e], latents.step_offsets[e]
        steps = latents.step_offsets[e + 1] - s0
        for start in range(0, steps, seq_len):
            t = start + offsets
            valid = t < steps
            t = np.where(valid, t, start)  # padding points at a real step so indexing stays in range
            rows_frame.append(f0 + t)
            rows_step.append(s0 + t)
            rows_mask.append(valid)
    if not rows_frame:
        raise ValueError("the training episodes have no steps to learn M from")
    return Chunks(
        frame=torch.as_tensor(np.stack(rows_frame), device=device),
        step=torch.as_tensor(np.stack(rows_step), device=device),
        mask=torch.as_tensor(np.stack(rows_mask), dtype=torch.float32, device=device),
    )


def rnn_losses(
    out: MDNOutput,
    target_z: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    mask: torch.Tensor,
    termination_pos_weight: float,
    reward_overprediction_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """M's losses averaged over the real (unmasked) steps: mixture NLL per dim, reward MSE, termination BCE.

    With ``reward_overprediction_weight`` > 1 the reward error counts that many times more
    where M predicts more reward than the step earned: a pessimistic reward head, since an
    optimiser in the dream seeks out exactly the places where M over-promises.
    """
    count = mask.sum().clamp(min=1.0)
    nll = (mixture_nll(out, target_z).mean(-1) * mask).sum() / count
    error = out.reward - rewards
    squared = error.pow(2)
    if reward_overprediction_weight != 1.0:
        squared = torch.where(error > 0, reward_overprediction_weight * squared, squared)
    reward = (squared * mask).sum() / count
    pos_weight = torch.tensor(termination_pos_weight, device=mask.device)
    bce = F.binary_cross_entropy_with_logits(out.termination_logit, terminated, pos_weight=pos_weight, reduction="none")
    return {"nll": nll, "reward_mse": reward, "termination_bce": (bce * mask).sum() / count}


def rnn_step(
    rnn: MDNRNN,
    optimizer: torch.optim.Optimizer,
    z: torch.Tensor,
    actions: torch.Tensor,
    target_z: torch.Tensor,
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    mask: torch.Tensor,
    weights: dict[str, float],
) -> dict[str, float]:
    """One gradient step of M on a batch of chunks; returns the losses as floats (``loss`` is the weighted total)."""
    out, _ = rnn(z, actions)
    losses = rnn_losses(
        out, target_z, rewards, terminated, mask, weights["termination_pos_weight"], weights["reward_overprediction"]
    )
    loss = losses["nll"] + weights["reward"] * losses["reward_mse"] + weights["termination"] * losses["termination_bce"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if weights["grad_clip"] > 0:
        torch.nn.utils.clip_grad_norm_(rnn.parameters(), weights["grad_clip"])
    optimizer.step()
    return {"loss": loss.item(), **{k: v.item() for k, v in losses.items()}}


@torch.no_grad()
def heldout_losses(
    rnn: MDNRNN, latents: EpisodeLatents, episodes: list[int], device: torch.device, pos_weight: float
) -> dict[str, float | None]:
    """M's losses on whole held-out episodes, teacher forced on V's ``mu`` (the curve's held-out columns)."""
    was_training = rnn.training
    rnn.eval()
    sums = {"nll": 0.0, "reward_mse": 0.0, "termination_bce": 0.0}
    total = 0
    for e in episodes:
        f0, f1 = latents.frame_offsets[e : e + 2]
        s0, s1 = latents.step_offsets[e : e + 2]
        if s1 == s0:
            continue
        mu = torch.as_tensor(latents.mu[f0:f1], device=device)
        actions = torch.as_tensor(latents.actions[s0:s1], device=device)
        out = teacher_forced(rnn, mu, actions)
        losses = rnn_losses(
            out,
            mu[1:],
            torch.as_tensor(latents.rewards[s0:s1], device=device),
            torch.as_tensor(latents.terminated[s0:s1], dtype=torch.float32, device=device),
            torch.ones(s1 - s0, device=device),
            pos_weight,
        )
        for k, v in losses.items():
            sums[k] += v.item() * (s1 - s0)
        total += s1 - s0
    rnn.train(was_training)
    return {f"heldout_{k}": (v / total if total else None) for k, v in sums.items()}


def start_latent_bank(
    latents: EpisodeLatents, episodes: list[int], size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the first frame of ``size`` training episodes, chosen from ``seed``.

    With fewer episodes than ``size`` every episode is used equally often (the remainder
    drawn without replacement), so no real start dominates the dream's starts.
    """
    if not episodes:
        raise ValueError("no training episodes to take starting latents from")
    rng = np.random.default_rng([seed, 0xBA4C])
    n = len(episodes)
    if n >= size:
        pick = np.sort(rng.choice(n, size, replace=False))
    else:
        pick = np.concatenate([np.tile(np.arange(n), size // n), np.sort(rng.choice(n, size % n, replace=False))])
    first = latents.frame_offsets[np.asarray(episodes)[pick]]
    return torch.from_numpy(latents.mu[first].copy()), torch.from_numpy(latents.logvar[first].copy())


class TrajectoryBank(NamedTuple):
    """A bank of real trajectory states, as :meth:`WorldModel.set_trajectory_starts` takes it."""

    mu: torch.Tensor  # (N, z_dim), V's posterior mean at the frame
    logvar: torch.Tensor  # (N, z_dim)
    h: torch.Tensor  # (N, hidden), member 0's (the observation member's) state
    c: torch.Tensor  # (N, hidden)
    member_h: torch.Tensor | None = None  # (N, K - 1, hidden), the other members' states; None for one M
    member_c: torch.Tensor | None = None


def trajectory_start_bank(
    model: WorldModel,
    latents: EpisodeLatents,
    episodes: list[int],
    size: int,
    seed: int,
    burn_in: int = 0,
    every: int = 4,
) -> TrajectoryBank:
    """Real states ``(mu, logvar, h, c)`` along the ``episodes``, for ``start="trajectory"`` dreams.

    M is run teacher forced over each episode on V's means and the actions taken, exactly as
    ``RealCarRacing-v0`` runs it (:func:`~dreamgym.envs.observer.teacher_forced_states`), and
    the state is taken every ``every`` steps after the first ``burn_in``. The default, 0,
    keeps the first frames too: a real episode always begins with CarRacing's ~50-frame
    zoom-in and ``h = 0``, and an agent that never dreamt that stretch does not know how to
    start (a bank without it left a PPO agent standing at the start in 18 of 30 real
    validation episodes). ``size``
    states are drawn from all of them without replacement (all of them if there are fewer).
    With an ensemble of K Ms each member is teacher forced the same way, and the bank also
    holds the other members' states at the same frames.

    Returns:
        a :class:`TrajectoryBank`: ``mu``, ``logvar`` (size, z_dim) of V's posterior at the
        frame, member 0's ``h``, ``c`` (size, hidden), and for K > 1 the other members'
        ``member_h``, ``member_c`` (size, K - 1, hidden).
    """
    if not episodes:
        raise ValueError("no episodes to take trajectory starts from")
    if size <= 0 or burn_in < 0 or every <= 0:
        raise ValueError(f"size and every must be > 0 and burn_in >= 0, got {size}, {every}, {burn_in}")
    device = model.device
    # Episodes padded to one length and stepped as one batch: one LSTM step per time step.
    spans = []
    for e in episodes:
        f0, f1 = int(latents.frame_offsets[e]), int(latents.frame_offsets[e + 1])
        s0, s1 = int(latents.step_offsets[e]), int(latents.step_offsets[e + 1])
        steps = min(s1 - s0, f1 - f0 - 1)
        if steps > burn_in:
            spans.append((f0, s0, steps))
    others = model.members[1:]
    taken: dict[str, list[torch.Tensor]] = {"mu": [], "logvar": [], "h": [], "c": [], "member_h": [], "member_c": []}
    if spans:
        longest = max(steps for _, _, steps in spans)
        frames = np.stack([f0 + np.minimum(np.arange(longest + 1), steps) for f0, _, steps in spans])
        moves = np.stack([s0 + np.minimum(np.arange(longest), steps - 1) for _, s0, steps in spans])
        mu = torch.as_tensor(latents.mu[frames], device=device)
        actions = torch.as_tensor(latents.actions[moves], device=device)
        with torch.inference_mode():
            h, c = teacher_forced_states(model.rnn, mu, actions)
            if others:
                states = [teacher_forced_states(member, mu, actions) for member in others]
                member_h = torch.stack([hk for hk, _ in states], dim=2)  # (B, T+1, K-1, hidden)
                member_c = torch.stack([ck for _, ck in states], dim=2)
        logvar = torch.as_tensor(latents.logvar[frames], device=device)
        for i, (_, _, steps) in enumerate(spans):
            at = torch.arange(burn_in, steps + 1, every, device=device)
            taken["mu"].append(mu[i, at])
            taken["logvar"].append(logvar[i, at])
            taken["h"].append(h[i, at])
            taken["c"].append(c[i, at])
            if others:
                taken["member_h"].append(member_h[i, at])
                taken["member_c"].append(member_c[i, at])
    if not taken["mu"]:
        raise ValueError(f"no episode is longer than the burn-in of {burn_in} steps")
    pool = {k: torch.cat(v) for k, v in taken.items() if v}
    total = len(pool["mu"])
    rng = np.random.default_rng([seed, 0x7EA7])
    pick = torch.from_numpy(np.sort(rng.choice(total, min(size, total), replace=False))).to(device)
    return TrajectoryBank(**{k: v[pick] for k, v in pool.items()})


def add_trajectory_starts(
    model: str | Path,
    data: DataSource,
    out: str | Path,
    size: int = 2048,
    burn_in: int = 0,
    every: int = 4,
    holdout: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> WorldModel:
    """Give a trained world model a bank of real trajectory starts and save it to ``out``.

    The states come from the training episodes of ``data`` (the held-out split, by the same
    rule as :func:`train_rnn`'s, is left out); see :func:`trajectory_start_bank`. A model
    with an ensemble of Ms gets every member's states. ``out`` is a new folder: the source
    model is never written to.
    """
    source, out = Path(model), check_new_model_folder(out, [model])
    world_model = load_trained_vae(source)
    if "rnn" not in world_model.config.training:
        raise ValueError(f"the world model in {str(source)!r} has no trained M; run `dreamgym train-rnn` first")
    store = open_store(data)
    check_store_preprocessing(store, world_model.config.crop_dashboard, f"the V of {source}")
    train_seeds, _ = split_seeds(store.seeds(), holdout, seed)
    latents = encode_episodes(world_model, store, out / CHECKPOINT_DIR / LATENTS_FILE, progress)
    train_eps = latents.select(train_seeds)
    bank = trajectory_start_bank(world_model, latents, train_eps, size, seed, burn_in, every)
    world_model.set_trajectory_starts(*bank)
    world_model.config.training = {
        **world_model.config.training,
        "trajectory_starts": {"size": len(bank.mu), "burn_in": burn_in, "every": every, "episodes": len(train_eps),
                              "holdout": holdout, "seed": seed, "members": world_model.ensemble_size},
    }
    world_model.save_pretrained(out)
    return world_model


def member_stage(member: int) -> str:
    """The checkpoint and log name of ensemble member ``member``: ``rnn`` for member 0, as a single M's."""
    return STAGE if member == 0 else f"{STAGE}-member-{member}"


@dataclass
class _MemberData:
    """What every member of M trains on: the latents as tensors, the chunks and the settings."""

    latents: EpisodeLatents
    heldout_eps: list[int]
    mu: torch.Tensor
    sigma: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    chunks: Chunks
    loss_weights: dict[str, float]
    training_record: dict[str, Any]


def _train_member(
    member: int,
    rnn: MDNRNN,
    data: _MemberData,
    out: Path,
    vae: str | Path,
    fingerprint: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    progress: bool,
) -> list[dict[str, Any]]:
    """Train (or resume, or just load when finished) member ``member`` of M from its own checkpoint.

    Member k is keyed by ``seed + k`` throughout (the caller initialised ``rnn`` from it):
    latent noise and batch order of epoch e come from ``(seed + k, e + 1)``, so member 0 is
    exactly the M a single-M run trains. Returns the member's training curve.
    """
    stage = member_stage(member)
    name = "M" if member == 0 else f"M member {member}"
    member_seed = seed + member
    checkpoint = load_checkpoint(out, stage)
    optimizer = torch.optim.Adam(rnn.parameters(), lr=lr)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        if checkpoint[2].get("v_fingerprint") != fingerprint:
            raise CheckpointError(
                f"the {name} checkpoint in {out / CHECKPOINT_DIR} was trained on a different V than the one in "
                f"{str(vae)!r}; use another output folder or delete the checkpoint to start over"
            )
        start_epoch, history = resume_training(rnn, optimizer, checkpoint, lr, device)
    chunks = data.chunks

    def epoch(index: int) -> dict[str, Any]:
        rng = seed_everything(member_seed, index + 1)
        rnn.train()
        started = time.perf_counter()
        z = torch.addcmul(data.mu, data.sigma, torch.randn_like(data.mu))
        sums: dict[str, float] = {}
        steps_seen = 0.0
        order = batches(len(chunks.mask), batch_size, rng)
        bar = tqdm(order, desc=f"{name} epoch {index + 1}/{epochs}", disable=not progress, leave=False)
        for rows in bar:
            rows_t = torch.from_numpy(rows).to(device)
            frame, step, mask = chunks.frame[rows_t], chunks.step[rows_t], chunks.mask[rows_t]
            losses = rnn_step(
                rnn, optimizer, z[frame], data.actions[step], z[frame + 1],
                data.rewards[step], data.terminated[step], mask, data.loss_weights,
            )
            n = mask.sum().item()
            steps_seen += n
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v * n
            bar.set_postfix(loss=f"{losses['loss']:.3f}", nll=f"{losses['nll']:.3f}")
        bar.close()
        entry: dict[str, Any] = {"epoch": index + 1, **{k: v / steps_seen for k, v in sums.items()}}
        entry.update(
            heldout_losses(rnn, data.latents, data.heldout_eps, device, data.loss_weights["termination_pos_weight"])
        )
        entry["seconds"] = time.perf_counter() - started
        return entry

    fields: dict[str, Any] = {"v_fingerprint": fingerprint, "training": data.training_record}
    if member:
        fields.update(member=member, member_seed=member_seed)
    line = (
        f"{name} epoch {{epoch}}/{epochs}: loss {{loss:.3f}} nll {{nll:.3f}} reward mse {{reward_mse:.4f}} "
        "termination bce {termination_bce:.4f} held-out nll {heldout_nll}"
    )
    return run_stage(
        out, stage, what=name, unit="epoch", done=start_epoch, total=epochs, history=history, step=epoch,
        save=epoch_checkpoint(out, stage, rnn, optimizer, **fields), report=line if progress else None,
    )


def _fine_tuning_starts(init_from: str | Path, fingerprint: str, cfg: Any) -> list[dict[str, torch.Tensor]]:
    """The weights of each M of the world model in ``init_from``, checked to fit this V and M."""
    source = load_trained_vae(init_from)
    if module_fingerprint(source.vae) != fingerprint:
        raise ValueError(
            f"init_from {str(init_from)!r} has another V than the one M is trained on; "
            "fine-tune only an M whose V is this one (pass its world model as vae too)"
        )
    theirs, ours = source.config, cfg
    for name in ("z_dim", "action_dim", "rnn_hidden", "num_mixtures"):
        if getattr(theirs, name) != getattr(ours, name):
            raise ValueError(
                f"init_from {str(init_from)!r} has {name}={getattr(theirs, name)}, expected {getattr(ours, name)}"
            )
    if "rnn" not in theirs.training:
        raise ValueError(f"init_from {str(init_from)!r} has no trained M (its config.json records no 'rnn' training)")
    return [{k: v.detach().clone() for k, v in rnn.state_dict().items()} for rnn in source.members]


def _encoded_split(
    model: WorldModel, store: EpisodeStoreLike, data: DataSource, out: Path, holdout: float, seed: int, progress: bool
) -> tuple[EpisodeLatents, list[int], list[int]]:
    """V's latents of every episode (cached in ``out``), and the indices of the training and held-out episodes."""
    train_seeds, heldout_seeds = split_seeds(store.seeds(), holdout, seed)
    if not train_seeds:
        raise ValueError(f"no training episodes left after holding out {holdout:.0%} of {len(store)}")
    latents = encode_episodes(model, store, out / CHECKPOINT_DIR / LATENTS_FILE, progress)
    train_eps, heldout_eps = latents.select(train_seeds), latents.select(heldout_seeds)
    if not train_eps:
        raise ValueError(f"none of the {len(train_seeds)} training episodes in {data!s} could be read")
    return latents, train_eps, heldout_eps


def _member_data(
    latents: EpisodeLatents,
    train_eps: list[int],
    heldout_eps: list[int],
    seq_len: int,
    device: torch.device,
    loss_weights: dict[str, float],
    training_record: dict[str, Any],
) -> _MemberData:
    """What every member of M trains on, on ``device``: V's latents of the episodes, cut into chunks."""
    return _MemberData(
        latents=latents,
        heldout_eps=heldout_eps,
        mu=torch.as_tensor(latents.mu, device=device),
        sigma=torch.as_tensor(latents.logvar, device=device).mul(0.5).exp(),
        actions=torch.as_tensor(latents.actions, device=device),
        rewards=torch.as_tensor(latents.rewards, device=device),
        terminated=torch.as_tensor(latents.terminated, dtype=torch.float32, device=device),
        chunks=make_chunks(latents, train_eps, seq_len, device),
        loss_weights=loss_weights,
        training_record=training_record,
    )


def _fresh_member(
    cfg: WorldModelConfig, seed: int, starting_point: dict[str, torch.Tensor] | None, device: torch.device
) -> MDNRNN:
    """A new M initialised from ``seed``, or holding the weights ``starting_point`` if given (fine-tuning)."""
    # Always from the seed: whatever M the V folder holds (random, or trained if `vae` is a
    # finished world model) must not decide where training starts.
    seed_everything(seed)
    rnn = MDNRNN(cfg.z_dim, cfg.action_dim, cfg.rnn_hidden, cfg.num_mixtures, cfg.dropout).to(device)
    if starting_point is not None:
        rnn.load_state_dict(starting_point, strict=True)
    return rnn


def _finish_world_model(
    model: WorldModel,
    latents: EpisodeLatents,
    train_eps: list[int],
    training_record: dict[str, Any],
    histories: list[list[dict[str, Any]]],
    trajectory_starts: int,
    seed: int,
    device: torch.device,
) -> None:
    """Give the world model with its trained Ms its banks of dream starts and its training record; eval mode."""
    bank_mu, bank_logvar = start_latent_bank(latents, train_eps, model.config.num_start_latents, seed)
    model.set_start_latents(bank_mu.to(device), bank_logvar.to(device))
    if trajectory_starts:
        model.eval()
        model.set_trajectory_starts(*trajectory_start_bank(model, latents, train_eps, trajectory_starts, seed))
    record = {**training_record, "epochs_done": len(histories[0])}
    if len(histories) > 1:
        record["members"] = [
            {"stage": member_stage(k), "seed": seed + k, "epochs_done": len(h)} for k, h in enumerate(histories)
        ]
    model.config.training = {**model.config.training, "rnn": record}
    model.eval()


def train_rnn(
    data: DataSource,
    vae: str | Path,
    out: str | Path,
    epochs: int = 20,
    batch_size: int = 32,
    seq_len: int = 100,
    lr: float = 1e-3,
    grad_clip: float = 1.0,
    reward_weight: float = 1.0,
    termination_weight: float = 1.0,
    termination_pos_weight: float = 10.0,
    holdout: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    dropout: float | None = None,
    reward_overprediction_weight: float = 1.0,
    trajectory_starts: int = 0,
    ensemble_size: int = 1,
    init_from: str | Path | None = None,
) -> WorldModel:
    """Train M on V's latents of the collected episodes in ``data`` and save the full world model to ``out``.

    Every episode is encoded by V once (cached in ``out/checkpoints/latents.npz``); each epoch
    draws ``z = mu + sigma * eps`` afresh and cuts the training episodes into chunks of
    ``seq_len`` steps. M reads ``(z[t], a[t])`` and is trained on the mixture NLL of
    ``z[t+1]`` (per dim), the MSE of ``reward[t]`` and the BCE of ``terminated[t]``. Adam with
    gradient-norm clipping. Checkpoints, resume and interrupts work as in :func:`train_vae`;
    the curve goes to ``out/logs/rnn.json`` and held-out scores to ``out/metrics.json``.
    The bank of dream starting states is filled with the first-frame latents of training
    episodes.

    With ``ensemble_size=K > 1``, K Ms are trained one after the other on the same chunks:
    member k from seed ``seed + k`` (its own initialisation, latent noise and batch order),
    with its own checkpoint and log ``rnn-member-k`` (member 0 keeps ``rnn``, and is exactly
    the M a single-M run with this seed trains). A killed run resumes in the member it was
    training; finished members are loaded, never retrained. The members are not trained on
    bootstrap resamples: different initialisations and orders already make them disagree
    off the data (Lakshminarayanan et al. 2017 found bootstrapping only hurts deep
    ensembles), and a resample would drop a third of the already scarce real chunks from
    every member. Held-out metrics are member 0's, the M agents observe through.

    Args:
        data: a folder written by ``dreamgym collect`` or an ``EpisodeStore``.
        vae: the folder written by :func:`train_vae` (may be ``out`` itself).
        out: output folder; receives the world model (V + M + start bank).
        epochs: total number of passes over the training chunks.
        batch_size: chunks per gradient step.
        seq_len: steps per chunk (truncated backpropagation length).
        lr: Adam learning rate.
        grad_clip: max gradient norm; 0 disables clipping.
        reward_weight: weight of the reward MSE in the loss.
        termination_weight: weight of the termination BCE in the loss.
        termination_pos_weight: weight of terminal steps in the BCE (they are rare).
        holdout: fraction of episodes held out; must match the V stage's to keep the split.
        seed: seeds the latent sampling, shuffling, the split and the start bank.
        device: torch device; None picks CUDA when available, else CPU.
        progress: show tqdm progress bars.
        dropout: dropout on M's input and output while training (Dropout's Dream Land
            uses 0.05); None keeps the V folder's ``config.dropout``. Recorded in the config.
        reward_overprediction_weight: how many times more a reward over-prediction
            counts than an under-prediction in the reward loss (1: plain MSE).
        trajectory_starts: size of the bank of real trajectory states to store with the
            model for ``start="trajectory"`` dreams (0: none); see :func:`trajectory_start_bank`.
        ensemble_size: number of Ms to train, 1 to 16 (``config.ensemble_size``); see
            ``ensemble=True`` in :class:`~dreamgym.envs.dynamics.LatentDream`.
        init_from: a world model folder whose M (member k, or its last member) each M
            starts from instead of a fresh initialisation: fine-tuning, as a round of the paper's
            loop does on its grown data. It must share this V (same weights) and M's sizes.

    Returns:
        the trained world model, in eval mode on ``device``.
    """
    if dropout is not None:
        dropout = check_dropout(dropout)
    if not reward_overprediction_weight >= 1.0:
        raise ValueError(f"reward_overprediction_weight must be >= 1, got {reward_overprediction_weight!r}")
    trajectory_starts = check_int("trajectory_starts", trajectory_starts, 0)
    ensemble_size = check_int("ensemble_size", ensemble_size, 1, MAX_ENSEMBLE_SIZE)
    if epochs < 0 or batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"epochs must be >= 0, batch_size and seq_len > 0; got {epochs}, {batch_size}, {seq_len}")
    out = Path(out)
    device = pick_device(device)
    store = open_store(data)
    model = load_trained_vae(vae).to(device)
    check_store_preprocessing(store, model.config.crop_dashboard, f"the V of {vae}")
    fingerprint = module_fingerprint(model.vae)
    cfg = model.config
    if dropout is not None:
        cfg.dropout = float(dropout)
    latents, train_eps, heldout_eps = _encoded_split(model, store, data, out, holdout, seed, progress)
    loss_weights = {
        "reward": reward_weight, "termination": termination_weight, "termination_pos_weight": termination_pos_weight,
        "grad_clip": grad_clip, "reward_overprediction": reward_overprediction_weight,
    }
    training_record: dict[str, Any] = {
        "epochs": epochs, "batch_size": batch_size, "seq_len": seq_len, "lr": lr, "grad_clip": grad_clip,
        "reward_weight": reward_weight, "reward_overprediction_weight": reward_overprediction_weight,
        "dropout": cfg.dropout, "termination_weight": termination_weight,
        "termination_pos_weight": termination_pos_weight, "holdout": holdout, "seed": seed,
        "train_episodes": len(train_eps),
        "train_steps": int(sum(latents.step_offsets[e + 1] - latents.step_offsets[e] for e in train_eps)),
    }
    if ensemble_size > 1:
        # Only with an ensemble, so that a single M's record stays as it was.
        training_record["ensemble_size"] = ensemble_size
    member_data = _member_data(latents, train_eps, heldout_eps, seq_len, device, loss_weights, training_record)
    starting_points = _fine_tuning_starts(init_from, fingerprint, cfg) if init_from is not None else []
    if init_from is not None:
        training_record["init_from"] = str(init_from)  # the members' checkpoints record it too
    members, histories = [], []
    for member in range(ensemble_size):
        start = starting_points[min(member, len(starting_points) - 1)] if starting_points else None
        rnn = _fresh_member(cfg, seed + member, start, device)
        history = _train_member(
            member, rnn, member_data, out, vae, fingerprint, epochs, batch_size, lr, seed, device, progress
        )
        histories.append(history)
        members.append(rnn)
    model.set_members(members)
    _finish_world_model(model, latents, train_eps, training_record, histories, trajectory_starts, seed, device)
    model.save_pretrained(out)
    metrics = evaluate_world_model(model, store, holdout=holdout, seed=seed)
    train_frames = int(sum(latents.frame_offsets[e + 1] - latents.frame_offsets[e] for e in train_eps))
    metrics.update(train_frames=train_frames, train_steps=training_record["train_steps"])
    write_metrics(out, metrics)
    return model
