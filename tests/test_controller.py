"""The linear controller (acting, saving, strict loading) and its CMA-ES training in the dream."""

from __future__ import annotations

import hashlib
import json
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym.agents import cmaes
from dreamgym.agents import controller as controller_mod
from dreamgym.agents.cmaes import evaluate_population, generation_seeds, select_controller, train_controller
from dreamgym.agents.controller import (
    ControllerFormatError,
    LinearController,
    load_controller,
    population_actions,
    unflatten_population,
)
from dreamgym.cli import main
from dreamgym.envs import DreamCarRacingEnv
from dreamgym.training.common import CheckpointError

from conftest import make_tiny_model

OBS_DIM = 8 + 16  # the tiny model's z_dim + rnn_hidden


def random_controller(obs_dim: int = OBS_DIM, scale: float = 1.0, seed: int = 0, **kwargs) -> LinearController:
    rng = np.random.default_rng(seed)
    return LinearController.from_flat(rng.normal(0, scale, 3 * obs_dim + 3), obs_dim, **kwargs)


# ----------------------------------------------------------------------- acting
def test_paper_size_has_867_parameters():
    controller = LinearController()
    assert controller.obs_dim == 288
    assert controller.num_params == 867
    assert controller.flat().shape == (867,)


def test_actions_are_squashed_into_the_action_space():
    controller = random_controller(scale=3.0)
    obs = np.random.default_rng(1).normal(0, 3, (2000, OBS_DIM)).astype(np.float32)
    actions = controller.act(obs)
    assert actions.shape == (2000, 3) and actions.dtype == np.float32
    steer, gas, brake = actions.T
    assert steer.min() >= -1 and steer.max() <= 1 and steer.min() < -0.9 and steer.max() > 0.9
    assert gas.min() >= 0 and gas.max() <= 1 and gas.min() < 0.1 and gas.max() > 0.9
    assert brake.min() == 0 and brake.max() <= 1 and (brake == 0).mean() > 0.3  # clip: half the time no brake
    single = controller(obs[0])
    assert single.shape == (3,)
    # 1-D and 2-D inputs take different BLAS kernels (gemv, gemm): equal up to float rounding.
    np.testing.assert_allclose(single, actions[0], rtol=0, atol=1e-6)
    assert gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.ones(3, np.float32)).contains(single)


def test_squash_is_the_papers():
    controller = LinearController(obs_dim=1, weight=np.zeros((3, 1)), bias=np.array([0.5, -0.3, -2.0]))
    t = np.tanh([0.5, -0.3, -2.0])
    np.testing.assert_allclose(controller.act(np.zeros(1)), [t[0], (t[1] + 1) / 2, 0.0], rtol=1e-6)


def test_population_actions_equal_each_members_actions():
    rng = np.random.default_rng(2)
    params = rng.normal(0, 1, (5, 3 * OBS_DIM + 3))
    obs = rng.normal(0, 1, (5, 7, OBS_DIM)).astype(np.float32)
    weights, biases = unflatten_population(params, OBS_DIM)
    batched = population_actions(weights, biases, torch.from_numpy(obs)).numpy()
    for p in range(5):
        member = LinearController.from_flat(params[p], OBS_DIM)
        np.testing.assert_allclose(batched[p], member.act(obs[p]), atol=1e-6)


def test_flat_round_trip_and_bad_vectors():
    controller = random_controller()
    again = LinearController.from_flat(controller.flat())
    assert again.obs_dim == OBS_DIM
    np.testing.assert_array_equal(again.flat(), controller.flat())
    with pytest.raises(ValueError, match="3 \\* obs_dim \\+ 3"):
        LinearController.from_flat(np.zeros(10))
    with pytest.raises(ValueError, match="shape"):
        controller.act(np.zeros(OBS_DIM + 1))


