"""Saving and loading world models: bit-exact round trips and strict, clear refusals."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dreamgym
from dreamgym import ConfigError, WorldModel, WorldModelConfig, WorldModelFormatError, load_world_model
from dreamgym.envs import DreamCarRacingEnv

from conftest import make_tiny_model


def _assert_same_weights(a: WorldModel, b: WorldModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), f"{name} differs after the round trip"


def _split_safetensors(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]), raw[8 + size :]


def _rewrite_weights(folder: Path, edit) -> None:
    """Edit the tensors and record the new file's sha256, as a deliberate (not a corrupt) rewrite would."""
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _edit_config(folder, weights_sha256=hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest())


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# --------------------------------------------------------------- round trip
def test_save_writes_config_and_safetensors_only(tiny_model_dir):
    files = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    data = json.loads((tiny_model_dir / "config.json").read_text())
    assert data["format_version"] == dreamgym.FORMAT_VERSION
    assert data["z_dim"] == 8 and data["rnn_hidden"] == 16 and data["num_mixtures"] == 2


def test_round_trip_is_bit_exact(tiny_model, tiny_model_dir, tmp_path):
    loaded = WorldModel.from_pretrained(tiny_model_dir)
    assert isinstance(loaded.config, WorldModelConfig)
    assert loaded.config == tiny_model.config
    assert loaded.config.to_dict() == tiny_model.config.to_dict()
    _assert_same_weights(tiny_model, loaded)
    assert not loaded.training  # loaded in eval mode
    # Saving the loaded model again gives the same header and byte-identical tensor data.
    # (Whole files are not compared: safetensors writes the metadata map in hash order.)
    again = tmp_path / "again"
    loaded.save_pretrained(again)
    header_a, data_a = _split_safetensors(tiny_model_dir / "model.safetensors")
    header_b, data_b = _split_safetensors(again / "model.safetensors")
    assert header_a == header_b
    assert data_a == data_b
    assert json.loads((again / "config.json").read_text()) == json.loads((tiny_model_dir / "config.json").read_text())


def test_round_trip_keeps_non_default_config_and_training_record(tmp_path):
    model = make_tiny_model(seed=3, crop_dashboard=False, kl_free_bits=4.5, dropout=0.1, env_id="CarRacing-v3",
                            training={"vae_epochs": 3, "note": "tiny"})
    model.save_pretrained(tmp_path / "m")
    loaded = WorldModel.from_pretrained(str(tmp_path / "m"))
    assert loaded.config == model.config
    assert loaded.config.training == {"vae_epochs": 3, "note": "tiny"}
    assert loaded.config.crop_dashboard is False
    _assert_same_weights(model, loaded)


def test_round_trip_same_outputs(tiny_model, tiny_model_dir):
    loaded = load_world_model(tiny_model_dir)
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    mu_a, lv_a = tiny_model.encode(frames)
    mu_b, lv_b = loaded.encode(frames)
    assert torch.equal(mu_a, mu_b) and torch.equal(lv_a, lv_b)
    assert torch.equal(tiny_model.decode(mu_a), loaded.decode(mu_b))


@pytest.mark.parametrize("as_str", [False, True])
def test_load_world_model_from_folder(tiny_model, tiny_model_dir, as_str):
    loaded = dreamgym.load_world_model(str(tiny_model_dir) if as_str else tiny_model_dir)
    assert isinstance(loaded, WorldModel)
    assert loaded.device == torch.device("cpu")
    _assert_same_weights(tiny_model, loaded)


def test_load_world_model_relative_path(tiny_model, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tiny_model_dir.parent)
    _assert_same_weights(tiny_model, load_world_model("./" + tiny_model_dir.name))


def test_load_world_model_passes_instances_through(tiny_model):
    tiny_model.train()
    assert load_world_model(tiny_model) is tiny_model
    assert not tiny_model.training


def test_env_accepts_a_folder(tiny_model, tiny_model_dir):
    env = DreamCarRacingEnv(model=str(tiny_model_dir))
    _assert_same_weights(tiny_model, env.world_model)
    env.close()


# --------------------------------------------------------------- weights mismatches
def test_missing_tensor_refused(tiny_model_dir):
    _rewrite_weights(tiny_model_dir, lambda t: t.pop("rnn.head.bias"))
    with pytest.raises(WorldModelFormatError, match=r"missing tensors \['rnn.head.bias'\]"):
        WorldModel.from_pretrained(tiny_model_dir)


def test_missing_start_latents_refused(tiny_model_dir):
    _rewrite_weights(tiny_model_dir, lambda t: t.pop("start_mu"))
    with pytest.raises(WorldModelFormatError, match="missing tensors.*start_mu"):
        load_world_model(tiny_model_dir)


def test_unexpected_tensor_refused(tiny_model_dir):
    _rewrite_weights(tiny_model_dir, lambda t: t.update({"controller.weight": torch.zeros(3, 24)}))
    with pytest.raises(WorldModelFormatError, match=r"unexpected tensors \['controller.weight'\]"):
        WorldModel.from_pretrained(tiny_model_dir)


