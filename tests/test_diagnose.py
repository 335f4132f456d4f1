"""`dreamgym diagnose`: M's predictions checked along an agent's real trajectories, dream vs real situations."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents.controller import LinearController
from dreamgym.agents.diagnose import (
    DIAGNOSE_FILE,
    PLOT_FILE,
    branch_keys,
    car_box,
    diagnose,
    on_road,
    road_fraction,
)
from dreamgym.agents.evaluate import evaluate, run_episode
from dreamgym.cli import main
from dreamgym.envs.common import continuous_actions
from dreamgym.envs.dynamics import LatentDream
from dreamgym.envs.observer import teacher_forced_states
from dreamgym.preprocessing import preprocess_frames

from conftest import make_tiny_model

OBS_DIM = 8 + 16
STEPS = 30
SEED = 7
HORIZONS = (5, 10)
EVERY = 4
TEMPERATURE = 1.3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny world model, a controller that records it, and one diagnosis of 2 real episodes of 30 steps."""
    root = tmp_path_factory.mktemp("diagnose")
    model_dir = root / "tiny-wm"
    make_tiny_model().save_pretrained(model_dir)
    record = {"model": str(model_dir), "revision": None, "source": "path"}
    params = np.random.default_rng(0).normal(0, 0.3, 3 * OBS_DIM + 3)
    controller_dir = LinearController.from_flat(params, OBS_DIM, world_model=record).save(root / "ctrl")
    out = root / "out"
    # zoom_steps=0: 30-step episodes never leave CarRacing's zoom-in, and the road figures must be exercised.
    result = diagnose(str(controller_dir), episodes=2, seed=SEED, temperature=TEMPERATURE, max_steps=STEPS,
                      horizons=HORIZONS, branch_every=EVERY, zoom_steps=0, out=out, progress=False)
    return {"model_dir": model_dir, "controller_dir": controller_dir, "out": out, "result": result}


def drive(model_dir, controller, seed):
    """The real episode of ``seed``, recorded independently of diagnose: [z, h] seen, c, actions, rewards, frames."""
    env = gym.make("dreamgym/RealCarRacing-v0", model=str(model_dir), max_episode_steps=STEPS)
    observer = env.unwrapped.observer
    obs, _ = env.reset(seed=seed)
    seen, cells, actions, rewards, frames = [obs], [observer.c[0].numpy().copy()], [], [], [observer.frame.copy()]
    done = False
    while not done:
        action = controller.act(obs)
        obs, reward, terminated, truncated, _ = env.step(action)
        seen.append(obs)
        cells.append(observer.c[0].numpy().copy())
        frames.append(observer.frame.copy())
        actions.append(continuous_actions(action, True))
        rewards.append(reward)
        done = terminated or truncated
    env.close()
    return np.stack(seen), np.stack(cells), np.stack(actions), np.array(rewards), np.stack(frames)


def test_real_returns_are_those_evaluate_reports(setup):
    result = setup["result"]
    scored = evaluate(str(setup["controller_dir"]), episodes=2, seed=SEED, workers=1, max_steps=STEPS, progress=False)
    assert result["seeds"] == scored["seeds"] == [SEED, SEED + 1]
    assert result["real"]["returns"] == scored["returns"]
    assert result["real"]["lengths"] == scored["lengths"] == [STEPS, STEPS]
    assert result["real"]["reward_rates"] == pytest.approx([r / STEPS for r in scored["returns"]])


def test_dream_episodes_are_the_dream_envs_for_the_same_seeds(setup):
    result = setup["result"]
    env = gym.make("dreamgym/DreamCarRacing-v0", model=str(setup["model_dir"]), temperature=TEMPERATURE,
                   max_episode_steps=STEPS)
    controller = LinearController.load(setup["controller_dir"])
    expected = [run_episode(env, controller, seed) for seed in (SEED, SEED + 1)]
    assert result["dream"]["returns"] == [r for r, _ in expected]
    assert result["dream"]["lengths"] == [n for _, n in expected]
    assert result["dream"]["returns"] != result["real"]["returns"]


