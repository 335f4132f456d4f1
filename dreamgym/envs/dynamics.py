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

from dreamgym.errors import ArgumentError, NonFiniteDreamError
from dreamgym.models.mdnrnn import MDNRNN, MDNOutput, StepWeights, mixture_mean, sample_mixture, split_heads
from dreamgym.models.random import counter_normal, counter_uniform
from dreamgym.models.world_model import WorldModel
from dreamgym.validation import check_number


class DreamStep(NamedTuple):
    """The outcome of one batched dream step; tensors with a leading batch dim.

    ``disagreement`` is the ensemble's disagreement ``u`` per episode in an ``ensemble=True``
    dream (see :class:`LatentDream`), None otherwise; ``reward`` already has
    ``disagreement_penalty * u`` taken off.
    """

    z: torch.Tensor
    h: torch.Tensor
    reward: torch.Tensor
    termination_probability: torch.Tensor
    terminated: torch.Tensor
    disagreement: torch.Tensor | None = None


def episode_keys(rngs: list[np.random.Generator]) -> np.ndarray:
    """The dream RNG key of a new episode in each env, drawn from that env's Gymnasium ``np_random``.

    Every env that dreams (single, vector, SB3) draws its keys here, so that the same seed
    gives the same dream whichever env runs it.
    """
    return np.concatenate([rng.integers(0, 2**64, dtype=np.uint64, size=1) for rng in rngs])


def check_temperature(temperature: float) -> float:
    """``temperature`` as a float: a finite number > 0 (a string such as ``"1.5"`` is refused, not parsed)."""
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real):
        raise ArgumentError(
            f"temperature must be a finite number > 0, got {type(temperature).__name__} {temperature!r}"
        )
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
NOISE_AHEAD_ROWS = 256
"""Most (steps ahead x episodes) rows of noise a dream draws in one call: a single dream
draws up to ``MAX_NOISE_AHEAD`` steps ahead, a batch of 256 or more one step at a time."""
MAX_NOISE_AHEAD = 64


def check_start(start: str | float, world_model: WorldModel) -> str | float:
    """Check a dream's ``start``: a mode of ``START_MODES``, or the fraction of trajectory starts.

    A number ``p`` in [0, 1] mixes the two: each episode starts from the bank of real trajectory
    states with probability ``p``, else from a first frame; ``0`` and ``1`` are returned as
    ``"first_frame"`` and ``"trajectory"``, whose dreams they are.
    """
    if isinstance(start, str):
        if start not in START_MODES:
            raise ValueError(
                f"start must be one of {list(START_MODES)} or a fraction of trajectory starts in [0, 1], got {start!r}"
            )
    else:
        fraction = check_number("start", start)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"start as a fraction of trajectory starts must be in [0, 1], got {fraction!r}")
        start = "first_frame" if fraction == 0.0 else "trajectory" if fraction == 1.0 else fraction
    if start != "first_frame" and not world_model.has_trajectory_starts:
        raise ValueError(
            f"start={start!r} needs a world model with a bank of real trajectory states, and this one has none; "
            "add one with `dreamgym start-bank MODEL --data DATA --out OUT`, or use start='first_frame'"
        )
    return start


def check_dropout(dropout: float) -> float:
    """Check a dream-time dropout rate."""
    dropout = check_number("dropout", dropout)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    return dropout


