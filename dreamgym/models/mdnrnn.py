"""M: the mixture-density recurrent network, with reward and termination heads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNOutput(NamedTuple):
    """What M predicts after one step, each with leading dims (batch, [time])."""

    log_pi: torch.Tensor  # (..., z_dim, K), normalised mixture log-weights
    mu: torch.Tensor  # (..., z_dim, K)
    log_sigma: torch.Tensor  # (..., z_dim, K)
    reward: torch.Tensor  # (...,)
    termination_logit: torch.Tensor  # (...,)


class StepWeights(NamedTuple):
    """The tensors one M steps with (see :meth:`MDNRNN.step_weights`)."""

    weight_ih: torch.Tensor
    weight_hh: torch.Tensor
    bias_ih: torch.Tensor
    bias_hh: torch.Tensor
    head_weight: torch.Tensor
    head_bias: torch.Tensor


class MDNRNN(nn.Module):
    """An LSTM over ``[z, action]`` predicting the next ``z`` as a mixture of Gaussians.

    The mixture has ``num_mixtures`` components per latent dimension, as in the paper. Two
    heads the paper's CarRacing model lacked make the dream trainable: a reward regression
    and a termination logit, both read from the same hidden state as the mixture.

    Args:
        z_dim: size of ``z``.
        action_dim: size of the continuous action.
        hidden: LSTM units.
        num_mixtures: Gaussians per latent dimension.
        dropout: dropout on the LSTM's input and output while training.
    """

    def __init__(
        self, z_dim: int = 32, action_dim: int = 3, hidden: int = 256, num_mixtures: int = 5, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.z_dim, self.action_dim, self.hidden, self.num_mixtures = z_dim, action_dim, hidden, num_mixtures
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(z_dim + action_dim, hidden, batch_first=True)
        # One linear layer for the mixture, reward and termination: a single matmul per step.
        self.head = nn.Linear(hidden, 3 * z_dim * num_mixtures + 2)

    def step_weights(self) -> StepWeights:
        """The parameters :meth:`step` and :meth:`heads` compute with, looked up once.

        For a caller that steps M many times, such as the dream: each ``nn.Module`` attribute
        lookup costs about as much as one of a batch-1 step's small ops. They are M's own
        parameters, not copies, so in-place updates (training, ``load_state_dict``) show through.
        """
        # The one layer's (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0), typed as parameters:
        # ``self.lstm.weight_ih_l0`` is a ``Tensor | Module`` to a type checker.
        weight_ih, weight_hh, bias_ih, bias_hh = self.lstm.all_weights[0]
        return StepWeights(weight_ih, weight_hh, bias_ih, bias_hh, self.head.weight, self.head.bias)

    def heads(self, h: torch.Tensor, normalize: bool = True, weights: StepWeights | None = None) -> MDNOutput:
        """Apply the output heads to hidden states of shape (..., hidden).

        With ``normalize=False`` the mixture logits are returned as they are, not as
        log-probabilities: enough for sampling (softmax ignores a shift) and cheaper on the
        dream's hot path. ``weights``: this M's :meth:`step_weights`, if the caller holds them.
        """
        if self.training:
            h = self.dropout(h)
        w = self.step_weights() if weights is None else weights
        return split_heads(F.linear(h, w.head_weight, w.head_bias), self.z_dim, self.num_mixtures, normalize)

    def forward(
        self, z: torch.Tensor, actions: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[MDNOutput, tuple[torch.Tensor, torch.Tensor]]:
        """Run M over sequences: z (B, T, z_dim), actions (B, T, action_dim).

        Output t predicts ``z[t+1]`` and the reward and termination of step t.
        """
        x = self.dropout(torch.cat([z, actions], dim=-1))
        hs, (h, c) = self.lstm(x, state)
        return self.heads(hs), (h, c)

    def step(
        self,
        z: torch.Tensor,
        action: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        weights: StepWeights | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance the LSTM one step for a batch: z (B, z_dim), action (B, action_dim), h, c (B, hidden).

        ``weights``: this M's :meth:`step_weights`, if the caller holds them.
        """
        w = self.step_weights() if weights is None else weights
        return torch.lstm_cell(torch.cat([z, action], dim=-1), (h, c), w.weight_ih, w.weight_hh, w.bias_ih, w.bias_hh)


def split_heads(raw: torch.Tensor, z_dim: int, num_mixtures: int, normalize: bool = True) -> MDNOutput:
    """Cut the head layer's output (..., 3 * z_dim * num_mixtures + 2) into an :class:`MDNOutput`."""
    # Views of ``raw``, three ops for the three mixture tensors: on the dream's batch-1 step
    # the op count, not the arithmetic, is what costs.
    mixture = raw[..., : 3 * z_dim * num_mixtures].reshape(*raw.shape[:-1], 3, z_dim, num_mixtures)
    logits, mu, log_sigma = mixture.unbind(-3)
    return MDNOutput(
        log_pi=F.log_softmax(logits, dim=-1) if normalize else logits,
        mu=mu,
        log_sigma=log_sigma.clamp(-7.0, 5.0),
        reward=raw[..., -2],
        termination_logit=raw[..., -1],
    )


