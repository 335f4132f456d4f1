"""The world model bundle: V + M + config + the bank of real starting latents, saved as one folder."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from huggingface_hub import PyTorchModelHubMixin, hf_hub_download, list_repo_files
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from dreamgym.config import MAX_ENSEMBLE_SIZE, WORLD_MODEL_FORMAT_VERSION, WorldModelConfig
from dreamgym.errors import ConfigError, WorldModelChecksumError, WorldModelFormatError
from dreamgym.files import (
    WEIGHTS_SHA256_KEY,
    atomic_write,
    check_sha256,
    file_sha256,  # noqa: F401  (re-exported: its old home)
    read_json,
)
from dreamgym.models.mdnrnn import MDNRNN, StackedMDNRNN
from dreamgym.models.vae import ConvVAE

MODEL_CONFIG_FILE = "config.json"
"""The world model's config (:class:`~dreamgym.config.WorldModelConfig` and the weights' sha256)."""
MODEL_WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE, WEIGHTS_FILE = MODEL_CONFIG_FILE, MODEL_WEIGHTS_FILE  # the names they had first
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
SHA256_KEY = WEIGHTS_SHA256_KEY
"""Key of ``config.json`` holding the sha256 of ``model.safetensors``, written by every save
and checked on every load (files written before it existed load unchecked)."""
MAX_WEIGHT_ELEMENTS = 2**28
"""Most numbers a loaded world model may hold (1 GiB as float32, ~60x the paper's model): a
config asking for more is refused before anything is allocated."""
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
MAX_START_LOGVAR = 20.0
"""Largest log-variance the bank of starting latents may hold (a standard deviation of
e^10): beyond it a dream can start at an infinite ``z``, and every step after is NaN."""
MAX_START_MU = 1e4


def canonical_safetensors(data: bytes) -> bytes:
    """``data`` (a safetensors file) with the keys of its ``__metadata__`` in sorted order.

    safetensors writes the metadata from a Rust ``HashMap``, in an order that changes from
    run to run, so the same weights saved twice could differ byte for byte (and a re-run
    that changes nothing would look like a new file to git, the Hub or a checksum). The
    header is re-serialised with the same content and length, so the file stays valid.
    """
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    metadata = header.pop("__metadata__", None)
    ordered = ({"__metadata__": dict(sorted(metadata.items()))} if metadata else {}) | header
    text = json.dumps(ordered, separators=(",", ":")).encode()
    if len(text) > size or data[8 + len(text) : 8 + size].strip(b" "):
        return data  # not the compact header this expects: keep it as written
    return data[:8] + text + data[8 + len(text) :]


class WorldModel(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="dreamgym",
    tags=["world-model", "reinforcement-learning", "gymnasium"],
    repo_url="https://github.com/dreamgym/dreamgym",
    paper_url="https://arxiv.org/abs/1803.10122",
):
    """V (a :class:`ConvVAE`) and M (an :class:`MDNRNN`) with the states dream episodes start from.

    With ``config.ensemble_size = K > 1``, M is an ensemble of K MDNRNNs: ``rnn`` is member 0
    (the observation member, whose ``h`` agents see, in the dream and in the real env) and
    ``rnn_members`` holds the other K - 1, which dream and measure disagreement in
    ``ensemble=True`` dreams (see :class:`~dreamgym.envs.dynamics.LatentDream`). A single M's
    files have no member tensors, so models saved before ensembles existed load unchanged.

    Saved with :meth:`save_pretrained` as a folder holding ``config.json`` and
    ``model.safetensors``; loaded with :meth:`from_pretrained` from such a folder or a Hub repo
    id (with ``revision=``). Loading is strict: a missing, unexpected or wrongly shaped tensor,
    a corrupt file, or an unknown ``format_version`` raises :class:`WorldModelFormatError` or
    :class:`~dreamgym.config.ConfigError` naming the problem. Pickled weights are never read.

    Args:
        config: a :class:`WorldModelConfig`, or its dict form as stored in ``config.json``.
    """

    # Buffers (registered in __init__; the trajectory ones only with a bank of trajectory starts).
    start_mu: torch.Tensor
    start_logvar: torch.Tensor
    trajectory_mu: torch.Tensor
    trajectory_logvar: torch.Tensor
    trajectory_h: torch.Tensor
    trajectory_c: torch.Tensor
    trajectory_member_h: torch.Tensor
    trajectory_member_c: torch.Tensor

    def __init__(self, config: dict | WorldModelConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = WorldModelConfig()
        elif isinstance(config, dict):
            config = WorldModelConfig.from_dict(config)
        self.config = config
        self.vae = ConvVAE(config.z_dim, config.encoder_channels, config.decoder_channels, config.decoder_kernels)
        self.rnn = MDNRNN(config.z_dim, config.action_dim, config.rnn_hidden, config.num_mixtures, config.dropout)
        if config.ensemble_size > 1:
            # Only with an ensemble, so that a single M's state dict (and file) stays as it was.
            self.rnn_members = nn.ModuleList(
                MDNRNN(config.z_dim, config.action_dim, config.rnn_hidden, config.num_mixtures, config.dropout)
                for _ in range(config.ensemble_size - 1)
            )
        # Real episodes' first latents (mean and log-variance): dream episodes start here.
        self.register_buffer("start_mu", torch.zeros(config.num_start_latents, config.z_dim))
        self.register_buffer("start_logvar", torch.full((config.num_start_latents, config.z_dim), -4.0))
        if config.num_trajectory_starts:
            # Real states along real trajectories, after a burn-in of real frames: V's (mu,
            # logvar) of the frame and M's (h, c) after the actions that led there.
            n = config.num_trajectory_starts
            self.register_buffer("trajectory_mu", torch.zeros(n, config.z_dim))
            self.register_buffer("trajectory_logvar", torch.full((n, config.z_dim), -4.0))
            self.register_buffer("trajectory_h", torch.zeros(n, config.rnn_hidden))
            self.register_buffer("trajectory_c", torch.zeros(n, config.rnn_hidden))
            if config.ensemble_size > 1:
                # The other members' (h, c) after the same real frames and actions.
                others = (n, config.ensemble_size - 1, config.rnn_hidden)
                self.register_buffer("trajectory_member_h", torch.zeros(others))
                self.register_buffer("trajectory_member_c", torch.zeros(others))

    @property
    def device(self) -> torch.device:
        return self.start_mu.device

    # ------------------------------------------------------------- M's members
    @property
    def ensemble_size(self) -> int:
        """Number of Ms: 1, or K for an ensemble (see :attr:`members`)."""
        return self.config.ensemble_size

    @property
    def members(self) -> list[MDNRNN]:
        """The Ms of the ensemble, ``[rnn, *rnn_members]``: member 0, the observation member, first.

        Member 0's ``h`` is the one agents observe, in the dream and in the real env; the
        others only dream and measure disagreement.
        """
        return [self.rnn, *self.rnn_members] if self.config.ensemble_size > 1 else [self.rnn]

    def stacked_members(self) -> StackedMDNRNN:
        """The members' weights stacked once, for stepping all of them in one batched op."""
        return StackedMDNRNN(self.members)

    def set_members(self, members: list[MDNRNN]) -> None:
        """Make ``members`` the model's Ms (member 0 first), setting ``config.ensemble_size``.

        A bank of trajectory starts is dropped when the number of members changes: its
        member states would no longer fit (and were M's states of other Ms anyway).
        """
        if not 1 <= len(members) <= MAX_ENSEMBLE_SIZE:
            raise ValueError(f"an ensemble of M needs 1 to {MAX_ENSEMBLE_SIZE} members, got {len(members)}")
        cfg = self.config
        if len(members) != cfg.ensemble_size and self.has_trajectory_starts:
            for name in ("mu", "logvar", "h", "c", "member_h", "member_c"):
                if hasattr(self, f"trajectory_{name}"):
                    delattr(self, f"trajectory_{name}")
            cfg.num_trajectory_starts = 0
        self.rnn = members[0]
        if len(members) > 1:
            self.rnn_members = nn.ModuleList(members[1:])
        elif hasattr(self, "rnn_members"):
            del self.rnn_members
        cfg.ensemble_size = len(members)

    # ----------------------------------------------------------------- V helpers
    @torch.inference_mode()
    def encode(self, frames: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode uint8 frames of shape (N, 64, 64, 3) to V's (mu, logvar), each (N, z_dim)."""
        frames = torch.as_tensor(frames, device=self.device)
        size = self.config.image_size
        if frames.dtype != torch.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != (size, size, 3):
            raise ValueError(
                f"expected uint8 frames of shape (N, {size}, {size}, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        images = frames.permute(0, 3, 1, 2).float().div_(255.0)
        return self.vae.encode(images)

    @torch.inference_mode()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (N, z_dim) to uint8 frames (N, 64, 64, 3)."""
        images = self.vae.decode(z.to(self.device, torch.float32))
        return images.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1)

    def set_start_latents(self, mu: torch.Tensor, logvar: torch.Tensor) -> None:
        """Replace the bank of starting latents; both (num_start_latents, z_dim)."""
        expected = tuple(self.start_mu.shape)
        if tuple(mu.shape) != expected or tuple(logvar.shape) != expected:
            raise ValueError(
                f"start latents must have shape {expected}, got mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)}"
            )
        self.start_mu.copy_(mu)
        self.start_logvar.copy_(logvar)

    @property
    def has_trajectory_starts(self) -> bool:
        """Whether the model carries a bank of real trajectory states for ``start="trajectory"``."""
        return self.config.num_trajectory_starts > 0

    def set_trajectory_starts(
        self,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        member_h: torch.Tensor | None = None,
        member_c: torch.Tensor | None = None,
    ) -> None:
        """Replace the bank of trajectory starts, resizing it (and the config) to ``len(mu)`` states.

        ``h`` and ``c`` (n, rnn_hidden) are member 0's. A model with an ensemble of K > 1 Ms
        also needs the other members' states after the same frames and actions,
        ``member_h`` and ``member_c`` of shape (n, K - 1, rnn_hidden); a single M takes none.
        """
        n, cfg = len(mu), self.config
        shapes: dict[str, tuple[torch.Tensor, tuple[int, ...]]] = {
            "mu": (mu, (n, cfg.z_dim)), "logvar": (logvar, (n, cfg.z_dim)),
            "h": (h, (n, cfg.rnn_hidden)), "c": (c, (n, cfg.rnn_hidden)),
        }
        others = cfg.ensemble_size - 1
        if others:
            if member_h is None or member_c is None:
                raise ValueError(
                    f"this world model has an ensemble of {cfg.ensemble_size} Ms: trajectory starts need member_h and "
                    f"member_c of shape ({n}, {others}, {cfg.rnn_hidden}), the other members' states"
                )
            shapes["member_h"] = (member_h, (n, others, cfg.rnn_hidden))
            shapes["member_c"] = (member_c, (n, others, cfg.rnn_hidden))
        elif member_h is not None or member_c is not None:
            raise ValueError(
                "member_h and member_c are for a world model with an ensemble of Ms; this one has a single M"
            )
        for name, (tensor, shape) in shapes.items():
            if tuple(tensor.shape) != shape:
                raise ValueError(f"trajectory start {name} must have shape {shape}, got {tuple(tensor.shape)}")
        if n == 0:
            raise ValueError("a bank of trajectory starts needs at least one state")
        cfg.num_trajectory_starts = n
        for name, (tensor, _) in shapes.items():
            self.register_buffer(f"trajectory_{name}", tensor.detach().to(self.device, torch.float32).clone())

    # ------------------------------------------------------------ persistence
    def _save_pretrained(self, save_directory: Path) -> None:
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        metadata = {"format": "pt", "format_version": str(WORLD_MODEL_FORMAT_VERSION)}
        data = canonical_safetensors(save(tensors, metadata=metadata))
        # The weights' checksum travels in config.json: a flipped bit in the weights is then
        # an error on load, not a silently different dream.
        record = {**self.config.to_dict(), WEIGHTS_SHA256_KEY: hashlib.sha256(data).hexdigest()}
        atomic_write(save_directory / MODEL_WEIGHTS_FILE, data)
        atomic_write(save_directory / MODEL_CONFIG_FILE, json.dumps(record, indent=2, sort_keys=True).encode())

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> WorldModel:
        """Load a world model from a local folder or a Hub repo id.

        Keyword arguments are huggingface_hub's (``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ...) plus ``map_location`` (default ``"cpu"``).
        """
        source = str(pretrained_model_name_or_path)
        if os.path.isdir(source):
            if kwargs.get("revision") is not None:
                raise ValueError(
                    f"revision={kwargs['revision']!r} was given with the local folder {source!r}; "
                    "a revision names a commit of a Hub repo, a folder has none: drop revision="
                )
            _check_local_folder(Path(source))
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (json.JSONDecodeError, AttributeError) as err:
            # The mixin parses config.json before we see it; a non-object config surfaces as AttributeError.
            raise WorldModelFormatError(
                f"{MODEL_CONFIG_FILE} of world model {source!r} is not a JSON object: {err}"
            ) from err

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        map_location: str = "cpu",
        config: dict | None = None,
        **model_kwargs: Any,
    ) -> WorldModel:
        """Load the world model ``model_id`` (a folder, or a Hub repo) whose config the mixin read into ``config``.

        Everything is checked before the weights are allocated: the config, the weights'
        sha256 and the tensor names and shapes in the safetensors header.
        """
        if config is None:
            _explain_missing_config(model_id, revision, cache_dir, token, local_files_only)
        config_obj, expected_sha, expected = cls._checked_config(dict(config), model_id)
        if os.path.isdir(model_id):
            weights = os.path.join(model_id, MODEL_WEIGHTS_FILE)
        else:
            weights = _download_weights(model_id, revision, cache_dir, force_download, token, local_files_only)
        what = f"{MODEL_WEIGHTS_FILE} of world model {model_id!r}"
        header = read_safetensors_header(weights, what)
        if expected_sha is not None:
            check_sha256(weights, expected_sha, what, WorldModelChecksumError)
        check_weights_header(header, expected, what)
        model = cls(config_obj)
        load_weights_strict(model, weights, source=model_id)
        check_start_bank(model, source=model_id)
        return model.to(map_location).eval()

    @classmethod
    def _checked_config(
        cls, config: dict[str, Any], model_id: str
    ) -> tuple[WorldModelConfig, str | None, dict[str, tuple[int, ...]]]:
        """The config read from ``config.json``, the weights' sha256 it records, and the tensor shapes it implies."""
        expected_sha = config.pop(WEIGHTS_SHA256_KEY, None)
        if expected_sha is not None and (
            not isinstance(expected_sha, str) or len(expected_sha) != 64 or set(expected_sha) - set("0123456789abcdef")
        ):
            raise WorldModelFormatError(
                f"{MODEL_CONFIG_FILE} of world model {model_id!r}: {WEIGHTS_SHA256_KEY} must be 64 lowercase hex "
                f"digits, got {expected_sha!r}"
            )
        try:
            config_obj = WorldModelConfig.from_dict(config)
            # Shapes only, no memory: the weights file is checked against them before anything is allocated.
            with torch.device("meta"):
                skeleton = cls(config_obj)
        except ConfigError as err:
            raise ConfigError(f"world model {model_id!r}: {err}") from err
        expected = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
        total = sum(math.prod(shape) for shape in expected.values())
        if total > MAX_WEIGHT_ELEMENTS:
            raise ConfigError(
                f"world model {model_id!r}: its config describes {total:,} weights, above the limit of "
                f"{MAX_WEIGHT_ELEMENTS:,}; refusing to allocate them"
            )
        return config_obj, expected_sha, expected


def _explain_missing_config(
    model_id: str, revision: str | None, cache_dir: str | Path | None, token: str | bool | None, local_files_only: bool
) -> NoReturn:
    """Raise the reason the mixin found no ``config.json`` for ``model_id``: no repo, no revision, offline, not ours."""
    if not os.path.isdir(model_id):
        try:  # re-fetch to surface why the mixin found no config: no repo, no revision, offline...
            hf_hub_download(
                repo_id=model_id, filename=MODEL_CONFIG_FILE, revision=revision, cache_dir=cache_dir,
                token=token, local_files_only=local_files_only,
            )
        except (EntryNotFoundError, RepositoryNotFoundError) as err:
            # Some Hub-compatible servers answer a missing file as a missing repo; a
            # listing tells the two apart.
            files = _repo_files(model_id, revision, token)
            if files is None:
                raise
            raise WorldModelFormatError(
                f"Hub repo {model_id!r} has no {MODEL_CONFIG_FILE}: it is not a dreamgym world model "
                f"(it holds {sorted(files)})"
            ) from err
    raise WorldModelFormatError(
        f"world model {model_id!r} has no readable {MODEL_CONFIG_FILE}; a dreamgym world model holds "
        f"{MODEL_CONFIG_FILE} and {MODEL_WEIGHTS_FILE}"
    )


def _download_weights(
    model_id: str,
    revision: str | None,
    cache_dir: str | Path | None,
    force_download: bool,
    token: str | bool | None,
    local_files_only: bool,
) -> str:
    """The local path of the Hub repo ``model_id``'s weights file, downloaded if need be."""
    try:
        return hf_hub_download(
            repo_id=model_id,
            filename=MODEL_WEIGHTS_FILE,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            token=token,
            local_files_only=local_files_only,
        )
    except (EntryNotFoundError, RepositoryNotFoundError) as err:
        # The config came from this repo, so it exists: the weights file is what is missing.
        files = _repo_files(model_id, revision, token)
        if files is None:
            raise
        raise WorldModelFormatError(_missing_weights_message(model_id, files)) from err


def read_safetensors_header(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes), read without loading any tensor.

    Raises:
        WorldModelFormatError: the header is unreadable, or the file is shorter than the header says.
    """
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= MAX_HEADER_BYTES:
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(f.read(size))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
            file_size = os.fstat(f.fileno()).st_size
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise WorldModelFormatError(f"{what} is corrupt or unreadable (not a safetensors file): {err}") from err
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as err:
            raise WorldModelFormatError(
                f"{what} is corrupt or unreadable: tensor {name!r} has no valid data_offsets"
            ) from err
    if 8 + size + end > file_size:
        raise WorldModelFormatError(
            f"{what} is corrupt or unreadable: truncated, its header needs {8 + size + end} bytes "
            f"and the file has {file_size}"
        )
    return header


def tensor_name_problems(expected: Iterable[str], found: Iterable[str]) -> list[str]:
    """What a weights file gets wrong by name: the tensors it lacks, then those it should not hold."""
    expected, found = set(expected), set(found)
    problems = []
    if expected - found:
        problems.append(f"missing tensors {sorted(expected - found)}")
    if found - expected:
        problems.append(f"unexpected tensors {sorted(found - expected)}")
    return problems


def check_weights_header(header: dict[str, Any], expected: dict[str, tuple[int, ...]], what: str) -> None:
    """Check the tensors a safetensors header declares against ``expected`` shapes, before any is loaded.

    Args:
        header: from :func:`read_safetensors_header`.
        expected: the shape of every tensor the model needs, by name.
        what: the file, for the message.

    Raises:
        WorldModelFormatError: naming every missing, unexpected, wrongly shaped or non-float tensor.
    """
    declared = {name: info for name, info in header.items() if name != "__metadata__"}
    problems = tensor_name_problems(expected, declared)
    for name in sorted(set(expected) & set(declared)):
        info = declared[name]
        shape = tuple(info.get("shape", ())) if isinstance(info, dict) else None
        if shape != expected[name]:
            problems.append(f"{name} has shape {shape} but the config needs {expected[name]}")
        elif info.get("dtype") not in FLOAT_DTYPES:
            problems.append(f"{name} has dtype {info.get('dtype')!r}, expected one of {list(FLOAT_DTYPES)}")
    if problems:
        raise WorldModelFormatError(f"{what} does not match its config: " + "; ".join(problems))


def check_start_bank(model: WorldModel, source: str) -> None:
    """Refuse a bank of starting latents from which a dream could start at an infinite ``z``."""
    logvar_max = float(model.start_logvar.max())
    mu_max = float(model.start_mu.abs().max())
    if logvar_max > MAX_START_LOGVAR or mu_max > MAX_START_MU:
        raise WorldModelFormatError(
            f"{MODEL_WEIGHTS_FILE} of world model {source!r} holds starting latents no V produces "
            f"(largest start_logvar {logvar_max:.3g}, largest |start_mu| {mu_max:.3g}; "
            f"the limits are {MAX_START_LOGVAR} and {MAX_START_MU:g}): "
            "its dreams would start at inf and turn to NaN"
        )


def _repo_files(repo_id: str, revision: str | None, token: str | bool | None) -> list[str] | None:
    """The files of a Hub repo at ``revision``, or None if it cannot be listed (so does not exist)."""
    try:
        return list_repo_files(repo_id, revision=revision, token=token)
    except (HfHubHTTPError, OSError, ValueError):
        return None


def _missing_weights_message(source: str, files: list[str]) -> str:
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if pickles:
        return (
            f"world model {source!r} has no {MODEL_WEIGHTS_FILE}, only pickle-format weights {pickles}. "
            "dreamgym never unpickles downloaded files because unpickling can run arbitrary code; "
            "ask the publisher for a safetensors export"
        )
    return f"world model {source!r} has no {MODEL_WEIGHTS_FILE}; found only {sorted(files)}"


def _check_local_folder(folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    if MODEL_WEIGHTS_FILE not in files:
        raise WorldModelFormatError(_missing_weights_message(str(folder), files))
    if MODEL_CONFIG_FILE not in files:
        raise WorldModelFormatError(
            f"world model folder {str(folder)!r} has no {MODEL_CONFIG_FILE}; a dreamgym world model holds "
            f"{MODEL_CONFIG_FILE} and {MODEL_WEIGHTS_FILE}"
        )
    read_json(
        folder / MODEL_CONFIG_FILE, f"{MODEL_CONFIG_FILE} of world model {str(folder)!r}", error=WorldModelFormatError
    )


def load_weights_strict(model: nn.Module, path: str | os.PathLike, source: str) -> None:
    """Load ``model.safetensors`` into ``model``, refusing any mismatch with a message naming it.

    Weights stored in a lower precision (the shipped default is fp16) are cast to the
    model's dtype.
    """
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise WorldModelFormatError(
            f"{MODEL_WEIGHTS_FILE} of world model {source!r} is corrupt or unreadable: {err}"
        ) from err
    expected = model.state_dict()
    mismatched = [
        f"{name} has shape {tuple(tensors[name].shape)} but the config needs {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(tensors))
        if tensors[name].shape != expected[name].shape
    ]
    problems = tensor_name_problems(expected, tensors)
    problems.extend(mismatched)
    if problems:
        raise WorldModelFormatError(
            f"{MODEL_WEIGHTS_FILE} of world model {source!r} does not match its config: " + "; ".join(problems)
        )
    non_finite = sorted(name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all())
    if non_finite:
        raise WorldModelFormatError(f"{MODEL_WEIGHTS_FILE} of world model {source!r} holds NaN or inf in {non_finite}")
    model.load_state_dict({name: t.to(expected[name].dtype) for name, t in tensors.items()}, strict=True)
