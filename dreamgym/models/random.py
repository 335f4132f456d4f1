"""Counter-based random numbers for the dream.

Each dream episode owns a 64-bit key; the n-th random number of the episode is a pure
function of (key, n). A batch of 1024 dreams therefore draws, in one vectorised call, exactly
the numbers that 1024 single dreams with the same keys would draw one by one, which is what
makes the vector env reproduce the single env. The generator is SplitMix64 (Steele et al.,
2014), whose n-th output can be computed directly.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def counter_uniform(keys: np.ndarray, counters: np.ndarray, n: int) -> np.ndarray:
    """Uniforms in [0, 1): for each row b, numbers ``counters[b] .. counters[b] + n - 1`` of stream ``keys[b]``.

    Args:
        keys: uint64 array (B,).
        counters: uint64 array (B,), the position of the first number in each stream.
        n: how many numbers per row.

    Returns:
        float32 array (B, n).
    """
    lanes = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        state = keys[:, None] + (counters[:, None] + lanes[None, :]) * _GOLDEN
        bits = _splitmix64(state)
    # The top 24 bits fill a float32 mantissa exactly.
    return (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


def counter_normal(uniform_pairs: np.ndarray) -> np.ndarray:
    """Box-Muller: (B, 2m) uniforms in [0, 1) -> (B, 2m) standard normals."""
    half = uniform_pairs.shape[1] // 2
    u1 = 1.0 - uniform_pairs[:, :half]  # (0, 1], so the log is finite
    u2 = uniform_pairs[:, half:]
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = np.float32(2.0 * np.pi) * u2
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
