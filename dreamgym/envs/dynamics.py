"""The batched latent dream: M stepped for many episodes at once in one torch call.

Both the single :class:`~dreamgym.envs.dream.DreamCarRacingEnv` and the batched vector env
run on :class:`LatentDream`, so the two cannot drift apart. Randomness comes from a
counter-based generator keyed per episode (:mod:`dreamgym.models.random`), so episode ``b``
of a batch draws exactly what a single dream with the same key draws.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
import torch

from dreamgym.models.mdnrnn import sample_mixture
from dreamgym.models.random import counter_normal, counter_uniform
from dreamgym.models.world_model import WorldModel
from dreamgym.errors import ArgumentError, NonFiniteDreamError


class DreamStep(NamedTuple):
    """The outcome of one batched dream step; tensors with a leading batch dim."""

    z: torch.Tensor
    h: torch.Tensor
    reward: torch.Tensor
    termination_probability: torch.Tensor
    terminated: torch.Tensor


def episode_keys(rngs: list[np.random.Generator]) -> np.ndarray:
    """The dream RNG key of a new episode in each env, drawn from that env's Gymnasium ``np_random``.

    Every env that dreams (single, vector, SB3) draws its keys here, so that the same seed
    gives the same dream whichever env runs it.
    """
    return np.concatenate([rng.integers(0, 2**64, dtype=np.uint64, size=1) for rng in rngs])


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float: a finite number > 0 (a string such as ``"1.5"`` is refused, not parsed)."""
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real):
        raise ArgumentError(f"temperature must be a finite number > 0, got {type(temperature).__name__} {temperature!r}")
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return temperature


def _check_finite(z: torch.Tensor, reward: torch.Tensor, steps: np.ndarray, when: str) -> None:
    """Stop the dream, naming the episode slot and step, at its first NaN or infinite ``z`` or reward."""
    finite = torch.isfinite(z).all(dim=1) & torch.isfinite(reward)
    if bool(finite.all()):
        return
    slot = int(torch.nonzero(~finite)[0, 0])
    raise NonFiniteDreamError(
        f"the dream produced a NaN or infinite observation or reward {when} (episode slot {slot}, step "
        f"{int(steps[slot])}): the world model's weights make M diverge; check them or lower the temperature"
    )


START_MODES = ("first_frame", "trajectory")


def check_start(start: str, world_model: WorldModel) -> str:
    """Check a dream's ``start`` mode against what the world model carries."""
    if start not in START_MODES:
        raise ValueError(f"start must be one of {list(START_MODES)}, got {start!r}")
    if start == "trajectory" and not world_model.has_trajectory_starts:
        raise ValueError(
            "start='trajectory' needs a world model with a bank of real trajectory states, and this one has none; "
            "add one with `dreamgym start-bank MODEL --data DATA --out OUT`, or use start='first_frame'"
        )
    return start


