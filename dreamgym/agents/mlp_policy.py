"""SB3 policies as safetensors + JSON: a trained agent anyone can load without unpickling.

An SB3 agent zip holds pickled fields, and loading one from a stranger can run code. What
driving needs is much smaller: the actor network. :class:`MlpPolicyAgent` is that network,
exported from a trained PPO or A2C ``MlpPolicy`` with Box actions, and saved as a folder
holding ``policy.safetensors`` (the weights) and ``policy.json`` (the architecture, the
action bounds and the world model it was trained in). By default it acts exactly as the SB3
agent's ``predict(obs, deterministic=True)``: the action distribution's mean, clipped to the
action space. Exported with ``sample=True`` it acts as ``predict(obs, deterministic=False)``
does: it draws the action from the Gaussian PPO trained (mean + std * noise, clipped). That
is the policy PPO optimised in the dream, and its noise keeps the car from freezing where
the mean action stands still (see the README); the noise is drawn from a generator reseeded
with each episode's seed (:meth:`MlpPolicyAgent.reset_episode`), so an evaluation is still a
function of (agent, world model, seeds).

Example::

    from stable_baselines3 import PPO
    from dreamgym.agents.mlp_policy import MlpPolicyAgent

    agent = MlpPolicyAgent.from_sb3(PPO.load("runs/ppo/best_model.zip"), world_model={"model": "runs/wm"})
    agent.save("runs/ppo/policy")                       # safetensors + JSON
    act = MlpPolicyAgent.load("runs/ppo/policy")        # no SB3, no pickle
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from dreamgym.errors import PolicyFormatError
from dreamgym.files import atomic_write, atomic_write_json, check_format_version, read_json
from dreamgym.models.world_model import canonical_safetensors

POLICY_WEIGHTS_FILE = "policy.safetensors"
POLICY_CONFIG_FILE = "policy.json"
POLICY_FORMAT_VERSION = 2
"""The layout of ``policy.json`` + ``policy.safetensors`` this dreamgym writes for a sampling policy.

