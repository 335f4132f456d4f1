"""Ensembles of M.

One batched step for all members, the ensemble dream and its disagreement penalty, the envs
and agents that pass it on, saving and loading, and training K members.
"""

from __future__ import annotations

import hashlib
import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import dreamgym  # noqa: F401  (registers the envs)
from dreamgym import WorldModel, WorldModelConfig
from dreamgym.agents.cmaes import evaluate_population, train_controller
from dreamgym.cli import main
from dreamgym.config import ConfigError
from dreamgym.envs.dynamics import LatentDream
from dreamgym.envs.observer import teacher_forced_states
from dreamgym.errors import ArgumentError
from dreamgym.models.mdnrnn import MDNRNN, StackedMDNRNN, mixture_mean
from dreamgym.models.world_model import WorldModelFormatError
from dreamgym.training import CheckpointError, train_rnn
from dreamgym.training import rnn as rnn_module
from dreamgym.training.common import seed_everything
from dreamgym.training.ensemble import combine_world_models
from dreamgym.training.rnn import add_trajectory_starts

from conftest import TINY_CONFIG, make_tiny_model
from test_dream_to_real import with_bank
from test_training import RNN_ARGS, make_store

K = 3
BANK = 12
Z, H = TINY_CONFIG["z_dim"], TINY_CONFIG["rnn_hidden"]


def ensemble_model(k: int = K, copies: bool = False, seed: int = 0) -> WorldModel:
    """A tiny world model with k Ms whose dreams do not end at once; ``copies``: all members are member 0."""
    model = make_tiny_model(seed, ensemble_size=k)
    with torch.no_grad():
        for member in model.members:
            if copies:
                member.load_state_dict(model.rnn.state_dict())
            member.head.bias[-1] = -10.0
    return model


def with_member_bank(model: WorldModel, n: int = BANK, seed: int = 0) -> WorldModel:
    g = torch.Generator().manual_seed(seed)
    others = (n, model.ensemble_size - 1, H)
    model.set_trajectory_starts(
        torch.randn(n, Z, generator=g), torch.full((n, Z), -3.0),
        torch.rand(n, H, generator=g) * 2 - 1, torch.randn(n, H, generator=g),
        member_h=torch.rand(others, generator=g) * 2 - 1, member_c=torch.randn(others, generator=g),
    )
    return model


def keys(n: int, start: int = 1) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def actions(n_steps: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform([-1, 0, 0], [1, 1, 1], (n_steps, n, 3)).astype(np.float32)


# ----------------------------------------------------------------------------- the batched step
def test_batched_member_step_equals_each_member_alone():
    model = ensemble_model()
    stack = StackedMDNRNN(model.members)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, Z + 3, generator=g)
    h, c = torch.rand(K, 5, H, generator=g) * 2 - 1, torch.randn(K, 5, H, generator=g)
    h_all, c_all = stack.step(x, h, c)
    per_member_x = torch.randn(K, 5, Z + 3, generator=g)
    h_own, _ = stack.step(per_member_x, h, c)
    heads = stack.heads(h_all)
    assert h_all.shape == c_all.shape == (K, 5, H) and heads.mu.shape == (K, 5, Z, TINY_CONFIG["num_mixtures"])
    for k, member in enumerate(model.members):
        h_k, c_k = member.step(x[:, :Z], x[:, Z:], h[k], c[k])
        torch.testing.assert_close(h_all[k], h_k, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(c_all[k], c_k, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h_own[k], member.step(per_member_x[k, :, :Z], per_member_x[k, :, Z:], h[k], c[k])[0],
                                   rtol=1e-5, atol=1e-6)
        for got, want in zip(heads, member.heads(h_k), strict=True):
            torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-5)
    # The members really are different networks, so the equality above is per member.
    assert (h_all[0] - h_all[1]).abs().max() > 1e-3


