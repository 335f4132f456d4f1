"""`dreamgym video` and `dreamgym inspect` on tiny models, and RecordVideo on the dream env."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamgym.cli import main
from dreamgym.visualize import LABEL_HEIGHT, make_video, panel_slices

iio = pytest.importorskip("imageio.v3")

STEPS = 6
HEIGHT, WIDTH = LABEL_HEIGHT + 256, 3 * 256


@pytest.fixture
def tiny_controller(tmp_path, tiny_config):
    from dreamgym.agents.controller import LinearController

    path = tmp_path / "ctrl"
    LinearController(obs_dim=tiny_config.z_dim + tiny_config.rnn_hidden).save(path)
    return path


def test_video_gif_frames_and_same_start(tmp_path, tiny_model_dir, tiny_controller):
    out = tmp_path / "v.gif"
    path, frames = make_video(agent=str(tiny_controller), steps=STEPS, out=out, model=tiny_model_dir, seed=3)
    assert path == out and frames.shape == (STEPS + 1, HEIGHT, WIDTH, 3)
    # The dream starts from V's encoding of the first real frame: its first panel is the reconstruction.
    _, recon, dream = panel_slices()
    np.testing.assert_array_equal(frames[0][recon], frames[0][dream])
    back = iio.imread(out, index=None)
    assert back.shape[0] == STEPS + 1 and back.shape[1:3] == (HEIGHT, WIDTH)


def test_video_cli_mp4(tmp_path, tiny_model_dir, tiny_controller, capsys):
    pytest.importorskip("imageio_ffmpeg")
    out = tmp_path / "v.mp4"
    assert main(["video", "--agent", str(tiny_controller), "--model", str(tiny_model_dir),
                 "--steps", str(STEPS), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    back = iio.imread(out, plugin="FFMPEG", index=None)
    assert back.shape == (STEPS + 1, HEIGHT, WIDTH, 3)


def test_video_rejects_unknown_suffix(tmp_path, tiny_model_dir, tiny_controller):
    assert main(["video", "--agent", str(tiny_controller), "--model", str(tiny_model_dir),
                 "--steps", "1", "--out", str(tmp_path / "v.txt")]) == 2


def _tiny_store(root, episodes=3, steps=12):
    from dreamgym.data.storage import Episode, EpisodeStore

    store = EpisodeStore(root)
    rng = np.random.default_rng(0)
    for seed in range(episodes):
        store.write(Episode(
            frames=rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8),
            actions=rng.uniform(0, 1, (steps, 3)).astype(np.float32),
            rewards=rng.normal(size=steps).astype(np.float32),
            terminated=np.zeros(steps, bool),
            truncated=np.zeros(steps, bool),
            seed=seed,
        ))
    return root


def test_inspect_writes_pngs(tmp_path, tiny_model_dir, capsys):
    logs = tiny_model_dir / "logs"
    logs.mkdir()
    (logs / "vae.json").write_text(json.dumps([{"epoch": e, "loss": 1.0 / e, "kl": 0.1 * e} for e in (1, 2, 3)]))
    (logs / "rnn.json").write_text(json.dumps([{"epoch": e, "nll": 2.0 / e, "heldout_nll": None} for e in (1, 2)]))
    ctrl = tmp_path / "ctrl"
    ctrl.mkdir()
    (ctrl / "training_log.json").write_text(json.dumps([{"generation": g, "best": g, "mean": -g} for g in (1, 2)]))
    data = _tiny_store(tmp_path / "data")
    out = tmp_path / "inspect"
    assert main(["inspect", str(tiny_model_dir), "--data", str(data), "--out", str(out),
                 "--controller", str(ctrl)]) == 0
    names = {"reconstruction.png", "open_loop.png", "curves_vae.png", "curves_rnn.png", "curves_controller.png"}
    assert names <= {p.name for p in out.iterdir()}
    for name in names:
        assert iio.imread(out / name).ndim == 3


def test_inspect_without_data_still_draws_curves(tmp_path, tiny_model_dir, capsys):
    (tiny_model_dir / "logs").mkdir()
    (tiny_model_dir / "logs" / "vae.json").write_text(json.dumps([{"epoch": 1, "loss": 1.0}]))
    assert main(["inspect", str(tiny_model_dir)]) == 0
    text = capsys.readouterr().out
    assert "skipping reconstruction.png" in text and "skipping curves_rnn.png" in text
    assert (tiny_model_dir / "curves_vae.png").is_file()
    assert not (tiny_model_dir / "reconstruction.png").exists()


def test_record_video_on_dream_env(tmp_path, tiny_model):
    pytest.importorskip("moviepy", reason="gymnasium's RecordVideo needs moviepy (pip install moviepy)")
    import gymnasium as gym
    from gymnasium.wrappers import RecordVideo

    import dreamgym  # noqa: F401

    env = gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, render_mode="rgb_array", max_episode_steps=5)
    env = RecordVideo(env, str(tmp_path / "videos"), episode_trigger=lambda i: True, disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 1
    back = iio.imread(videos[0], plugin="FFMPEG", index=None)
    assert back.shape[1:] == (256, 256, 3) and len(back) == 6
