"""Agents named by a string: parsing a spec, loading the agent it names, and checking it fits a world model.

A spec names an agent so that worker processes can load it themselves:

- a folder written by :meth:`~dreamgym.agents.controller.LinearController.save`
  (``controller:<folder>`` also works);
- ``reference``: the agent shipped with dreamgym: the PPO policy of ``DreamCarRacing-v1``
  (:data:`REFERENCE_AGENT_DIR`) where it is installed, else the controller of
  ``DreamCarRacing-v0``, which ``controller:reference`` always names;
- a folder written by :meth:`~dreamgym.agents.mlp_policy.MlpPolicyAgent.save`: an SB3
  policy exported as safetensors + JSON (``dreamgym export-policy``), loaded without SB3;
- ``sb3:<path/to/agent.zip>``: a Stable-Baselines3 agent (loaded by
  :func:`dreamgym.agents.sb3.load_sb3_agent`, driven with ``predict(obs, deterministic=True)``).

Every command that takes an agent (``evaluate``, ``diagnose``, ``play``, ``video``, and the
``agent:``/``controller:`` collection policies) reads it through this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamgym.agents import controller as controller_module
from dreamgym.agents.controller import CONTROLLER_CONFIG_FILE, LinearController, reference_controller_installed
from dreamgym.agents.mlp_policy import POLICY_CONFIG_FILE, MlpPolicyAgent
from dreamgym.models.world_model import WorldModel

__all__ = [
    "Agent",
    "AgentSpec",
    "REFERENCE_AGENT_DIR",
    "check_agent_fits",
    "describe_model",
    "load_agent",
    "parse_agent_spec",
    "resolve_agent_model",
    "start_episode",
]

Agent = Callable[[np.ndarray], np.ndarray]

#: The shipped reference agent: trained only in the dream of the embedded
#: ``dreamgym/DreamCarRacing-v1`` (which its ``policy.json`` names as its world model).
REFERENCE_AGENT_DIR = Path(__file__).resolve().parent.parent / "assets" / "DreamCarRacing-v1" / "reference"


@dataclass(frozen=True)
class AgentSpec:
    """A parsed agent spec: its ``kind``, and the ``path`` to load.

    ``kind`` is ``"controller"``, ``"mlp"`` (an exported policy) or ``"sb3"``.

    ``allow_pickle`` lets an SB3 zip be loaded by unpickling it (see
    :func:`~dreamgym.agents.sb3.load_sb3_agent`); controllers are never unpickled.
    """

    kind: str
    path: str
    spec: str
    allow_pickle: bool = False


def parse_agent_spec(spec: str, allow_pickle: bool = False) -> AgentSpec:
    """Parse an agent spec (see the module doc) without loading anything heavy.

    ``allow_pickle`` is recorded for an SB3 agent: load its zip with SB3's unpickling ``load``.

    Raises:
        ValueError: an empty or unrecognised spec.
        FileNotFoundError: the named file or folder does not exist, or ``reference``
            is asked for and none is installed.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"agent spec must be a non-empty string, got {spec!r}")
    if spec in ("reference", "controller:reference"):
        if spec == "reference" and (REFERENCE_AGENT_DIR / POLICY_CONFIG_FILE).is_file():
            return AgentSpec("mlp", str(REFERENCE_AGENT_DIR), spec)
        reference = controller_module.REFERENCE_DIR  # read now, as reference_controller_installed does
        if not reference_controller_installed():
            raise FileNotFoundError(
                f"no reference agent is installed (expected one in {str(REFERENCE_AGENT_DIR)!r} or "
                f"{str(reference)!r}); pass a controller folder written by `dreamgym train-controller` instead"
            )
        return AgentSpec("controller", str(reference), spec)
    if spec.startswith("sb3:"):
        path = spec[len("sb3:") :]
        if not path:
            raise ValueError("agent spec 'sb3:' needs a path, as in 'sb3:path/to/agent.zip'")
        expanded = os.path.expanduser(path)
        if not os.path.isfile(expanded) and os.path.isfile(expanded + ".zip"):
            expanded += ".zip"  # as SB3's own load does
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"no SB3 agent at {path!r} (agent spec {spec!r})")
        return AgentSpec("sb3", expanded, spec, allow_pickle=bool(allow_pickle))
    path = spec[len("controller:") :] if spec.startswith("controller:") else spec
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded) and os.path.isfile(os.path.join(expanded, POLICY_CONFIG_FILE)):
        return AgentSpec("mlp", expanded, spec)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, CONTROLLER_CONFIG_FILE)):
            raise ValueError(
                f"folder {path!r} holds no {CONTROLLER_CONFIG_FILE}: "
                "it is not a controller written by `dreamgym train-controller`"
            )
        return AgentSpec("controller", expanded, spec)
    if expanded.endswith(".zip") and os.path.isfile(expanded):
        raise ValueError(f"{spec!r} looks like a Stable-Baselines3 agent: name it 'sb3:{spec}'")
    if os.path.exists(expanded):
        raise ValueError(
            f"unknown agent spec {spec!r}: expected a controller folder, 'reference' or 'sb3:path/to/agent.zip'"
        )
    raise FileNotFoundError(
        f"agent {spec!r} not found: expected a controller folder, 'reference' or 'sb3:path/to/agent.zip'"
    )