# ----------------------------------------------------------------------------- a single M is untouched
# What the dream of make_tiny_model() gave before ensembles existed (first 6 obs values after 12
# steps, last 3 rewards), for a first-frame dream and for trajectory starts with dropout.
GOLDEN = {
    "first_frame": ([-0.45407766103744507, 1.0484520196914673, 1.0977064371109009, 0.9891820549964905,
                     0.18559697270393372, 0.4320031702518463],
                    [-0.12491539865732193, -0.15554438531398773, -0.2500855624675751]),
    "trajectory": ([-0.24456943571567535, 0.34815195202827454, 0.3875523805618286, 0.49966010451316833,
                    -0.03259465843439102, 0.03280796855688095],
                   [-0.1779279261827469, -0.2187722623348236, -0.2649492919445038]),
}
# sha256 of that model's config.json as written before ensembles existed (less the weights'
# checksum, which follows the platform's float rounding of the random init).
GOLDEN_CONFIG_SHA256 = "feb9b6d194775376d64c9fc5e526dfa8bae34cc7df70b0bbd5613d3abda88955"


def golden_run(model: WorldModel, **kwargs) -> tuple[np.ndarray, list[float]]:
    env = gym.make("dreamgym/DreamCarRacing-v0", model=model, **kwargs)
    obs, _ = env.reset(seed=11)
    rng, rewards = np.random.default_rng(3), []
    for _ in range(12):
        obs, reward, *_ = env.step(rng.uniform([-1, 0, 0], [1, 1, 1]).astype(np.float32))
        rewards.append(reward)
    return obs, rewards


