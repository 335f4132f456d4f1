"""Agents driving the real car while episodes are collected: the paper's iterative step.

The collector (:func:`dreamgym.data.collect.collect`) knows policies by spec string
(:func:`dreamgym.data.policies.make_policy`) and never imports agents; ``controller:`` and
``agent:`` specs name the policies here, registered by the package's root as entry points
(``"dreamgym.agents.policies:ControllerPolicy"``), so that every collection worker, which
imports ``dreamgym``, can make them:

- ``"controller:PATH?noise=0.3"``: :class:`ControllerPolicy`, a trained controller (a
  folder written by ``dreamgym train-controller``, or ``reference``) seeing through its world
  model's V and M, plus exploration noise;
- ``"agent:SPEC?noise=0.3&model=DIR"``: :class:`AgentPolicy`, any agent ``dreamgym evaluate``
  takes, SB3 included.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dreamgym.agents.specs import check_agent_fits, load_agent, parse_agent_spec, resolve_agent_model, start_episode
from dreamgym.envs.observer import LatentObserver
from dreamgym.hub import load_world_model

__all__ = ["AgentPolicy", "ControllerPolicy"]


class ControllerPolicy:
    """A trained controller driving the real car, plus exploration noise: the paper's iterative step.

    The collector hands policies raw 96x96 frames, so this policy runs the controller's world
    model itself, exactly as ``RealCarRacing-v0`` does: each frame is preprocessed and encoded
    by V (posterior mean), the controller acts on ``[z, h]``, noise is added, and M's hidden
    state is stepped with the action actually taken (noise included, as that is the action
    stored in the episode).

    The noise is an Ornstein-Uhlenbeck process per action dimension, so a perturbation lasts
    long enough to push the car somewhere new (wide in a bend, onto the grass) and the
    controller's recovery is recorded too. Its scale is drawn per episode from
    ``[0, noise]``, so a collection holds near-clean and very noisy driving.

    Args:
        seed: seed of the noise until the first :meth:`reset`.
        controller: a controller folder written by ``dreamgym train-controller``, or ``"reference"``.
        noise: largest per-episode noise scale (0: the controller's own actions).
        noise_theta: fraction of the noise pulled back to 0 per step.
        model: the world model to see through; default, the one the controller records.
        device: torch device of the world model.
    """

    agent_kinds: tuple[str, ...] = ("controller",)
    spec_name = "controller"
    agent_text = "a controller folder or 'reference'"

    def __init__(
        self,
        seed: int = 0,
        controller: str = "reference",
        noise: float = 0.3,
        noise_theta: float = 0.15,
        model: str | None = None,
        device: str = "cpu",
    ) -> None:
        if not noise >= 0 or not 0.0 <= noise_theta <= 1.0:
            raise ValueError(f"noise must be >= 0 and noise_theta in [0, 1], got {noise} and {noise_theta}")
        spec = parse_agent_spec(str(controller))
        if spec.kind not in self.agent_kinds:
            raise ValueError(f"policy {self.spec_name!r} needs {self.agent_text}, got {controller!r}")
        self.act, loaded = load_agent(spec)
        source, revision = resolve_agent_model(spec, loaded, model, None)
        self.world_model = load_world_model(source, revision=revision, device=device)
        check_agent_fits(loaded, self.world_model, spec.spec)
        self.controller, self.noise, self.noise_theta = str(controller), float(noise), float(noise_theta)
        self.observer = LatentObserver(self.world_model)
        self._started = False
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start a new episode: reseed the noise, draw its scale and zero M's state."""
        self._rng = np.random.default_rng(seed)
        self._scale = self.noise * float(self._rng.random())
        self._noise = np.zeros(3)
        self._started = False
        start_episode(self.act, seed)

    @property
    def exploration_noise(self) -> np.ndarray:
        """The noise added to the last action (before clipping into the action space); zeros after a reset."""
        return self._noise.copy()

    def __call__(self, obs: Any) -> np.ndarray:
        """Next action for the raw 96x96x3 frame ``obs``."""
        if self._started:
            self.observer.encode(obs)
        else:
            self.observer.reset(obs)
            self._started = True
        action = np.asarray(self.act(self.observer.observation()), dtype=np.float64)
        self._noise += -self.noise_theta * self._noise + self._scale * self._rng.standard_normal(3)
        action = np.clip(action + self._noise, [-1.0, 0.0, 0.0], [1.0, 1.0, 1.0]).astype(np.float32)
        # M steps with the action actually taken, noise included: it is the one stored in the episode.
        self.observer.advance(action)
        return action

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(controller={self.controller!r}, noise={self.noise}, noise_theta={self.noise_theta})"


class AgentPolicy(ControllerPolicy):
    """Any dreamgym agent driving the real car, plus exploration noise: the paper's iterative step for any agent.

    For SB3 agents as well as controllers. As :class:`ControllerPolicy`, with the agent named
    as ``dreamgym evaluate`` names it: a controller folder, ``reference``, or
    ``sb3:path/to/agent.zip``. An SB3 zip does not record its world model, so name it with
    ``model=``: ``"agent:sb3:runs/ppo/best_model.zip?noise=0.3&model=runs/wm"``.
    """

    agent_kinds = ("controller", "mlp", "sb3")
    spec_name = "agent"
    agent_text = "a controller folder, 'reference' or 'sb3:path/to/agent.zip'"
