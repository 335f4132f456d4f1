"""V: the convolutional variational autoencoder of Ha & Schmidhuber (2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


class ConvVAE(nn.Module):
    """Compresses a 64x64x3 frame into a latent ``z``.

    Encoder: four conv layers (kernel 4, stride 2, ReLU) to a 2x2 map, then linear heads for
    the mean and log-variance of ``z``. Decoder: a linear layer to a 1x1 map, then deconv
    layers (stride 2) back to 64x64x3 with a sigmoid. With the default channels this is the
    paper's network: 4,348,547 parameters at ``z_dim=32``.

    Args:
        z_dim: size of the latent.
        encoder_channels: channels of the four conv layers.
        decoder_channels: channels of the first three deconv layers (the last outputs RGB).
        decoder_kernels: kernel sizes of the four deconv layers.
    """

    def __init__(
        self,
        z_dim: int = 32,
        encoder_channels: Sequence[int] = (32, 64, 128, 256),
        decoder_channels: Sequence[int] = (128, 64, 32),
        decoder_kernels: Sequence[int] = (5, 5, 6, 6),
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        channels = [3, *encoder_channels]
        self.encoder = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=4, stride=2)
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
        )
        flat = encoder_channels[-1] * 2 * 2
        self.fc_mu = nn.Linear(flat, z_dim)
        self.fc_logvar = nn.Linear(flat, z_dim)
        self.decoder_seed = 4 * encoder_channels[-1]
        self.fc_decode = nn.Linear(z_dim, self.decoder_seed)
        dec = [self.decoder_seed, *decoder_channels, 3]
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, kernel_size=k, stride=2)
            for c_in, c_out, k in zip(dec[:-1], dec[1:], decoder_kernels, strict=True)
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as floats in [0, 1], shape (N, 3, 64, 64) -> (mu, logvar), each (N, z_dim)."""
        x = images
        for conv in self.encoder:
            x = F.relu(conv(x))
        x = x.flatten(1)
        return self.fc_mu(x), self.fc_logvar(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, z_dim) -> images as floats in [0, 1], shape (N, 3, 64, 64)."""
        x = self.fc_decode(z).view(-1, self.decoder_seed, 1, 1)
        for i, deconv in enumerate(self.decoder):
            x = deconv(x)
            x = torch.sigmoid(x) if i == len(self.decoder) - 1 else F.relu(x)
        return x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode, sample ``z`` with the reparameterisation trick, decode.

        Returns (reconstruction, mu, logvar).
        """
        mu, logvar = self.encode(images)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z), mu, logvar


def vae_loss(
    images: torch.Tensor,
    reconstruction: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kl_free_bits: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's loss: summed squared error plus a KL clamped below at ``kl_free_bits``.

    The floor stops the KL from collapsing every latent to the prior before the
    reconstruction has learnt to use them. Returns (loss, reconstruction term, KL term),
    each averaged over the batch.
    """
    recon = (reconstruction - images).pow(2).sum(dim=(1, 2, 3))
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)
    kl = torch.clamp(kl, min=kl_free_bits)
    return (recon + kl).mean(), recon.mean(), kl.mean()
