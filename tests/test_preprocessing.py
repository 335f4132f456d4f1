"""preprocess_frames: CarRacing's 96x96 frames to V's 64x64 input."""

from __future__ import annotations

import numpy as np
import pytest

from dreamgym.preprocessing import DASHBOARD_ROWS, preprocess_frames


def _random_frames(n=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (96, 96, 3) if n is None else (n, 96, 96, 3)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize("crop", [True, False])
def test_single_frame_shape_and_dtype(crop):
    out = preprocess_frames(_random_frames(), crop_dashboard=crop)
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.uint8


@pytest.mark.parametrize("crop", [True, False])
def test_batch_shape_matches_single_frames(crop):
    frames = _random_frames(5)
    out = preprocess_frames(frames, crop_dashboard=crop)
    assert out.shape == (5, 64, 64, 3)
    assert out.dtype == np.uint8
    for i in range(5):
        np.testing.assert_array_equal(out[i], preprocess_frames(frames[i], crop_dashboard=crop))


def test_other_image_size():
    assert preprocess_frames(_random_frames(), image_size=32).shape == (32, 32, 3)


@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("value", [0, 1, 77, 128, 254, 255])
def test_constant_image_stays_constant(crop, value):
    frame = np.full((96, 96, 3), value, dtype=np.uint8)
    out = preprocess_frames(frame, crop_dashboard=crop)
    assert (out == value).all()


def test_per_channel_constants_kept():
    frame = np.empty((96, 96, 3), dtype=np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 10, 200, 99
    out = preprocess_frames(frame)
    assert (out[..., 0] == 10).all() and (out[..., 1] == 200).all() and (out[..., 2] == 99).all()


def test_resize_is_an_average():
    """A frame of two halves keeps its mean colour (area resampling preserves mass)."""
    frame = np.zeros((96, 96, 3), dtype=np.uint8)
    frame[:, :48] = 200
    out = preprocess_frames(frame, crop_dashboard=False)
    assert (out[:, :32] == 200).all()
    assert (out[:, 32:] == 0).all()


def test_crop_dashboard_drops_bottom_rows():
    grey, magenta = np.array([100, 100, 100]), np.array([255, 0, 255])
    frame = np.empty((96, 96, 3), dtype=np.uint8)
    frame[:] = grey
    frame[96 - DASHBOARD_ROWS :] = magenta

    cropped = preprocess_frames(frame, crop_dashboard=True)
    assert (cropped == grey).all(), "the dashboard colour leaked into the cropped frame"

    full = preprocess_frames(frame, crop_dashboard=False)
    # 12 of 96 rows is the bottom 8 of 64 output rows.
    np.testing.assert_array_equal(full[-8:], np.broadcast_to(magenta, (8, 64, 3)))
    np.testing.assert_array_equal(full[:-8], np.broadcast_to(grey, (56, 64, 3)))


def test_crop_keeps_the_top_of_the_frame():
    """Cropping rescales the top 84 rows; a mark in the top rows must survive."""
    frame = np.zeros((96, 96, 3), dtype=np.uint8)
    frame[:21] = 255  # a quarter of the 84 kept rows
    out = preprocess_frames(frame, crop_dashboard=True)
    assert (out[:16] == 255).all()
    assert (out[16:] == 0).all()


def test_input_not_modified():
    frame = _random_frames()
    before = frame.copy()
    preprocess_frames(frame)
    np.testing.assert_array_equal(frame, before)


@pytest.mark.parametrize(
    "shape",
    [(64, 64, 3), (96, 96), (96, 96, 4), (96, 95, 3), (2, 3, 96, 96, 3), (3, 96, 96), (96,)],
)
def test_wrong_shape_raises(shape):
    with pytest.raises(ValueError, match=r"shape \(96, 96, 3\)"):
        preprocess_frames(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint16, bool])
def test_wrong_dtype_raises(dtype):
    with pytest.raises(ValueError, match="uint8"):
        preprocess_frames(np.zeros((96, 96, 3), dtype=dtype))