def check_dropout(dropout: float) -> float:
    """Check a dream-time dropout rate."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    dropout = float(dropout)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return dropout


class LatentDream:
    """State and stepping of ``num_envs`` dream episodes.

    Args:
        world_model: the V + M bundle; only M and the start banks are used here.
        num_envs: batch size.
        temperature: the paper's tau: mixture logits are divided by it, noise scaled by its root.
        sample_termination: draw termination from M's probability instead of thresholding it at 0.5.
        start: ``"first_frame"``: ``z`` from the bank of real first frames, M's state at zero
            (the paper's start). ``"trajectory"``: ``(z, h, c)`` from the bank of real states
            along real trajectories, so episodes start where the real car goes.
        dropout: dream-time dropout on M's input and output (Dropout's Dream Land): each
            episode draws one mask at reset and keeps it, so each episode is dreamt by a
            slightly different M. 0 turns it off.
    """

    def __init__(
        self,
        world_model: WorldModel,
        num_envs: int,
        temperature: float = 1.0,
        sample_termination: bool = False,
        start: str = "first_frame",
        dropout: float = 0.0,
    ) -> None:
        self.model = world_model
        self.num_envs = num_envs
        self.temperature = check_temperature(temperature)
        self.sample_termination = sample_termination
        self.start = check_start(start, world_model)
        self.dropout = check_dropout(dropout)
        cfg = world_model.config
        self.z_dim, self.hidden = cfg.z_dim, cfg.rnn_hidden
        self._normal_lanes = 2 * math.ceil(cfg.z_dim / 2)
        self._lanes = cfg.z_dim + self._normal_lanes + 1
        self._input_dim = cfg.z_dim + cfg.action_dim
        device = world_model.device
        self.z = torch.zeros(num_envs, cfg.z_dim, device=device)
        self.h = torch.zeros(num_envs, cfg.rnn_hidden, device=device)
        self.c = torch.zeros(num_envs, cfg.rnn_hidden, device=device)
        self.keys = np.zeros(num_envs, dtype=np.uint64)
        self.counters = np.zeros(num_envs, dtype=np.uint64)
        self.steps = np.zeros(num_envs, dtype=np.int64)  # steps of each slot's episode, for error messages
        if self.dropout:
            self.input_mask = torch.ones(num_envs, self._input_dim, device=device)
            self.output_mask = torch.ones(num_envs, cfg.rnn_hidden, device=device)

    def _draw(self, index: np.ndarray | None, n: int) -> np.ndarray:
        """The next ``n`` random numbers of the episodes in slots ``index`` (None: every slot)."""
        if index is None:  # the per-step case: no fancy indexing on the hot path
            draws = counter_uniform(self.keys, self.counters, n)
            self.counters += np.uint64(n)
            return draws
        draws = counter_uniform(self.keys[index], self.counters[index], n)
        self.counters[index] += np.uint64(n)
        return draws

    @torch.inference_mode()
    def reset(self, index: np.ndarray, keys: np.ndarray) -> None:
        """Start fresh episodes in slots ``index`` from the start bank, with RNG ``keys``."""
        index = np.asarray(index, dtype=np.int64)
        self.keys[index] = keys
        self.counters[index] = 0
        # Only the draws a setting needs are made, so a model's first-frame dream without
        # dropout stays the same, bit for bit, whatever else the dream can do.
        mask_lanes = self._input_dim + self.hidden if self.dropout else 0
        draws = self._draw(index, 1 + self._normal_lanes + mask_lanes)
        device = self.z.device
        idx = torch.from_numpy(index).to(device)
        if self.start == "trajectory":
            bank_mu, bank_logvar = self.model.trajectory_mu, self.model.trajectory_logvar
        else:
            bank_mu, bank_logvar = self.model.start_mu, self.model.start_logvar
        start = np.minimum((draws[:, 0] * len(bank_mu)).astype(np.int64), len(bank_mu) - 1)
        noise = torch.from_numpy(counter_normal(draws[:, 1 : 1 + self._normal_lanes])[:, : self.z_dim]).to(device)
        start_t = torch.from_numpy(start).to(device)
        self.z[idx] = bank_mu[start_t] + torch.exp(0.5 * bank_logvar[start_t]) * noise
        if self.start == "trajectory":
            self.h[idx] = self.model.trajectory_h[start_t]
            self.c[idx] = self.model.trajectory_c[start_t]
        else:
            self.h[idx] = 0.0
            self.c[idx] = 0.0
        if self.dropout:
            keep = torch.from_numpy(draws[:, 1 + self._normal_lanes :] >= self.dropout).to(device)
            scaled = keep.to(torch.float32) / (1.0 - self.dropout)
            self.input_mask[idx] = scaled[:, : self._input_dim]
            self.output_mask[idx] = scaled[:, self._input_dim :]
        self.steps[index] = 0
        _check_finite(self.z[idx], torch.zeros(len(index), device=device), self.steps[index], "at reset")

    @torch.inference_mode()
    def set_state(self, index: np.ndarray, z: torch.Tensor | np.ndarray, h: torch.Tensor | np.ndarray,
                  c: torch.Tensor | np.ndarray) -> None:
        """Put the episodes in slots ``index`` at the states ``(z, h, c)``, e.g. to branch a dream from a real state.

        Call it after :meth:`reset`, which sets the slots' RNG keys and dropout masks; the
        start that reset drew is overwritten, the random stream is not rewound.

        Args:
            index: the slots, (n,) ints in ``[0, num_envs)``.
            z: latents, (n, z_dim).
            h: M's hidden states, (n, rnn_hidden).
            c: M's LSTM cell states, (n, rnn_hidden).

        Raises:
            ValueError: an index out of range, or a state of the wrong shape or with NaN or inf.
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_envs):
            raise ValueError(f"slot indices must be in [0, {self.num_envs}), got {index.tolist()}")
        device = self.z.device
        values = []
        for name, value, width in (("z", z, self.z_dim), ("h", h, self.hidden), ("c", c, self.hidden)):
            tensor = torch.as_tensor(value, dtype=torch.float32, device=device)
            if tuple(tensor.shape) != (len(index), width):
                raise ValueError(f"{name} must have shape ({len(index)}, {width}), got {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} contains NaN or inf")
            values.append(tensor)
        idx = torch.from_numpy(index).to(device)
        self.z[idx], self.h[idx], self.c[idx] = values

    @torch.inference_mode()
    def step(self, actions: torch.Tensor) -> DreamStep:
        """Advance every episode by one step under ``actions`` (num_envs, action_dim)."""
        rnn = self.model.rnn
        if self.dropout:
            z_in = self.z * self.input_mask[:, : self.z_dim]
            self.h, self.c = rnn.step(z_in, actions * self.input_mask[:, self.z_dim :], self.h, self.c)
            out = rnn.heads(self.h * self.output_mask, normalize=False)
        else:
            self.h, self.c = rnn.step(self.z, actions, self.h, self.c)
            out = rnn.heads(self.h, normalize=False)
        draws = self._draw(None, self._lanes)
        z = self.z_dim
        # One host-to-tensor copy for all the noise: component uniforms, normals, termination uniform.
        noise = np.concatenate([draws[:, :z], counter_normal(draws[:, z:-1])[:, :z], draws[:, -1:]], axis=1)
        noise_t = torch.from_numpy(noise).to(self.z.device)
        self.z = sample_mixture(out, noise_t[:, :z], noise_t[:, z : 2 * z], self.temperature)
        probability = torch.sigmoid(out.termination_logit)
        threshold = noise_t[:, -1] if self.sample_termination else 0.5
        self.steps += 1
        # One reduction and one sync per step; the slot and step are looked for only on failure.
        if not torch.isfinite(self.z.sum() + out.reward.sum()):
            _check_finite(self.z, out.reward, self.steps, "at a step")
        return DreamStep(self.z, self.h, out.reward, probability, probability > threshold)
