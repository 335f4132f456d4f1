"""Issue 14: the faults and bad inputs a new user hit. Nothing lost, nothing run, nothing silently wrong.

Each test names the case of the issue it covers (1-11). Names new in the fix are imported
inside the tests, so that each test fails on its own against the code before the fix.
"""

from __future__ import annotations

import base64
import json
import pickle
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym import ConfigError, WorldModel, WorldModelFormatError, load_world_model
from dreamgym.cli import main
from dreamgym.data.storage import EpisodeStore

from conftest import make_tiny_model
from test_training import RNN_ARGS, VAE_ARGS, block_episode, make_store

COLLECT = dict(workers=1, max_steps=3, progress=False)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _edit_config(folder: Path, drop: tuple[str, ...] = (), **changes) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    for key in drop:
        data.pop(key, None)
    path.write_text(json.dumps(data))


def _one_line_error(capsys, code: int) -> str:
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1, captured.err
    return captured.err


@pytest.fixture
def no_real_allocation(monkeypatch):
    """Fail the test if a V is built anywhere but on the meta device (which allocates nothing)."""
    from dreamgym.models import world_model

    real = world_model.ConvVAE

    def guarded(*args, **kwargs):
        if torch.get_default_device().type != "meta":
            raise AssertionError("a world model was allocated before its config and weights were checked")
        return real(*args, **kwargs)

    monkeypatch.setattr(world_model, "ConvVAE", guarded)


# ------------------------------------------------------------------ 1. package destroys its source
@pytest.mark.parametrize("inside", [False, True])
def test_1_package_refuses_its_own_folder_or_one_inside_it_and_writes_nothing(tiny_model_dir, inside, capsys):
    before = _files(tiny_model_dir)
    out = tiny_model_dir / "pkg" if inside else tiny_model_dir
    err = _one_line_error(capsys, main(["package", str(tiny_model_dir), "--out", str(out), "--ref", "org/x"]))
    assert "source folder" in err
    assert _files(tiny_model_dir) == before  # fp32 weights and config untouched, no README written
    assert not (tiny_model_dir / "pkg").exists()


def test_1_package_failure_leaves_the_previous_package_whole(tiny_model_dir, tmp_path, monkeypatch):
    from dreamgym.training.build import package_world_model

    dest = tmp_path / "shipped"
    package_world_model(tiny_model_dir, dest, model_ref="org/x", half=False)
    before = _files(dest)
    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("dreamgym.pipeline.make_model_card", disk_full)
    with pytest.raises(OSError, match="disk full"):
        package_world_model(tiny_model_dir, dest, model_ref="org/x", half=True)
    assert _files(dest) == before  # fp32 weights, not half-written fp16 ones


# ------------------------------------------------------------------ 2. train-vae over a finished model
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    data = make_store(tmp_path_factory.mktemp("data"), n=4)
    out = tmp_path_factory.mktemp("wm")
    from dreamgym.config import WorldModelConfig
    from dreamgym.training import train_rnn, train_vae

    from conftest import TINY_CONFIG

    train_vae(data, out, WorldModelConfig(**TINY_CONFIG), epochs=1, **VAE_ARGS)
    train_rnn(data, out, out, epochs=1, **RNN_ARGS)
    return data, out


def test_2_rerunning_train_vae_into_a_finished_world_model_changes_nothing(finished_run):
    from dreamgym.training import train_vae

    data, out = finished_run
    before = {name: (out / name).read_bytes() for name in ("config.json", "model.safetensors")}
    train_vae(data, out, epochs=1, **VAE_ARGS)
    assert {name: (out / name).read_bytes() for name in before} == before
    model = WorldModel.from_pretrained(out)
    assert "rnn" in model.config.training and model.start_mu.abs().sum() > 0


def test_2_training_v_further_under_a_trained_m_is_refused(finished_run):
    from dreamgym.errors import WouldOverwriteError
    from dreamgym.training import train_vae

    data, out = finished_run
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(WouldOverwriteError, match="finished world model"):
        train_vae(data, out, epochs=2, **VAE_ARGS)
    assert (out / "model.safetensors").read_bytes() == before