def load_agent(spec: AgentSpec | str) -> tuple[Agent, Any]:
    """Load the agent a spec names.

    Returns:
        ``(act, loaded)``: ``act(obs) -> action`` drives one env deterministically;
            ``loaded`` is the :class:`~dreamgym.agents.controller.LinearController` or SB3 model.
    """
    if isinstance(spec, str):
        spec = parse_agent_spec(spec)
    if spec.kind == "controller":
        controller = LinearController.load(spec.path)
        return controller.act, controller
    if spec.kind == "mlp":
        policy = MlpPolicyAgent.load(spec.path)
        return policy.act, policy
    try:  # deferred: Stable-Baselines3 takes over a second to import, and only sb3: agents need it
        from dreamgym.agents.sb3 import load_sb3_agent
    except ImportError as err:
        raise ValueError(f"agent {spec.spec!r} needs dreamgym.agents.sb3, which cannot be imported: {err}") from err
    model = load_sb3_agent(spec.path, device="cpu", allow_pickle=spec.allow_pickle)

    def act(obs: np.ndarray) -> np.ndarray:
        action, _ = model.predict(obs, deterministic=True)
        return action

    return act, model


def start_episode(act: Agent, seed: int) -> None:
    """Tell an agent that keeps per-episode state that the episode of ``seed`` starts.

    A sampling policy (:class:`~dreamgym.agents.mlp_policy.MlpPolicyAgent` with ``sample``)
    reseeds its action noise, so that an episode is a function of its seed; other agents
    have nothing to reset. Every episode driver calls it before the first action.
    """
    owner = getattr(act, "__self__", act)
    reset = getattr(owner, "reset_episode", None)
    if callable(reset):
        reset(seed)


def _observation_dim(loaded: Any) -> int | None:
    if hasattr(loaded, "obs_dim"):
        return int(loaded.obs_dim)
    space = getattr(loaded, "observation_space", None)
    shape = getattr(space, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 1 else None


def check_agent_fits(loaded: Any, world_model: Any, spec: str) -> None:
    """Refuse an agent whose observations are not the size of ``world_model``'s ``[z, h]`` (``spec`` names it).

    Raises:
        ValueError: the sizes differ (an agent trained in another world model).
    """
    cfg = world_model.config
    expected = cfg.z_dim + cfg.rnn_hidden
    got = _observation_dim(loaded)
    if got is not None and got != expected:
        raise ValueError(
            f"agent {spec!r} acts on observations of size {got}, but the world model's [z, h] has size {expected} "
            f"(z_dim {cfg.z_dim} + rnn_hidden {cfg.rnn_hidden}); pass the world model it was trained in with model="
        )


def resolve_agent_model(spec: AgentSpec, loaded: Any, model: Any, revision: str | None) -> tuple[Any, str | None]:
    """The world model to score in: ``model`` if given, else the one a controller records."""
    if model is not None or spec.kind not in ("controller", "mlp"):
        return model, revision
    record = getattr(loaded, "world_model", None) or {}
    if record.get("source") == "in-memory":
        raise ValueError(
            f"controller {spec.spec!r} was trained in an in-memory world model that its controller.json cannot "
            "name; pass the world model with model= (--model)"
        )
    recorded = record.get("model")
    if recorded is None:
        return None, None  # the default world model shipped with dreamgym
    return recorded, record.get("revision")


def describe_model(model: Any) -> str | None:
    """How a results file names the world model.

    Its folder or Hub id, ``"<in-memory WorldModel>"``, or None for the default.
    """
    if model is None:
        return None
    if isinstance(model, WorldModel):
        return "<in-memory WorldModel>"
    return os.fspath(model)