Version 2 adds ``log_std`` and ``sample``; a deterministic policy is still written as version 1,
which every dreamgym reads, and a sampling one as version 2, which an older dreamgym refuses
rather than drive it without its noise."""
READABLE_POLICY_FORMATS = (1, 2)
# The names they had first.
WEIGHTS_FILE, CONFIG_FILE, FORMAT_VERSION = POLICY_WEIGHTS_FILE, POLICY_CONFIG_FILE, POLICY_FORMAT_VERSION
KIND = "mlp_policy"
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "leaky_relu": nn.LeakyReLU}


def world_model_record(model: Any, revision: str | None = None) -> dict[str, Any]:
    """How an exported policy names the world model it was trained in: a folder by its full path, else as given."""
    if isinstance(model, (str, os.PathLike)) and Path(model).exists():
        model = str(Path(model).resolve())
    elif model is not None and not isinstance(model, str):
        model = None  # an in-memory world model has no name a worker could load it by
    return {"model": model, "revision": revision}


class MlpPolicyAgent:
    """An MLP actor: ``action = clip(mean(obs), low, high)``, or with ``sample``, ``clip(mean(obs) + std * noise)``.

    Args:
        sizes: layer widths from the observation to the action, e.g. ``[288, 64, 64, 3]``.
        activation: the hidden layers' activation, one of ``"tanh"``, ``"relu"``, ``"elu"``,
            ``"leaky_relu"``.
        low: the action space's lower bounds.
        high: the action space's upper bounds.
        state_dict: the weights of the ``nn.Sequential`` the sizes describe; random if None.
        world_model: the world model the agent was trained in, recorded as a controller
            records it: ``{"model": ..., "revision": ...}``.
        training: free-form training summary kept in ``policy.json``.
        log_std: the log standard deviations of the Gaussian the actor was trained with (SB3's
            state-independent ``log_std``), one per action; None if unknown.
        sample: act by drawing from that Gaussian instead of by its mean; needs ``log_std``.
    """

    def __init__(
        self,
        sizes: list[int],
        activation: str,
        low: list[float],
        high: list[float],
        state_dict: dict[str, torch.Tensor] | None = None,
        world_model: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        log_std: list[float] | None = None,
        sample: bool = False,
    ) -> None:
        if len(sizes) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
            raise PolicyFormatError(f"sizes must be at least 2 positive ints, got {sizes!r}")
        if activation not in ACTIVATIONS:
            raise PolicyFormatError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if len(low) != sizes[-1] or len(high) != sizes[-1]:
            raise PolicyFormatError(f"low and high must have {sizes[-1]} entries, got {low!r} and {high!r}")
        self.sizes, self.activation = [int(s) for s in sizes], activation
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers).eval()
        if state_dict is not None:
            self.net.load_state_dict(state_dict, strict=True)
        self.world_model = world_model or {}
        self.training = training or {}
        if log_std is not None and (len(log_std) != sizes[-1] or not np.isfinite(log_std).all()):
            raise PolicyFormatError(f"log_std must be {sizes[-1]} finite numbers, got {log_std!r}")
        if sample and log_std is None:
            raise PolicyFormatError("a sampling policy (sample=True) needs the log_std of its Gaussian")
        self.log_std = None if log_std is None else np.asarray(log_std, np.float32)
        self.sample = bool(sample)
        self._noise = np.random.default_rng(0)

    @property
    def obs_dim(self) -> int:
        return self.sizes[0]

    def reset_episode(self, seed: int) -> None:
        """Reseed the action noise of a sampling policy for the episode of ``seed`` (episode drivers call it)."""
        self._noise = np.random.default_rng(seed)

    @torch.inference_mode()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for an observation (obs_dim,) or a batch (N, obs_dim), float32."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        action = self.net(x).numpy()
        if self.sample and self.log_std is not None:
            action = action + np.exp(self.log_std) * self._noise.standard_normal(action.shape, dtype=np.float32)
        return np.clip(action, self.low, self.high).astype(np.float32)

    __call__ = act

    def predict(
        self, obs: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        """SB3's ``predict``: the action (drawn if the policy samples) and no recurrent state."""
        return self.act(obs), None

    # ----------------------------------------------------------------- SB3
    @classmethod
    def from_sb3(
        cls,
        agent: Any,
        world_model: dict[str, Any] | None = None,
        training: dict[str, Any] | None = None,
        sample: bool = False,
    ) -> MlpPolicyAgent:
        """The actor of a trained SB3 PPO or A2C agent with an ``MlpPolicy`` and Box actions.

        Its Gaussian's ``log_std`` is exported too; ``sample=True`` makes the exported policy
        draw its actions from that Gaussian, as ``predict(obs, deterministic=False)`` does.

        Raises:
            ValueError: the agent's policy is not one this export reproduces exactly.
        """
        policy = agent.policy
        space = agent.action_space
        if not hasattr(space, "low") or getattr(policy, "squash_output", False):
            raise ValueError("only SB3 policies with unsquashed Box actions (PPO, A2C MlpPolicy) can be exported")
        extractor = getattr(policy, "mlp_extractor", None)
        flat_features = type(getattr(policy, "features_extractor", None)).__name__ == "FlattenExtractor"
        if extractor is None or not hasattr(policy, "action_net") or not flat_features:
            raise ValueError(f"cannot export {type(policy).__name__}: expected an ActorCriticPolicy (MlpPolicy)")
        linear = [m for m in extractor.policy_net if isinstance(m, nn.Linear)] + [policy.action_net]
        activation = {cls_.__name__: name for name, cls_ in ACTIVATIONS.items()}.get(policy.activation_fn.__name__)
        if activation is None:
            raise ValueError(
                f"cannot export the activation {policy.activation_fn.__name__}; expected one of {sorted(ACTIVATIONS)}"
            )
        sizes = [linear[0].in_features] + [layer.out_features for layer in linear]
        low, high = space.low.tolist(), space.high.tolist()
        log_std = getattr(policy, "log_std", None)
        if getattr(policy, "use_sde", False) or not isinstance(log_std, torch.Tensor) or log_std.ndim != 1:
            if sample:
                raise ValueError("sample=True needs a policy with a state-independent log_std (PPO/A2C, no gSDE)")
            log_std = None
        log_std_list = None if log_std is None else log_std.detach().cpu().tolist()
        exported = cls(sizes, activation, low, high, world_model=world_model, training=training,
                       log_std=log_std_list, sample=sample)
        with torch.no_grad():
            for target, source in zip([m for m in exported.net if isinstance(m, nn.Linear)], linear, strict=True):
                target.weight.copy_(source.weight.detach().cpu())
                target.bias.copy_(source.bias.detach().cpu())
        return exported

    # ----------------------------------------------------------------- persistence
    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``policy.safetensors`` and ``policy.json`` to ``folder``, each atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.net.state_dict().items()}
        data = canonical_safetensors(save(tensors, metadata={"format": "pt"}))
        atomic_write(folder / POLICY_WEIGHTS_FILE, data)
        config: dict[str, Any] = {
            "format_version": POLICY_FORMAT_VERSION if self.sample else 1, "kind": KIND, "sizes": self.sizes,
            "activation": self.activation, "low": self.low.tolist(), "high": self.high.tolist(),
            "world_model": self.world_model, "training": self.training,
        }
        if self.log_std is not None:
            config.update(log_std=self.log_std.tolist(), sample=self.sample)
        atomic_write_json(folder / POLICY_CONFIG_FILE, config)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> MlpPolicyAgent:
        """Load a folder written by :meth:`save`, strictly; nothing is unpickled."""
        folder = Path(folder)
        where = str(folder)
        if not (folder / POLICY_CONFIG_FILE).is_file() or not (folder / POLICY_WEIGHTS_FILE).is_file():
            raise FileNotFoundError(
                f"{where!r} is not a policy folder: it needs {POLICY_CONFIG_FILE} and {POLICY_WEIGHTS_FILE}"
            )
        config = read_json(
            folder / POLICY_CONFIG_FILE, f"{POLICY_CONFIG_FILE} of policy {where!r}", error=PolicyFormatError
        )
        if config.get("kind") != KIND:
            raise PolicyFormatError(f"{POLICY_CONFIG_FILE} of {where!r} does not describe a dreamgym MLP policy")
        check_format_version(config, f"policy {where!r}", READABLE_POLICY_FORMATS, error=PolicyFormatError,
                             hint="upgrade dreamgym or export the policy again")
        try:
            tensors = load_file(str(folder / POLICY_WEIGHTS_FILE), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise PolicyFormatError(
                f"{POLICY_WEIGHTS_FILE} of policy {where!r} is corrupt or unreadable: {err}"
            ) from err
        try:
            agent = cls(config["sizes"], config["activation"], config["low"], config["high"],
                        world_model=config.get("world_model"), training=config.get("training"),
                        log_std=config.get("log_std"), sample=config.get("sample", False) is True)
            agent.net.load_state_dict(tensors, strict=True)
        except (KeyError, TypeError, RuntimeError) as err:
            raise PolicyFormatError(f"policy {where!r} does not match its {POLICY_CONFIG_FILE}: {err}") from err
        if not all(torch.isfinite(t).all() for t in tensors.values()):
            raise PolicyFormatError(f"{POLICY_WEIGHTS_FILE} of policy {where!r} holds NaN or inf")
        return agent

    def __repr__(self) -> str:
        name = type(self).__name__
        sampling = ", sample=True" if self.sample else ""
        return f"{name}(sizes={self.sizes}, activation={self.activation!r}{sampling}, world_model={self.world_model})"