def test_2_a_world_model_with_an_untrained_m_warns_when_loaded(tmp_path):
    model = make_tiny_model()
    model.config.training = {"vae": {"epochs_done": 1}}
    model.save_pretrained(tmp_path / "v-only")
    with pytest.warns(UserWarning, match="untrained M"):
        gym.make("dreamgym/DreamCarRacing-v0", model=str(tmp_path / "v-only"))


# ------------------------------------------------------------------ 3. collection resume and content
def test_3_resume_collects_a_corrupt_listed_shard_again(tmp_path):
    from dreamgym.data.collect import collect

    store = collect(episodes=2, out=tmp_path, **COLLECT)
    shard = tmp_path / store.entries()[1]["file"]
    good = shard.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    with pytest.warns(UserWarning, match="fails its checksum"):
        store = collect(episodes=2, out=tmp_path, **COLLECT)
    assert store.verify() == ([0, 1], [])
    assert shard.read_bytes() == good  # the episode of a seed is a function of the seed


@pytest.mark.parametrize("changed", [{"max_steps": 4}, {"policy": "random?gas_mean=0.3"}])
def test_3_collecting_stored_seeds_with_other_settings_is_refused(tmp_path, changed):
    from dreamgym.data.collect import collect

    collect(episodes=1, out=tmp_path, **COLLECT)
    before = _files(tmp_path)
    with pytest.raises(ValueError, match=f"{next(iter(changed))}=") as info:
        collect(episodes=1, out=tmp_path, **{**COLLECT, **changed})
    assert "--seed 1" in str(info.value)
    assert _files(tmp_path) == before


def test_3_a_store_without_its_manifest_says_so_and_repair_lists_the_shards(tmp_path, capsys):
    from dreamgym.training.common import open_store

    store = EpisodeStore(tmp_path)
    for seed in (3, 4):
        store.write(block_episode(seed, steps=5))
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="2 episode shards but its manifest.json lists none"):
        open_store(tmp_path)
    assert main(["verify-data", str(tmp_path), "--repair"]) == 0
    assert "listed 2 shards" in capsys.readouterr().out
    assert EpisodeStore(tmp_path).verify() == ([3, 4], [])


# ------------------------------------------------------------------ 4. crafted configs allocate without limit
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"z_dim": 10**6}, "'z_dim' is 1000000, above the limit"),
        ({"num_start_latents": 10**7}, "'num_start_latents' is 10000000, above the limit"),
        ({"z_dim": 4096, "rnn_hidden": 16384, "num_mixtures": 256}, "weights, above the limit"),
    ],
)
def test_4_oversized_configs_are_refused_before_anything_is_allocated(
    tiny_model_dir, no_real_allocation, changes, message
):
    _edit_config(tiny_model_dir, **changes)
    with pytest.raises(ConfigError, match=message):
        load_world_model(tiny_model_dir)


def test_4_weights_are_checked_against_the_header_before_allocation(tiny_model_dir, no_real_allocation):
    _edit_config(tiny_model_dir, z_dim=2048, drop=("weights_sha256",))  # within the caps, but not these weights
    expected = r"vae.fc_mu.weight has shape \(8, 32\) but the config needs \(2048, 32\)"
    with pytest.raises(WorldModelFormatError, match=expected):
        load_world_model(tiny_model_dir)


def test_4_a_hub_config_is_checked_before_the_weights_are_downloaded(tiny_model_dir, no_real_allocation, monkeypatch):
    _edit_config(tiny_model_dir, z_dim=10**6)
    fetched = []

    def fake_download(repo_id, filename, **kwargs):
        fetched.append(filename)
        return str(tiny_model_dir / filename)

    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", fake_download)
    monkeypatch.setattr("dreamgym.models.world_model.hf_hub_download", fake_download)
    with pytest.raises(ConfigError, match="above the limit"):
        WorldModel.from_pretrained("evil-org/huge")
    assert "model.safetensors" not in fetched