def test_single_m_dream_and_config_are_unchanged(tmp_path):
    for name, model, kwargs in (("first_frame", make_tiny_model(), {}),
                                ("trajectory", with_bank(make_tiny_model()), {"start": "trajectory", "dropout": 0.2})):
        obs, rewards = golden_run(model, **kwargs)
        np.testing.assert_allclose(obs[:6], GOLDEN[name][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(rewards[-3:], GOLDEN[name][1], rtol=1e-5, atol=1e-6)
    make_tiny_model().save_pretrained(tmp_path / "plain")
    config = json.loads((tmp_path / "plain" / "config.json").read_text())
    del config["weights_sha256"]
    assert hashlib.sha256(json.dumps(config, indent=2, sort_keys=True).encode()).hexdigest() == GOLDEN_CONFIG_SHA256
    assert not any("member" in name for name in load_file(tmp_path / "plain" / "model.safetensors"))
    # Reset draws no member lane unless the ensemble is on: every other draw stays where it was.
    single, ensemble = LatentDream(ensemble_model(), 2), LatentDream(ensemble_model(), 2, ensemble=True)
    for dream in (single, ensemble):
        dream.reset(np.arange(2), keys(2))
    assert (ensemble.counters - single.counters == 1).all()
    # A model with an ensemble, dreaming without it, dreams exactly as its member 0 alone does.
    plain = make_tiny_model()
    plain.rnn.load_state_dict(ensemble.model.rnn.state_dict())
    plain.start_mu.copy_(ensemble.model.start_mu)
    z = []
    for model in (plain, ensemble.model):
        dream = LatentDream(model, 4, temperature=1.3)
        dream.reset(np.arange(4), keys(4))
        z.append(torch.stack([dream.step(torch.from_numpy(a)).z for a in actions(6, 4)]))
    assert torch.equal(z[0], z[1])


# ----------------------------------------------------------------------------- the ensemble dream
def test_each_episode_draws_one_member_and_keeps_it():
    dream = LatentDream(ensemble_model(), 60, ensemble=True)
    dream.reset(np.arange(60), keys(60))
    drawn = dream.member.clone()
    assert sorted(drawn.unique().tolist()) == list(range(K))  # different episodes, different members
    for a in actions(5, 60):
        dream.step(torch.from_numpy(a))
    assert torch.equal(dream.member, drawn)
    # A new episode in some slots draws anew from its key; the others keep theirs.
    dream.reset(np.arange(30), keys(30, start=1000))
    assert torch.equal(dream.member[30:], drawn[30:]) and not torch.equal(dream.member[:30], drawn[:30])
    again = LatentDream(ensemble_model(), 30, ensemble=True)
    again.reset(np.arange(30), keys(30, start=1000))
    assert torch.equal(again.member, dream.member[:30])


def test_next_z_reward_and_termination_are_the_drawn_members_and_h_is_member_0s():
    model = ensemble_model()
    with torch.no_grad():  # termination probabilities that differ between members
        for k, member in enumerate(model.members):
            member.head.bias[-1] = -1.0 + k
    n = 8
    dream = LatentDream(model, n, temperature=1.2, ensemble=True)
    dream.reset(np.arange(n), keys(n))
    steps = actions(6, n)
    for a in steps[:2]:  # let the members' states drift apart first
        dream.step(torch.from_numpy(a))
    members = dream.member.tolist()
    assert len(set(members) - {0}) > 0
    # Each episode replayed by a one-M dream of its own member, at the same state and noise.
    singles = []
    for b, m in enumerate(members):
        alone = make_tiny_model()
        alone.rnn.load_state_dict(model.members[m].state_dict())
        single = LatentDream(alone, 1, temperature=1.2)
        single.reset([0], keys(n)[b : b + 1])
        single.set_state([0], dream.z[b : b + 1], dream.member_h[m, b : b + 1], dream.member_c[m, b : b + 1])
        single.counters[:] = dream.counters[b]
        singles.append(single)
    h0, c0 = dream.member_h[0].clone(), dream.member_c[0].clone()
    for a in steps[2:]:
        z_before = dream.z.clone()
        out = dream.step(torch.from_numpy(a))
        h0, c0 = model.rnn.step(z_before, torch.from_numpy(a), h0, c0)
        torch.testing.assert_close(out.h, h0, rtol=1e-5, atol=1e-5)  # the observed h: member 0's
        assert torch.equal(out.h, dream.member_h[0])
        for b, single in enumerate(singles):
            alone = single.step(torch.from_numpy(a[b : b + 1]))
            torch.testing.assert_close(out.z[b : b + 1], alone.z, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out.reward[b : b + 1], alone.reward, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out.termination_probability[b : b + 1], alone.termination_probability,
                                       rtol=1e-4, atol=1e-6)


def test_disagreement_is_zero_for_copies_positive_otherwise_and_the_penalty_takes_exactly_lambda_u():
    n = 16
    copies = LatentDream(ensemble_model(copies=True), n, ensemble=True)
    copies.reset(np.arange(n), keys(n))
    for a in actions(4, n):
        assert copies.step(torch.from_numpy(a)).disagreement.abs().max() < 1e-5
    model = ensemble_model()
    plain, penalised = (LatentDream(model, n, ensemble=True, disagreement_penalty=p) for p in (0.0, 2.5))
    for dream in (plain, penalised):
        dream.reset(np.arange(n), keys(n))
    for a in actions(4, n):
        a = torch.from_numpy(a)
        out, pen = plain.step(a), penalised.step(a)
        u = out.disagreement
        assert (u > 1e-3).all()
        assert torch.equal(pen.disagreement, u) and torch.equal(pen.z, out.z)  # the dynamics are untouched
        assert torch.equal(pen.reward, out.reward - 2.5 * u)
        # u as documented: a member's largest distance from the ensemble's mean prediction of
        # the next z, plus the members' std of the reward.
        with torch.inference_mode():
            heads = [member.heads(plain.member_h[k]) for k, member in enumerate(model.members)]
        means = torch.stack([mixture_mean(h) for h in heads])
        rewards = torch.stack([h.reward for h in heads])
        expected = (means - means.mean(0)).norm(dim=-1).amax(0) + rewards.std(0, unbiased=False)
        torch.testing.assert_close(u, expected, rtol=1e-4, atol=1e-5)


def test_trajectory_starts_start_each_member_from_its_own_state():
    model = with_member_bank(ensemble_model())
    dream = LatentDream(model, 40, start="trajectory", ensemble=True)
    dream.reset(np.arange(40), keys(40))
    match = (dream.member_h[0][:, None, :] == model.trajectory_h[None]).all(-1)
    assert match.any(1).all()
    index = match.float().argmax(1)
    assert torch.equal(dream.h, model.trajectory_h[index]) and torch.equal(dream.c, model.trajectory_c[index])
    assert torch.equal(dream.member_h[1:], model.trajectory_member_h[index].transpose(0, 1))
    assert torch.equal(dream.member_c[1:], model.trajectory_member_c[index].transpose(0, 1))
    assert len(index.unique()) > BANK // 2


# ----------------------------------------------------------------------------- envs and agents
@pytest.mark.parametrize("start", ["first_frame", "trajectory", 0.5])
def test_vector_and_sb3_sub_envs_equal_single_envs_with_an_ensemble(start):
    from dreamgym.sb3 import DreamVecEnv

    model = with_member_bank(ensemble_model())
    kwargs = dict(model=model, start=start, dropout=0.2, ensemble=True, disagreement_penalty=0.5, max_episode_steps=30)
    vec = gym.make_vec("dreamgym/DreamCarRacing-v0", num_envs=3, **kwargs)
    sb3 = DreamVecEnv(n_envs=3, seed=5, **kwargs)
    assert sb3.get_attr("ensemble") == [True] * 3 and sb3.get_attr("disagreement_penalty") == [0.5] * 3
    steps = actions(8, 3, seed=1)
    seen = {"vec": [vec.reset(seed=5)[0]], "sb3": [sb3.reset()]}
    rewards, disagreement = {"vec": [], "sb3": []}, {"vec": [], "sb3": []}
    for a in steps:
        obs, reward, _, _, info = vec.step(a)
        seen["vec"].append(obs), rewards["vec"].append(reward), disagreement["vec"].append(info["disagreement"])
        sb3.step_async(a)
        obs, reward, _, infos = sb3.step_wait()
        seen["sb3"].append(obs), rewards["sb3"].append(reward)
        disagreement["sb3"].append([i["disagreement"] for i in infos])
    for i in range(3):
        env = gym.make("dreamgym/DreamCarRacing-v0", **kwargs)
        single, single_rewards, single_u = [env.reset(seed=5 + i)[0]], [], []
        for a in steps:
            obs, reward, _, _, info = env.step(a[i])
            single.append(obs), single_rewards.append(reward), single_u.append(info["disagreement"])
        for name in ("vec", "sb3"):
            np.testing.assert_allclose(np.stack(seen[name])[:, i], np.stack(single), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.stack(rewards[name])[:, i], single_rewards, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.stack(disagreement[name])[:, i], single_u, rtol=1e-4, atol=1e-5)
        assert min(single_u) > 0


def test_cmaes_trains_with_an_ensemble_from_the_cli_and_records_it(tmp_path):
    model = ensemble_model()
    folder = tmp_path / "wm"
    model.save_pretrained(folder)
    params = np.random.default_rng(0).normal(0, 0.1, (3, 3 * (Z + H) + 3))
    plain = evaluate_population(model, params, [1, 2], max_steps=10, ensemble=True)
    penalised = evaluate_population(model, params, [1, 2], max_steps=10, ensemble=True, disagreement_penalty=1.0)
    assert (penalised < plain - 1e-3).all()
    assert main(["train-controller", "--out", str(tmp_path / "c"), "--model", str(folder), "--generations", "2",
                 "--popsize", "4", "--rollouts", "2", "--max-steps", "10", "--eval-every", "1",
                 "--ensemble", "--disagreement-penalty", "0.5"]) == 0
    state = json.loads((tmp_path / "c" / "checkpoints" / "cmaes_state.json").read_text())
    assert state["generation"] == 2
    assert state["options"]["ensemble"] is True and state["options"]["disagreement_penalty"] == 0.5
    with pytest.raises(CheckpointError, match="disagreement_penalty: 0.5 -> 0.25"):
        train_controller(str(folder), tmp_path / "c", generations=3, popsize=4, rollouts=2, max_steps=10,
                         eval_every=1, progress=False, ensemble=True, disagreement_penalty=0.25)


# ----------------------------------------------------------------------------- saving and loading
def test_ensemble_round_trips_and_strict_loading_refuses_a_missing_member(tmp_path):
    model = with_member_bank(ensemble_model())
    model.save_pretrained(tmp_path / "ens")
    assert json.loads((tmp_path / "ens" / "config.json").read_text())["ensemble_size"] == K
    loaded = WorldModel.from_pretrained(tmp_path / "ens")
    assert loaded.ensemble_size == K and len(loaded.members) == K
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    z = []
    for m in (model, loaded):
        dream = LatentDream(m, 4, start="trajectory", ensemble=True)
        dream.reset(np.arange(4), keys(4))
        z.append(torch.stack([dream.step(torch.from_numpy(a)).z for a in actions(5, 4)]))
    assert torch.equal(z[0], z[1])
    weights, config_file = tmp_path / "ens" / "model.safetensors", tmp_path / "ens" / "config.json"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if not k.startswith("rnn_members.1.")}, weights)
    config = json.loads(config_file.read_text())
    del config["weights_sha256"]  # past the checksum, to the strict check of the tensors
    config_file.write_text(json.dumps(config))
    with pytest.raises(WorldModelFormatError, match=r"missing tensors \['rnn_members\.1\.head\.bias'"):
        WorldModel.from_pretrained(tmp_path / "ens")
    # The members' tensors in a single M's folder are unexpected, not silently ignored.
    del config["ensemble_size"], config["num_trajectory_starts"]
    config_file.write_text(json.dumps(config))
    save_file({k: v for k, v in tensors.items() if not k.startswith("trajectory_")}, weights)
    with pytest.raises(WorldModelFormatError, match=r"unexpected tensors \['rnn_members\.0\."):
        WorldModel.from_pretrained(tmp_path / "ens")