def check_ensemble(ensemble: bool, disagreement_penalty: float, world_model: WorldModel) -> tuple[bool, float]:
    """Check a dream's ``ensemble`` and ``disagreement_penalty`` against what the world model carries."""
    if not isinstance(ensemble, (bool, np.bool_)):
        raise ArgumentError(f"ensemble must be True or False, got {type(ensemble).__name__} {ensemble!r}")
    if isinstance(disagreement_penalty, (bool, np.bool_)) or not isinstance(disagreement_penalty, numbers.Real):
        raise ArgumentError(
            f"disagreement_penalty must be a finite number >= 0, got {type(disagreement_penalty).__name__} "
            f"{disagreement_penalty!r}"
        )
    penalty = float(disagreement_penalty)
    if not math.isfinite(penalty) or penalty < 0:
        raise ValueError(f"disagreement_penalty must be a finite number >= 0, got {disagreement_penalty!r}")
    if ensemble and world_model.ensemble_size < 2:
        raise ValueError(
            "ensemble=True needs a world model with an ensemble of Ms, and this one has a single M; "
            "train one with `dreamgym train-rnn --ensemble-size K`, or use ensemble=False"
        )
    if penalty and not ensemble:
        raise ValueError("disagreement_penalty needs ensemble=True (the disagreement is between the ensemble's Ms)")
    return bool(ensemble), penalty