# ------------------------------------------------------------------ persistence
def test_save_load_round_trip_is_exact(tmp_path):
    record = {"model": "org/wm", "revision": "v1", "source": "hub"}
    controller = random_controller(world_model=record, temperature=1.15, training={"generations_done": 3})
    controller.save(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["controller.json", "controller.safetensors"]
    loaded = LinearController.load(tmp_path / "c")
    assert torch.equal(loaded.weight, controller.weight) and torch.equal(loaded.bias, controller.bias)
    assert loaded.world_model == record and loaded.temperature == 1.15
    assert loaded.training == {"generations_done": 3}
    config = json.loads((tmp_path / "c" / "controller.json").read_text())
    assert config["format_version"] == 1 and config["obs_dim"] == OBS_DIM
    obs = np.random.default_rng(0).normal(size=(4, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs), controller.act(obs))


def test_saves_are_byte_for_byte_reproducible(tmp_path, tiny_model):
    """The same weights always give the same files (safetensors' own metadata order varies run to run)."""
    from safetensors import safe_open

    controller = random_controller()
    weights = {controller.save(tmp_path / f"c{i}").joinpath("controller.safetensors").read_bytes() for i in range(8)}
    assert len(weights) == 1
    with safe_open(str(tmp_path / "c0" / "controller.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", "format_version": "1"}
    models = set()
    for i in range(8):
        tiny_model.save_pretrained(tmp_path / f"wm{i}")
        models.add((tmp_path / f"wm{i}" / "model.safetensors").read_bytes())
    assert len(models) == 1


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "ctrl"
    random_controller().save(folder)
    return folder


def test_load_missing_files(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="no controller folder"):
        LinearController.load(tmp_path / "nowhere")
    (saved / "controller.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="controller.safetensors"):
        LinearController.load(saved)
    (saved / "controller.json").unlink()
    with pytest.raises(FileNotFoundError, match="controller.json"):
        LinearController.load(saved)



def _rewrite_weights(saved, tensors) -> None:
    """Replace the weights deliberately, recording their new sha256 (so the shape checks, not the checksum, speak)."""
    save_file(tensors, str(saved / "controller.safetensors"))
    config = json.loads((saved / "controller.json").read_text())
    config["weights_sha256"] = hashlib.sha256((saved / "controller.safetensors").read_bytes()).hexdigest()
    (saved / "controller.json").write_text(json.dumps(config))


def test_load_wrong_shape(saved):
    _rewrite_weights(saved, {"weight": torch.zeros(3, OBS_DIM + 1), "bias": torch.zeros(3)})
    with pytest.raises(ControllerFormatError, match="weight has shape \\(3, 25\\)"):
        LinearController.load(saved)


def test_load_missing_and_unexpected_tensors(saved):
    _rewrite_weights(saved, {"weight": torch.zeros(3, OBS_DIM), "extra": torch.zeros(1)})
    with pytest.raises(ControllerFormatError, match="missing tensors \\['bias'\\].*unexpected tensors \\['extra'\\]"):
        LinearController.load(saved)


def test_load_non_finite_and_corrupt(saved):
    _rewrite_weights(saved, {"weight": torch.full((3, OBS_DIM), float("nan")), "bias": torch.zeros(3)})
    with pytest.raises(ControllerFormatError, match="NaN"):
        LinearController.load(saved)
    (saved / "controller.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ControllerFormatError, match="corrupt"):
        LinearController.load(saved)


def test_load_unknown_format_version(saved):
    config = json.loads((saved / "controller.json").read_text())
    config["format_version"] = 99
    (saved / "controller.json").write_text(json.dumps(config))
    with pytest.raises(ControllerFormatError, match="format_version 99"):
        LinearController.load(saved)
    (saved / "controller.json").write_text("[1, 2]")
    with pytest.raises(ControllerFormatError, match="JSON object"):
        LinearController.load(saved)


def test_reference_controller(tmp_path, monkeypatch):
    monkeypatch.setattr(controller_mod, "REFERENCE_DIR", tmp_path / "assets" / "controller")
    with pytest.raises(FileNotFoundError, match="no reference controller is installed"):
        load_controller("reference")
    random_controller().save(tmp_path / "assets" / "controller")
    assert load_controller("reference").obs_dim == OBS_DIM
    assert load_controller(tmp_path / "assets" / "controller").obs_dim == OBS_DIM


@pytest.mark.parametrize("env_id", ["dreamgym/DreamCarRacing-v0", "dreamgym/RealCarRacing-v0"])
def test_runs_unchanged_in_dream_and_real(tiny_model, env_id):
    controller = random_controller(scale=0.3)
    env = gym.make(env_id, model=tiny_model, max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        action = controller(obs)
        assert env.action_space.contains(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    assert truncated or terminated
    env.close()


# ------------------------------------------------------------------------ CMA-ES
def terminating_model():
    """A tiny model whose dream ends at different steps for different episodes."""
    model = make_tiny_model()
    with torch.no_grad():
        model.rnn.head.weight[-1] *= 8.0
        model.rnn.head.bias[-1] = -1.5
    return model


def test_population_evaluation_equals_single_envs(tiny_model):
    model = terminating_model()
    params = np.random.default_rng(3).normal(0, 0.5, (3, 3 * OBS_DIM + 3))
    seeds = generation_seeds(0, 4, 3)
    max_steps = 15
    batched = evaluate_population(model, params, seeds, temperature=1.1, max_steps=max_steps)
    assert batched.shape == (3, 3)
    lengths = []
    for p in range(3):
        member = LinearController.from_flat(params[p], OBS_DIM)
        env = DreamCarRacingEnv(model=model, temperature=1.1, max_episode_steps=None)
        for r, seed in enumerate(seeds):
            obs, _ = env.reset(seed=seed)
            total, length = 0.0, 0
            for _ in range(max_steps):
                obs, reward, terminated, _, _ = env.step(member(obs))
                total += reward
                length += 1
                if terminated:
                    break
            lengths.append(length)
            assert batched[p, r] == pytest.approx(total, rel=1e-4, abs=1e-4)
    # The done mask was exercised: some episodes ended early, some ran to max_steps.
    assert min(lengths) < max_steps and max(lengths) == max_steps


def test_members_share_episodes_within_a_generation_not_across():
    assert generation_seeds(0, 3, 4) == generation_seeds(0, 3, 4)
    assert generation_seeds(0, 3, 4) != generation_seeds(0, 4, 4)
    assert generation_seeds(0, 3, 4) != generation_seeds(1, 3, 4)
    assert len(set(generation_seeds(0, 3, 4))) == 4


def test_action_noise_is_the_same_for_every_member_and_reproducible(tiny_model):
    params = np.random.default_rng(5).normal(0, 0.5, (2, 3 * OBS_DIM + 3))
    params = np.concatenate([params, params[:1]])  # member 2 is member 0
    seeds = generation_seeds(0, 1, 3)
    plain = evaluate_population(tiny_model, params, seeds, max_steps=20)
    np.testing.assert_array_equal(evaluate_population(tiny_model, params, seeds, max_steps=20, action_noise=0.0), plain)
    noisy = evaluate_population(tiny_model, params, seeds, max_steps=20, action_noise=0.5)
    np.testing.assert_array_equal(evaluate_population(tiny_model, params, seeds, max_steps=20, action_noise=0.5), noisy)
    np.testing.assert_array_equal(noisy[2], noisy[0])  # equal members, equal noise: equal returns
    assert not np.allclose(noisy, plain)
    other = evaluate_population(tiny_model, params, generation_seeds(0, 2, 3), max_steps=20, action_noise=0.5)
    assert not np.allclose(other, noisy)


def test_action_noise_keeps_actions_in_the_action_space():
    noise = cmaes._ActionNoise([1, 2], 10.0, torch.device("cpu"))
    actions = noise(torch.zeros(3, 2, 3))
    low, high = torch.tensor([-1.0, 0.0, 0.0]), torch.tensor([1.0, 1.0, 1.0])
    assert bool(((actions >= low) & (actions <= high)).all())
    assert torch.equal(actions[0], actions[1]) and torch.equal(actions[1], actions[2])  # one draw per episode
    assert bool(((actions == low) | (actions == high)).any())  # noise of std 10 is clipped


def test_output_noise_is_the_same_for_every_member_reproducible_and_not_action_noise(tiny_model):
    params = np.random.default_rng(6).normal(0, 0.5, (2, 3 * OBS_DIM + 3))
    params = np.concatenate([params, params[:1]])  # member 2 is member 0
    seeds = generation_seeds(0, 1, 3)
    plain = evaluate_population(tiny_model, params, seeds, max_steps=20)
    noisy = evaluate_population(tiny_model, params, seeds, max_steps=20, output_noise=0.5)
    np.testing.assert_array_equal(evaluate_population(tiny_model, params, seeds, max_steps=20, output_noise=0.5), noisy)
    np.testing.assert_array_equal(noisy[2], noisy[0])
    assert not np.allclose(noisy, plain)
    assert not np.allclose(noisy, evaluate_population(tiny_model, params, seeds, max_steps=20, action_noise=0.5))


def test_output_noise_lets_a_controller_keep_the_brake_off_where_action_noise_cannot():
    obs = torch.zeros(1, 500, 4)
    weights = torch.zeros(1, 3, 4)
    biases = torch.tensor([[0.0, 3.0, -20.0]])  # full gas, brake far below 0
    noise = cmaes._EpisodeNoise(range(500), 1.0, torch.device("cpu"), stream=4).draw()
    before = controller_mod.population_actions(weights, biases, obs, noise)
    assert bool((before[..., 2] == 0).all())  # tanh(-20 + noise) < 0: never brakes
    assert bool((before[..., 0].abs() > 0.05).any())  # yet the steering is noisy
    actions = controller_mod.population_actions(weights, biases, obs)
    after = cmaes._ActionNoise(range(500), 1.0, torch.device("cpu"))(actions)
    assert 0.4 < float((after[..., 2] > 0).float().mean()) < 0.6  # noise after the squash brakes half the time


TOY = dict(popsize=4, rollouts=2, max_steps=10, progress=False)


def test_action_noise_is_a_run_option(tiny_model, tmp_path, capsys):
    out = tmp_path / "noisy"
    controller = train_controller(tiny_model, out, generations=1, eval_every=0, action_noise=0.3, **TOY)
    assert controller.training["options"]["action_noise"] == 0.3
    with pytest.raises(CheckpointError, match="action_noise: 0.3 -> 0.0"):
        train_controller(tiny_model, out, generations=2, eval_every=0, **TOY)
    with pytest.raises(ValueError, match="action_noise must be a finite number >= 0"):
        train_controller(tiny_model, tmp_path / "bad", generations=1, action_noise=-0.1, **TOY)
    with pytest.raises(ValueError, match="action_noise must be finite"):
        train_controller(tiny_model, tmp_path / "bad", generations=1, action_noise=float("nan"), **TOY)
    rc = main(["train-controller", "--out", str(tmp_path / "cli"), "--action-noise", "-1", "--generations", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "action_noise must be a finite number >= 0" in err
    quiet = train_controller(tiny_model, tmp_path / "output", generations=1, eval_every=0, output_noise=0.4, **TOY)
    assert quiet.training["options"]["output_noise"] == 0.4
    with pytest.raises(CheckpointError, match="output_noise: 0.4 -> 0.0"):
        train_controller(tiny_model, tmp_path / "output", generations=2, eval_every=0, **TOY)
    rc = main(["train-controller", "--out", str(tmp_path / "cli"), "--output-noise", "-1", "--generations", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "output_noise must be a finite number >= 0" in err


def test_toy_run_logs_checkpoints_and_saves_the_best(tiny_model, tmp_path):
    out = tmp_path / "run"
    best = train_controller(tiny_model, out, generations=2, eval_every=2, eval_rollouts=4, **TOY)
    log = json.loads((out / "logs" / "cmaes.json").read_text())
    assert [e["generation"] for e in log] == [1, 2]
    assert {"best", "mean", "std", "sigma", "seconds"} <= set(log[0])
    assert "eval_es_mean" in log[1] and "eval_es_mean" not in log[0]
    loaded = LinearController.load(out)
    np.testing.assert_array_equal(loaded.flat(), best.flat())
    assert loaded.training["best_fitness"] == max(e["best"] for e in log)
    assert loaded.world_model["source"] == "in-memory" and loaded.temperature == 1.0
    assert LinearController.load(out / "mean").obs_dim == OBS_DIM
    # Weights and records are safetensors and JSON; the one pickle is pycma's own state, beside
    # the checkpoint, which is read back only with unsafe_pickle=True.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} == {".safetensors", ".json", ".pickle"}
    assert [p.relative_to(out).as_posix() for p in files if p.suffix == ".pickle"] == ["checkpoints/cmaes_es.pickle"]
    state = json.loads((out / "checkpoints" / "cmaes_state.json").read_text())
    assert state["generation"] == 2 and len(state["history"]) == 2


def test_select_controller_picks_the_es_mean_or_the_best_by_the_last_held_out_score(tiny_model, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="no controller in"):
        select_controller(out)
    train_controller(tiny_model, out, generations=2, eval_every=1, eval_rollouts=2, **TOY)
    log_path = out / "logs" / "cmaes.json"
    log = json.loads(log_path.read_text())
    assert all("eval_es_mean" in e for e in log)
    last = log[-1]
    expected = out / "mean" if last["eval_es_mean"] >= last["eval_best"] else out
    assert select_controller(out) == expected
    assert select_controller(str(out)) == expected  # a str works too
    assert LinearController.load(select_controller(out)).obs_dim == OBS_DIM

    def with_last_scores(es_mean, best, first=None):
        edited = json.loads(json.dumps(log))
        edited[-1].update(eval_es_mean=es_mean, eval_best=best)
        if first is not None:
            edited[0].update(eval_es_mean=first[0], eval_best=first[1])
        log_path.write_text(json.dumps(edited))
        return select_controller(out)

    assert with_last_scores(5.0, 4.0) == out / "mean"
    assert with_last_scores(4.0, 4.0) == out / "mean"  # a tie goes to the mean: its score is not a max of noisy ones
    assert with_last_scores(3.0, 4.0) == out
    # Only the last held-out evaluation counts.
    assert with_last_scores(3.0, 4.0, first=(9.0, 0.0)) == out
    assert with_last_scores(9.0, 0.0, first=(3.0, 4.0)) == out / "mean"
    # Generations without a held-out score are passed over.
    log_path.write_text(json.dumps([*json.loads(log_path.read_text()), {"generation": 3, "best": 1.0}]))
    assert select_controller(out) == out / "mean"
    # No held-out score at all, no log, or no ES mean saved: the best candidate.
    log_path.write_text(json.dumps([{k: v for k, v in e.items() if not k.startswith("eval_")} for e in log]))
    assert select_controller(out) == out
    log_path.unlink()
    assert select_controller(out) == out
    with_last_scores(5.0, 4.0)
    (out / "mean" / "controller.json").unlink()
    assert select_controller(out) == out


def test_resume_runs_only_the_missing_generations(tiny_model, tmp_path, monkeypatch):
    calls = []
    real = cmaes.evaluate_population
    monkeypatch.setattr(cmaes, "evaluate_population", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tmp_path / "run"
    train_controller(tiny_model, out, generations=1, eval_every=0, **TOY)
    first = json.loads((out / "logs" / "cmaes.json").read_text())
    assert len(calls) == 1
    train_controller(tiny_model, out, generations=2, eval_every=0, **TOY)
    log = json.loads((out / "logs" / "cmaes.json").read_text())
    assert len(calls) == 2 and len(log) == 2 and log[0] == first[0]
    done = train_controller(tiny_model, out, generations=2, eval_every=0, **TOY)
    assert len(calls) == 2  # all generations done: nothing runs
    assert done.training["generations_done"] == 2
    with pytest.raises(CheckpointError, match="popsize"):
        train_controller(tiny_model, out, generations=3, eval_every=0, **{**TOY, "popsize": 6})
    with pytest.raises(CheckpointError, match="different world model"):
        train_controller(make_tiny_model(seed=1), out, generations=3, eval_every=0, **TOY)


def gas_rewarded_model():
    """A tiny dream whose reward grows with gas: h[0] = tanh(tanh(gas)), reward = 10 * h[0], no termination."""
    model = make_tiny_model()
    hidden, z_dim = 16, 8
    lstm, head = model.rnn.lstm, model.rnn.head
    with torch.no_grad():
        for p in (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0):
            p.zero_()
        # Gates i, f, g, o: input gate open, forget gate shut, output gate open.
        lstm.bias_ih_l0[:hidden] = 10.0
        lstm.bias_ih_l0[hidden : 2 * hidden] = -10.0
        lstm.bias_ih_l0[3 * hidden :] = 10.0
        lstm.weight_ih_l0[2 * hidden, z_dim + 1] = 1.0  # gas drives cell 0
        head.weight[-2:] = 0.0
        head.weight[-2, 0] = 10.0
        head.bias[-2] = 0.0
        head.bias[-1] = -10.0
    return model


def test_cmaes_improves_fitness_in_a_simple_dream(tmp_path):
    out = tmp_path / "run"
    best = train_controller(
        gas_rewarded_model(), out, generations=6, popsize=8, rollouts=2, max_steps=10, sigma0=0.5,
        eval_every=0, progress=False,
    )
    log = json.loads((out / "logs" / "cmaes.json").read_text())
    assert log[-1]["mean"] > log[0]["mean"] + 1.0
    assert best.training["best_fitness"] > log[0]["best"]
    # The learnt controller presses the gas harder than the untrained one (gas 0.5).
    env = DreamCarRacingEnv(model=gas_rewarded_model(), max_episode_steps=None)
    obs, _ = env.reset(seed=0)
    assert best(obs)[1] > 0.5


def test_cli_train_controller(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main([
        "train-controller", "--model", str(tiny_model_dir), "--out", str(out), "--generations", "1",
        "--popsize", "4", "--rollouts", "2", "--max-steps", "5", "--eval-every", "0",
    ])
    assert rc == 0
    loaded = LinearController.load(out)
    assert loaded.world_model == {"model": str(tiny_model_dir.resolve()), "revision": None, "source": "path"}
    assert "saved in" in capsys.readouterr().out
    # Extended with --unsafe-pickle: pycma's own state is picked up (without it the covariance restarts).
    assert main([
        "train-controller", "--model", str(tiny_model_dir), "--out", str(out), "--generations", "2",
        "--popsize", "4", "--rollouts", "2", "--max-steps", "5", "--eval-every", "0", "--unsafe-pickle",
    ]) == 0
    assert LinearController.load(out).training["generations_done"] == 2
    assert "resuming CMA-ES exactly at generation 2/2" in capsys.readouterr().out


def _run_record(out):
    """What a CMA-ES run computed: its log without timings, and its ES mean and best parameters."""
    entries = json.loads((out / "logs" / "cmaes.json").read_text())
    log = [{k: v for k, v in e.items() if k != "seconds"} for e in entries]
    tensors = load_file(str(out / "checkpoints" / "cmaes.safetensors"))
    return log, tensors["mean"], tensors["best"]


def test_resume_with_unsafe_pickle_continues_exactly_and_without_it_restarts_the_covariance(tiny_model, tmp_path):
    options = {**TOY, "eval_every": 0}
    straight = tmp_path / "straight"
    train_controller(tiny_model, straight, generations=4, **options)
    expected_log, expected_mean, expected_best = _run_record(straight)

    exact = tmp_path / "exact"
    train_controller(tiny_model, exact, generations=2, **options)
    assert (exact / "checkpoints" / cmaes.ES_STATE_FILE).is_file()
    np.random.seed(12345)  # noqa: NPY002 - whatever else the process drew in between must not matter
    train_controller(tiny_model, exact, generations=4, unsafe_pickle=True, **options)
    log, mean, best = _run_record(exact)
    assert log == expected_log
    assert torch.equal(mean, expected_mean) and torch.equal(best, expected_best)

    # Without consent nothing is unpickled: the run goes on from mean and sigma, a different path.
    restarted = tmp_path / "restarted"
    train_controller(tiny_model, restarted, generations=2, **options)
    train_controller(tiny_model, restarted, generations=4, **options)
    log, mean, _ = _run_record(restarted)
    assert log[:2] == expected_log[:2] and len(log) == 4
    assert not torch.equal(mean, expected_mean)

    # A pycma state of another generation (a kill between the two writes) is passed over, as is a broken one.
    lagging = tmp_path / "lagging"
    train_controller(tiny_model, lagging, generations=2, **options)
    state_path = lagging / "checkpoints" / cmaes.ES_STATE_FILE
    state_path.write_bytes(pickle.dumps({**pickle.loads(state_path.read_bytes()), "generation": 1}))
    train_controller(tiny_model, lagging, generations=4, unsafe_pickle=True, **options)
    assert _run_record(lagging)[0] == log
    broken = tmp_path / "broken"
    train_controller(tiny_model, broken, generations=2, **options)
    (broken / "checkpoints" / cmaes.ES_STATE_FILE).write_bytes(b"not a pickle")
    train_controller(tiny_model, broken, generations=4, unsafe_pickle=True, **options)
    assert _run_record(broken)[0] == log