# ----------------------------------------------------------------------------- training
def test_train_rnn_trains_distinct_members_resumes_after_member_0_and_banks_every_member(tmp_path, monkeypatch):
    store = make_store(tmp_path / "data")
    out = tmp_path / "wm"
    make_tiny_model().save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    config["training"] = {"vae": {"epochs": 0}}  # the tiny V counts as trained here
    (out / "config.json").write_text(json.dumps(config))
    step = rnn_module.rnn_step
    trained: list[torch.nn.Module] = []

    def interrupt_at_member_1(rnn, *args, **kwargs):
        if rnn not in trained:
            trained.append(rnn)
        if len(trained) == 2:
            raise KeyboardInterrupt
        return step(rnn, *args, **kwargs)

    monkeypatch.setattr(rnn_module, "rnn_step", interrupt_at_member_1)
    args = dict(epochs=2, ensemble_size=2, trajectory_starts=10, **RNN_ARGS)
    with pytest.raises(KeyboardInterrupt):
        train_rnn(store, out, out, **args)
    checkpoints = out / "checkpoints"
    assert (checkpoints / "rnn.safetensors").is_file() and not (checkpoints / "rnn-member-1.safetensors").exists()
    member_0 = {k.removeprefix("model."): v for k, v in load_file(checkpoints / "rnn.safetensors").items()
                if k.startswith("model.")}

    calls: list[torch.nn.Module] = []
    initial: dict[str, torch.Tensor] = {}

    def record(rnn, *a, **k):
        if not calls:
            initial.update({name: t.detach().clone() for name, t in rnn.state_dict().items()})
        calls.append(rnn)
        return step(rnn, *a, **k)

    monkeypatch.setattr(rnn_module, "rnn_step", record)
    model = train_rnn(store, out, out, **args)
    assert calls and all(rnn is model.rnn_members[0] for rnn in calls)  # member 0 was not retrained
    seed_everything(1)  # member 1 starts from seed + 1
    fresh = MDNRNN(Z, 3, H, TINY_CONFIG["num_mixtures"])
    assert all(torch.equal(initial[name], t) for name, t in fresh.state_dict().items())
    for name, tensor in model.rnn.state_dict().items():
        assert torch.equal(tensor, member_0[name])
    assert json.loads((checkpoints / "rnn-member-1_state.json").read_text())["epoch"] == 2
    assert (out / "logs" / "rnn-member-1.json").is_file()
    # Two different Ms from seeds 0 and 1.
    assert not torch.allclose(model.rnn.head.weight, model.rnn_members[0].head.weight)
    loaded = WorldModel.from_pretrained(out)
    record = loaded.config.training["rnn"]
    assert loaded.ensemble_size == 2 and record["ensemble_size"] == 2
    assert [(m["stage"], m["seed"], m["epochs_done"]) for m in record["members"]] == [("rnn", 0, 2),
                                                                                       ("rnn-member-1", 1, 2)]
    calls.clear()
    train_rnn(store, out, out, **args)
    assert not calls  # finished members are loaded, never trained again
    # The bank holds each member's own teacher-forced states; start-bank builds it the same way.
    banked = add_trajectory_starts(out, store, tmp_path / "banked", size=8, burn_in=5, every=3,
                                   holdout=RNN_ARGS["holdout"], progress=False)
    for m in (loaded, banked):
        assert m.trajectory_member_h.shape == (m.config.num_trajectory_starts, 1, H)
        states = []
        for episode in store:
            z = m.encode(np.asarray(episode.frames))[0]
            states.append(teacher_forced_states(m.rnn_members[0], z, torch.as_tensor(episode.actions))[0])
        states = torch.cat(states)
        distance = (m.trajectory_member_h[:, 0, None, :] - states[None]).abs().amax(-1).amin(-1)
        assert distance.max() < 1e-5
        assert (m.trajectory_member_h[:, 0] - m.trajectory_h).abs().max() > 1e-3