class StackedMDNRNN:
    """K members of an ensemble of M with their weights stacked (K, ...), stepped together.

    The weights are copied from ``members`` once, at construction, so later changes to the
    members are not seen: build it when the members are trained (a dream builds one when it
    is made). A step of all K members for a batch of B episodes is one ``baddbmm`` for the
    LSTM gates and one for the heads, instead of K ``lstm_cell`` and K head calls.

    Args:
        members: the MDNRNNs, all of the same sizes.
    """

    def __init__(self, members: Sequence[MDNRNN]) -> None:
        members = list(members)
        if not members:
            raise ValueError("a stack of M members needs at least one member")
        sizes = {(m.z_dim, m.action_dim, m.hidden, m.num_mixtures) for m in members}
        if len(sizes) != 1:
            raise ValueError(
                f"members of an ensemble must share (z_dim, action_dim, hidden, num_mixtures), got {sorted(sizes)}"
            )
        first = members[0]
        self.z_dim, self.action_dim = first.z_dim, first.action_dim
        self.hidden, self.num_mixtures = first.hidden, first.num_mixtures
        self.size = len(members)
        with torch.no_grad():
            # Each member's one layer: (weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0).
            layers = [m.lstm.all_weights[0] for m in members]
            # [x, h] @ [W_ih; W_hh]^T: the input and recurrent matmuls of a member in one.
            self.lstm_weight = torch.stack(
                [torch.cat([w_ih, w_hh], dim=1).t() for w_ih, w_hh, _, _ in layers]
            ).contiguous()  # (K, input + hidden, 4 * hidden)
            self.lstm_bias = torch.stack([(b_ih + b_hh)[None] for _, _, b_ih, b_hh in layers])  # (K, 1, 4H)
            self.head_weight = torch.stack([m.head.weight.t() for m in members]).contiguous()  # (K, hidden, out)
            self.head_bias = torch.stack([m.head.bias[None] for m in members])  # (K, 1, out)

    def step(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance every member's LSTM one step.

        Args:
            x: the input ``[z, action]``, (B, z_dim + action_dim) shared by all members, or
                (K, B, z_dim + action_dim), one per member.
            h: the members' hidden states, (K, B, hidden).
            c: the members' cell states, (K, B, hidden).

        Returns:
            the new ``(h, c)``, each (K, B, hidden); row k is what ``members[k].step`` gives.
        """
        if x.ndim == 2:
            x = x.expand(self.size, *x.shape)
        gates = torch.baddbmm(self.lstm_bias, torch.cat([x, h], dim=-1), self.lstm_weight)
        i, f, g, o = gates.chunk(4, dim=-1)  # PyTorch's gate order
        c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        return torch.sigmoid(o) * torch.tanh(c), c

    def raw_heads(self, h: torch.Tensor) -> torch.Tensor:
        """The head layer's output for the members' states h (K, B, hidden): (K, B, 3 * z_dim * mixtures + 2)."""
        return torch.baddbmm(self.head_bias, h, self.head_weight)

    def heads(self, h: torch.Tensor, normalize: bool = True) -> MDNOutput:
        """Every member's heads on its own states h (K, B, hidden); outputs lead with (K, B)."""
        return split_heads(self.raw_heads(h), self.z_dim, self.num_mixtures, normalize)


def mixture_mean(out: MDNOutput) -> torch.Tensor:
    """The mean of M's mixture, (..., z_dim): the components' means weighted by their probabilities."""
    return (torch.softmax(out.log_pi, dim=-1) * out.mu).sum(-1)


def sample_mixture(
    out: MDNOutput, uniform: torch.Tensor, normal: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Draw ``z`` from M's mixture with the paper's temperature.

    The mixture logits are divided by ``temperature`` and the Gaussian noise is scaled by
    ``sqrt(temperature)``. The noise is passed in, not drawn here, so that a batched dream
    and a single one given the same noise produce the same ``z``.

    Args:
        out: M's prediction with log_pi (normalised or not), mu, log_sigma of shape (B, z_dim, K).
        uniform: (B, z_dim) uniforms in [0, 1) choosing the component of each dimension.
        normal: (B, z_dim) standard normals.
        temperature: tau > 0.
    """
    logits = out.log_pi if temperature == 1.0 else out.log_pi / temperature
    cdf = torch.softmax(logits, dim=-1).cumsum_(-1)
    component = torch.searchsorted(cdf, uniform.unsqueeze(-1).contiguous()).clamp_(max=out.mu.shape[-1] - 1)
    mu = out.mu.gather(-1, component).squeeze(-1)
    sigma = out.log_sigma.gather(-1, component).squeeze(-1).exp_()
    return torch.addcmul(mu, sigma, normal, value=math.sqrt(temperature))


def mixture_nll(out: MDNOutput, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` (..., z_dim) per element, shape (..., z_dim)."""
    target = target.unsqueeze(-1)
    log_prob = -0.5 * ((target - out.mu) / out.log_sigma.exp()).pow(2) - out.log_sigma - LOG_SQRT_2PI
    return -torch.logsumexp(out.log_pi + log_prob, dim=-1)