def test_reshaped_tensor_refused(tiny_model_dir):
    def reshape(tensors):
        tensors["vae.fc_mu.weight"] = tensors["vae.fc_mu.weight"].reshape(-1, 4).contiguous()

    _rewrite_weights(tiny_model_dir, reshape)
    expected = r"vae.fc_mu.weight has shape \(64, 4\) but the config needs \(8, 32\)"
    with pytest.raises(WorldModelFormatError, match=expected):
        WorldModel.from_pretrained(tiny_model_dir)


def test_config_with_other_z_dim_refused(tiny_model_dir):
    _edit_config(tiny_model_dir, z_dim=9)
    with pytest.raises(WorldModelFormatError, match="does not match its config") as info:
        load_world_model(tiny_model_dir)
    message = str(info.value)
    assert "vae.fc_mu.weight has shape (8, 32) but the config needs (9, 32)" in message
    assert "start_mu" in message


def test_config_with_other_num_start_latents_refused(tiny_model_dir):
    _edit_config(tiny_model_dir, num_start_latents=5)
    with pytest.raises(WorldModelFormatError, match=r"start_mu has shape \(4, 8\) but the config needs \(5, 8\)"):
        load_world_model(tiny_model_dir)


def test_all_problems_reported_together(tiny_model_dir):
    def edit(tensors):
        tensors.pop("rnn.head.weight")
        tensors["extra"] = torch.zeros(1)
        tensors["start_logvar"] = torch.zeros(2, 8)

    _rewrite_weights(tiny_model_dir, edit)
    with pytest.raises(WorldModelFormatError) as info:
        WorldModel.from_pretrained(tiny_model_dir)
    message = str(info.value)
    assert "missing tensors ['rnn.head.weight']" in message
    assert "unexpected tensors ['extra']" in message
    assert "start_logvar has shape (2, 8)" in message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_refused(tiny_model_dir, bad):
    def poison(tensors):
        tensors["rnn.lstm.weight_hh_l0"][3, 2] = bad

    _rewrite_weights(tiny_model_dir, poison)
    with pytest.raises(WorldModelFormatError, match=r"NaN or inf in \['rnn.lstm.weight_hh_l0'\]"):
        WorldModel.from_pretrained(tiny_model_dir)


def test_fp16_weights_load_as_float32(tiny_model, tiny_model_dir):
    _rewrite_weights(tiny_model_dir, lambda t: t.update({k: v.half() for k, v in t.items()}))
    assert all(v.dtype == torch.float16 for v in load_file(str(tiny_model_dir / "model.safetensors")).values())
    loaded = WorldModel.from_pretrained(tiny_model_dir)
    original = tiny_model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == torch.float32, name
        assert torch.equal(tensor, original[name].half().float()), name
    # And the half-precision model still runs.
    mu, _ = loaded.encode(np.zeros((1, 64, 64, 3), np.uint8))
    assert mu.dtype == torch.float32 and torch.isfinite(mu).all()


def test_load_weights_does_not_modify_model_on_failure(tiny_model, tiny_model_dir):
    """A refused file leaves an existing model untouched (nothing half-loaded)."""
    from dreamgym.models import load_weights_strict

    def edit(tensors):
        tensors["vae.fc_mu.bias"] = torch.full((8,), 99.0)
        tensors.pop("rnn.head.bias")

    _rewrite_weights(tiny_model_dir, edit)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    with pytest.raises(WorldModelFormatError):
        load_weights_strict(tiny_model, tiny_model_dir / "model.safetensors", source="x")
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(tensor, before[name])


# --------------------------------------------------------------- config problems
def test_unknown_format_version_refused(tiny_model_dir):
    _edit_config(tiny_model_dir, format_version=2)
    with pytest.raises(ConfigError, match="format_version 2 is not supported"):
        load_world_model(tiny_model_dir)


def test_missing_format_version_refused(tiny_model_dir):
    path = tiny_model_dir / "config.json"
    data = json.loads(path.read_text())
    del data["format_version"]
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="no 'format_version'"):
        load_world_model(tiny_model_dir)


def test_unknown_config_field_refused(tiny_model_dir):
    _edit_config(tiny_model_dir, controller_hidden=40)
    with pytest.raises(ConfigError, match=r"unknown fields \['controller_hidden'\]"):
        load_world_model(tiny_model_dir)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"z_dim": 0}, "'z_dim' must be a positive integer"),
        ({"rnn_hidden": "16"}, "'rnn_hidden' must be a positive integer"),
        ({"image_size": 96}, "image_size must be 64"),
        ({"encoder_channels": [4, 8, 8]}, "encoder_channels must be 4 positive integers"),
        ({"decoder_kernels": [4, 4, 4, 4]}, "decoder_kernels must be"),
        ({"dropout": 1.5}, "dropout must be in"),
    ],
)
def test_invalid_config_values_refused(tiny_model_dir, changes, fragment):
    _edit_config(tiny_model_dir, **changes)
    with pytest.raises(ConfigError, match=fragment):
        load_world_model(tiny_model_dir)


