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

import numpy as np
import pytest

from dreamgym.data.collect import collect, collector_lock, make_env, run_episode
from dreamgym.data.policies import (
    ControllerPolicy,
    CorrelatedRandomPolicy,
    make_policy,
    parse_policy_spec,
)
from dreamgym.data.storage import (
    CorruptShardWarning,
    Episode,
    EpisodeStore,
    EpisodeSubset,
    ShardCorruptError,
    shard_name,
)
from dreamgym.preprocessing import preprocess_frames

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


def test_episode_subset_is_a_read_only_view_of_its_seeds(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "store")
    for seed in (4, 0, 2, 1, 3):
        store.write(make_episode(seed, steps=3))
    # 9 is not (yet) in the store: simply absent from the view.
    view = EpisodeSubset(tmp_path / "store", [3, 1, 9, np.int64(4)])
    assert view.seeds() == {1, 3, 4} and len(view) == 3
    assert [e.seed for e in view.episodes()] == [1, 3, 4] == [e.seed for e in view]  # seed order
    assert_same_episode(view.load(3), store.load(3))
    assert 3 in view and 0 not in view and 9 not in view
    with pytest.raises(KeyError, match="outside this view"):
        view.load(0)  # stored, but not in the view
    with pytest.raises(KeyError, match="not in the episode store"):
        view.load(9)  # in the view, but not stored
    assert "episodes=3" in repr(view)
    # A view of a store object sees episodes written after it was made, if their seeds are kept.
    view = EpisodeSubset(store, range(3, 7))
    assert view.seeds() == {3, 4}
    store.write(make_episode(6, steps=3))
    store.write(make_episode(7, steps=3))
    assert view.seeds() == {3, 4, 6} and [e.seed for e in view.episodes()] == [3, 4, 6]
    assert not hasattr(view, "write") and not hasattr(view, "record")  # read-only


def test_training_accepts_an_episode_subset(tmp_path: Path) -> None:
    from dreamgym import WorldModel, WorldModelConfig
    from dreamgym.training import train_rnn, train_vae

    from conftest import TINY_CONFIG

    store = EpisodeStore(tmp_path / "store")
    for seed in range(8):
        store.write(make_episode(seed, steps=6))
    kept = [1, 2, 4, 5, 6]
    view = EpisodeSubset(store, kept)
    out = tmp_path / "wm"
    common = {"holdout": 0.2, "progress": False}
    train_vae(view, out, WorldModelConfig(**TINY_CONFIG), epochs=1, batch_size=8, **common)
    train_rnn(view, out, out, epochs=1, batch_size=2, seq_len=4, **common)
    model = WorldModel.from_pretrained(out)
    metrics = json.loads((out / "metrics.json").read_text())
    # Only the view's episodes were trained on and held out: 4 + 1 of the store's 8.
    assert metrics["train_episodes"] + metrics["heldout_episodes"] == len(kept)
    assert model.config.training["vae"]["train_episodes"] == metrics["train_episodes"] == 4
    assert model.config.training["rnn"]["train_episodes"] == 4
    with np.load(out / "checkpoints" / "latents.npz") as latents:
        assert sorted(latents["seeds"].tolist()) == kept


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
    expected = r"unknown policy 'nope'; expected one of \['agent', 'controller', 'random', 'replay'\]"
    with pytest.raises(ValueError, match=expected):
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


OBS_DIM = 8 + 16  # the tiny world model's z_dim + rnn_hidden
ACTION_LOW, ACTION_HIGH = np.array([-1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0])


@pytest.fixture
def controller_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A controller whose controller.json records the tiny world model's folder, as training writes it."""
    from dreamgym.agents.controller import LinearController

    record = {"model": str(tiny_model_dir), "revision": None, "source": "path"}
    params = np.random.default_rng(0).normal(0, 2.0, 3 * OBS_DIM + 3)
    return LinearController.from_flat(params, OBS_DIM, world_model=record).save(tmp_path / "ctrl")


def real_env_lockstep(model_dir: Path, seed: int, steps: int, choose):
    """Drive ``dreamgym/RealCarRacing-v0`` for ``steps`` steps; return the actions taken.

    ``choose(raw_frame, obs)`` gets the raw 96x96 frame that the env has just encoded into ``obs``.
    """
    import gymnasium as gym

    import dreamgym  # noqa: F401  (registers the envs)

    env = gym.make("dreamgym/RealCarRacing-v0", model=str(model_dir), max_episode_steps=steps)
    frames: list[np.ndarray] = []
    observer = env.unwrapped.observer
    encode = observer.encode
    observer.encode = lambda frame: (frames.append(frame.copy()), encode(frame))[1]
    try:
        obs, _ = env.reset(seed=seed)
        actions = []
        for _ in range(steps):
            action = choose(frames[-1], obs)
            actions.append(action)
            obs, _, terminated, _, _ = env.step(action)
            if terminated:
                break
        return np.stack(actions), frames
    finally:
        env.close()


