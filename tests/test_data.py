"""Tests of dreamgym.data: the episode store, the collection policy and the collector.

Real CarRacing episodes here are capped at 20 steps, so the whole file runs in well under a
minute on 2 cores; most of that is starting spawned workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dreamgym.data.collect import _exclusive, _make_env, collect, run_episode  # noqa: E402
from dreamgym.data.policies import CorrelatedRandomPolicy, make_policy, parse_policy_spec  # noqa: E402
from dreamgym.data.storage import (  # noqa: E402
    CorruptShardWarning,
    Episode,
    EpisodeStore,
    ShardCorruptError,
    shard_name,
)
from dreamgym.preprocessing import preprocess_frames  # noqa: E402

MAX_STEPS = 20

# Box2D's SWIG bindings warn on import, from whichever test first makes a CarRacing env.
pytestmark = pytest.mark.filterwarnings("ignore:builtin type (SwigPy|swigvarlink):DeprecationWarning")


def make_episode(seed: int = 0, steps: int = 5, truncated: bool = True) -> Episode:
    rng = np.random.default_rng(seed)
    done = np.zeros(steps, dtype=bool)
    done[-1] = truncated
    return Episode(
        frames=rng.integers(0, 256, size=(steps + 1, 64, 64, 3), dtype=np.uint8),
        actions=rng.uniform(-1, 1, size=(steps, 3)).astype(np.float32),
        rewards=rng.normal(size=steps).astype(np.float32),
        terminated=np.zeros(steps, dtype=bool),
        truncated=done,
        seed=seed,
    )


def assert_same_episode(a: Episode, b: Episode) -> None:
    assert a.seed == b.seed
    for name in ("frames", "actions", "rewards", "terminated", "truncated"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_seeds(root: Path) -> list[int]:
    """Seeds as listed in the manifest file itself, duplicates included."""
    return [e["seed"] for e in json.loads((root / "manifest.json").read_text())["episodes"]]


# -- Episode and EpisodeStore ---------------------------------------------------------------


def test_store_round_trip_bit_for_bit(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "store")
    episodes = [make_episode(seed, steps) for seed, steps in ((7, 3), (2, 9), (40, 1))]
    for episode in episodes:
        path = store.write(episode)
        assert path.name == shard_name(episode.seed) == f"episode_{episode.seed:08d}.npz"

    reopened = EpisodeStore(tmp_path / "store")
    assert len(reopened) == 3 and reopened.seeds() == {2, 7, 40}
    loaded = list(reopened.episodes())
    assert [e.seed for e in loaded] == [2, 7, 40]  # seed order, not write order
    for episode in episodes:
        assert_same_episode(reopened.load(episode.seed), episode)
    assert loaded[0].length == 9

    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    entry = manifest["episodes"][0]
    assert set(entry) == {"file", "seed", "length", "return", "sha256"}
    assert entry["sha256"] == sha256(tmp_path / "store" / entry["file"])
    assert entry["return"] == pytest.approx(float(episodes[1].rewards.sum(dtype=np.float64)))
    assert reopened.verify() == ([2, 7, 40], [])
    with pytest.raises(KeyError, match="seed 3 is not in the episode store"):
        reopened.load(3)

    # Rewriting a seed replaces it, never duplicates it.
    store.write(make_episode(7, 4))
    assert manifest_seeds(tmp_path / "store") == [2, 7, 40]
    assert store.load(7).length == 4


def _replace(episode: Episode, **changes) -> dict:
    fields = dict(
        frames=episode.frames, actions=episode.actions, rewards=episode.rewards,
        terminated=episode.terminated, truncated=episode.truncated, seed=episode.seed,
    )
    fields.update(changes)
    return fields


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"frames": np.zeros((6, 64, 64, 3), np.float32)}, "frames must have dtype uint8"),
        ({"frames": np.zeros((6, 96, 96, 3), np.uint8)}, r"frames must have shape \(T \+ 1, 64, 64, 3\)"),
        ({"frames": [[0]]}, "frames must be a numpy array"),
        ({"frames": np.zeros((1, 64, 64, 3), np.uint8)}, "at least 2 frames"),
        ({"actions": np.zeros((5, 3), np.float64)}, "actions must have dtype float32"),
        ({"actions": np.zeros((4, 3), np.float32)}, r"actions must have shape \(T, 3\) = \(5, 3\)"),
        ({"actions": np.full((5, 3), np.nan, np.float32)}, "actions must be finite"),
        ({"rewards": np.zeros(6, np.float32)}, r"rewards must have shape \(T,\) = \(5,\)"),
        ({"terminated": np.zeros(5, np.int64)}, "terminated must have dtype bool"),
        ({"truncated": np.array([0, 1, 0, 0, 1], bool)}, "only the last step"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": 1.5}, "seed must be an int"),
    ],
)
def test_episode_validation(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Episode(**_replace(make_episode(), **changes))


def test_corrupt_truncated_and_missing_shards_are_skipped(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    for seed in range(4):
        store.write(make_episode(seed))
    good = store.load(0)
    truncated, flipped, missing = (tmp_path / shard_name(s) for s in (1, 2, 3))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    missing.unlink()

    with pytest.warns(CorruptShardWarning) as caught:
        episodes = list(store.episodes())
    assert [e.seed for e in episodes] == [0]
    assert_same_episode(episodes[0], good)
    messages = " ".join(str(w.message) for w in caught)
    for path in (truncated, flipped, missing):
        assert path.name in messages
    assert "missing" in messages and "checksum" in messages

    with pytest.raises(ShardCorruptError, match=truncated.name):
        list(store.episodes(skip_corrupt=False))
    with pytest.raises(ShardCorruptError, match="checksum"):
        store.load(2)
    seeds, problems = store.verify()
    assert seeds == [0] and len(problems) == 3

    # recover(verify=True) drops what is bad so that collect() runs those seeds again.
    with pytest.warns(CorruptShardWarning):
        assert store.recover(verify=True) == []
    assert store.seeds() == {0} and store.verify() == ([0], [])
    assert not truncated.exists() and not flipped.exists()


def test_recover_adopts_orphans_and_cleans_up(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    store.write(make_episode(0))
    entry = store.write_shard(make_episode(3))  # the writer "died" before recording it
    assert store.seeds() == {0}
    assert any("not in the manifest" in p for p in store.verify()[1])
    (tmp_path / ".episode_00000004.npz.123.abcd.tmp").write_bytes(b"half a shard")
    (tmp_path / shard_name(5)).write_bytes(b"not a zip file")  # cannot come from us, but still
    mtime = (tmp_path / shard_name(3)).stat().st_mtime_ns

    with pytest.warns(CorruptShardWarning, match=shard_name(5)):
        assert store.recover() == [3]
    assert manifest_seeds(tmp_path) == [0, 3]
    assert store.entries()[1] == entry
    assert (tmp_path / shard_name(3)).stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [shard_name(0), shard_name(3), "manifest.json"]
    assert store.recover() == []


# -- policies -------------------------------------------------------------------------------


def road_frame(column: int) -> np.ndarray:
    """A 96x96 CarRacing-like frame: grass, with a vertical gray road centred at ``column``."""
    frame = np.zeros((96, 96, 3), np.uint8)
    frame[:] = (102, 204, 102)
    frame[:, column - 8 : column + 8] = (102, 102, 102)
    return frame


def test_random_policy_is_deterministic_and_correlated() -> None:
    def rollout(policy, seed: int, obs=None) -> np.ndarray:
        policy.reset(seed)
        return np.stack([policy(obs) for _ in range(300)])

    policy = make_policy("random", seed=3)
    assert isinstance(policy, CorrelatedRandomPolicy)
    first = rollout(policy, 3)
    assert first.dtype == np.float32 and first.shape == (300, 3)
    np.testing.assert_array_equal(rollout(policy, 3), first)
    np.testing.assert_array_equal(rollout(make_policy("random", seed=99), 3), first)
    assert not np.array_equal(rollout(policy, 4), first)
    frame = road_frame(48)
    np.testing.assert_array_equal(rollout(policy, 5, frame), rollout(make_policy("random", 0), 5, frame))

    steer, gas, brake = first.T
    assert steer.min() >= -1 and steer.max() <= 1 and gas.min() >= 0 and brake.max() <= 1
    # Correlated: steering moves little per step (uniform samples move ~0.67 on average).
    assert np.abs(np.diff(steer)).mean() < 0.15
    assert gas.mean() > 0.2 and (brake == 0).mean() > 0.8
    # The steering is drawn towards the road ahead.
    assert rollout(policy, 1, road_frame(80))[-100:, 0].mean() > 0.3
    assert rollout(policy, 1, road_frame(16))[-100:, 0].mean() < -0.3


def test_make_policy_rejects_unknown_specs() -> None:
    with pytest.raises(ValueError, match=r"unknown policy 'nope'; expected one of \['controller', 'random'\]"):
        make_policy("nope", seed=0)
    with pytest.raises(ValueError, match=r"'random\?speed=3' does not fit CorrelatedRandomPolicy.*'speed'"):
        make_policy("random?speed=3", seed=0)
    with pytest.raises(ValueError, match=r"option 'gas_mean' is not KEY=VALUE"):
        make_policy("random?gas_mean", seed=0)
    with pytest.raises(ValueError, match=r"empty argument after ':'"):
        make_policy("controller:", seed=0)
    with pytest.raises(FileNotFoundError, match=r"agent 'no/such/dir' not found"):
        make_policy("controller:no/such/dir", seed=0)


def test_policy_spec_options_reach_the_policy() -> None:
    assert parse_policy_spec("controller:runs/c?noise=0.25&noise_theta=1&model=x") == (
        "controller", "runs/c", {"noise": 0.25, "noise_theta": 1, "model": "x"},
    )
    policy = make_policy("random?gas_mean=0.2&gas_mean_max=0.9", seed=0)
    assert (policy.gas_mean, policy.gas_mean_max) == (0.2, 0.9)
    # Each episode draws its own mean gas from its seed: fast and slow episodes in one collection.
    means = []
    for seed in range(20):
        policy.reset(seed)
        means.append(np.mean([policy(None)[1] for _ in range(200)]))
    assert max(means) - min(means) > 0.3
    with pytest.raises(ValueError, match=r"gas_mean_max must be in \[gas_mean, 1\]"):
        make_policy("random?gas_mean=0.5&gas_mean_max=0.4", seed=0)


# -- collect -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"episodes": 0}, ValueError, "episodes must be >= 1, got 0"),
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"episodes": 2.5}, TypeError, "episodes must be an int"),
        ({"max_steps": 0}, ValueError, "max_steps must be >= 1"),
        ({"seed": -3}, ValueError, "seed must be >= 0"),
        ({"policy": "nope"}, ValueError, "unknown policy 'nope'"),
        ({"env_id": "NoSuchEnv-v0"}, ValueError, "unknown env id 'NoSuchEnv-v0'"),
        ({"env_id": "CartPole-v1"}, ValueError, "cannot be made with continuous=True"),
    ],
)
def test_collect_validates_arguments(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    args = {"episodes": 1, "out": tmp_path / "store", "max_steps": MAX_STEPS, "progress": False, **kwargs}
    with pytest.raises(error, match=message):
        collect(**args)
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_collect_refuses_a_store_another_collector_holds(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    with _exclusive(store):
        with pytest.raises(RuntimeError, match="another collector is writing"):
            collect(episodes=1, out=tmp_path, workers=1, max_steps=MAX_STEPS, progress=False)


def test_collect_in_parallel_then_resume(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = collect(episodes=4, out=root, workers=2, max_steps=MAX_STEPS, seed=10, progress=False)
    assert store.seeds() == {10, 11, 12, 13}
    before = {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in root.glob("episode_*.npz")}
    assert len(before) == 4
    for episode in store.episodes():
        assert episode.length == MAX_STEPS and episode.truncated[-1] and not episode.terminated.any()
        assert episode.frames.shape == (MAX_STEPS + 1, 64, 64, 3)

    # A worker's episode is the episode of its seed, bit for bit: same as run here, inline.
    env = _make_env("CarRacing-v3", MAX_STEPS)
    try:
        reset_frame = env.reset(seed=11)[0]
        inline = run_episode(env, make_policy("random", 0), 11)
    finally:
        env.close()
    assert_same_episode(store.load(11), inline)
    np.testing.assert_array_equal(inline.frames[0], preprocess_frames(reset_frame))

    store = collect(episodes=6, out=root, workers=2, max_steps=MAX_STEPS, seed=10, progress=False)
    assert manifest_seeds(root) == [10, 11, 12, 13, 14, 15]
    after = {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in root.glob("episode_*.npz")}
    assert len(after) == 6
    assert {name: after[name] for name in before} == before  # the first 4 were not touched
    assert store.verify() == ([10, 11, 12, 13, 14, 15], [])


def test_killed_collector_resumes_without_loss_or_duplicates(tmp_path: Path) -> None:
    root = tmp_path / "store"
    episodes = 12
    script = (
        "from dreamgym.data.collect import collect; "
        f"collect(episodes={episodes}, out={str(root)!r}, workers=2, max_steps={MAX_STEPS}, progress=False)"
    )
    # Its own session, so that one killpg takes the collector and its workers down together.
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True, stderr=subprocess.PIPE)
    manifest = root / "manifest.json"
    deadline = time.monotonic() + 90
    try:
        while not (manifest.exists() and json.loads(manifest.read_text())["episodes"]):
            assert proc.poll() is None, f"collector exited early: {proc.stderr.read().decode()}"
            assert time.monotonic() < deadline, "collector wrote no episode in 90 s"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()

    entries = json.loads(manifest.read_text())["episodes"]
    assert 1 <= len(entries) < episodes, "the collector was not killed mid-run"
    finished = {e["file"]: e["sha256"] for e in entries}
    for name, digest in finished.items():
        assert sha256(root / name) == digest

    store = collect(episodes=episodes, out=root, workers=2, max_steps=MAX_STEPS, progress=False)
    assert manifest_seeds(root) == list(range(episodes))
    assert sorted(p.name for p in root.glob("episode_*.npz")) == [shard_name(s) for s in range(episodes)]
    assert not list(root.glob(".*.tmp"))
    for name, digest in finished.items():
        assert sha256(root / name) == digest
        assert next(e for e in store.entries() if e["file"] == name)["sha256"] == digest
    assert store.verify() == (list(range(episodes)), [])