@pytest.mark.parametrize("text", ["{not json", "", '{"format_version": 1,'])
def test_corrupt_config_json_refused(tiny_model_dir, text):
    (tiny_model_dir / "config.json").write_text(text)
    with pytest.raises(WorldModelFormatError, match="config.json .* is not valid JSON"):
        load_world_model(tiny_model_dir)


@pytest.mark.parametrize("text", ["[1, 2, 3]", "42", '"a string"', "null"])
def test_config_json_not_an_object_refused(tiny_model_dir, text):
    (tiny_model_dir / "config.json").write_text(text)
    with pytest.raises((ConfigError, WorldModelFormatError), match="config"):
        load_world_model(tiny_model_dir)


# --------------------------------------------------------------- file problems
@pytest.mark.parametrize(
    "spoil",
    [
        lambda data: b"this is not a safetensors file at all",  # garbage
        lambda data: data[: len(data) // 2],  # truncated
        lambda data: b"",  # empty
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_unreadable_safetensors_refused(tiny_model_dir, spoil):
    path = tiny_model_dir / "model.safetensors"
    path.write_bytes(spoil(path.read_bytes()))
    with pytest.raises(WorldModelFormatError, match="model.safetensors .* is corrupt or unreadable"):
        load_world_model(tiny_model_dir)


def test_missing_config_refused(tiny_model_dir):
    (tiny_model_dir / "config.json").unlink()
    with pytest.raises(WorldModelFormatError, match="has no config.json"):
        load_world_model(tiny_model_dir)


def test_missing_weights_refused(tiny_model_dir):
    (tiny_model_dir / "model.safetensors").unlink()
    with pytest.raises(WorldModelFormatError, match="has no model.safetensors") as info:
        load_world_model(tiny_model_dir)
    assert "config.json" in str(info.value)  # says what it did find


def test_empty_folder_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldModelFormatError, match="has no model.safetensors"):
        load_world_model(tmp_path / "empty")


class _Trap:
    """Unpickling this touches a sentinel file: proof that a pickle was loaded."""

    def __init__(self, sentinel: str) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (Path(self.sentinel),))


@pytest.mark.parametrize("with_config", [False, True])
def test_pickle_only_folder_refused_without_unpickling(tmp_path, tiny_model_dir, monkeypatch, with_config):
    folder = tmp_path / "pickled"
    folder.mkdir()
    if with_config:
        shutil.copy(tiny_model_dir / "config.json", folder / "config.json")
    sentinel = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap(str(sentinel))))
    # The trap works: unpickling a twin of it does leave its mark.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(_Trap(str(proof))))
    assert proof.exists()

    def refuse_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on an untrusted file")

    monkeypatch.setattr(torch, "load", refuse_unpickling)
    with pytest.raises(WorldModelFormatError, match="pickle") as info:
        load_world_model(folder)
    assert "pytorch_model.bin" in str(info.value)
    assert "model.safetensors" in str(info.value)
    assert not sentinel.exists(), "the pickle was unpickled"


# --------------------------------------------------------------- bad sources
@pytest.mark.parametrize("path", ["./nope", "/tmp/does/not/exist", "some/deep/missing/folder", "missing-dir/"])
def test_nonexistent_path_raises_file_not_found(path):
    with pytest.raises(FileNotFoundError) as info:
        load_world_model(path)
    assert path in str(info.value)


def test_nonexistent_pathlike_raises_file_not_found(tmp_path):
    missing = tmp_path / "not-here"
    with pytest.raises(FileNotFoundError, match="not-here"):
        load_world_model(missing)


def test_a_file_is_not_a_model_folder(tiny_model_dir):
    weights = tiny_model_dir / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_world_model(weights)


def test_hub_id_unreachable_offline_raises_file_not_found():
    # conftest puts the Hub offline: an uncached repo id cannot be found.
    with pytest.raises(FileNotFoundError, match="dreamgym-tests/no-such-model"):
        load_world_model("dreamgym-tests/no-such-model")


def test_model_none_raises_value_error_without_a_default(monkeypatch):
    monkeypatch.setattr("dreamgym.hub.default_model_path", lambda: None)
    with pytest.raises(ValueError, match="no world model given"):
        load_world_model(None)


def test_model_none_loads_the_shipped_default():
    from dreamgym.hub import default_model_path

    if default_model_path() is None:
        pytest.skip("no default world model in this checkout")
    model = load_world_model(None)
    assert model.config.z_dim == 32 and next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("bad", [42, 3.5, ["a"], {"z_dim": 8}])
def test_model_of_wrong_type_raises_type_error(bad):
    with pytest.raises(TypeError, match="model must be a WorldModel"):
        load_world_model(bad)
