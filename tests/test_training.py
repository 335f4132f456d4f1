"""Training V and M at toy scale: learning, checkpoints, resume, interrupts, metrics, the split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from dreamgym import WorldModel, WorldModelConfig
from dreamgym.data.storage import CorruptShardWarning, Episode, EpisodeStore
from dreamgym.errors import ArgumentError
from dreamgym.training import (
    CheckpointError,
    common,
    evaluate_world_model,
    pick_device,
    split_seeds,
    train_rnn,
    train_vae,
)
from dreamgym.training import rnn as rnn_module
from dreamgym.training import vae as vae_module

from conftest import TINY_CONFIG

HOLDOUT = 0.34  # 2 of 6 episodes: enough for a return correlation
STEPS = 60  # > 50 so the k=50 open-loop score is defined
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]


def block_episode(seed: int, steps: int = STEPS) -> Episode:
    """A coloured block moved by the action's first component; reward = the action's second.

    The last action of a terminating episode has its third component at 1, the "crash"
    that ends it, so M can learn termination from what it is fed.
    """
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(steps, 3)).astype(np.float32)
    actions[:, 2] = rng.uniform(0, 0.5, size=steps)
    terminated = np.zeros(steps, dtype=bool)
    if seed % 2 == 0:
        terminated[-1] = True
        actions[-1, 2] = 1.0
    truncated = ~terminated & (np.arange(steps) == steps - 1)
    x = float(rng.integers(8, 48))
    frames = np.zeros((steps + 1, 64, 64, 3), dtype=np.uint8)
    for t in range(steps + 1):
        if t > 0:
            x = float(np.clip(x + 3 * actions[t - 1, 0], 0, 48))
        xi = int(round(x))
        frames[t, 24:40, xi : xi + 16] = COLOURS[seed % len(COLOURS)]
    return Episode(frames, actions, actions[:, 1].copy(), terminated, truncated, seed)


def make_store(root: Path, n: int = 6) -> EpisodeStore:
    store = EpisodeStore(root)
    for seed in range(100, 100 + n):
        store.write(block_episode(seed))
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> EpisodeStore:
    return make_store(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def config() -> WorldModelConfig:
    return WorldModelConfig(**TINY_CONFIG)


VAE_ARGS = dict(batch_size=32, lr=3e-3, holdout=HOLDOUT, progress=False)
RNN_ARGS = dict(batch_size=4, seq_len=20, lr=1e-2, holdout=HOLDOUT, progress=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, store, config) -> Path:
    """V then M trained for a few epochs into one folder, as the CLI does."""
    out = tmp_path_factory.mktemp("run")
    train_vae(store, out, config, epochs=4, **VAE_ARGS)
    train_rnn(store, out, out, epochs=20, **RNN_ARGS)
    return out


def log(out: Path, stage: str) -> list[dict]:
    return json.loads((out / "logs" / f"{stage}.json").read_text())


# ------------------------------------------------------------------------ the split
def test_split_is_deterministic_disjoint_and_stable():
    train, held = split_seeds(range(50), 0.2, seed=0)
    assert (train, held) == split_seeds(reversed(range(50)), 0.2, seed=0)
    assert not set(train) & set(held) and set(train) | set(held) == set(range(50))
    assert len(held) == 10 and train == sorted(train)
    assert split_seeds(range(50), 0.2, seed=1)[1] != held
    # A new episode moves at most one old one across the split.
    _, held_more = split_seeds(range(51), 0.2, seed=0)
    assert len(set(held) - set(held_more)) <= 1
    assert split_seeds(range(5), 0.0) == (list(range(5)), [])
    assert split_seeds([7], 0.5) == ([7], [])
    assert len(split_seeds(range(4), 0.01)[1]) == 1  # a held-out episode whenever holdout > 0
    with pytest.raises(ValueError, match="holdout"):
        split_seeds(range(5), 1.0)


def test_pick_device_takes_cuda_when_there_is_one_else_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda") and pick_device("cuda") == torch.device("cuda")
    assert pick_device("cpu") == pick_device(torch.device("cpu")) == torch.device("cpu")  # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(ValueError, match="unknown torch device 'gpu'"):
        pick_device("gpu")
    with pytest.raises(ArgumentError, match="device must be a string"):
        pick_device(0)


# ------------------------------------------------------------------------- learning
def test_both_stages_learn_and_save_a_world_model(trained, store):
    vae_curve, rnn_curve = log(trained, "vae"), log(trained, "rnn")
    assert [e["epoch"] for e in vae_curve] == [1, 2, 3, 4]
    assert vae_curve[-1]["loss"] < vae_curve[0]["loss"]
    assert vae_curve[-1]["heldout_recon_mse"] < vae_curve[0]["heldout_recon_mse"]
    assert len(rnn_curve) == 20
    assert rnn_curve[-1]["loss"] < rnn_curve[0]["loss"]
    assert rnn_curve[-1]["heldout_nll"] < rnn_curve[0]["heldout_nll"]
    model = WorldModel.from_pretrained(trained)
    assert {"vae", "rnn"} <= set(model.config.training)
    assert model.config.training["rnn"]["epochs_done"] == 20


def test_bank_holds_first_frame_latents_of_training_episodes(trained, store):
    model = WorldModel.from_pretrained(trained)
    train_seeds, _ = split_seeds(store.seeds(), HOLDOUT, 0)
    assert len(train_seeds) == model.config.num_start_latents == 4
    first = np.stack([store.load(s).frames[0] for s in train_seeds])
    mu, logvar = model.encode(first)
    # Four training episodes fill a bank of four: each exactly once.
    order = [int(torch.cdist(row[None], mu).argmin()) for row in model.start_mu]
    assert sorted(order) == [0, 1, 2, 3]
    torch.testing.assert_close(model.start_mu, mu[order], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.start_logvar, logvar[order], atol=1e-5, rtol=1e-5)


def test_bank_cycles_when_episodes_are_fewer_than_its_size():
    latents = rnn_module.EpisodeLatents(
        seeds=np.arange(3), mu=np.arange(9, dtype=np.float32)[:, None], logvar=np.zeros((9, 1), np.float32),
        actions=np.zeros((6, 3), np.float32), rewards=np.zeros(6, np.float32), terminated=np.zeros(6, bool),
        frame_offsets=np.array([0, 3, 6, 9]), step_offsets=np.array([0, 2, 4, 6]),
    )
    mu, _ = rnn_module.start_latent_bank(latents, [0, 1, 2], size=8, seed=0)
    values = mu[:, 0].tolist()
    assert set(values) == {0.0, 3.0, 6.0} and all(2 <= values.count(v) <= 3 for v in (0.0, 3.0, 6.0))
    again, _ = rnn_module.start_latent_bank(latents, [0, 1, 2], size=8, seed=0)
    assert torch.equal(mu, again)


METRIC_KEYS = {
    "vae_recon_mse", "rnn_nll", "reward_mae", "reward_rmse", "return_correlation", "return_mae",
    "termination_precision", "termination_recall", "termination_positives",
    "open_loop_latent_mse_k1", "open_loop_latent_mse_k10", "open_loop_latent_mse_k50",
    "train_episodes", "heldout_episodes", "train_frames", "heldout_frames",
}


def test_metrics_json_has_every_key_with_finite_values(trained, store):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    for key in METRIC_KEYS:
        if key == "termination_precision" and metrics["termination_predicted"] == 0:
            assert metrics[key] is None  # undefined: nothing was predicted terminal
            continue
        assert isinstance(metrics[key], (int, float)) and math.isfinite(metrics[key]), key
    assert (metrics["train_episodes"], metrics["heldout_episodes"]) == (4, 2)
    assert (metrics["train_frames"], metrics["heldout_frames"]) == (4 * (STEPS + 1), 2 * (STEPS + 1))
    _, held = split_seeds(store.seeds(), HOLDOUT, 0)
    assert metrics["termination_positives"] == sum(s % 2 == 0 for s in held)  # even seeds terminate
    assert metrics["open_loop_latent_mse_k1"] <= metrics["open_loop_latent_mse_k50"] * 10
    # The V stage's own evaluation is the same function on the same split.
    again = evaluate_world_model(WorldModel.from_pretrained(trained), store, holdout=HOLDOUT, parts=("vae",))
    assert again["vae_recon_mse"] == pytest.approx(metrics["vae_recon_mse"], rel=1e-4)


def test_checkpoints_are_safetensors_and_json_only(trained):
    files = sorted(p.relative_to(trained).as_posix() for p in trained.rglob("*") if p.is_file())
    assert {"checkpoints/vae.safetensors", "checkpoints/vae_state.json", "checkpoints/rnn.safetensors",
            "checkpoints/rnn_state.json", "checkpoints/latents.npz", "logs/vae.json", "logs/rnn.json",
            "metrics.json", "config.json", "model.safetensors"} <= set(files)
    assert all(f.endswith((".safetensors", ".json", ".npz", ".md")) for f in files), files
    for path in trained.rglob("*"):
        if path.is_file():
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"
    with np.load(trained / "checkpoints" / "latents.npz", allow_pickle=False) as latents:
        assert all(latents[name].dtype != object for name in latents.files)
    with safe_open(str(trained / "checkpoints" / "vae.safetensors"), framework="pt") as f:
        assert any(k.startswith("optimizer.") and k.endswith("exp_avg") for k in f.keys())
    state = json.loads((trained / "checkpoints" / "vae_state.json").read_text())
    assert state["epoch"] == 4 and all(e["step"]["tensor"] > 0 for e in state["optimizer"]["state"].values())


def test_optimizer_state_round_trips(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    common.save_checkpoint(tmp_path, "x", net, opt, {"epoch": 1})
    sidecar = tmp_path / "checkpoints" / "x_state.json"
    assert json.loads(sidecar.read_text())["epoch"] == 1
    sidecar.write_text("{}")  # a crash between the two renames leaves a stale sidecar: harmless
    weights, opt_tensors, state = common.load_checkpoint(tmp_path, "x")
    assert state["epoch"] == 1 and torch.equal(weights["weight"], net.weight.detach())
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    common.restore_optimizer(opt2, opt_tensors, state)
    a, b = opt.state_dict(), opt2.state_dict()
    for pid in a["state"]:
        for key, value in a["state"][pid].items():
            assert torch.equal(value, b["state"][pid][key]) and b["state"][pid][key].dtype == value.dtype
    assert a["param_groups"] == b["param_groups"]


# --------------------------------------------------------------- resume, interrupts
def counting(monkeypatch, module, name: str, fail_on: int | None = None) -> list[int]:
    """Wrap ``module.name`` to count calls, raising KeyboardInterrupt on call ``fail_on``."""
    calls: list[int] = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        if fail_on is not None and len(calls) == fail_on:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_vae_resumes_after_finished_epochs(tmp_path, store, config, monkeypatch):
    train_vae(store, tmp_path, config, epochs=1, **VAE_ARGS)
    first = log(tmp_path, "vae")
    batches_per_epoch = math.ceil(4 * (STEPS + 1) / VAE_ARGS["batch_size"])
    calls = counting(monkeypatch, vae_module, "vae_step")
    train_vae(store, tmp_path, config, epochs=2, **VAE_ARGS)
    assert len(calls) == batches_per_epoch  # only epoch 2 ran
    curve = log(tmp_path, "vae")
    assert [e["epoch"] for e in curve] == [1, 2] and curve[0] == first[0]
    train_vae(store, tmp_path, None, epochs=2, **VAE_ARGS)  # all done: no training, config from checkpoint
    assert len(calls) == batches_per_epoch
    with pytest.raises(CheckpointError, match="different config"):
        train_vae(store, tmp_path, WorldModelConfig(**{**TINY_CONFIG, "z_dim": 4}), epochs=3, **VAE_ARGS)


def test_interrupted_vae_keeps_last_checkpoint_and_resumes(tmp_path, store, config, monkeypatch):
    train_vae(store, tmp_path, config, epochs=1, **VAE_ARGS)
    ckpt = tmp_path / "checkpoints" / "vae.safetensors"
    before = ckpt.read_bytes()
    counting(monkeypatch, vae_module, "vae_step", fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        train_vae(store, tmp_path, config, epochs=3, **VAE_ARGS)
    assert ckpt.read_bytes() == before
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    monkeypatch.undo()
    train_vae(store, tmp_path, config, epochs=2, **VAE_ARGS)
    assert [e["epoch"] for e in log(tmp_path, "vae")] == [1, 2]


def test_rnn_resumes_reuses_latents_and_survives_interrupts(tmp_path, trained, store, monkeypatch):
    vae_dir = trained
    out = tmp_path / "m"
    train_rnn(store, vae_dir, out, epochs=1, **RNN_ARGS)
    first = log(out, "rnn")
    ckpt = out / "checkpoints" / "rnn.safetensors"
    before = ckpt.read_bytes()
    encodes = counting(monkeypatch, rnn_module, "encode_frames")
    counting(monkeypatch, rnn_module, "rnn_step", fail_on=2)
    with pytest.raises(KeyboardInterrupt):
        train_rnn(store, vae_dir, out, epochs=3, **RNN_ARGS)
    assert ckpt.read_bytes() == before
    monkeypatch.undo()
    encodes = counting(monkeypatch, rnn_module, "encode_frames")
    steps = counting(monkeypatch, rnn_module, "rnn_step")
    train_rnn(store, vae_dir, out, epochs=2, **RNN_ARGS)
    assert not encodes  # latents.npz reused
    chunks_per_epoch = 4 * math.ceil(STEPS / RNN_ARGS["seq_len"])
    assert len(steps) == math.ceil(chunks_per_epoch / RNN_ARGS["batch_size"])
    curve = log(out, "rnn")
    assert [e["epoch"] for e in curve] == [1, 2] and curve[0] == first[0]


def test_rnn_padding_is_masked():
    latents = rnn_module.EpisodeLatents(
        seeds=np.arange(2), mu=np.zeros((9, 2), np.float32), logvar=np.zeros((9, 2), np.float32),
        actions=np.zeros((7, 3), np.float32), rewards=np.zeros(7, np.float32), terminated=np.zeros(7, bool),
        frame_offsets=np.array([0, 3, 9]), step_offsets=np.array([0, 2, 7]),
    )
    chunks = rnn_module.make_chunks(latents, [0, 1], seq_len=3, device=torch.device("cpu"))
    assert chunks.mask.tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0]]
    assert chunks.step.tolist() == [[0, 1, 0], [2, 3, 4], [5, 6, 5]]
    assert chunks.frame.tolist() == [[0, 1, 0], [3, 4, 5], [6, 7, 6]]


# ----------------------------------------------------------------------------- errors
def test_clear_errors(tmp_path, store, tiny_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no episodes found .*dreamgym collect"):
        train_vae(empty, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="no episodes found .*dreamgym collect"):
        train_vae(tmp_path / "missing", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="no trained V"):
        train_rnn(store, tiny_model_dir, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="train-vae"):
        train_rnn(store, empty, tmp_path / "out", progress=False)


def test_corrupt_shards_are_skipped(tmp_path, trained):
    store = make_store(tmp_path / "data")
    _, held = split_seeds(store.seeds(), HOLDOUT, 0)
    shard = tmp_path / "data" / f"episode_{held[0]:08d}.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.warns(CorruptShardWarning):
        metrics = evaluate_world_model(WorldModel.from_pretrained(trained), tmp_path / "data", holdout=HOLDOUT)
    assert metrics["heldout_episodes"] == 1 and metrics["return_correlation"] is None
    assert math.isfinite(metrics["rnn_nll"])
