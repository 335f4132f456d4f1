"""The paper's controller C: one linear layer from ``[z, h]`` to CarRacing's three actions.

Ha & Schmidhuber keep C deliberately tiny (867 parameters for a 32-d ``z`` and a 256-unit
``h``) so that all the complexity lives in the world model and C can be trained by an
evolution strategy (:mod:`dreamgym.agents.cmaes`). The raw outputs are squashed into the
action space as in the paper's code: ``steer = tanh``, ``gas = (tanh + 1) / 2`` and
``brake = clip(tanh, 0, 1)``.

A controller is saved as a folder holding ``controller.safetensors`` (the weight and the
bias) and ``controller.json`` (its size, the world model it was trained in, the dream
temperature and a training summary). Loading is strict and never unpickles anything.

Example::

    import gymnasium as gym
    import dreamgym
    from dreamgym.agents.controller import load_controller

    controller = load_controller("runs/ctrl")  # or "reference" for the shipped one
    env = gym.make("dreamgym/RealCarRacing-v0", model=controller.world_model["model"])
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(controller(obs))
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from dreamgym.errors import ControllerChecksumError, ControllerFormatError
from dreamgym.files import (
    WEIGHTS_SHA256_KEY,
    atomic_write,
    atomic_write_json,
    check_format_version,
    check_sha256,
    read_json,
)
from dreamgym.models.world_model import canonical_safetensors, tensor_name_problems
from dreamgym.validation import check_int
from dreamgym.version import __version__

__all__ = [
    "CONFIG_FILE",
    "CONTROLLER_CONFIG_FILE",
    "CONTROLLER_FORMAT_VERSION",
    "CONTROLLER_WEIGHTS_FILE",
    "FORMAT_VERSION",
    "REFERENCE_DIR",
    "WEIGHTS_FILE",
    "ControllerFormatError",
    "LinearController",
    "load_controller",
    "population_actions",
    "squash_actions",
    "unflatten_population",
]

CONTROLLER_WEIGHTS_FILE = "controller.safetensors"
CONTROLLER_CONFIG_FILE = "controller.json"
CONTROLLER_FORMAT_VERSION = 1
"""The newest layout of ``controller.json`` + ``controller.safetensors`` this dreamgym reads."""
SUPPORTED_FORMAT_VERSIONS = (1,)
# The names they had first.
WEIGHTS_FILE, CONFIG_FILE, FORMAT_VERSION = CONTROLLER_WEIGHTS_FILE, CONTROLLER_CONFIG_FILE, CONTROLLER_FORMAT_VERSION
SHA256_KEY = WEIGHTS_SHA256_KEY
"""Key of ``controller.json`` holding the sha256 of ``controller.safetensors``: written by every
save, checked on load when present (controllers saved before it existed load unchecked)."""
ACTION_DIM = 3
DEFAULT_OBS_DIM = 288  # z (32) + h (256) of the paper's CarRacing model
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "assets" / "DreamCarRacing-v0" / "controller"
"""Where the reference controller trained in the shipped world model is installed."""


# ------------------------------------------------------------------------ maths
def squash_actions(raw: torch.Tensor) -> torch.Tensor:
    """Map raw outputs (..., 3) into CarRacing's action box: steer in [-1, 1], gas and brake in [0, 1]."""
    t = torch.tanh(raw)
    steer = t[..., 0]
    gas = (t[..., 1] + 1.0) / 2.0
    # The paper's brake: negative outputs mean "no brake", so the car can drive with gas alone.
    brake = t[..., 2].clamp(min=0.0)
    return torch.stack([steer, gas, brake], dim=-1)