def test_teacher_forced_predictions_are_m_on_the_real_episode(setup):
    result = setup["result"]
    model = make_tiny_model()
    controller = LinearController.load(setup["controller_dir"])
    seen, _, actions, rewards, frames = drive(setup["model_dir"], controller, SEED + 1)
    z = torch.from_numpy(seen[:, :8])
    h, _ = teacher_forced_states(model.rnn, z, torch.from_numpy(actions))
    # The env's h is M's teacher-forced state: the observation the agent acted on.
    np.testing.assert_allclose(h.numpy(), seen[:, 8:], atol=1e-6)
    with torch.no_grad():
        out = model.rnn.heads(h[1:])
    episode = result["teacher_forced"]["episodes"][1]
    assert episode["seed"] == SEED + 1
    assert episode["real_rewards"] == pytest.approx(rewards.tolist(), abs=1e-12)
    np.testing.assert_allclose(episode["predicted_rewards"], out.reward.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(episode["termination_probability"], torch.sigmoid(out.termination_logit).numpy(),
                               rtol=1e-5, atol=1e-9)
    assert episode["predicted_return"] == pytest.approx(float(out.reward.sum()), rel=1e-5)
    # The same road classifier on the real frames and on V's decoding of the real z (the step's states).
    assert result["real"]["on_road_fractions_frame"][1] == pytest.approx(on_road(frames[:-1]).mean())
    assert result["real"]["on_road_fractions"][1] == pytest.approx(on_road(model.decode(z[:-1]).numpy()).mean())


def test_open_loop_branches_dream_from_the_real_state(setup):
    result = setup["result"]
    model = make_tiny_model()
    controller = LinearController.load(setup["controller_dir"])
    seen, cells, _, rewards, _ = drive(setup["model_dir"], controller, SEED)
    for entry, horizon in zip(result["open_loop"], HORIZONS, strict=True):
        assert entry["horizon"] == horizon
        # Truncated episodes: only starts whose next `horizon` real steps exist.
        points = [t for t in range(0, STEPS, EVERY) if t + horizon <= STEPS]
        assert entry["starts"] == [{"seed": s, "step": t} for s in (SEED, SEED + 1) for t in points]
        assert entry["branches"] == 2 * len(points)
        assert entry["real_returns"][: len(points)] == pytest.approx([rewards[t : t + horizon].sum() for t in points])
        # Branch 1 by hand: a one-slot dream with its key, put at the real (z, h, c), the controller acting in it.
        t = points[1]
        dream = LatentDream(model, 1, TEMPERATURE)
        dream.reset(np.zeros(1, dtype=np.int64), branch_keys(SEED, horizon, [t]))
        dream.set_state([0], seen[t : t + 1, :8], seen[t : t + 1, 8:], cells[t : t + 1])
        obs, total = seen[t], 0.0
        for _ in range(horizon):
            step = dream.step(torch.from_numpy(controller.act(obs)[None]))
            total += float(step.reward[0])
            obs = torch.cat([step.z[0], step.h[0]]).numpy()
        assert entry["dream_returns"][1] == pytest.approx(total, rel=1e-4, abs=1e-4)
        assert entry["dream_lengths"][1] == horizon
        errors = np.array(entry["dream_returns"]) - np.array(entry["real_returns"])
        assert entry["bias"] == pytest.approx(errors.mean())
        assert entry["mae"] == pytest.approx(np.abs(errors).mean())


def test_set_state_puts_a_slot_at_a_given_state():
    model = make_tiny_model()
    dream = LatentDream(model, 3, 1.0)
    dream.reset(np.arange(3), np.arange(3, dtype=np.uint64))
    rng = np.random.default_rng(1)
    z, h, c = (rng.normal(size=(1, n)).astype(np.float32) for n in (8, 16, 16))
    untouched = dream.z[0].clone()
    dream.set_state([2], z, h, c)
    np.testing.assert_array_equal(dream.z[2].numpy(), z[0])
    np.testing.assert_array_equal(dream.c[2].numpy(), c[0])
    np.testing.assert_array_equal(dream.z[0].numpy(), untouched.numpy())
    action = torch.tensor([[0.1, 0.5, 0.0]] * 3)
    step = dream.step(action)
    with torch.no_grad():
        h_next, _ = model.rnn.step(torch.from_numpy(z), action[:1], torch.from_numpy(h), torch.from_numpy(c))
        reward = model.rnn.heads(h_next).reward
    assert float(step.reward[2]) == pytest.approx(float(reward[0]), rel=1e-5)
    with pytest.raises(ValueError, match=r"h must have shape \(1, 16\)"):
        dream.set_state([0], z, h[:, :8], c)
    with pytest.raises(ValueError, match="slot indices"):
        dream.set_state([3], z, h, c)


def test_road_classifier_tests_the_pixels_around_the_car():
    grey = np.full((64, 64, 3), 105, dtype=np.uint8)
    green = np.zeros((64, 64, 3), dtype=np.uint8)
    green[...] = (100, 204, 100)
    assert on_road(grey) and road_fraction(grey) == 1.0
    assert not on_road(green) and road_fraction(green) == 0.0
    rows, cols = car_box(64, True)
    assert (rows.start, rows.stop, cols.start, cols.stop) == (50, 60, 30, 34)
    # Only the pixels just around the car count: grass there is off road, whatever is far away.
    around = (slice(rows.start - 3, rows.stop + 3), slice(cols.start - 3, cols.stop + 3))
    grass_at_car, road_at_car = grey.copy(), green.copy()
    grass_at_car[around] = green[around]
    road_at_car[around] = grey[around]
    grass_at_car[rows, cols] = road_at_car[rows, cols] = (200, 20, 20)  # the red car itself
    np.testing.assert_array_equal(on_road(np.stack([grass_at_car, road_at_car])), [False, True])
    assert road_fraction(road_at_car) == 1.0  # the car's own pixels are left out
    with pytest.raises(ValueError, match="uint8"):
        road_fraction(grey.astype(np.float32))


def test_road_classifier_finds_the_real_car_on_the_road():
    from gymnasium.envs.box2d.car_racing import CarRacing

    env = CarRacing()
    frame, _ = env.reset(seed=3)
    for _ in range(60):  # past the zoom-in, standing still on the start line
        frame, *_ = env.step(np.zeros(3, dtype=np.float32))
    env.close()
    assert on_road(preprocess_frames(frame))


def test_writes_json_and_png(setup):
    out, result = setup["out"], setup["result"]
    saved = json.loads((out / DIAGNOSE_FILE).read_text())
    assert saved == json.loads(json.dumps(result))
    assert {"agent", "model", "seeds", "real", "dream", "teacher_forced", "open_loop", "horizons"} <= set(saved)
    assert saved["model"] == str(setup["model_dir"])  # the world model controller.json records
    assert [e["horizon"] for e in saved["open_loop"]] == list(HORIZONS)
    for side in ("real", "dream"):
        assert all(0.0 <= f <= 1.0 for f in saved[side]["on_road_fractions"])
    assert [e["real_return"] for e in saved["teacher_forced"]["episodes"]] == pytest.approx(saved["real"]["returns"])
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_prints_the_table(setup, tmp_path, capsys):
    out = tmp_path / "diag"
    code = main(["diagnose", str(setup["controller_dir"]), "--episodes", "1", "--seed", str(SEED),
                 "--max-steps", "20", "--horizons", "5", "--branch-every", "5", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / DIAGNOSE_FILE).read_text())
    assert "situations met" in printed and "teacher-forced" in printed and "open loop" in printed
    assert f"{saved['real']['mean_return']:.1f}" in printed
    assert saved["open_loop"][0]["branches"] == 4 and (out / PLOT_FILE).is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--episodes", "0"], "episodes must be >= 1, got 0"),
        (["--horizons", "0"], "horizon must be an int > 0"),
        (["--horizons", "50", "--max-steps", "30"], "horizon must be <= max_steps (30)"),
        (["--temperature", "0"], "temperature must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(setup, tmp_path, capsys, args, message):
    out = tmp_path / "diag"
    assert main(["diagnose", str(setup["controller_dir"]), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dreamgym diagnose: error:") and message in err
    assert not out.exists()
