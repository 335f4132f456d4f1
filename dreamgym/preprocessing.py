"""Turning CarRacing's 96x96 frames into the 64x64 frames V sees.

Every path that feeds V goes through :func:`preprocess_frames`: data collection, the
real-env adapter and the tests, so that V never sees frames prepared two different ways.

The dashboard strip: CarRacing draws speed, ABS and steering bars in the bottom 12 rows.
With ``crop_dashboard=True`` (the default, as in Ha & Schmidhuber) those rows are dropped
before resizing, so V spends its 32 latents on the track; speed is still recoverable by M
from consecutive latents. With ``crop_dashboard=False`` the whole frame is resized.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

CARRACING_FRAME_SHAPE = (96, 96, 3)
DASHBOARD_ROWS = 12


@lru_cache(maxsize=16)
def _area_matrix(src: int, dst: int) -> np.ndarray:
    """A (dst, src) matrix averaging each output pixel's footprint (area resampling)."""
    matrix = np.zeros((dst, src), dtype=np.float32)
    scale = src / dst
    for i in range(dst):
        start, stop = i * scale, (i + 1) * scale
        for j in range(int(np.floor(start)), int(np.ceil(stop))):
            overlap = min(stop, j + 1) - max(start, j)
            if overlap > 0:
                matrix[i, j] = overlap / scale
    return matrix


def preprocess_frames(
    frames: np.ndarray, image_size: int = 64, crop_dashboard: bool = True
) -> np.ndarray:
    """Resize CarRacing frames to V's input.

    Args:
        frames: uint8 array of shape (96, 96, 3) or (N, 96, 96, 3).
        image_size: side of the output frame.
        crop_dashboard: drop the bottom dashboard strip first (see the module docstring).

    Returns:
        uint8 array of shape (image_size, image_size, 3), or (N, image_size, image_size, 3).
    """
    frames = np.asarray(frames)
    single = frames.ndim == 3
    if single:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[1:] != CARRACING_FRAME_SHAPE:
        raise ValueError(
            f"expected CarRacing frames of shape (96, 96, 3) or (N, 96, 96, 3), got {frames.shape}"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got dtype {frames.dtype}")
    if crop_dashboard:
        frames = frames[:, : CARRACING_FRAME_SHAPE[0] - DASHBOARD_ROWS]
    rows = _area_matrix(frames.shape[1], image_size)
    cols = _area_matrix(frames.shape[2], image_size)
    resized = np.einsum("ih,nhwc,jw->nijc", rows, frames.astype(np.float32), cols, optimize=True)
    out = np.clip(np.rint(resized), 0, 255).astype(np.uint8)
    return out[0] if single else out