class LatentDream:
    """State and stepping of ``num_envs`` dream episodes.

    Args:
        world_model: the V + M bundle; only M and the start banks are used here. M is bound
            when the dream is made: its weights may change in place (training), but a model
            whose ``rnn`` (or ensemble) is replaced afterwards needs a new dream.
        num_envs: batch size.
        temperature: the paper's tau: mixture logits are divided by it, noise scaled by its root.
        sample_termination: draw termination from M's probability instead of thresholding it at 0.5.
        start: ``"first_frame"``: ``z`` from the bank of real first frames, M's state at zero
            (the paper's start). ``"trajectory"``: ``(z, h, c)`` from the bank of real states
            along real trajectories, so episodes start where the real car goes. A number ``p``
            in [0, 1]: each episode starts from the trajectory bank with probability ``p``
            (one more draw from its key, after all others), else from a first frame.
        dropout: dream-time dropout on M's input and output (Dropout's Dream Land): each
            episode draws one mask at reset and keeps it, so each episode is dreamt by a
            slightly different M. 0 turns it off. With ``ensemble=True`` the episode's mask
            applies to every member.
        ensemble: dream with the world model's ensemble of K Ms (``config.ensemble_size >
            1``). Each episode draws one member ``m`` at reset and keeps it. Every step all K
            members step on the same ``(z, action)``, each with its own ``(h, c)`` (state
            ``member_h``, ``member_c`` of shape (K, B, hidden)); the next ``z`` is sampled from
            member ``m``'s mixture, and the reward and termination are member ``m``'s. The
            ``h`` observed (``self.h``, ``DreamStep.h``) is member 0's, as in the real env.
            Trajectory starts start each member from its own real state.
        disagreement_penalty: lambda of a MOPO-style pessimistic reward, ``reward - lambda * u``,
            with the ensemble's disagreement ``u >= 0`` for the step::

                u = max_k || mean_k - mean(mean_1..K) ||_2  +  std_k(reward_k)

            ``mean_k`` is member k's predicted mean of the next ``z`` (its mixture's mean, at
            temperature 1), ``reward_k`` its predicted reward, and the std is over members
            (population std). The first term is MOReL's largest deviation of a member from
            the ensemble, in V's latent units; the second is the members' spread on the
            reward, in reward units, since a policy exploits M through the reward. ``u`` is 0
            when all members agree. Needs ``ensemble=True``; 0 (default) reports ``u``
            without changing the reward.

    Attributes:
        z: the episodes' latents, (num_envs, z_dim).
        h: M's hidden states, (num_envs, rnn_hidden), member 0's in an ensemble dream.
        c: M's LSTM cell states, (num_envs, rnn_hidden).
        keys: each episode's RNG key, (num_envs,) uint64.
        counters: how many random numbers each episode has drawn, (num_envs,) uint64.

    Read the state from these (the observation is ``[z, h]``); change it only through
    :meth:`reset`, :meth:`set_state` and :meth:`step`, which keep the RNG streams, dropout
    masks and ensemble members consistent with it (the noise of the next steps is drawn
    ahead from ``keys`` and ``counters`` and kept until the next :meth:`reset`).
    """

    def __init__(
        self,
        world_model: WorldModel,
        num_envs: int,
        temperature: float = 1.0,
        sample_termination: bool = False,
        start: str | float = "first_frame",
        dropout: float = 0.0,
        ensemble: bool = False,
        disagreement_penalty: float = 0.0,
    ) -> None:
        self.model = world_model
        self.num_envs = num_envs
        self.temperature = check_temperature(temperature)
        self.sample_termination = sample_termination
        self.start = check_start(start, world_model)
        self.dropout = check_dropout(dropout)
        self.ensemble, self.disagreement_penalty = check_ensemble(ensemble, disagreement_penalty, world_model)
        cfg = world_model.config
        self.z_dim, self.hidden = cfg.z_dim, cfg.rnn_hidden
        self._normal_lanes = 2 * math.ceil(cfg.z_dim / 2)
        self._lanes = cfg.z_dim + self._normal_lanes + 1
        self._lanes_u64 = np.uint64(self._lanes)
        self._input_dim = cfg.z_dim + cfg.action_dim
        device = world_model.device
        self.z = torch.zeros(num_envs, cfg.z_dim, device=device)
        self.h = torch.zeros(num_envs, cfg.rnn_hidden, device=device)
        self.c = torch.zeros(num_envs, cfg.rnn_hidden, device=device)
        self.keys = np.zeros(num_envs, dtype=np.uint64)
        self.counters = np.zeros(num_envs, dtype=np.uint64)
        self.steps = np.zeros(num_envs, dtype=np.int64)  # steps of each slot's episode, for error messages
        # Constants of each step as tensors: an op wraps a Python number in a new tensor every call.
        self._half = torch.tensor(0.5, device=device)
        self._ones = torch.ones(cfg.z_dim, device=device)
        # The noise of the next steps, drawn ahead in one vectorised call: for a small batch the
        # per-step numpy calls of the counter RNG cost more than M itself. See _step_noise.
        self._max_noise_ahead = max(1, min(MAX_NOISE_AHEAD, NOISE_AHEAD_ROWS // num_envs))
        self._noise_ahead = 1  # steps the next call draws: doubles up to the most, from 1 after each reset
        self._noise: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # see _step_noise
        self._noise_used = 0
        # M and its weights, looked up once (an nn.Module lookup costs as much as a small op).
        # They are M's own tensors, so training M in place shows here; a model whose M is
        # replaced afterwards needs a new dream, as the ensemble's stacked copies do.
        self._rnn: MDNRNN = world_model.rnn
        self._weights: StepWeights = self._rnn.step_weights()
        if self.dropout:
            self.input_mask = torch.ones(num_envs, self._input_dim, device=device)
            self.output_mask = torch.ones(num_envs, cfg.rnn_hidden, device=device)
        if self.ensemble:
            k = world_model.ensemble_size
            self.members = world_model.stacked_members()
            self.member_h = torch.zeros(k, num_envs, cfg.rnn_hidden, device=device)
            self.member_c = torch.zeros(k, num_envs, cfg.rnn_hidden, device=device)
            self.h, self.c = self.member_h[0], self.member_c[0]
            self.member = torch.zeros(num_envs, dtype=torch.int64, device=device)  # each episode's dreaming member
            self._rows = torch.arange(num_envs, device=device)

    def _draw(self, index: np.ndarray, n: int) -> np.ndarray:
        """The next ``n`` random numbers of the episodes in slots ``index``."""
        draws = counter_uniform(self.keys[index], self.counters[index], n)
        self.counters[index] += np.uint64(n)
        return draws

    def _step_noise(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This step's noise: ``(uniform, normal, termination)``.

        The component uniforms and the standard normals are (num_envs, z_dim); the termination
        uniforms (num_envs,) are there if termination is sampled, else None.

        Exactly what drawing ``_lanes`` numbers per episode each step gives (the n-th number
        of a stream does not depend on how many are drawn at once), but the numbers of the
        next steps are drawn, and turned into normals, in one call: 1, 2, 4, ... steps after
        a reset, up to ``_max_noise_ahead``, so that short episodes draw little they do not
        use. ``counters`` still advance step by step, so a :meth:`reset`, which drops the
        noise drawn ahead, draws the next steps from where every episode is.
        """
        if self._noise_used == len(self._noise):
            steps, z = self._noise_ahead, self.z_dim
            self._noise_ahead = min(2 * steps, self._max_noise_ahead)
            draws = counter_uniform(self.keys, self.counters, steps * self._lanes)
            draws = draws.reshape(self.num_envs, steps, self._lanes).transpose(1, 0, 2)  # (steps, B, lanes)
            normals = counter_normal(draws[..., z:-1].reshape(-1, self._normal_lanes))[:, :z]
            noise = np.concatenate([draws[..., :z], normals.reshape(steps, self.num_envs, z), draws[..., -1:]], axis=-1)
            # One host-to-tensor copy for all of it, and every step's views made at once. They
            # are laid out as the per-step draws always were, so the float ops that read them
            # round alike.
            noise_t = torch.from_numpy(noise).to(self.z.device)
            views = (noise_t[..., :z].unbind(0), noise_t[..., z : 2 * z].unbind(0), noise_t[..., -1].unbind(0))
            self._noise, self._noise_used = list(zip(*views, strict=True)), 0
        uniform, normal, termination = self._noise[self._noise_used]
        self._noise_used += 1
        self.counters += self._lanes_u64
        return uniform, normal, termination if self.sample_termination else None

    @torch.inference_mode()
    def reset(self, index: np.ndarray, keys: np.ndarray) -> None:
        """Start fresh episodes in slots ``index`` from the start bank, with RNG ``keys``."""
        index = np.asarray(index, dtype=np.int64)
        self.keys[index] = keys
        self.counters[index] = 0
        self._noise, self._noise_used, self._noise_ahead = [], 0, 1  # drawn from the old keys
        # Only the draws a setting needs are made, so a model's first-frame dream without
        # dropout or ensemble stays the same, bit for bit, whatever else the dream can do.
        # The member lane, then the lane choosing a mixed dream's start, come last, so adding
        # them leaves every other draw where it was.
        mask_lanes = self._input_dim + self.hidden if self.dropout else 0
        member_lane = 1 + self._normal_lanes + mask_lanes
        mix_lane = member_lane + (1 if self.ensemble else 0)
        fraction = None if isinstance(self.start, str) else self.start
        draws = self._draw(index, mix_lane + (0 if fraction is None else 1))
        device = self.z.device
        idx = torch.from_numpy(index).to(device)
        noise = torch.from_numpy(counter_normal(draws[:, 1 : 1 + self._normal_lanes])[:, : self.z_dim]).to(device)
        if fraction is not None:
            from_trajectory = draws[:, mix_lane] < fraction
        else:
            from_trajectory = np.full(len(index), self.start == "trajectory")
        for trajectory in (False, True):
            rows = np.flatnonzero(from_trajectory == trajectory)
            if rows.size:
                rows_t = torch.from_numpy(rows).to(device)
                member_uniform = draws[rows, member_lane] if self.ensemble else None
                self._start(idx[rows_t], draws[rows, 0], noise[rows_t], member_uniform, trajectory)
        if self.dropout:
            lanes = slice(1 + self._normal_lanes, 1 + self._normal_lanes + mask_lanes)
            keep = torch.from_numpy(draws[:, lanes] >= self.dropout).to(device)
            scaled = keep.to(torch.float32) / (1.0 - self.dropout)
            self.input_mask[idx] = scaled[:, : self._input_dim]
            self.output_mask[idx] = scaled[:, self._input_dim :]
        self.steps[index] = 0
        _check_finite(self.z[idx], torch.zeros(len(index), device=device), self.steps[index], "at reset")

    def _start(
        self,
        idx: torch.Tensor,
        uniform: np.ndarray,
        noise: torch.Tensor,
        member_uniform: np.ndarray | None,
        trajectory: bool,
    ) -> None:
        """Start the episodes in slots ``idx`` from a first frame or, if ``trajectory``, a real trajectory state."""
        if trajectory:
            bank_mu, bank_logvar = self.model.trajectory_mu, self.model.trajectory_logvar
        else:
            bank_mu, bank_logvar = self.model.start_mu, self.model.start_logvar
        start = np.minimum((uniform * len(bank_mu)).astype(np.int64), len(bank_mu) - 1)
        start_t = torch.from_numpy(start).to(idx.device)
        self.z[idx] = bank_mu[start_t] + torch.exp(0.5 * bank_logvar[start_t]) * noise
        if member_uniform is not None:
            self._reset_members(idx, start_t, member_uniform, trajectory)
        elif trajectory:
            self.h[idx] = self.model.trajectory_h[start_t]
            self.c[idx] = self.model.trajectory_c[start_t]
        else:
            self.h[idx] = 0.0
            self.c[idx] = 0.0

    def _reset_members(self, idx: torch.Tensor, start: torch.Tensor, uniform: np.ndarray, trajectory: bool) -> None:
        """Draw the dreaming member of new episodes and start every member's state."""
        k = self.members.size
        member = np.minimum((uniform * k).astype(np.int64), k - 1)
        self.member[idx] = torch.from_numpy(member).to(idx.device)
        if trajectory:
            self.member_h[0, idx] = self.model.trajectory_h[start]
            self.member_c[0, idx] = self.model.trajectory_c[start]
            self.member_h[1:, idx] = self.model.trajectory_member_h[start].transpose(0, 1)
            self.member_c[1:, idx] = self.model.trajectory_member_c[start].transpose(0, 1)
        else:
            self.member_h[:, idx] = 0.0
            self.member_c[:, idx] = 0.0
        self.h, self.c = self.member_h[0], self.member_c[0]

    @torch.inference_mode()
    def set_state(
        self,
        index: np.ndarray,
        z: torch.Tensor | np.ndarray,
        h: torch.Tensor | np.ndarray,
        c: torch.Tensor | np.ndarray,
        member_h: torch.Tensor | np.ndarray | None = None,
        member_c: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Put the episodes in slots ``index`` at the states ``(z, h, c)``, e.g. to branch a dream from a real state.

        Call it after :meth:`reset`, which sets the slots' RNG keys, dropout masks and
        members; the start that reset drew is overwritten, the random stream is not rewound.

        Args:
            index: the slots, (n,) ints in ``[0, num_envs)``.
            z: latents, (n, z_dim).
            h: M's hidden states, (n, rnn_hidden) (member 0's in an ``ensemble=True`` dream).
            c: M's LSTM cell states, (n, rnn_hidden).
            member_h: in an ``ensemble=True`` dream (and only there), the other members'
                hidden states, (n, K - 1, rnn_hidden).
            member_c: likewise, the other members' cell states, (n, K - 1, rnn_hidden).

        Raises:
            ValueError: an index out of range, or a state of the wrong shape or with NaN or inf.
        """
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= self.num_envs):
            raise ValueError(f"slot indices must be in [0, {self.num_envs}), got {index.tolist()}")
        n = len(index)
        shapes: list[tuple[str, torch.Tensor | np.ndarray, tuple[int, ...]]] = [
            ("z", z, (n, self.z_dim)),
            ("h", h, (n, self.hidden)),
            ("c", c, (n, self.hidden)),
        ]
        if self.ensemble:
            if member_h is None or member_c is None:
                raise ValueError(
                    f"an ensemble dream needs member_h and member_c of shape ({n}, {self.members.size - 1}, "
                    f"{self.hidden}), the other members' states"
                )
            others = (n, self.members.size - 1, self.hidden)
            shapes += [("member_h", member_h, others), ("member_c", member_c, others)]
        elif member_h is not None or member_c is not None:
            raise ValueError("member_h and member_c are for an ensemble=True dream; this one dreams with one M")
        device = self.z.device
        values = []
        for name, value, shape in shapes:
            tensor = torch.as_tensor(value, dtype=torch.float32, device=device)
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
            if not torch.isfinite(tensor).all():
                raise ValueError(f"{name} contains NaN or inf")
            values.append(tensor)
        idx = torch.from_numpy(index).to(device)
        # In an ensemble dream self.h and self.c are views of member 0's rows of member_h and member_c.
        self.z[idx], self.h[idx], self.c[idx] = values[:3]
        if self.ensemble:
            self.member_h[1:, idx] = values[3].transpose(0, 1)
            self.member_c[1:, idx] = values[4].transpose(0, 1)

    @torch.inference_mode()
    def step(self, actions: torch.Tensor) -> DreamStep:
        """Advance every episode by one step under ``actions`` (num_envs, action_dim)."""
        if self.ensemble:
            return self._step_ensemble(actions)
        rnn, weights = self._rnn, self._weights
        if self.dropout:
            z_in = self.z * self.input_mask[:, : self.z_dim]
            self.h, self.c = rnn.step(z_in, actions * self.input_mask[:, self.z_dim :], self.h, self.c, weights)
            out = rnn.heads(self.h * self.output_mask, normalize=False, weights=weights)
        else:
            self.h, self.c = rnn.step(self.z, actions, self.h, self.c, weights)
            out = rnn.heads(self.h, normalize=False, weights=weights)
        probability, terminated = self._sample_next(out, out.reward)
        return DreamStep(self.z, self.h, out.reward, probability, terminated)

    def _sample_next(self, out: MDNOutput, reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw the next ``z`` from ``out`` and the episodes' termination; return (probability, terminated)."""
        uniform, normal, termination = self._step_noise()
        self.z = sample_mixture(out, uniform, normal, self.temperature)
        probability = torch.sigmoid(out.termination_logit)
        threshold = termination if termination is not None else self._half
        self.steps += 1
        # One small op and one sync per step: reward + z @ 1 is finite when z and reward are
        # (and may overflow when they are not, which _check_finite tells apart); the slot and
        # step are looked for only on failure.
        total = torch.addmv(reward, self.z, self._ones)
        if not math.isfinite((total if self.num_envs == 1 else total.sum()).item()):
            _check_finite(self.z, reward, self.steps, "at a step")
        return probability, probability > threshold

    def _step_ensemble(self, actions: torch.Tensor) -> DreamStep:
        """:meth:`step` of an ``ensemble=True`` dream: all members in one batched op."""
        x = torch.cat([self.z, actions], dim=1)
        if self.dropout:
            x = x * self.input_mask  # one mask per episode, the same for every member
        self.member_h, self.member_c = self.members.step(x, self.member_h, self.member_c)
        self.h, self.c = self.member_h[0], self.member_c[0]
        h_out = self.member_h * self.output_mask if self.dropout else self.member_h
        raw = self.members.raw_heads(h_out)  # (K, B, out)
        # Unnormalised mixture logits: the mixture mean's softmax ignores their shift.
        everyone = split_heads(raw, self.z_dim, self.members.num_mixtures, normalize=False)
        out = split_heads(raw[self.member, self._rows], self.z_dim, self.members.num_mixtures, normalize=False)
        means = mixture_mean(everyone)  # (K, B, z_dim)
        spread = (means - means.mean(0)).norm(dim=-1).amax(0)
        disagreement = spread + everyone.reward.std(0, unbiased=False)
        reward = out.reward - self.disagreement_penalty * disagreement if self.disagreement_penalty else out.reward
        probability, terminated = self._sample_next(out, reward)
        return DreamStep(self.z, self.h, reward, probability, terminated, disagreement)