# ----------------------------------------------------------------------------- bad input
def test_bad_ensemble_input_is_refused_with_the_fix(tiny_model, tmp_path):
    for size in (0, 17, True, 2.0):
        with pytest.raises(ConfigError, match=r"'ensemble_size' must be an integer in \[1, 16\]"):
            WorldModelConfig(**TINY_CONFIG, ensemble_size=size)
    with pytest.raises(ValueError, match="has a single M; train one with `dreamgym train-rnn --ensemble-size K`"):
        gym.make("dreamgym/DreamCarRacing-v0", model=tiny_model, ensemble=True)
    model = ensemble_model()
    for penalty, error in ((-1.0, ValueError), (float("nan"), ValueError), ("1", ArgumentError)):
        with pytest.raises(error, match="disagreement_penalty must be a finite number >= 0"):
            LatentDream(model, 1, ensemble=True, disagreement_penalty=penalty)
    with pytest.raises(ValueError, match="disagreement_penalty needs ensemble=True"):
        LatentDream(model, 1, disagreement_penalty=0.5)
    with pytest.raises(ArgumentError, match="ensemble must be True or False"):
        LatentDream(model, 1, ensemble="yes")
    with pytest.raises(ValueError, match=r"trajectory starts need member_h and member_c of shape \(4, 2, 16\)"):
        model.set_trajectory_starts(torch.zeros(4, Z), torch.zeros(4, Z), torch.zeros(4, H), torch.zeros(4, H))
    with pytest.raises(ValueError, match=r"trajectory start member_h must have shape \(4, 2, 16\)"):
        model.set_trajectory_starts(torch.zeros(4, Z), torch.zeros(4, Z), torch.zeros(4, H), torch.zeros(4, H),
                                    torch.zeros(4, 1, H), torch.zeros(4, 2, H))
    dream = LatentDream(model, 2, ensemble=True)
    dream.reset(np.arange(2), keys(2))
    with pytest.raises(ValueError, match="an ensemble dream needs member_h and member_c"):
        dream.set_state([0], torch.zeros(1, Z), torch.zeros(1, H), torch.zeros(1, H))
    dream.set_state([1], torch.zeros(1, Z), torch.full((1, H), 0.5), torch.zeros(1, H),
                    torch.full((1, K - 1, H), -0.5), torch.ones(1, K - 1, H))
    assert (dream.member_h[0, 1] == 0.5).all() and (dream.member_h[1:, 1] == -0.5).all()
    assert (dream.member_c[1:, 1] == 1.0).all() and (dream.member_h[:, 0] == 0.0).all()
    with pytest.raises(ValueError, match=r"ensemble_size must be an int in \[1, 16\], got 0"):
        train_rnn(tmp_path, tmp_path, tmp_path, ensemble_size=0)
    with pytest.raises(ValueError, match="needs ensemble=True"):
        evaluate_population(model, np.zeros((1, 3 * (Z + H) + 3)), [0], max_steps=1, disagreement_penalty=1.0)