def test_controller_policy_without_noise_acts_as_the_controller_in_the_real_env(controller_dir, tiny_model_dir) -> None:
    from dreamgym.agents.controller import LinearController

    controller = LinearController.load(controller_dir)
    policy = make_policy(f"controller:{controller_dir}?noise=0", seed=0)
    assert isinstance(policy, ControllerPolicy) and policy.noise == 0
    # Seen from a different episode first: reset must clear M's state.
    for frame in real_env_lockstep(tiny_model_dir, 5, 3, lambda frame, obs: controller.act(obs))[1]:
        policy(frame)
    policy.reset(3)
    compared = []

    def choose(frame, obs):
        # The env's own action (controller on the env's [z, h]) against the policy's, on the same frame.
        expected = controller.act(obs)
        got = policy(frame)
        assert got.dtype == np.float32 and got.shape == (3,)
        np.testing.assert_array_equal(got, expected)
        compared.append(got)
        return expected

    actions, _ = real_env_lockstep(tiny_model_dir, 3, 20, choose)
    assert len(compared) == 20
    # Not a constant action: the frames and M's state really moved the controller.
    assert np.abs(np.diff(actions, axis=0)).max() > 1e-3


def test_controller_policy_noise_is_bounded_reproducible_and_fed_to_m(controller_dir, tiny_model_dir) -> None:
    from dreamgym.agents.controller import LinearController

    controller = LinearController.load(controller_dir)
    clean, frames = real_env_lockstep(tiny_model_dir, 3, 20, lambda frame, obs: controller.act(obs))

    def replay(spec: str, seed: int, policy=None) -> np.ndarray:
        policy = policy or make_policy(spec, seed=1234)
        policy.reset(seed)
        return np.stack([policy(frame) for frame in frames[:20]])

    spec = f"controller:{controller_dir}?noise=0.3"
    noisy = replay(spec, 3)
    assert noisy.dtype == np.float32 and noisy.shape == (20, 3)
    assert (noisy >= ACTION_LOW).all() and (noisy <= ACTION_HIGH).all()
    assert np.abs(noisy - clean).max() > 1e-3  # the noise moves the actions
    policy = make_policy(spec, seed=0)
    np.testing.assert_array_equal(replay(spec, 3, policy), noisy)  # same seed, same actions
    np.testing.assert_array_equal(replay(spec, 3, policy), noisy)  # ... also after another episode
    assert not np.array_equal(replay(spec, 4, policy), noisy)
    # Large noise is clipped into the action space.
    wild = replay(f"controller:{controller_dir}?noise=5&noise_theta=0", 3)
    assert (wild >= ACTION_LOW).all() and (wild <= ACTION_HIGH).all()
    assert (wild == ACTION_LOW).any() and (wild == ACTION_HIGH).any()

    # M is stepped with the action actually taken, noise included, as the real env steps it:
    # the policy's action is always the controller's on the env's [z, h] plus the policy's noise.
    policy = ControllerPolicy(seed=0, controller=str(controller_dir), noise=0.3)
    policy.reset(3)

    def choose(frame, obs):
        action = policy(frame)
        expected = np.clip(controller.act(obs) + policy.exploration_noise, ACTION_LOW, ACTION_HIGH).astype(np.float32)
        np.testing.assert_allclose(action, expected, atol=1e-6)
        return action

    taken, seen = real_env_lockstep(tiny_model_dir, 3, 20, choose)
    # The car went elsewhere than in the clean run; replaying what it saw gives the same actions.
    policy.reset(3)
    np.testing.assert_array_equal(np.stack([policy(frame) for frame in seen[: len(taken)]]), taken)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        ControllerPolicy(controller=str(controller_dir), noise=-1)


def test_collect_with_a_controller_policy(tmp_path: Path, controller_dir) -> None:
    spec = f"controller:{controller_dir}?noise=0.3"
    store = collect(
        episodes=2, out=tmp_path / "store", workers=1, max_steps=MAX_STEPS, seed=7, policy=spec, progress=False
    )
    assert store.seeds() == {7, 8}
    env = make_env("CarRacing-v3", MAX_STEPS)
    try:
        for seed in (7, 8):
            episode = store.load(seed)
            assert episode.length == MAX_STEPS
            actions = episode.actions
            assert (actions >= ACTION_LOW).all() and (actions <= ACTION_HIGH).all()
            # The episode of a seed is a function of the seed alone: the same policy run here agrees.
            assert_same_episode(run_episode(env, make_policy(spec, 0), seed), episode)
    finally:
        env.close()
    assert not np.array_equal(store.load(7).actions, store.load(8).actions)