# ------------------------------------------------------------------ 5. SB3 zips execute code
class _Payload:
    """Unpickling this writes a marker file: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _evil_zip(tmp_path: Path, field: str) -> tuple[Path, Path]:
    from stable_baselines3 import PPO

    from dreamgym.sb3 import DreamVecEnv

    path, marker = tmp_path / "agent.zip", tmp_path / "pwned"
    PPO("MlpPolicy", DreamVecEnv(make_tiny_model(), n_envs=2), device="cpu", n_steps=8, batch_size=8).save(path)
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    payload = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    data[field] = {**data.get(field, {":type:": "<class 'object'>"}), ":serialized:": payload}
    entries["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return path, marker


def test_5_a_pickled_payload_in_an_sb3_zip_is_never_run_by_default(tmp_path):
    from dreamgym.sb3 import load_sb3_agent

    path, marker = _evil_zip(tmp_path, "policy_class")
    agent = load_sb3_agent(path, device="cpu")  # the policy class is rebuilt from its JSON, not unpickled
    assert not marker.exists()
    assert agent.predict(np.zeros((1, 24), np.float32), deterministic=True)[0].shape == (1, 3)


def test_5_an_unknown_pickled_field_is_refused_and_runs_only_with_the_unsafe_flag(tmp_path, capsys):
    from dreamgym.sb3 import load_sb3_agent

    path, marker = _evil_zip(tmp_path, "surprise")
    with pytest.raises(ValueError, match=r"cannot rebuild safely: \['surprise'\]"):
        load_sb3_agent(path, device="cpu")
    command = ["evaluate", f"sb3:{path}", "--episodes", "1", "--max-steps", "1", "--workers", "1"]
    err = _one_line_error(capsys, main(command))
    assert "--unsafe-pickle" in err and not marker.exists()
    with pytest.warns(UserWarning, match="runs any code"):
        load_sb3_agent(path, device="cpu", allow_pickle=True)
    assert marker.read_text() == "pwned"  # the flag is what makes the difference


# ------------------------------------------------------------------ 6. push and package follow symlinks
def test_6_a_symlink_leading_out_of_the_model_folder_is_not_staged(tiny_model_dir, tmp_path):
    from dreamgym.push import stage_repo

    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    (tiny_model_dir / "preview.png").symlink_to(secret)
    out = tmp_path / "staged"
    with pytest.raises(ValueError, match="leads outside"):
        stage_repo(tiny_model_dir, out)
    assert not any(b"PRIVATE KEY" in data for data in _files(out).values()) if out.exists() else True


def test_6_symlinks_planted_in_the_destination_are_replaced_not_written_through(tiny_model_dir, tmp_path):
    from dreamgym.push import stage_repo
    from dreamgym.training.build import package_world_model

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "README.md").symlink_to(victim)
    stage_repo(tiny_model_dir, staged)
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / "config.json").write_text("{}")
    (packaged / "model.safetensors").symlink_to(victim)
    package_world_model(tiny_model_dir, packaged, model_ref="org/x")
    assert victim.read_text() == "precious"
    assert not (staged / "README.md").is_symlink() and not (packaged / "model.safetensors").is_symlink()
    assert WorldModel.from_pretrained(packaged).config.z_dim == 8


# ------------------------------------------------------------------ 7. bit-flipped weights load silently
def _flip_a_weight_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # in the tensor data, past the header: still a valid safetensors file
    path.write_bytes(bytes(data))


def test_7_a_bit_flipped_world_model_is_refused_naming_the_file(tiny_model_dir):
    _flip_a_weight_bit(tiny_model_dir / "model.safetensors")
    with pytest.raises(WorldModelFormatError, match=r"model.safetensors .* is corrupt: its sha256"):
        load_world_model(tiny_model_dir)


def test_7_a_bit_flipped_controller_is_refused_naming_the_file(tmp_path):
    from dreamgym.agents.controller import ControllerFormatError, LinearController

    LinearController(24, torch.ones(3, 24)).save(tmp_path / "c")
    assert len(json.loads((tmp_path / "c" / "controller.json").read_text())["weights_sha256"]) == 64
    _flip_a_weight_bit(tmp_path / "c" / "controller.safetensors")
    with pytest.raises(ControllerFormatError, match="controller.safetensors .* is corrupt: its sha256"):
        LinearController.load(tmp_path / "c")


def test_7_files_saved_before_the_checksum_existed_still_load(tiny_model, tiny_model_dir):
    _edit_config(tiny_model_dir, drop=("weights_sha256",))
    loaded = load_world_model(tiny_model_dir)
    assert torch.equal(loaded.start_mu, tiny_model.start_mu)


# ------------------------------------------------------------------ 8. card and inspect of a missing folder
@pytest.mark.parametrize("command", [["card", "{m}", "--ref", "org/x"], ["inspect", "{m}"]])
def test_8_card_and_inspect_of_a_missing_folder_fail_and_create_nothing(tmp_path, capsys, command):
    missing = tmp_path / "MISSING"
    err = _one_line_error(capsys, main([part.format(m=missing) for part in command]))
    assert "does not exist" in err and not missing.exists()


# ------------------------------------------------------------------ 9. config and argument types
@pytest.mark.parametrize(
    ("changes", "drop", "message"),
    [
        ({"encoder_channels": ["4", "8", "8", "8"]}, (), "encoder_channels must be 4 positive integers"),
        ({"dropout": "0.1"}, (), "dropout must be in"),
        ({"crop_dashboard": "no"}, (), "crop_dashboard must be true or false"),
        ({"kl_free_bits": "16"}, (), "kl_free_bits must be a finite number"),
        ({"format_version": True}, (), "format_version True is not supported"),
        ({"format_version": 1.0}, (), "format_version 1.0 is not supported"),
        ({}, ("z_dim",), r"lacks the fields \['z_dim'\]"),
        ({}, ("rnn_hidden",), r"lacks the fields \['rnn_hidden'\]"),
    ],
)
def test_9_config_json_of_the_wrong_types_or_missing_sizes_is_refused(tiny_model_dir, changes, drop, message):
    _edit_config(tiny_model_dir, drop=drop, **changes)
    with pytest.raises(ConfigError, match=message):
        load_world_model(tiny_model_dir)


def test_9_a_temperature_given_as_a_string_is_refused(tiny_model):
    with pytest.raises(TypeError, match="temperature must be a finite number > 0, got str '1.5'"):
        gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, temperature="1.5")


def test_9_a_revision_with_a_local_folder_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="revision='main' was given with the local folder"):
        gym.make("dreamgym/DreamCarRacing-v0", model=str(tiny_model_dir), revision="main")


def test_9_numpy_integers_are_ints_to_every_env(tiny_model):
    from dreamgym.sb3 import DreamVecEnv

    vector = gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=np.int64(2), model=tiny_model)
    sb3 = DreamVecEnv(tiny_model, n_envs=np.int64(2), seed=3)
    obs, _ = vector.reset(seed=np.int64(3))
    np.testing.assert_array_equal(obs, vector.reset(seed=3)[0])
    np.testing.assert_allclose(obs, sb3.reset(), atol=1e-6)
    single = gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model)
    np.testing.assert_array_equal(single.reset(seed=np.int64(3))[0], obs[0])


# ------------------------------------------------------------------ 10. non-finite dreams
def test_10_an_extreme_start_logvar_is_refused_on_load(tmp_path):
    model = make_tiny_model()
    with torch.no_grad():
        model.start_logvar.fill_(400.0)
    model.save_pretrained(tmp_path / "wm")
    with pytest.raises(WorldModelFormatError, match="starting latents no V produces"):
        load_world_model(tmp_path / "wm")


def test_10_a_dream_stops_at_the_first_non_finite_step_and_names_it():
    from dreamgym.errors import NonFiniteDreamError

    model = make_tiny_model()
    with torch.no_grad():
        zk = model.config.z_dim * model.config.num_mixtures
        # Finite but huge weights on the mixture means: z is finite (~3e38) after step 1, and
        # feeding it back to the LSTM overflows to inf, then NaN, at step 2.
        model.rnn.head.weight[zk : 2 * zk] = 3e38
        model.rnn.head.bias[zk : 2 * zk] = 3e38
    env = gym.make("dreamgym/DreamCarRacing-v0", model=model)
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.zeros(3, np.float32))
    assert np.isfinite(obs).all() and np.isfinite(reward)
    with pytest.raises(NonFiniteDreamError, match=r"episode slot 0, step 2\)"):
        env.step(np.zeros(3, np.float32))
    vector = gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=3, model=model)
    vector.reset(seed=0)
    with pytest.raises(NonFiniteDreamError, match=r"episode slot \d, step [12]\)"):  # noqa: PT012  (either step)
        for _ in range(2):
            vector.step(np.zeros((3, 3), np.float32))


def test_10_a_start_bank_that_overflows_stops_the_reset():
    from dreamgym.errors import NonFiniteDreamError

    model = make_tiny_model()
    with torch.no_grad():
        model.start_logvar.fill_(400.0)  # in memory, so no load-time check: the dream itself stops
    with pytest.raises(NonFiniteDreamError, match=r"at reset \(episode slot 0, step 0\)"):
        gym.make("dreamgym/DreamCarRacing-v0", model=model).reset(seed=0)


# ------------------------------------------------------------------ 11. one line for every expected error
@pytest.fixture
def data_dir(tmp_path):
    make_store(tmp_path / "data", n=3)
    return tmp_path / "data"


def test_11_a_corrupt_checkpoint_is_one_line(data_dir, tmp_path, capsys):
    (tmp_path / "out" / "checkpoints").mkdir(parents=True)
    (tmp_path / "out" / "checkpoints" / "vae.safetensors").write_bytes(b"garbage")
    err = _one_line_error(capsys, main(["train-vae", "--data", str(data_dir), "--out", str(tmp_path / "out")]))
    assert "checkpoint" in err and "unreadable" in err


def test_11_the_collector_lock_and_a_file_as_store_are_one_line(tmp_path, capsys):
    from dreamgym.data.collect import collector_lock

    with collector_lock(EpisodeStore(tmp_path / "busy")):
        command = ["collect", "--episodes", "1", "--out", str(tmp_path / "busy"), "--workers", "1"]
        err = _one_line_error(capsys, main(command))
    assert "another collector" in err
    (tmp_path / "file").write_text("not a folder")
    command = ["collect", "--episodes", "1", "--out", str(tmp_path / "file"), "--workers", "1"]
    err = _one_line_error(capsys, main(command))
    assert "not a folder" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_11_device_cuda_without_cuda_is_one_line(data_dir, tmp_path, capsys):
    command = ["train-vae", "--data", str(data_dir), "--out", str(tmp_path / "o"), "--device", "cuda"]
    err = _one_line_error(capsys, main(command))
    assert "no CUDA" in err and not (tmp_path / "o" / "checkpoints").exists()


def test_11_a_config_type_error_and_negative_max_frames_are_one_line(data_dir, tiny_model_dir, tmp_path, capsys):
    _edit_config(tiny_model_dir, dropout="0.1")
    err = _one_line_error(capsys, main(["metrics", str(tiny_model_dir), "--data", str(data_dir)]))
    assert "dropout must be in" in err
    command = ["train-vae", "--data", str(data_dir), "--out", str(tmp_path / "o"), "--max-frames", "-5"]
    err = _one_line_error(capsys, main(command))
    assert "max_frames must be >= 1, got -5" in err


def test_11_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "card", str(tmp_path / "MISSING"), "--ref", "org/x"])
    with pytest.raises(FileNotFoundError):
        main(["inspect", str(tmp_path / "MISSING"), "--debug"])