def test_train_rnn_cli_passes_the_ensemble_size_and_refuses_a_bad_one(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(rnn_module, "train_rnn", lambda **kwargs: seen.update(kwargs))
    assert main(["train-rnn", "--data", str(tmp_path), "--vae", str(tmp_path), "--out", str(tmp_path),
                 "--ensemble-size", "4"]) == 0
    assert seen["ensemble_size"] == 4
    monkeypatch.undo()
    assert main(["train-rnn", "--data", str(tmp_path), "--vae", str(tmp_path), "--out", str(tmp_path),
                 "--ensemble-size", "0"]) == 2
    assert "ensemble_size must be an int in [1, 16], got 0" in capsys.readouterr().err


# ---------------------------------------------------------- ensembles of separate runs
def _with_v_of(model: WorldModel, source: WorldModel) -> WorldModel:
    model.vae.load_state_dict(source.vae.state_dict())
    return model


def test_combine_world_models_makes_one_ensemble_of_their_ms_that_dreams(tmp_path):
    first = with_member_bank(ensemble_model(2, seed=0))  # an ensemble itself, with a bank
    second = _with_v_of(make_tiny_model(seed=1), first)
    first.save_pretrained(tmp_path / "a")
    second.save_pretrained(tmp_path / "b")
    combined = combine_world_models([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")

    loaded = WorldModel.from_pretrained(tmp_path / "ab")
    assert loaded.ensemble_size == 3
    sources = [*first.members, second.rnn]
    for member, source in zip(loaded.members, sources, strict=True):
        for (name, got), want in zip(member.state_dict().items(), source.state_dict().values(), strict=True):
            assert torch.equal(got, want), name
    assert torch.equal(loaded.start_mu, first.start_mu)
    assert not loaded.has_trajectory_starts  # the bank held the first model's Ms' states only
    assert [entry["members"] for entry in loaded.config.training["ensemble_of"]] == [2, 1]
    assert combined.config.training == loaded.config.training
    # The sources are untouched, and the combined model dreams with every member.
    assert WorldModel.from_pretrained(tmp_path / "a").ensemble_size == 2
    dream = LatentDream(loaded, 64, ensemble=True)
    dream.reset(np.arange(64), keys(64))
    assert set(dream.member.tolist()) == {0, 1, 2}


def test_combine_world_models_refuses_another_v_one_model_and_a_finished_out(tmp_path, capsys):
    make_tiny_model(seed=0).save_pretrained(tmp_path / "a")
    make_tiny_model(seed=1).save_pretrained(tmp_path / "other-v")
    with pytest.raises(ValueError, match="an ensemble needs at least two world models, got 1"):
        combine_world_models([tmp_path / "a"], tmp_path / "out")
    with pytest.raises(ValueError, match="V of .*other-v.* differs from V of"):
        combine_world_models([tmp_path / "a", tmp_path / "other-v"], tmp_path / "out")
    with pytest.raises(ValueError, match="already holds a world model; give a new folder"):
        combine_world_models([tmp_path / "a", tmp_path / "a"], tmp_path / "other-v")
    assert not (tmp_path / "out").exists()
    assert main(["ensemble", str(tmp_path / "a"), str(tmp_path / "other-v"), "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from V of" in err[0]