def test_replay_records_a_collection_again_step_for_step(tmp_path: Path) -> None:
    """Replaying a store's actions reproduces its episodes; with the dashboard kept only the frames change."""
    first = collect(
        episodes=2, out=tmp_path / "first", workers=1, max_steps=MAX_STEPS, seed=3,
        policy="random?gas_mean=0.8", progress=False,
    )
    spec = f"replay:{tmp_path / 'first'}"
    again = collect(episodes=2, out=tmp_path / "again", workers=1, max_steps=MAX_STEPS, seed=3, policy=spec,
                    progress=False)
    dashboard = collect(episodes=2, out=tmp_path / "dashboard", workers=1, max_steps=MAX_STEPS, seed=3, policy=spec,
                        progress=False, crop_dashboard=False)
    for seed in (3, 4):
        original = first.load(seed)
        assert_same_episode(again.load(seed), original)
        kept = dashboard.load(seed)
        for name in ("actions", "rewards", "terminated", "truncated"):
            np.testing.assert_array_equal(getattr(kept, name), getattr(original, name))
        assert kept.frames.shape == original.frames.shape
        # The whole 96 rows are resized instead of the top 84: every frame is another picture.
        assert all(not np.array_equal(a, b) for a, b in zip(kept.frames, original.frames, strict=True))
    entries = json.loads((tmp_path / "dashboard" / "manifest.json").read_text())["episodes"]
    assert [e["crop_dashboard"] for e in entries] == [False, False]
    assert [e["policy"] for e in entries] == [spec, spec]


def test_replay_refuses_seeds_it_lacks_and_episodes_that_diverge(tmp_path: Path) -> None:
    collect(episodes=1, out=tmp_path / "first", workers=1, max_steps=MAX_STEPS, seed=3, progress=False)
    spec = f"replay:{tmp_path / 'first'}"
    with pytest.raises(ValueError, match=r"holds no episode of 1 of the requested seeds \(first 4\); .*\(3\)"):
        collect(episodes=2, out=tmp_path / "missing", workers=1, max_steps=MAX_STEPS, seed=3, policy=spec,
                progress=False)
    assert not (tmp_path / "missing" / "manifest.json").exists()
    # A longer episode than the stored one cannot be replayed: the actions run out.
    with pytest.raises(RuntimeError, match="replay of seed 3 diverged: the env went on past the 20 stored steps"):
        collect(episodes=1, out=tmp_path / "longer", workers=1, max_steps=MAX_STEPS + 5, seed=3, policy=spec,
                progress=False)
    with pytest.raises(FileNotFoundError, match="no episodes found"):
        make_policy(f"replay:{tmp_path / 'nowhere'}", 0)
    with pytest.raises(ValueError, match="needs the store to replay"):
        make_policy("replay", 0)


def test_one_store_holds_frames_made_one_way(tmp_path: Path) -> None:
    """Frames with and without the dashboard never meet in a store, and V and M refuse the other kind."""
    from dreamgym import WorldModelConfig
    from dreamgym.errors import CollectionConflictError, FileFormatError
    from dreamgym.training import train_rnn, train_vae

    from conftest import TINY_CONFIG

    root = tmp_path / "dashboard"
    collect(episodes=3, out=root, workers=1, max_steps=MAX_STEPS, seed=0, progress=False, crop_dashboard=False)
    with pytest.raises(CollectionConflictError, match="dashboard kept.*collect with --keep-dashboard"):
        collect(episodes=1, out=root, workers=1, max_steps=MAX_STEPS, seed=10, progress=False)
    assert EpisodeStore(root).seeds() == {0, 1, 2}

    # V takes the data's preprocessing unless told otherwise; told otherwise, it refuses.
    sizes = dict(TINY_CONFIG)
    with pytest.raises(FileFormatError, match="have the dashboard kept, but the V of .* sees frames with it cut"):
        train_vae(root, tmp_path / "cut", WorldModelConfig(**sizes), epochs=1, batch_size=8, progress=False)
    kept = train_vae(root, tmp_path / "kept", WorldModelConfig(**sizes, crop_dashboard=False), epochs=1,
                     batch_size=8, holdout=0.34, progress=False)
    assert kept.config.crop_dashboard is False
    cut_store = tmp_path / "cut-store"
    collect(episodes=2, out=cut_store, workers=1, max_steps=MAX_STEPS, seed=0, progress=False)
    with pytest.raises(FileFormatError, match="have the dashboard cut, but the V of .* sees frames with it kept"):
        train_rnn(cut_store, tmp_path / "kept", tmp_path / "m", epochs=1, batch_size=2, seq_len=4, progress=False)


def test_stored_crop_dashboard_reads_old_and_mixed_manifests(tmp_path: Path) -> None:
    from dreamgym.episodes import stored_crop_dashboard
    from dreamgym.errors import FileFormatError

    store = EpisodeStore(tmp_path / "old")
    assert stored_crop_dashboard(store) is None
    store.write(make_episode(0))
    assert stored_crop_dashboard(store) is True  # written before the key existed: cut, the only way then
    entry = store.write_shard(make_episode(1))
    store.record({**entry, "crop_dashboard": False})
    with pytest.raises(FileFormatError, match="mixes frames with the dashboard cut and kept"):
        stored_crop_dashboard(store)
    with pytest.raises(FileFormatError, match="mixes"):  # a view of some seeds answers for its store
        stored_crop_dashboard(EpisodeSubset(store, [0]))


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
    with collector_lock(store):
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
    env = make_env("CarRacing-v3", MAX_STEPS)
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


@pytest.mark.slow
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
