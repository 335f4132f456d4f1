"""``dreamgym play``: drive the dream (or the real car seen through V + M) with the arrow keys.

The keyboard is CarRacing's own (``python -m gymnasium.envs.box2d.car_racing``): held keys,
left/right steer -1/+1, up gas 1, down brake 0.8, a released key zeroes its component.
Extra keys: ``+``/``-`` (or ``]``/``[``) raise/lower the dream's temperature by 0.05,
``r`` (or Enter) resets, ``m`` toggles between the agent and the human, ``Esc``/``q`` quits.

:class:`PlaySession` holds no loop of its own beyond :meth:`PlaySession.run`, so it can be
driven headless (``SDL_VIDEODRIVER=dummy``) with scripted key events in tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import gymnasium as gym
import numpy as np

from dreamgym.agents.specs import check_agent_fits, load_agent, parse_agent_spec, resolve_agent_model
from dreamgym.envs.common import DISCRETE_ACTIONS, WorldModelEnv, upscale

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # after the line above, which silences pygame's greeting

TEMPERATURE_STEP = 0.05
MIN_TEMPERATURE = 0.05  # "-" never takes the temperature below this (nor to <= 0)
SCALE = 6  # the 64x64 dream frame is shown 384x384
OVERLAY_HEIGHT = 92
BACKGROUND = (20, 20, 24)
TEXT = (235, 235, 235)
DIM_TEXT = (150, 150, 160)
MESSAGE_TEXT = (250, 210, 90)

Agent = Callable[[np.ndarray], Any]
# CarRacing's held keys: pressing one sets its action component to the value, releasing it zeroes that component.
HELD_KEYS = {pygame.K_LEFT: (0, -1.0), pygame.K_RIGHT: (0, +1.0), pygame.K_UP: (1, +1.0), pygame.K_DOWN: (2, +0.8)}


class PlaySession:
    """A pygame window on one env, driven by the keyboard or an agent.

    Args:
        env: a ``dreamgym/DreamCarRacing-v0`` or ``dreamgym/RealCarRacing-v0`` env (latent
            observations, continuous actions), possibly wrapped.
        agent: ``act(obs) -> action``, or None for human-only play.
        seed: seed of the first reset (later resets continue the env's RNG).
        fps: frame-rate cap; 0 or None runs as fast as it can.
        title: the window's caption.
    """

    def __init__(self, env: Any, agent: Agent | None = None, seed: int | None = None, fps: int | None = 50,
                 title: str = "dreamgym play") -> None:
        self.env = env
        self.agent = agent
        self.fps = fps or 0
        self.base = env.unwrapped
        self.world_model = self.base.world_model
        self.dream = getattr(self.base, "dream", None)  # None for the real env
        self.real = self.dream is None

        self.human_action = np.zeros(3, dtype=np.float32)
        self.driver = "agent" if agent is not None else "human"
        self.quit = False
        self.message = ""
        self.last_action = np.zeros(3, dtype=np.float32)
        self.episodes = 0

        pygame.init()
        pygame.display.set_caption(title)
        size = self.world_model.config.image_size
        self.view_size = (size * SCALE, size * SCALE)
        width = self.view_size[0] * (2 if self.real else 1)
        self.screen = pygame.display.set_mode((width, self.view_size[1] + OVERLAY_HEIGHT))
        self.font = pygame.font.Font(None, 24)
        self.small_font = pygame.font.Font(None, 19)
        self.clock = pygame.time.Clock()
        self.frame: np.ndarray | None = None
        self.reset(seed=seed)

    # ------------------------------------------------------------------ state
    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: the step counter and the return go back to zero."""
        self.obs, self.info = self.env.reset(seed=seed)
        self.steps = 0
        self.reward = 0.0
        self.episode_return = 0.0
        self.termination_probability: float | None = 0.0 if self.dream is not None else None
        self.done = False

    @property
    def temperature(self) -> float | None:
        """The running dream's temperature (None for the real env)."""
        return None if self.dream is None else float(self.dream.temperature)

    def change_temperature(self, delta: float) -> None:
        """Add ``delta`` to the running dream's temperature, never going below MIN_TEMPERATURE."""
        if self.dream is None:
            self.message = "the real env has no temperature"
            return
        current = float(self.dream.temperature)
        new = round(current + delta, 6)
        if new < MIN_TEMPERATURE:
            new = min(current, MIN_TEMPERATURE)  # keep a tiny temperature as it is, never <= 0
        if new > 0:
            self.dream.temperature = new
        self.message = f"temperature {self.dream.temperature:.2f}"

    def toggle_driver(self) -> None:
        if self.agent is None:
            self.message = "no agent loaded (pass --agent)"
            return
        self.driver = "human" if self.driver == "agent" else "agent"
        self.message = f"{self.driver} drives"

    # ----------------------------------------------------------------- events
    def handle_event(self, event: Any) -> None:
        """Apply one pygame event: CarRacing's held-key mapping plus the extra keys."""
        if event.type == pygame.QUIT:
            self.quit = True
        elif event.type == pygame.KEYDOWN:
            self.key_down(event.key)
        elif event.type == pygame.KEYUP and event.key in HELD_KEYS:
            self.human_action[HELD_KEYS[event.key][0]] = 0.0

    def key_down(self, key: int) -> None:
        """Apply a pressed key: a held driving key, or one of the extra keys."""
        if key in HELD_KEYS:
            index, value = HELD_KEYS[key]
            self.human_action[index] = value
        elif key in (pygame.K_PLUS, pygame.K_EQUALS, pygame.K_KP_PLUS, pygame.K_RIGHTBRACKET):
            self.change_temperature(+TEMPERATURE_STEP)
        elif key in (pygame.K_MINUS, pygame.K_KP_MINUS, pygame.K_LEFTBRACKET):
            self.change_temperature(-TEMPERATURE_STEP)
        elif key in (pygame.K_r, pygame.K_RETURN):
            self.reset()
            self.message = "reset"
        elif key == pygame.K_m:
            self.toggle_driver()
        elif key in (pygame.K_ESCAPE, pygame.K_q):
            self.quit = True

    def current_action(self) -> np.ndarray:
        """The action for the next step: the agent's, or the held keys'."""
        if self.driver == "agent" and self.agent is not None:
            action = np.asarray(self.agent(self.obs))
            if action.shape in ((), (1,)):  # a discrete agent (an SB3 DQN, say)
                action = DISCRETE_ACTIONS[int(action.reshape(()))]
            return np.asarray(action, dtype=np.float32).reshape(3)
        return self.human_action.copy()

    # ------------------------------------------------------------------- step
    def tick(self) -> np.ndarray:
        """One env step with the current action (a reset first if the episode ended); return the frame drawn."""
        if self.done:
            self.reset()
        action = self.current_action()
        self.last_action = action
        self.obs, reward, terminated, truncated, self.info = self.env.step(action)
        self.steps += 1
        self.reward = float(reward)
        self.episode_return += self.reward
        p = self.info.get("termination_probability")
        self.termination_probability = None if p is None else float(p)  # None: the real env has none
        if terminated or truncated:
            self.done = True
            self.episodes += 1
            self.message = f"episode over after {self.steps} steps: return {self.episode_return:+.1f}"
        return self.draw()

    def views(self) -> list[np.ndarray]:
        """The frames to show, each view_size: the dream's, or the real one beside V's reconstruction."""
        if self.real:
            real = getattr(self.base.car, "state", None)
            z = self.base.observer.z
            recon = self.world_model.decode(z)[0].cpu().numpy()
            if real is None:
                real = np.zeros_like(recon)
            return [_fit(real, self.view_size[0]), upscale(recon, SCALE)]
        assert self.dream is not None  # not the real env: a dream env
        frame = self.world_model.decode(self.dream.z)[0].cpu().numpy()
        return [upscale(frame, SCALE)]

    def draw(self) -> np.ndarray:
        """Compose the views and the overlay on the window; return the composed RGB frame."""
        screen = self.screen
        screen.fill(BACKGROUND)
        for i, view in enumerate(self.views()):
            screen.blit(pygame.surfarray.make_surface(np.ascontiguousarray(view.swapaxes(0, 1))),
                        (i * self.view_size[0], 0))
        if self.real:
            for i, label in enumerate(("real (96x96)", "V's reconstruction")):
                screen.blit(self.small_font.render(label, True, TEXT, BACKGROUND), (i * self.view_size[0] + 4, 4))
        y = self.view_size[1] + 6
        temperature = "n/a (real)" if self.temperature is None else f"{self.temperature:.2f}"
        done_p = "n/a" if self.termination_probability is None else f"{self.termination_probability:.3f}"
        lines = [
            (self.font, f"step {self.steps}   reward {self.reward:+.2f}   return {self.episode_return:+.1f}", TEXT),
            (self.font, f"p(done) {done_p}   temp {temperature}   {self.driver.upper()} drives", TEXT),
            (self.small_font, "arrows drive  +/- temp  r reset  m agent  q quit", DIM_TEXT),
            (self.small_font, self.message, MESSAGE_TEXT),
        ]
        for font, text, colour in lines:
            screen.blit(font.render(text, True, colour), (8, y))
            y += font.get_linesize() + 2
        pygame.display.flip()
        self.frame = pygame.surfarray.array3d(screen).swapaxes(0, 1).copy()
        return self.frame

    # ------------------------------------------------------------------- loop
    def run(self, max_steps: int | None = None,
            scripted_events: Iterable[tuple[int, Any]] | None = None) -> dict:
        """Play until ``q``/``Esc``/the window closes, or ``max_steps`` ticks.

        Args:
            max_steps: stop after this many ticks; None plays on until the window closes.
            scripted_events: ``(tick, event)`` pairs: each event is handled just before
                tick number ``tick`` (counted from 0 over the whole session, across resets).

        Returns:
            a summary: ticks run, steps and return of the current episode, episodes ended.
        """
        pending: dict[int, list[Any]] = {}
        for at, event in scripted_events or ():
            pending.setdefault(int(at), []).append(event)
        ticks = 0
        self.draw()
        while not self.quit and (max_steps is None or ticks < max_steps):
            for event in pending.pop(ticks, ()):
                self.handle_event(event)
            for event in pygame.event.get():
                self.handle_event(event)
            if self.quit:
                break
            self.tick()
            ticks += 1
            if self.fps:
                self.clock.tick(self.fps)
        return {"ticks": ticks, "steps": self.steps, "return": self.episode_return, "episodes": self.episodes}

    def save_frame(self, path: str | os.PathLike) -> None:
        """Write the last composed frame (window content) as an image."""
        pygame.image.save(self.screen, os.fspath(path))

    def close(self) -> None:
        self.env.close()
        pygame.display.quit()


def _fit(frame: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a square-ish frame to size x size."""
    rows = (np.arange(size) * frame.shape[0] // size).clip(0, frame.shape[0] - 1)
    cols = (np.arange(size) * frame.shape[1] // size).clip(0, frame.shape[1] - 1)
    return frame[rows][:, cols]


def key_event(key: int, down: bool = True) -> Any:
    """A pygame KEYDOWN/KEYUP event for ``key`` (for scripted play)."""
    return pygame.event.Event(pygame.KEYDOWN if down else pygame.KEYUP, key=key, mod=0, unicode="", scancode=0)


def make_session(model: Any = None, revision: str | None = None, real: bool = False, agent: str | None = None,
                 temperature: float = 1.0, seed: int | None = None, fps: int | None = 50,
                 allow_pickle: bool = False) -> PlaySession:
    """Build the env (and load the agent, through :mod:`dreamgym.agents.specs`) and open a :class:`PlaySession`."""
    act = None
    if agent is not None:
        spec = parse_agent_spec(agent, allow_pickle=allow_pickle)
        act, loaded = load_agent(spec)
        model, revision = resolve_agent_model(spec, loaded, model, revision)
    if real:
        env = gym.make("dreamgym/RealCarRacing-v0", model=model, revision=revision)
        title = "dreamgym play: real CarRacing through V + M"
    else:
        env = gym.make("dreamgym/DreamCarRacing-v0", model=model, revision=revision, temperature=temperature)
        title = "dreamgym play: the dream"
    if agent is not None:
        check_agent_fits(loaded, cast(WorldModelEnv, env.unwrapped).world_model, agent)
    return PlaySession(env, agent=act, seed=seed, fps=fps, title=title)


def play(model: Any = None, revision: str | None = None, real: bool = False, agent: str | None = None,
         temperature: float = 1.0, seed: int | None = None, fps: int | None = 50, max_steps: int | None = None,
         save_frame: str | None = None, scripted_events: Sequence[tuple[int, Any]] | None = None,
         allow_pickle: bool = False) -> dict:
    """Open the window and play; see the module doc for the keys.

    ``allow_pickle`` lets an SB3 agent's zip be unpickled (only for a file you trust).
    """
    session = make_session(model, revision, real, agent, temperature, seed, fps, allow_pickle)
    try:
        summary = session.run(max_steps=max_steps, scripted_events=scripted_events)
        if save_frame:
            session.save_frame(save_frame)
    finally:
        session.close()
    return summary
