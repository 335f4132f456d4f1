"""`dreamgym play`, headless: scripted key events drive a PlaySession on a tiny world model."""

from __future__ import annotations

import os

os.environ["SDL_VIDEODRIVER"] = "dummy"
os.environ["SDL_AUDIODRIVER"] = "dummy"

import gymnasium as gym
import numpy as np
import pygame
import pytest

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.controller import LinearController
from dreamgym.cli import build_parser
from dreamgym.play import SCALE, PlaySession, key_event

OBS_DIM = 24  # the tiny model's z_dim 8 + rnn_hidden 16


class ActionSpy(gym.Wrapper):
    """Records every action the session sends to the env."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action, dtype=np.float32))
        return self.env.step(action)


def dream_session(tiny_model, agent=None, temperature: float = 1.0) -> tuple[PlaySession, ActionSpy]:
    env = ActionSpy(gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, temperature=temperature))
    return PlaySession(env, agent=agent, seed=0, fps=0), env


@pytest.fixture
def session(tiny_model):
    play, spy = dream_session(tiny_model)
    yield play, spy
    play.close()


def test_held_keys_follow_carracing_mapping(session):
    play, spy = session
    events = [
        (0, key_event(pygame.K_UP)),
        (2, key_event(pygame.K_LEFT)),
        (4, key_event(pygame.K_UP, down=False)),
        (4, key_event(pygame.K_LEFT, down=False)),
        (5, key_event(pygame.K_DOWN)),
        (5, key_event(pygame.K_RIGHT)),
        (6, key_event(pygame.K_DOWN, down=False)),
        (6, key_event(pygame.K_RIGHT, down=False)),
    ]
    summary = play.run(max_steps=7, scripted_events=events)
    assert summary["ticks"] == 7
    a = np.stack(spy.actions)
    np.testing.assert_allclose(a[0], [0.0, 1.0, 0.0])  # UP held: gas 1
    np.testing.assert_allclose(a[1], [0.0, 1.0, 0.0])  # still held
    np.testing.assert_allclose(a[2], [-1.0, 1.0, 0.0])  # LEFT: steer -1
    np.testing.assert_allclose(a[4], [0.0, 0.0, 0.0])  # released: zeroed
    np.testing.assert_allclose(a[5], [1.0, 0.0, 0.8])  # RIGHT steer +1, DOWN brake 0.8
    np.testing.assert_allclose(a[6], [0.0, 0.0, 0.0])
    assert play.steps == 7


def test_tick_returns_the_composed_frame(session, tiny_model):
    play, _ = session
    frame = play.tick()
    size = tiny_model.config.image_size * SCALE
    assert frame.dtype == np.uint8 and frame.shape[1] == size and frame.shape[0] > size
    assert frame.shape[2] == 3


def test_r_resets_the_step_counter_and_return(session):
    play, _ = session
    play.run(max_steps=5, scripted_events=[(0, key_event(pygame.K_UP))])
    assert play.steps == 5 and play.episode_return != 0.0
    play.handle_event(key_event(pygame.K_r))
    assert play.steps == 0 and play.episode_return == 0.0
    play.tick()
    assert play.steps == 1


def test_plus_raises_the_dream_temperature(session):
    play, _ = session
    dream = play.env.unwrapped.dream
    play.run(max_steps=2, scripted_events=[(1, key_event(pygame.K_PLUS))])
    assert dream.temperature == pytest.approx(1.05)
    play.handle_event(key_event(pygame.K_RIGHTBRACKET))
    assert play.env.unwrapped.temperature == pytest.approx(1.10)
    play.handle_event(key_event(pygame.K_MINUS))
    play.handle_event(key_event(pygame.K_LEFTBRACKET))
    assert dream.temperature == pytest.approx(1.0)


def test_the_dream_samples_with_the_new_temperature(tiny_model):
    """Same seed and actions: a temperature change mid-episode changes the trajectory from then on."""
    zs = []
    for events in ([], [(3, key_event(pygame.K_PLUS))] * 10):  # +0.5 before tick 3
        play, _ = dream_session(tiny_model)
        try:
            play.run(max_steps=6, scripted_events=events)
            zs.append(play.env.unwrapped.dream.z.clone())
        finally:
            play.close()
    assert play.env.unwrapped.dream.temperature == pytest.approx(1.5)
    assert not np.allclose(zs[0].numpy(), zs[1].numpy())


def test_minus_never_takes_the_temperature_to_zero(tiny_model):
    play, _ = dream_session(tiny_model, temperature=0.02)
    try:
        for _ in range(5):
            play.handle_event(key_event(pygame.K_MINUS))
            assert play.env.unwrapped.dream.temperature > 0
        assert play.env.unwrapped.dream.temperature == pytest.approx(0.02)
        play.env.unwrapped.dream.temperature = 0.12
        for _ in range(5):
            play.handle_event(key_event(pygame.K_KP_MINUS))
        assert play.env.unwrapped.dream.temperature == pytest.approx(0.05)
        play.tick()  # still steps
    finally:
        play.close()


def test_m_toggles_to_the_agent(tiny_model):
    bias = np.array([0.3, 0.7, 0.1], dtype=np.float32)
    controller = LinearController(obs_dim=OBS_DIM, bias=bias)
    play, spy = dream_session(tiny_model, agent=controller.act)
    try:
        assert play.driver == "agent"
        events = [(0, key_event(pygame.K_UP)), (2, key_event(pygame.K_m)), (4, key_event(pygame.K_m))]
        play.run(max_steps=6, scripted_events=events)
        a = np.stack(spy.actions)
        agent_action = controller.act(np.zeros(OBS_DIM, dtype=np.float32))  # zero weight: the same for any obs
        assert not np.allclose(agent_action, [0.0, 1.0, 0.0])
        np.testing.assert_allclose(a[:2], np.tile(agent_action, (2, 1)), atol=1e-6)
        np.testing.assert_allclose(a[2:4], [[0.0, 1.0, 0.0]] * 2)  # human takeover: UP held
        np.testing.assert_allclose(a[4:], np.tile(agent_action, (2, 1)), atol=1e-6)  # the agent again
        assert play.driver == "agent"
    finally:
        play.close()


def test_m_without_an_agent_stays_human(session):
    play, _ = session
    play.handle_event(key_event(pygame.K_m))
    assert play.driver == "human" and "agent" in play.message


@pytest.mark.parametrize("key", [pygame.K_q, pygame.K_ESCAPE])
def test_q_and_escape_end_run(session, key):
    play, spy = session
    summary = play.run(max_steps=100, scripted_events=[(3, key_event(key))])
    assert summary["ticks"] == 3 and len(spy.actions) == 3 and play.quit


def test_posted_pygame_events_are_read(session):
    play, spy = session
    pygame.event.post(key_event(pygame.K_UP))
    play.run(max_steps=1)
    np.testing.assert_allclose(spy.actions[0], [0.0, 1.0, 0.0])
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert play.run(max_steps=10)["ticks"] == 0


def test_episode_end_resets_on_the_next_tick(tiny_model):
    env = gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, max_episode_steps=3)
    play = PlaySession(env, seed=0, fps=0)
    try:
        play.run(max_steps=3)
        assert play.done and play.episodes == 1 and "return" in play.message
        play.tick()
        assert play.steps == 1 and not play.done
    finally:
        play.close()


def test_real_mode_shows_real_frame_beside_reconstruction(tiny_model):
    env = ActionSpy(gym.make("dreamgym/RealCarRacing-v0", model=tiny_model))
    play = PlaySession(env, seed=0, fps=0)
    try:
        assert play.real and play.temperature is None
        play.handle_event(key_event(pygame.K_PLUS))  # no dream: ignored, not an error
        summary = play.run(max_steps=4, scripted_events=[(0, key_event(pygame.K_UP))])
        assert summary["ticks"] == 4
        np.testing.assert_allclose(env.actions[-1], [0.0, 1.0, 0.0])
        frame = play.frame
        size = tiny_model.config.image_size * SCALE
        assert frame.shape[1] == 2 * size
        assert frame[:size, :size].std() > 0 and frame[:size, size:].std() > 0
    finally:
        play.close()


def test_cli_parses_play(capsys):
    args = build_parser().parse_args(["play", "--real", "--agent", "runs/ctrl", "--temperature", "1.2",
                                      "--seed", "3", "--fps", "30", "--max-steps", "5"])
    assert args.real and args.agent == "runs/ctrl" and args.temperature == 1.2
    assert args.seed == 3 and args.fps == 30 and args.max_steps == 5
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["play", "--help"])
    shown = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--fps" in shown
    assert "--max-steps" not in shown and "--save-frame" not in shown  # for tests, not users


def test_cli_play_runs_headless(tiny_model_dir, tmp_path, capsys):
    from dreamgym.cli import main

    out = tmp_path / "frame.png"
    code = main(["play", "--model", str(tiny_model_dir), "--max-steps", "5", "--fps", "0", "--seed", "0",
                 "--save-frame", str(out)])
    assert code == 0 and out.is_file()
    assert "played 5 steps" in capsys.readouterr().out
    assert main(["play", "--model", str(tiny_model_dir), "--temperature", "0", "--max-steps", "1"]) == 2
