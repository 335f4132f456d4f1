"""Does a V that keeps the dashboard reconstruct it? Its bottom rows in V's input and in V's reconstruction.

    python results/dream_to_real/dashboard_reconstruction.py MODEL DATA SEED [SEED ...]

For every 5th frame after the zoom-in of each episode, compares the dashboard strip (the
bottom 8 of 64 rows) of the stored frame with that of V's reconstruction from its mean ``z``:
the strip's mean brightness (a bar that grows brightens it) and their correlation, and the
share of the strip's frame-to-frame variance that the reconstruction keeps.
"""
import sys

import numpy as np
import torch

from dreamgym.episodes import EpisodeStore
from dreamgym.models.world_model import WorldModel

torch.set_num_threads(1)
model = WorldModel.from_pretrained(sys.argv[1]).eval()
store = EpisodeStore(sys.argv[2])
rows = slice(56, 64)  # the 12 dashboard rows of 96, resized to 64
for seed in map(int, sys.argv[3:]):
    frames = store.load(seed).frames[50::5]
    mu, _ = model.encode(frames)
    recon = model.decode(mu).cpu().numpy()
    x = frames[:, rows].astype(float).mean(axis=(1, 2, 3))
    y = recon[:, rows].astype(float).mean(axis=(1, 2, 3))
    a, b = frames[:, rows].astype(float), recon[:, rows].astype(float)
    explained = 1 - ((a - b) ** 2).mean(0).sum() / a.var(0).sum()
    print(f"seed {seed}: {len(frames)} frames; dashboard brightness input {x.mean():.1f} +/- {x.std():.2f}, "
          f"recon {y.mean():.1f} +/- {y.std():.2f}, correlation {np.corrcoef(x, y)[0, 1]:.3f}; "
          f"the reconstruction keeps {explained:.3f} of the strip's frame-to-frame variance")