def unflatten_population(params: np.ndarray | torch.Tensor, obs_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split flat parameter vectors (P, 3 * obs_dim + 3) into weights (P, 3, obs_dim) and biases (P, 3).

    The layout is :meth:`LinearController.flat`'s: the row-major weight, then the bias.
    """
    params = torch.as_tensor(params, dtype=torch.float32)
    n = ACTION_DIM * obs_dim + ACTION_DIM
    if params.ndim != 2 or params.shape[1] != n:
        raise ValueError(
            f"expected parameter vectors of shape (P, {n}) for obs_dim {obs_dim}, got {tuple(params.shape)}"
        )
    weights = params[:, : ACTION_DIM * obs_dim].reshape(-1, ACTION_DIM, obs_dim)
    return weights, params[:, ACTION_DIM * obs_dim :]


def population_actions(
    weights: torch.Tensor, biases: torch.Tensor, obs: torch.Tensor, output_noise: torch.Tensor | None = None
) -> torch.Tensor:
    """Actions of ``P`` controllers at once, each on its own group of observations.

    Args:
        weights: (P, 3, obs_dim).
        biases: (P, 3).
        obs: (P, N, obs_dim): member ``p`` acts on ``obs[p]``.
        output_noise: (N, 3) or (P, N, 3), added to the raw outputs before the squash.

    Returns:
        (P, N, 3) squashed actions.
    """
    # One batched matmul for the whole population: this is what makes evaluating 64
    # controllers x 16 rollouts as cheap as one big dream.
    raw = torch.baddbmm(biases.unsqueeze(1), obs, weights.transpose(1, 2))
    if output_noise is not None:
        raw = raw + output_noise
    return squash_actions(raw)


# ------------------------------------------------------------------- controller
class LinearController:
    """The paper's controller: ``action = squash(W @ [z, h] + b)``.

    It acts on the latent observations of ``dreamgym/DreamCarRacing-v0`` and
    ``dreamgym/RealCarRacing-v0`` alike, so a controller trained in the dream runs in the
    real env unchanged. Calling it (``controller(obs)``) is :meth:`act`; :meth:`predict`
    mirrors Stable-Baselines3's so that evaluation code can drive either kind of agent.

    Args:
        obs_dim: size of the observation ``[z, h]`` (288 for the paper's model).
        weight: (3, obs_dim) weight; zeros if None.
        bias: (3,) bias; zeros if None.
        world_model: the world model the controller was trained in, as recorded in
            ``controller.json``: ``{"model": <Hub id, folder or None for the shipped default>,
            "revision": ..., "source": "default" | "path" | "hub" | "in-memory"}``.
        temperature: the dream temperature it was trained at, if any.
        training: free-form training summary kept in ``controller.json``.
    """

    def __init__(
        self,
        obs_dim: int = DEFAULT_OBS_DIM,
        weight: np.ndarray | torch.Tensor | None = None,
        bias: np.ndarray | torch.Tensor | None = None,
        world_model: dict[str, Any] | None = None,
        temperature: float | None = None,
        training: dict[str, Any] | None = None,
    ) -> None:
        self.obs_dim = check_int("obs_dim", obs_dim, 1)
        self.weight = self._param("weight", weight, (ACTION_DIM, self.obs_dim))
        self.bias = self._param("bias", bias, (ACTION_DIM,))
        self.world_model = dict(world_model) if world_model else {"model": None, "revision": None, "source": "default"}
        self.temperature = None if temperature is None else float(temperature)
        self.training = dict(training or {})

    @staticmethod
    def _param(name: str, value: np.ndarray | torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
        if value is None:
            return torch.zeros(shape, dtype=torch.float32)
        tensor = torch.as_tensor(value).detach().to("cpu", torch.float32).clone()
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contains NaN or inf")
        return tensor.contiguous()

    # ------------------------------------------------------------------ acting
    @property
    def num_params(self) -> int:
        """Number of parameters: ``3 * obs_dim + 3`` (867 for the paper's model)."""
        return ACTION_DIM * self.obs_dim + ACTION_DIM

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for one observation (obs_dim,) or a batch (B, obs_dim).

        Returns:
            float32 (3,) or (B, 3): steer in [-1, 1], gas and brake in [0, 1].
        """
        array = np.asarray(obs, dtype=np.float32)
        if array.ndim not in (1, 2) or array.shape[-1] != self.obs_dim:
            raise ValueError(
                f"expected an observation of shape ({self.obs_dim},) or (B, {self.obs_dim}) ([z, h]), "
                f"got {array.shape}; is this controller meant for another world model?"
            )
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(array))
            raw = torch.nn.functional.linear(x, self.weight, self.bias)
            return squash_actions(raw).numpy()

    __call__ = act

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """Stable-Baselines3's ``predict`` signature: ``(actions, None)``; the controller is always deterministic."""
        return self.act(observation), None

    # -------------------------------------------------------------- parameters
    def flat(self) -> np.ndarray:
        """All parameters as one float32 vector: the row-major weight, then the bias."""
        return torch.cat([self.weight.reshape(-1), self.bias]).numpy().copy()

    @classmethod
    def from_flat(
        cls, vector: np.ndarray | torch.Tensor, obs_dim: int | None = None, **kwargs: Any
    ) -> LinearController:
        """Build a controller from a vector laid out as :meth:`flat`'s.

        Args:
            vector: ``3 * obs_dim + 3`` numbers.
            obs_dim: observation size; inferred from the vector's length if None.
            kwargs: ``world_model``, ``temperature``, ``training`` (see the class).
        """
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        if obs_dim is None:
            if (len(vector) - ACTION_DIM) % ACTION_DIM or len(vector) <= ACTION_DIM:
                raise ValueError(f"a vector of {len(vector)} numbers is not 3 * obs_dim + 3 parameters")
            obs_dim = (len(vector) - ACTION_DIM) // ACTION_DIM
        weight, bias = unflatten_population(vector[None], obs_dim)
        return cls(obs_dim, weight[0], bias[0], **kwargs)

    # ------------------------------------------------------------- persistence
    def config(self) -> dict[str, Any]:
        """What ``controller.json`` holds."""
        return {
            "format_version": CONTROLLER_FORMAT_VERSION,
            "kind": "linear",
            "obs_dim": self.obs_dim,
            "action_dim": ACTION_DIM,
            "squash": "steer=tanh, gas=(tanh+1)/2, brake=clip(tanh, 0, 1)",
            "world_model": self.world_model,
            "temperature": self.temperature,
            "training": self.training,
            "dreamgym_version": __version__,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``controller.safetensors`` and ``controller.json`` into ``directory`` (created if needed).

        Each file is replaced atomically, so a crash mid-save leaves a readable controller.
        """
        folder = Path(directory)
        tensors = {"weight": self.weight.contiguous(), "bias": self.bias.contiguous()}
        metadata = {"format": "pt", "format_version": str(CONTROLLER_FORMAT_VERSION)}
        # Canonical bytes: the same controller saved twice gives the same file.
        data = canonical_safetensors(save(tensors, metadata=metadata))
        atomic_write(folder / CONTROLLER_WEIGHTS_FILE, data)
        config = {**self.config(), WEIGHTS_SHA256_KEY: hashlib.sha256(data).hexdigest()}
        atomic_write_json(folder / CONTROLLER_CONFIG_FILE, config)
        return folder

    @classmethod
    def load(cls, directory: str | os.PathLike) -> LinearController:
        """Load a controller saved by :meth:`save`, refusing anything that does not match exactly.

        Raises:
            FileNotFoundError: the folder, ``controller.json`` or ``controller.safetensors`` is missing.
            ControllerFormatError: unreadable files, an unknown ``format_version``, weights
                that fail the sha256 recorded in ``controller.json`` (:class:`ControllerChecksumError`),
                or tensors that are missing, unexpected, wrongly shaped or not finite.
        """
        folder = Path(directory).expanduser()
        where = str(directory)
        config_what = f"{CONTROLLER_CONFIG_FILE} of controller {where!r}"
        weights_what = f"{CONTROLLER_WEIGHTS_FILE} of controller {where!r}"
        if not folder.is_dir():
            raise FileNotFoundError(f"no controller folder at {where!r}")
        for name in (CONTROLLER_CONFIG_FILE, CONTROLLER_WEIGHTS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"controller folder {where!r} has no {name}; "
                    f"a controller holds {CONTROLLER_CONFIG_FILE} and {CONTROLLER_WEIGHTS_FILE}"
                )
        config = read_json(folder / CONTROLLER_CONFIG_FILE, config_what, error=ControllerFormatError)
        check_format_version(
            config, f"controller {where!r}", SUPPORTED_FORMAT_VERSIONS, error=ControllerFormatError,
            hint="upgrade dreamgym or re-save the controller",
        )
        if config.get("kind", "linear") != "linear":
            raise ControllerFormatError(
                f"controller {where!r} is of kind {config.get('kind')!r}; only 'linear' is known"
            )
        obs_dim = config.get("obs_dim")
        if isinstance(obs_dim, bool) or not isinstance(obs_dim, int) or obs_dim <= 0:
            raise ControllerFormatError(f"{config_what} has no valid obs_dim (got {obs_dim!r})")
        if config.get("action_dim", ACTION_DIM) != ACTION_DIM:
            raise ControllerFormatError(
                f"controller {where!r} has action_dim {config.get('action_dim')!r}; CarRacing needs {ACTION_DIM}"
            )
        sha = config.get(WEIGHTS_SHA256_KEY)
        if sha is not None:
            if not isinstance(sha, str) or len(sha) != 64:
                raise ControllerFormatError(f"{config_what}: {WEIGHTS_SHA256_KEY} must be 64 hex digits, got {sha!r}")
            check_sha256(folder / CONTROLLER_WEIGHTS_FILE, sha, weights_what, ControllerChecksumError)
        try:
            tensors = load_file(str(folder / CONTROLLER_WEIGHTS_FILE), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ControllerFormatError(f"{weights_what} is corrupt or unreadable: {err}") from err
        expected = {"weight": (ACTION_DIM, obs_dim), "bias": (ACTION_DIM,)}
        problems = tensor_name_problems(expected, tensors)
        for name in sorted(set(expected) & set(tensors)):
            tensor = tensors[name]
            if tuple(tensor.shape) != expected[name]:
                problems.append(f"{name} has shape {tuple(tensor.shape)} but obs_dim {obs_dim} needs {expected[name]}")
            elif not tensor.is_floating_point():
                problems.append(f"{name} has dtype {tensor.dtype}, expected a float")
            elif not torch.isfinite(tensor).all():
                problems.append(f"{name} holds NaN or inf")
        if problems:
            raise ControllerFormatError(f"{weights_what} does not match its config: " + "; ".join(problems))
        world_model = config.get("world_model")
        return cls(
            obs_dim,
            tensors["weight"],
            tensors["bias"],
            world_model=world_model if isinstance(world_model, dict) else None,
            temperature=config.get("temperature"),
            training=config.get("training") if isinstance(config.get("training"), dict) else None,
        )

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(obs_dim={self.obs_dim}, params={self.num_params}, world_model={self.world_model})"


def reference_controller_installed() -> bool:
    """Whether this install ships the reference controller."""
    return (REFERENCE_DIR / CONTROLLER_CONFIG_FILE).is_file() and (REFERENCE_DIR / CONTROLLER_WEIGHTS_FILE).is_file()


def load_controller(source: str | os.PathLike = "reference") -> LinearController:
    """Load a controller: ``"reference"`` for the one shipped with dreamgym, or a folder.

    The folder is one written by :meth:`LinearController.save`.

    Raises:
        FileNotFoundError: ``"reference"`` is asked for but this install ships none, or the folder is missing.
        ControllerFormatError: see :meth:`LinearController.load`.
    """
    if isinstance(source, str) and source == "reference":
        if not reference_controller_installed():
            raise FileNotFoundError(
                f"no reference controller is installed (expected {CONTROLLER_CONFIG_FILE} and "
                f"{CONTROLLER_WEIGHTS_FILE} in {str(REFERENCE_DIR)!r}); "
                "train one with `dreamgym train-controller` and pass its folder instead"
            )
        return LinearController.load(REFERENCE_DIR)
    return LinearController.load(source)
