"""Policies that drive the real CarRacing-v3 while rollouts are collected.

A policy is any object with ``policy(obs) -> action`` (a float32 ``(3,)`` array: steer in
``[-1, 1]``, gas and brake in ``[0, 1]``) and ``policy.reset(seed)``, called once at the
start of each episode with that episode's env seed. Reseeding per episode makes an episode a
function of its seed alone, whichever worker runs it, so a collection can be resumed or
re-run and produce the same shards.

:func:`make_policy` maps a spec string to a policy. A spec is ``NAME[:ARG][?KEY=VALUE&...]``:

- ``"random"``: :class:`CorrelatedRandomPolicy`, the default for a first collection;
  ``"random?gas_mean=0.3&gas_mean_max=0.8"`` varies the speed from episode to episode.
- ``"agent:SPEC?model=DIR"``: any agent ``dreamgym evaluate`` takes, SB3 included, the same
  way: :class:`~dreamgym.agents.policies.AgentPolicy`.
- ``"replay:DATA"``: :class:`ReplayPolicy`, the actions stored for the same seed in the
  episode store ``DATA``, so that an earlier collection is driven again step for step, for
  example to record it with other preprocessing (``dreamgym collect --keep-dashboard``).
- ``"controller:PATH"``: a trained controller (a folder written by ``dreamgym
  train-controller``, or ``reference``) driving through its world model's V and M, with
  exploration noise (``"controller:PATH?noise=0.3"``):
  :class:`~dreamgym.agents.policies.ControllerPolicy`. This is the paper's iterative step,
  which shows M the states the controller actually reaches.

Data sits beside the agents, not above them, so it never imports them: :data:`POLICIES` maps
a name to a factory or to the entry point of one (``"module:attribute"``, imported when first
used, as Gymnasium's registry does for envs). The package's root registers the two
agent-driven policies that way (see ``dreamgym/__init__.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from dreamgym.episodes import EpisodeStoreLike, open_store

__all__ = [
    "POLICIES",
    "CorrelatedRandomPolicy",
    "Policy",
    "ReplayPolicy",
    "make_policy",
    "parse_policy_spec",
    "register_policy",
]


@runtime_checkable
class Policy(Protocol):
    """What the collector needs from a policy."""

    def __call__(self, obs: Any) -> np.ndarray:  # pragma: no cover - protocol
        ...

    def reset(self, seed: int) -> None:  # pragma: no cover - protocol
        ...


class CorrelatedRandomPolicy:
    """Random CarRacing actions that are correlated in time, so that the car actually drives.

    ``action_space.sample()`` draws every frame independently: steering flips sign 50 times
    a second and averages to zero, gas and brake fight, and the car mostly sits or spins on
    the grass. The frames V and M learn from then show little of the track. Here instead:

    - steering follows an Ornstein-Uhlenbeck process (Brownian motion pulled back to a
      target), so the car holds a curve for a while and then straightens out;
    - gas follows its own OU process around a positive mean, so the car keeps moving at a
      speed it can still turn at;
    - brake is 0 except for occasional short pulses, during which gas is released.

    Open loop (``road_gain=0``, steering pulled back to 0) the car still leaves the track at
    the first real bend, and returns stay around -20 to -75 (one lap of data per track is
    never seen). So by default the steering's target is the road seen ahead: the mean column
    of the gray road pixels in rows 40-63 of the 96x96 frame, times ``road_gain``. The noise
    is unchanged, so the car weaves, runs wide, cuts corners and sometimes loses the road,
    but covers much more of the track (returns about +80 to +180 over 1000 steps with the
    defaults). When no road is visible, or the observation is not a 96x96x3 CarRacing frame
    (``None``, or a dream env's observation), the target is 0 and the policy is open loop.

    Args:
        seed: seed of the random stream until the first :meth:`reset`.
        steer_theta: fraction of the gap to the steering target closed per step.
        steer_sigma: steering noise per step.
        gas_mean: mean gas.
        gas_mean_max: if given, each episode draws its mean gas uniformly from
            ``[gas_mean, gas_mean_max]`` (from its seed), so one collection holds slow and fast
            driving; the road-following steering then also runs wide at speed.
        gas_theta: fraction of the gap to ``gas_mean`` closed per step.
        gas_sigma: gas noise per step.
        brake_prob: chance per step of starting a brake pulse.
        brake_steps: (min, max) length of a brake pulse, in steps.
        brake_strength: (min, max) brake during a pulse.
        road_gain: pull of the steering towards the road ahead (0: open loop).
    """

    def __init__(
        self,
        seed: int = 0,
        steer_theta: float = 0.1,
        steer_sigma: float = 0.1,
        gas_mean: float = 0.3,
        gas_mean_max: float | None = None,
        gas_theta: float = 0.1,
        gas_sigma: float = 0.05,
        brake_prob: float = 0.01,
        brake_steps: tuple[int, int] = (3, 10),
        brake_strength: tuple[float, float] = (0.2, 0.8),
        road_gain: float = 4.0,
    ) -> None:
        if not 0.0 <= steer_theta <= 1.0 or not 0.0 <= gas_theta <= 1.0:
            raise ValueError(
                f"steer_theta and gas_theta must be in [0, 1] (fraction pulled back per step), "
                f"got {steer_theta} and {gas_theta}"
            )
        if steer_sigma < 0 or gas_sigma < 0:
            raise ValueError(f"noise scales must be >= 0, got steer_sigma={steer_sigma}, gas_sigma={gas_sigma}")
        if not 0.0 <= gas_mean <= 1.0:
            raise ValueError(f"gas_mean must be in [0, 1], got {gas_mean}")
        if gas_mean_max is not None and not gas_mean <= gas_mean_max <= 1.0:
            raise ValueError(f"gas_mean_max must be in [gas_mean, 1] = [{gas_mean}, 1], got {gas_mean_max}")
        if not 0.0 <= brake_prob <= 1.0:
            raise ValueError(f"brake_prob must be in [0, 1], got {brake_prob}")
        if not 1 <= brake_steps[0] <= brake_steps[1]:
            raise ValueError(f"brake_steps must be (min, max) with 1 <= min <= max, got {brake_steps}")
        if not 0.0 <= brake_strength[0] <= brake_strength[1] <= 1.0:
            raise ValueError(f"brake_strength must be (min, max) within [0, 1], got {brake_strength}")
        if road_gain < 0:
            raise ValueError(f"road_gain must be >= 0, got {road_gain}")
        self.steer_theta = steer_theta
        self.steer_sigma = steer_sigma
        self.gas_mean = gas_mean
        self.gas_mean_max = gas_mean_max
        self.gas_theta = gas_theta
        self.gas_sigma = gas_sigma
        self.brake_prob = brake_prob
        self.brake_steps = brake_steps
        self.brake_strength = brake_strength
        self.road_gain = road_gain
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start a new episode: reseed and put the car back to straight, at mean gas."""
        self._rng = np.random.default_rng(seed)
        self._episode_gas = self.gas_mean
        if self.gas_mean_max is not None:
            self._episode_gas = float(self._rng.uniform(self.gas_mean, self.gas_mean_max))
        self._steer = 0.0
        self._gas = self._episode_gas
        self._brake_left = 0
        self._brake = 0.0

    def __call__(self, obs: Any = None) -> np.ndarray:
        """Next action, a float32 ``(3,)`` array (steer, gas, brake).

        Args:
            obs: the env's current 96x96x3 uint8 frame, used only to find the road ahead;
                anything else (``None`` included) makes this step open loop.
        """
        rng = self._rng
        target = 0.0
        if self.road_gain and isinstance(obs, np.ndarray) and obs.shape == (96, 96, 3):
            offset = _road_offset(obs)
            if offset is not None:
                target = float(np.clip(self.road_gain * offset, -1.0, 1.0))
        self._steer += self.steer_theta * (target - self._steer) + self.steer_sigma * rng.standard_normal()
        self._steer = float(np.clip(self._steer, -1.0, 1.0))
        self._gas += self.gas_theta * (self._episode_gas - self._gas) + self.gas_sigma * rng.standard_normal()
        self._gas = float(np.clip(self._gas, 0.0, 1.0))
        if self._brake_left == 0 and rng.random() < self.brake_prob:
            self._brake_left = int(rng.integers(self.brake_steps[0], self.brake_steps[1] + 1))
            self._brake = float(rng.uniform(*self.brake_strength))
        if self._brake_left > 0:
            self._brake_left -= 1
            return np.array([self._steer, 0.0, self._brake], dtype=np.float32)
        return np.array([self._steer, self._gas, 0.0], dtype=np.float32)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(steer_theta={self.steer_theta}, steer_sigma={self.steer_sigma}, "
            f"gas_mean={self.gas_mean}, gas_mean_max={self.gas_mean_max}, "
            f"gas_theta={self.gas_theta}, gas_sigma={self.gas_sigma}, "
            f"brake_prob={self.brake_prob}, brake_steps={self.brake_steps}, "
            f"brake_strength={self.brake_strength}, road_gain={self.road_gain})"
        )


class ReplayPolicy:
    """The actions an episode store holds for each seed, played back in order.

    CarRacing is deterministic given its seed and its actions, so driving seed ``s`` with the
    actions stored for ``s`` reproduces that episode frame for frame, whatever policy first
    drove it (a noisy controller, a PPO agent, random driving). Collecting with this policy
    therefore records an existing collection again, for example with the dashboard kept
    (``dreamgym collect --policy replay:data/carracing --keep-dashboard``), at the cost of
    stepping the env but not of running the original agents.

    Args:
        seed: the first episode's seed; :meth:`reset` picks each episode's actions.
        data: the episode store to replay (a folder written by ``dreamgym collect``).

    Raises:
        FileNotFoundError: ``data`` holds no episodes.
    """

    def __init__(self, seed: int = 0, data: str | None = None) -> None:
        if data is None:
            raise ValueError("the replay policy needs the store to replay, as 'replay:DATA'")
        self.data = data
        self._store: EpisodeStoreLike = open_store(data)
        self._actions = np.zeros((0, 3), dtype=np.float32)
        self._step = 0
        self._seed = seed

    def check_seeds(self, seeds: Iterable[int]) -> None:
        """Refuse, before anything runs, seeds the store has no episode of."""
        stored = self._store.seeds()
        missing = sorted(int(s) for s in seeds if int(s) not in stored)
        if missing:
            raise ValueError(
                f"replay: {self.data} holds no episode of {len(missing)} of the requested seeds "
                f"(first {missing[0]}); replay only seeds it holds ({_seed_ranges(stored)})"
            )

    def reset(self, seed: int) -> None:
        """Load the stored actions of episode ``seed``."""
        self.check_seeds([seed])
        self._actions = np.asarray(self._store.load(seed).actions, dtype=np.float32)
        self._step, self._seed = 0, int(seed)

    def __call__(self, obs: Any = None) -> np.ndarray:
        """The next stored action; the env must end the episode where the stored one ended."""
        if self._step >= len(self._actions):
            raise RuntimeError(
                f"replay of seed {self._seed} diverged: the env went on past the {len(self._actions)} stored "
                f"steps (another env version or physics than the one that collected {self.data})"
            )
        action = self._actions[self._step]
        self._step += 1
        return action.copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(data={self.data!r})"


def _seed_ranges(seeds: Iterable[int]) -> str:
    """``"0..99, 100000..100059"``: a set of seeds as its runs of consecutive seeds."""
    ordered = sorted(seeds)
    runs: list[list[int]] = []
    for s in ordered:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(f"{a}..{b}" if a != b else f"{a}" for a, b in runs)


# The car sits at rows 66-77, columns 45-50 of CarRacing's 96x96 frame, pointing up; rows
# 40-63 are the road just ahead of it, whatever the zoom.
_LOOKAHEAD_ROWS = slice(40, 64)
_CAR_COLUMN = 47.5


def _road_offset(obs: np.ndarray) -> float | None:
    """Where the road ahead is, from -1 (far left) to 1 (far right); None if none is seen."""
    band = obs[_LOOKAHEAD_ROWS].astype(np.int16)
    r, g, b = band[..., 0], band[..., 1], band[..., 2]
    # Road is gray (about 100-107 in each channel), grass is green and the kerbs red/white;
    # white kerbs passing as road is harmless, they line the road anyway.
    gray = (np.abs(r - g) < 15) & (np.abs(g - b) < 15) & (r > 80)
    cols = np.nonzero(gray)[1]
    if cols.size < 8:
        return None
    return (float(cols.mean()) - _CAR_COLUMN) / 48.0


#: Policy specs known to :func:`make_policy`: name -> ``factory(seed, [ARG], **options)``, or
#: the entry point ``"module:attribute"`` of one, imported on first use.
#: Factories run inside the spawned collection workers, so they must live at module level in
#: a module the workers import, and load whatever they need (weights, torch) themselves.
#: Names may not contain ':' or '?', which introduce a spec's argument and options.
POLICIES: dict[str, Callable[..., Policy] | str] = {
    "random": CorrelatedRandomPolicy,
    "replay": ReplayPolicy,
}


def register_policy(name: str, factory: Callable[..., Policy] | str) -> None:
    """Make ``factory(seed, [ARG], **options)`` available as ``make_policy("NAME[:ARG][?OPTIONS]", seed)``.

    ``factory`` may be the entry point ``"package.module:attribute"`` of one, imported only
    when the policy is first made. With spawned collection workers, register at import time
    of a module the workers import too; a registration made only in the parent process is not
    seen by the workers.
    """
    if not name or ":" in name or "?" in name:
        raise ValueError(f"policy name must be non-empty and contain no ':' or '?', got {name!r}")
    if name in POLICIES:
        raise ValueError(f"policy {name!r} is already registered")
    if isinstance(factory, str) and factory.count(":") != 1:
        raise ValueError(f"a policy's entry point must be 'module:attribute', got {factory!r}")
    POLICIES[name] = factory


def policy_factory(name: str) -> Callable[..., Policy]:
    """The factory registered as ``name``, its entry point imported if need be."""
    factory = POLICIES[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
        POLICIES[name] = factory
    return factory


def _option_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def parse_policy_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """Split ``"NAME[:ARG][?KEY=VALUE&...]"`` into ``(name, arg, options)``; numbers become numbers.

    Raises:
        ValueError: an unknown name or a malformed option.
    """
    if not isinstance(spec, str):
        raise TypeError(f"policy spec must be a string such as 'random', got {type(spec).__name__}")
    head, _, query = spec.partition("?")
    name, colon, arg = head.partition(":")
    if name not in POLICIES:
        raise ValueError(f"unknown policy {spec!r}; expected one of {sorted(POLICIES)}, as NAME[:ARG][?KEY=VALUE&...]")
    if colon and not arg:
        raise ValueError(f"policy spec {spec!r} has an empty argument after ':'")
    options: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key.isidentifier():
            raise ValueError(f"policy spec {spec!r}: option {item!r} is not KEY=VALUE")
        options[key] = _option_value(value)
    return name, (arg or None), options


def make_policy(spec: str, seed: int) -> Policy:
    """Build the policy named by ``spec``.

    Args:
        spec: ``"NAME[:ARG][?KEY=VALUE&...]"``: ``"random"``, ``"random?gas_mean=0.5"``,
            ``"controller:runs/ctrl?noise=0.3"``, or a name added with :func:`register_policy`.
            ``ARG`` is the factory's second positional argument and the options its keywords.
        seed: seed of the policy's randomness until its next ``reset``.

    Returns:
        the policy.

    Raises:
        ValueError: an unknown policy, or options its factory does not accept.
    """
    name, arg, options = parse_policy_spec(spec)
    factory = policy_factory(name)
    try:
        return factory(seed, **options) if arg is None else factory(seed, arg, **options)
    except TypeError as err:
        raise ValueError(f"policy spec {spec!r} does not fit {getattr(factory, '__name__', name)}: {err}") from err


# Their first home was here; they are agents, and come through the registry like any policy.
_MOVED = {"ControllerPolicy": "controller", "AgentPolicy": "agent"}


def __getattr__(name: str) -> Any:
    if name in _MOVED and _MOVED[name] in POLICIES:
        return policy_factory(_MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
