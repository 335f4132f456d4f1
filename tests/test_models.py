"""V (ConvVAE), M (MDNRNN), the mixture sampler and likelihood, and the counter RNG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamgym.models import MDNRNN, ConvVAE, MDNOutput, WorldModel, mixture_nll, sample_mixture, vae_loss
from dreamgym.models.random import counter_normal, counter_uniform

TINY_VAE = dict(z_dim=8, encoder_channels=(4, 8, 8, 8), decoder_channels=(8, 8, 4))


# --------------------------------------------------------------------------- V
def test_conv_vae_shapes():
    torch.manual_seed(0)
    vae = ConvVAE(**TINY_VAE)
    images = torch.rand(3, 3, 64, 64)
    mu, logvar = vae.encode(images)
    assert mu.shape == (3, 8) and logvar.shape == (3, 8)
    decoded = vae.decode(mu)
    assert decoded.shape == (3, 3, 64, 64)
    assert decoded.min() >= 0 and decoded.max() <= 1
    recon, mu2, logvar2 = vae(images)
    assert recon.shape == (3, 3, 64, 64)
    torch.testing.assert_close(mu2, mu)
    torch.testing.assert_close(logvar2, logvar)


def test_conv_vae_default_is_paper_size():
    vae = ConvVAE()
    assert sum(p.numel() for p in vae.parameters()) == 4_348_547
    mu, _ = vae.encode(torch.zeros(1, 3, 64, 64))
    assert mu.shape == (1, 32)
    assert vae.decode(mu).shape == (1, 3, 64, 64)


def test_conv_vae_forward_samples():
    """forward() draws z with the reparameterisation trick: two calls differ, the mean path does not."""
    torch.manual_seed(0)
    vae = ConvVAE(**TINY_VAE)
    images = torch.rand(2, 3, 64, 64)
    a, _, _ = vae(images)
    b, _, _ = vae(images)
    assert not torch.equal(a, b)


def test_vae_loss_free_bits_floor():
    images = torch.rand(4, 3, 64, 64)
    recon = torch.rand(4, 3, 64, 64)
    # mu = 0, logvar = 0: the KL is exactly 0, so the floor applies.
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    loss, rec, kl = vae_loss(images, recon, mu, logvar, kl_free_bits=16.0)
    assert kl.item() == pytest.approx(16.0)
    expected_rec = (recon - images).pow(2).sum(dim=(1, 2, 3)).mean()
    torch.testing.assert_close(rec, expected_rec)
    torch.testing.assert_close(loss, expected_rec + 16.0)


@pytest.mark.parametrize("free_bits", [0.0, 0.5, 16.0, 64.0])
def test_vae_loss_kl_never_below_floor(free_bits):
    torch.manual_seed(1)
    images = torch.rand(6, 3, 64, 64)
    for scale in (0.0, 0.1, 1.0, 5.0):
        mu = torch.randn(6, 8) * scale
        logvar = torch.randn(6, 8) * scale
        _, _, kl = vae_loss(images, images, mu, logvar, free_bits)
        raw = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
        assert kl.item() >= free_bits - 1e-5
        torch.testing.assert_close(kl, raw.clamp(min=free_bits).mean())


def test_vae_loss_above_floor_is_the_analytic_kl():
    images = torch.zeros(1, 3, 64, 64)
    mu = torch.full((1, 8), 3.0)  # KL = 0.5 * 8 * 9 = 36 nats
    logvar = torch.zeros(1, 8)
    _, rec, kl = vae_loss(images, images, mu, logvar, kl_free_bits=16.0)
    assert kl.item() == pytest.approx(36.0)
    assert rec.item() == 0.0


def test_vae_loss_gradient_stops_below_floor():
    """The floor is a clamp: below it, the KL gives the encoder no gradient."""
    mu = torch.full((2, 8), 0.1, requires_grad=True)
    logvar = torch.zeros(2, 8, requires_grad=True)
    images = torch.zeros(2, 3, 64, 64)
    _, _, kl = vae_loss(images, images, mu, logvar, kl_free_bits=16.0)
    kl.backward()
    assert torch.all(mu.grad == 0) and torch.all(logvar.grad == 0)


# --------------------------------------------------------------------------- M
def _tiny_rnn(seed=0, **kwargs):
    torch.manual_seed(seed)
    return MDNRNN(**{"z_dim": 8, "action_dim": 3, "hidden": 16, "num_mixtures": 2, **kwargs}).eval()


def test_mdnrnn_forward_shapes():
    rnn = _tiny_rnn()
    z, a = torch.randn(2, 5, 8), torch.rand(2, 5, 3)
    out, (h, c) = rnn(z, a)
    assert isinstance(out, MDNOutput)
    assert out.log_pi.shape == out.mu.shape == out.log_sigma.shape == (2, 5, 8, 2)
    assert out.reward.shape == out.termination_logit.shape == (2, 5)
    assert h.shape == c.shape == (1, 2, 16)
    # log_pi is a normalised log-distribution over the K components.
    torch.testing.assert_close(out.log_pi.logsumexp(-1), torch.zeros(2, 5, 8), atol=1e-5, rtol=0)
    assert out.log_sigma.min() >= -7.0 and out.log_sigma.max() <= 5.0


def test_mdnrnn_step_matches_forward():
    rnn = _tiny_rnn()
    B, T = 3, 6
    z, a = torch.randn(B, T, 8), torch.rand(B, T, 3)
    with torch.no_grad():
        seq_out, (h_last, c_last) = rnn(z, a)
        h = torch.zeros(B, 16)
        c = torch.zeros(B, 16)
        for t in range(T):
            h, c = rnn.step(z[:, t], a[:, t], h, c)
            step_out = rnn.heads(h)
            for name in MDNOutput._fields:
                torch.testing.assert_close(
                    getattr(step_out, name), getattr(seq_out, name)[:, t], atol=1e-5, rtol=1e-5, msg=name
                )
    torch.testing.assert_close(h, h_last[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c, c_last[0], atol=1e-5, rtol=1e-5)


def test_mdnrnn_forward_continues_from_state():
    """Splitting a sequence in two and passing the state on gives the same outputs."""
    rnn = _tiny_rnn()
    z, a = torch.randn(2, 6, 8), torch.rand(2, 6, 3)
    with torch.no_grad():
        whole, _ = rnn(z, a)
        first, state = rnn(z[:, :4], a[:, :4])
        second, _ = rnn(z[:, 4:], a[:, 4:], state)
    torch.testing.assert_close(torch.cat([first.mu, second.mu], 1), whole.mu, atol=1e-5, rtol=1e-5)


def test_mdnrnn_reward_and_termination_come_from_head():
    rnn = _tiny_rnn()
    with torch.no_grad():
        rnn.head.bias[-1] = -10.0
        rnn.head.bias[-2] = 3.0
        rnn.head.weight[-2:].zero_()
    out = rnn.heads(torch.randn(4, 16))
    torch.testing.assert_close(out.reward, torch.full((4,), 3.0))
    torch.testing.assert_close(out.termination_logit, torch.full((4,), -10.0))


# ---------------------------------------------------------------- sampling
def _mixture(log_weights, mu, log_sigma, batch=1, z_dim=1):
    k = len(log_weights)
    shape = (batch, z_dim, k)
    return MDNOutput(
        log_pi=torch.log_softmax(torch.tensor(log_weights, dtype=torch.float32), -1).expand(shape).clone(),
        mu=torch.tensor(mu, dtype=torch.float32).expand(shape).clone(),
        log_sigma=torch.tensor(log_sigma, dtype=torch.float32).expand(shape).clone(),
        reward=torch.zeros(batch),
        termination_logit=torch.zeros(batch),
    )


def _random_mixture(seed=0, batch=4, z_dim=8, k=3):
    g = torch.Generator().manual_seed(seed)
    return MDNOutput(
        log_pi=torch.log_softmax(torch.randn(batch, z_dim, k, generator=g) * 2, -1),
        mu=torch.randn(batch, z_dim, k, generator=g) * 3,
        log_sigma=torch.randn(batch, z_dim, k, generator=g) * 0.5 - 1,
        reward=torch.zeros(batch),
        termination_logit=torch.zeros(batch),
    )


def test_sample_mixture_is_deterministic_given_noise():
    out = _random_mixture()
    g = torch.Generator().manual_seed(1)
    u, n = torch.rand(4, 8, generator=g), torch.randn(4, 8, generator=g)
    a = sample_mixture(out, u, n, 1.3)
    b = sample_mixture(out, u.clone(), n.clone(), 1.3)
    assert a.shape == (4, 8)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = sample_mixture(out, torch.rand(4, 8, generator=g), n, 1.3)
    assert not torch.equal(a, c)


def test_sample_mixture_rows_are_independent_of_the_batch():
    out = _random_mixture()
    g = torch.Generator().manual_seed(2)
    u, n = torch.rand(4, 8, generator=g), torch.randn(4, 8, generator=g)
    batched = sample_mixture(out, u, n, 0.7)
    for b in range(4):
        single = MDNOutput(*(t[b : b + 1] for t in out))
        torch.testing.assert_close(sample_mixture(single, u[b : b + 1], n[b : b + 1], 0.7), batched[b : b + 1])


def test_sample_mixture_component_choice_follows_cumulative_weights():
    # weights 0.3, 0.7: a uniform below 0.3 picks component 0, above it component 1.
    out = _mixture([math.log(0.3), math.log(0.7)], mu=[-5.0, 5.0], log_sigma=[0.0, 0.0], batch=4)
    u = torch.tensor([[0.0], [0.29], [0.31], [0.999]])
    z = sample_mixture(out, u, torch.zeros(4, 1), 1.0)
    torch.testing.assert_close(z, torch.tensor([[-5.0], [-5.0], [5.0], [5.0]]))


def test_sample_mixture_low_temperature_picks_max_weight_component():
    out = _random_mixture(seed=3, batch=16, k=4)
    g = torch.Generator().manual_seed(4)
    u = torch.rand(16, 8, generator=g)
    z = sample_mixture(out, u, torch.zeros(16, 8), 1e-3)
    best = out.log_pi.argmax(-1, keepdim=True)
    torch.testing.assert_close(z, out.mu.gather(-1, best).squeeze(-1))


def test_sample_mixture_high_temperature_flattens_weights():
    out = _mixture([math.log(0.9), math.log(0.1)], mu=[-5.0, 5.0], log_sigma=[0.0, 0.0])
    u, n = torch.tensor([[0.6]]), torch.zeros(1, 1)
    assert sample_mixture(out, u, n, 1.0).item() == -5.0  # 0.6 < 0.9
    assert sample_mixture(out, u, n, 100.0).item() == 5.0  # weights ~ (0.51, 0.49): 0.6 > 0.51


def test_sample_mixture_component_frequencies():
    weights = torch.tensor([0.2, 0.5, 0.3])
    out = _mixture(weights.log().tolist(), mu=[0.0, 1.0, 2.0], log_sigma=[-7.0] * 3, batch=20000)
    g = torch.Generator().manual_seed(5)
    for tau in (1.0, 2.0):
        z = sample_mixture(out, torch.rand(20000, 1, generator=g), torch.zeros(20000, 1), tau)
        counts = torch.bincount(z.round().long().flatten(), minlength=3).float() / 20000
        expected = torch.softmax(weights.log() / tau, -1)
        torch.testing.assert_close(counts, expected, atol=0.015, rtol=0)


def test_sample_mixture_noise_scales_with_sqrt_temperature():
    out = _mixture([0.0], mu=[1.5], log_sigma=[math.log(2.0)], batch=5)
    n = torch.linspace(-2, 2, 5)[:, None]
    u = torch.full((5, 1), 0.5)
    dev = {tau: sample_mixture(out, u, n, tau) - 1.5 for tau in (0.25, 1.0, 4.0)}
    torch.testing.assert_close(dev[1.0], 2.0 * n)
    torch.testing.assert_close(dev[0.25], 0.5 * dev[1.0])
    torch.testing.assert_close(dev[4.0], 2.0 * dev[1.0])


def test_sample_mixture_noise_scaling_multi_component():
    """With K > 1 and a dominant component, z - mu_k scales by sqrt(tau1 / tau2)."""
    out = _random_mixture(seed=6, batch=8, k=3)
    with torch.no_grad():
        out.log_pi.copy_(torch.log_softmax(out.log_pi * 100, -1))  # one component per dim
    g = torch.Generator().manual_seed(7)
    u, n = torch.rand(8, 8, generator=g), torch.randn(8, 8, generator=g)
    best = out.log_pi.argmax(-1, keepdim=True)
    mu_k = out.mu.gather(-1, best).squeeze(-1)
    d1 = sample_mixture(out, u, n, 0.5) - mu_k
    d2 = sample_mixture(out, u, n, 0.125) - mu_k
    torch.testing.assert_close(d2, d1 * 0.5, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- likelihood
def test_mixture_nll_single_gaussian_matches_log_density():
    g = torch.Generator().manual_seed(8)
    mu = torch.randn(4, 6, 1, generator=g)
    log_sigma = torch.randn(4, 6, 1, generator=g) * 0.3
    out = MDNOutput(torch.zeros(4, 6, 1), mu, log_sigma, torch.zeros(4), torch.zeros(4))
    target = torch.randn(4, 6, generator=g)
    nll = mixture_nll(out, target)
    assert nll.shape == (4, 6)
    sigma = log_sigma.exp().squeeze(-1)
    manual = 0.5 * ((target - mu.squeeze(-1)) / sigma) ** 2 + torch.log(sigma) + 0.5 * math.log(2 * math.pi)
    torch.testing.assert_close(nll, manual, atol=1e-5, rtol=1e-5)
    reference = -torch.distributions.Normal(mu.squeeze(-1), sigma).log_prob(target)
    torch.testing.assert_close(nll, reference, atol=1e-5, rtol=1e-5)


def test_mixture_nll_two_components_matches_manual_mixture():
    out = _random_mixture(seed=9, batch=3, z_dim=5, k=2)
    target = torch.randn(3, 5)
    comps = torch.distributions.Normal(out.mu, out.log_sigma.exp())
    density = (out.log_pi.exp() * comps.log_prob(target.unsqueeze(-1)).exp()).sum(-1)
    torch.testing.assert_close(mixture_nll(out, target), -density.log(), atol=1e-4, rtol=1e-4)


def test_mixture_nll_is_differentiable():
    rnn = _tiny_rnn()
    out, _ = rnn(torch.randn(2, 3, 8), torch.rand(2, 3, 3))
    mixture_nll(out, torch.randn(2, 3, 8)).mean().backward()
    assert rnn.head.weight.grad is not None and torch.isfinite(rnn.head.weight.grad).all()
    assert rnn.head.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- world model helpers
def test_world_model_encode_decode(tiny_model):
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    mu, logvar = tiny_model.encode(frames)
    assert mu.shape == logvar.shape == (3, 8)
    # encode() is V's encoder on [0, 1] floats, channels first.
    ref_mu, _ = tiny_model.vae.encode(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(mu, ref_mu.detach())
    decoded = tiny_model.decode(mu)
    assert decoded.shape == (3, 64, 64, 3) and decoded.dtype == torch.uint8


@pytest.mark.parametrize(
    "frames",
    [np.zeros((64, 64, 3), np.uint8), np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 96, 96, 3), np.uint8)],
)
def test_world_model_encode_rejects_bad_frames(tiny_model, frames):
    with pytest.raises(ValueError, match="expected uint8 frames of shape"):
        tiny_model.encode(frames)


def test_set_start_latents(tiny_model):
    mu, logvar = torch.randn(4, 8), torch.randn(4, 8)
    tiny_model.set_start_latents(mu, logvar)
    torch.testing.assert_close(tiny_model.start_mu, mu)
    torch.testing.assert_close(tiny_model.start_logvar, logvar)
    with pytest.raises(ValueError, match="start latents must have shape"):
        tiny_model.set_start_latents(torch.zeros(5, 8), torch.zeros(5, 8))


def test_world_model_from_dict_config(tiny_config):
    model = WorldModel(tiny_config.to_dict())
    assert model.config == tiny_config


# ---------------------------------------------------------------- counter RNG
def _keys(*values):
    return np.array(values, dtype=np.uint64)


def test_counter_uniform_is_reproducible():
    keys, counters = _keys(1, 2, 2**63 + 5), _keys(0, 10, 2**40)
    a = counter_uniform(keys, counters, 7)
    b = counter_uniform(keys.copy(), counters.copy(), 7)
    assert a.shape == (3, 7) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # Inputs are not modified.
    np.testing.assert_array_equal(counters, _keys(0, 10, 2**40))


def test_counter_uniform_is_position_addressable():
    keys = _keys(12345, 0, 2**64 - 1)
    long = counter_uniform(keys, _keys(0, 0, 0), 100)
    for k, n in [(0, 100), (1, 5), (37, 20), (99, 1)]:
        part = counter_uniform(keys, _keys(k, k, k), n)
        np.testing.assert_array_equal(part, long[:, k : k + n])
    # Different starting positions per row.
    mixed = counter_uniform(keys, _keys(3, 50, 90), 10)
    np.testing.assert_array_equal(mixed[0], long[0, 3:13])
    np.testing.assert_array_equal(mixed[1], long[1, 50:60])
    np.testing.assert_array_equal(mixed[2], long[2, 90:100])


def test_counter_uniform_batch_rows_equal_single_rows():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**64, size=16, dtype=np.uint64)
    counters = rng.integers(0, 2**32, size=16, dtype=np.uint64)
    batch = counter_uniform(keys, counters, 9)
    for b in range(16):
        np.testing.assert_array_equal(batch[b], counter_uniform(keys[b : b + 1], counters[b : b + 1], 9)[0])


def test_counter_uniform_streams_differ():
    draws = counter_uniform(_keys(1, 2, 3), _keys(0, 0, 0), 32)
    assert not np.array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[1], draws[2])
    assert len(np.unique(draws[0])) == 32


def test_counter_uniform_moments():
    draws = counter_uniform(np.arange(200, dtype=np.uint64), np.zeros(200, dtype=np.uint64), 500).ravel()
    assert draws.min() >= 0.0 and draws.max() < 1.0
    assert abs(draws.mean() - 0.5) < 0.005
    assert abs(draws.var() - 1 / 12) < 0.002
    hist, _ = np.histogram(draws, bins=10, range=(0, 1))
    assert np.all(np.abs(hist / draws.size - 0.1) < 0.005)
    # Successive numbers of a stream are uncorrelated.
    stream = counter_uniform(_keys(7), _keys(0), 100_000)[0]
    assert abs(np.corrcoef(stream[:-1], stream[1:])[0, 1]) < 0.02


def test_counter_normal_moments_and_shape():
    u = counter_uniform(np.arange(100, dtype=np.uint64), np.zeros(100, dtype=np.uint64), 1000)
    n = counter_normal(u)
    assert n.shape == (100, 1000) and n.dtype == np.float32
    assert np.isfinite(n).all()
    flat = n.ravel()
    assert abs(flat.mean()) < 0.01
    assert abs(flat.std() - 1.0) < 0.01
    assert abs(np.mean(flat**3)) < 0.03  # symmetric
    assert abs(np.mean(flat**4) - 3.0) < 0.1  # Gaussian kurtosis
    assert abs(np.mean(np.abs(flat) < 1.0) - 0.6827) < 0.005


def test_counter_normal_edge_uniforms_are_finite():
    u = np.array([[0.0, 1.0 - 2.0**-24, 0.0, 0.5]], dtype=np.float32)
    assert np.isfinite(counter_normal(u)).all()
    # Deterministic, row-wise.
    np.testing.assert_array_equal(counter_normal(u), counter_normal(u.copy()))
