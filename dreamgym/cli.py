"""The ``dreamgym`` command line: one subcommand per job."""

# Each _cmd_* imports what it runs when it runs, so that `dreamgym --help` and a mistyped
# command answer at once, without loading torch, Stable-Baselines3 or matplotlib.

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from dreamgym.backends import make_backend
from dreamgym.episodes import EpisodeSubset
from dreamgym.errors import DreamgymError
from dreamgym.validation import parse_start

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def _demo_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p, revision=False)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gif-steps", type=int, default=200)
    p.add_argument("--out", default="demo", help="folder for dream.gif and demo.json")
    p.add_argument("--max-steps", type=int, default=1000, help="episode length cap")
    p.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                   help="also drive the same agent in the real env from the same seed (about 10 s)")


def _cmd_demo(args: argparse.Namespace) -> int:
    """Drive one agent in the dream and in the real env from one seed; write a GIF of the dream."""
    from dreamgym.demo import run_demo

    run_demo(model=args.model, temperature=args.temperature, seed=args.seed, gif_steps=args.gif_steps,
             out=args.out, real=args.real, max_steps=args.max_steps)
    return 0


def _backend(args: argparse.Namespace) -> Any:
    """The backend --backend and --address ask for; a missing Ray becomes a one-line error."""
    try:
        return make_backend(args.backend, args.workers, args.address)
    except ImportError as err:
        raise ValueError(str(err)) from err


def _collect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="CarRacing-v3")
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--policy", default="random",
                   help="'random' (temporally correlated random actions), 'random?gas_mean=0.3&gas_mean_max=0.8', "
                        "'controller:DIR?noise=0.3' (a trained controller plus exploration noise; "
                        "DIR may be 'reference'), or 'replay:DATA' (the actions stored for each seed in DATA)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--out", required=True,
                   help="the episode store folder (with --backend ray: on storage every node sees)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="on resume, do not re-hash the stored shards of these seeds "
                        "(by default a corrupt one is collected again)")
    p.add_argument("--keep-dashboard", dest="crop_dashboard", action="store_false",
                   help="keep CarRacing's dashboard strip (speed, ABS, steering bars) in the frames; "
                        "by default it is cut, as the paper's V and the shipped models see them")
    _add_backend_args(p)


def _cmd_collect(args: argparse.Namespace) -> int:
    from dreamgym.data.collect import collect

    store = collect(
        env_id=args.env, episodes=args.episodes, out=args.out, workers=args.workers,
        policy=args.policy, seed=args.seed, max_steps=args.max_steps, backend=_backend(args), verify=args.verify,
        crop_dashboard=args.crop_dashboard,
    )
    print(f"{len(store)} episodes in {args.out}")
    return 0


def _verify_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="the episode store folder")
    p.add_argument("--repair", action="store_true",
                   help="delete corrupt shards (collect runs their seeds again) and list unlisted ones, "
                        "also when manifest.json was deleted")


def _cmd_verify_data(args: argparse.Namespace) -> int:
    from dreamgym.data.collect import verify_store

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good, problems, adopted = verify_store(args.data, repair=args.repair)
    for warning in caught:
        print(f"repaired: {warning.message}")
    if adopted:
        print(f"repaired: listed {len(adopted)} shards the manifest lacked (seeds {adopted[0]}..{adopted[-1]})")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    print(f"{len(good)} intact episodes in {args.data}; {len(problems)} problem(s)"
          + ("" if args.repair or not problems else "; run again with --repair to fix them"))
    return 1 if problems else 0


def _train_vae_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _cmd_train_vae(args: argparse.Namespace) -> int:
    from dreamgym.training.vae import train_vae

    train_vae(data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
              seed=args.seed, device=args.device, max_frames=args.max_frames)
    return 0


def _train_rnn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True)
    p.add_argument("--vae", required=True, help="folder with the trained V (written by train-vae)")
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--reward-weight", type=float, default=1.0, help="weight of the reward loss")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout on M's input and output while training (default: the V folder's config)")
    p.add_argument("--reward-overprediction-weight", type=float, default=1.0,
                   help="weight of reward over-predictions relative to under-predictions (pessimism; 1: plain MSE)")
    p.add_argument("--trajectory-starts", type=int, default=0,
                   help="store this many real trajectory states with the model, for start='trajectory' dreams")
    p.add_argument("--ensemble-size", type=int, default=1,
                   help="train this many Ms from seeds seed, seed+1, ... (an ensemble, for --ensemble dreams)")
    p.add_argument("--init-from", default=None,
                   help="fine-tune: start M from this world model's M (same V) instead of a fresh one")


def _cmd_train_rnn(args: argparse.Namespace) -> int:
    from dreamgym.training.rnn import train_rnn

    train_rnn(data=args.data, vae=args.vae, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
              seq_len=args.seq_len, lr=args.lr, seed=args.seed, device=args.device,
              reward_weight=args.reward_weight, dropout=args.dropout,
              reward_overprediction_weight=args.reward_overprediction_weight,
              trajectory_starts=args.trajectory_starts, ensemble_size=args.ensemble_size,
              init_from=args.init_from)
    return 0


def _export_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", help="the SB3 agent zip you trained, 'sb3:path/to/agent.zip' or the path itself")
    p.add_argument("--model", default=None,
                   help="the world model it was trained in (folder or Hub id; default: the shipped one)")
    p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub model")
    p.add_argument("--out", required=True, help="folder for policy.safetensors and policy.json")
    p.add_argument("--sample", action="store_true",
                   help="act by drawing from the policy's Gaussian, as predict(deterministic=False), not by its mean")


def _cmd_export_policy(args: argparse.Namespace) -> int:
    from dreamgym.agents.mlp_policy import MlpPolicyAgent, world_model_record
    from dreamgym.agents.sb3 import load_sb3_agent

    source = args.agent[len("sb3:"):] if args.agent.startswith("sb3:") else args.agent
    agent = load_sb3_agent(source, device="cpu")
    record = world_model_record(args.model, args.revision)
    exported = MlpPolicyAgent.from_sb3(agent, world_model=record, training={"exported_from": str(Path(source).name)},
                                       sample=args.sample)
    exported.save(args.out)
    how = ", drawing its actions from its Gaussian" if args.sample else ""
    print(f"exported {type(agent).__name__} policy {exported.sizes} ({exported.activation}{how}) to {args.out}")
    return 0


def _start_bank_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="a trained world model folder")
    p.add_argument("--data", required=True, help="the episode store to take real trajectories from")
    p.add_argument("--out", required=True, help="new folder for the world model with its bank")
    p.add_argument("--size", type=int, default=2048, help="states in the bank")
    p.add_argument("--burn-in", type=int, default=0,
                   help="real steps before the first state taken per episode (0: from the first frame on)")
    p.add_argument("--every", type=int, default=4, help="take a state every this many steps")
    p.add_argument("--only-seeds", default=None, metavar="FIRST:STOP",
                   help="take states only from the episodes with seeds in [FIRST, STOP), e.g. an agent's own driving")
    p.add_argument("--seed", type=int, default=0)


def _cmd_start_bank(args: argparse.Namespace) -> int:
    from dreamgym.training.rnn import add_trajectory_starts

    data: Any = args.data
    if args.only_seeds is not None:
        first, colon, stop = args.only_seeds.partition(":")
        if not colon or not first.isdigit() or not stop.isdigit() or int(stop) <= int(first):
            raise ValueError(f"--only-seeds must be FIRST:STOP with FIRST < STOP, got {args.only_seeds!r}")
        data = EpisodeSubset(args.data, range(int(first), int(stop)))
    model = add_trajectory_starts(model=args.model_dir, data=data, out=args.out, size=args.size,
                                  burn_in=args.burn_in, every=args.every, seed=args.seed)
    print(f"{model.config.num_trajectory_starts} trajectory starts added; world model saved in {args.out}")
    return 0


def _ensemble_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help="world model folders or Hub repo ids sharing one V; the first gives V and member 0")
    p.add_argument("--out", required=True, help="new folder for the world model with the ensemble of their Ms")
    p.add_argument("--revision", default=None, help="branch, tag or commit of the models given by Hub repo id")


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from dreamgym.training.ensemble import combine_world_models

    model = combine_world_models(args.models, args.out, revision=args.revision)
    print(f"an ensemble of {model.ensemble_size} Ms from {len(args.models)} world models saved in {args.out}; "
          "dream with it with ensemble=True")
    return 0


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True)


def _cmd_build(args: argparse.Namespace) -> int:
    from dreamgym.pipeline import build

    out = build(args.config)
    print(f"world model ready in {out}")
    return 0


def _metrics_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="world model folder or Hub repo id")
    p.add_argument("--data", required=True)


def _cmd_metrics(args: argparse.Namespace) -> int:
    from dreamgym.hub import load_world_model
    from dreamgym.training.metrics import evaluate_world_model

    model = load_world_model(args.model)
    metrics = evaluate_world_model(model, args.data)
    print(json.dumps(metrics, indent=2))
    return 0


def _card_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--ref", required=True, help="how users name the model in gym.make(model=...)")
    p.add_argument("--copy-to", nargs="*", default=[], help="extra paths for the card, e.g. model_cards/X.md")


def _cmd_card(args: argparse.Namespace) -> int:
    from dreamgym.card import make_model_card

    card = make_model_card(args.model_dir, model_ref=args.ref)
    for path in [Path(args.model_dir) / "README.md", *(Path(p) for p in args.copy_to)]:
        card.save(path)
        print(f"wrote {path}")
    return 0


def _package_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir")
    p.add_argument("--out", required=True)
    p.add_argument("--ref", default="org/name", help="how users name the model in gym.make(model=...)")
    p.add_argument("--data", default=None, help="episode store to re-measure the packaged weights on")
    p.add_argument("--fp32", action="store_true", help="keep float32 weights")
    p.add_argument("--card-copy", nargs="*", default=[], help="extra paths for the card, e.g. model_cards/X.md")
    p.add_argument("--controller", default=None,
                   help="train-controller folder to ship under controller/ "
                        "(its ES mean or best, by held-out dream score)")
    p.add_argument("--results", default=None, help="the controller's results.json from dreamgym evaluate, for the card")
    p.add_argument("--sweep", default=None,
                   help="temperature_sweep.json from examples/temperature_sweep.py, for the card")


def _cmd_package(args: argparse.Namespace) -> int:
    from dreamgym.pipeline import package_world_model

    dest = package_world_model(args.model_dir, args.out, model_ref=args.ref, data=args.data,
                               half=not args.fp32, card_copies=tuple(args.card_copy), controller=args.controller,
                               results=args.results, sweep=args.sweep)
    size = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    print(f"packaged {args.model_dir} into {dest} ({size:.1f} MiB)")
    return 0


def _train_controller_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True)
    _add_model_args(p)
    p.add_argument("--generations", type=int, default=200)
    p.add_argument("--popsize", type=int, default=64)
    p.add_argument("--rollouts", type=int, default=16, help="dream episodes per candidate per generation")
    p.add_argument("--sigma0", type=float, default=0.1)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=25, help="generations between held-out scores (0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--start", type=parse_start, default="first_frame",
                   help="dream episodes start at real first frames (first_frame), at real states along real "
                        "trajectories (trajectory), or a number p: from trajectory states with probability p")
    p.add_argument("--dropout", type=float, default=0.0, help="dream-time dropout of M, a new mask per episode")
    p.add_argument("--ensemble", action="store_true",
                   help="dream with the world model's ensemble of Ms (train-rnn --ensemble-size), "
                        "one member per episode")
    p.add_argument("--disagreement-penalty", type=float, default=0.0,
                   help="with --ensemble: reward minus this times the members' disagreement (MOPO-style pessimism)")
    p.add_argument("--action-noise", type=float, default=0.0,
                   help="std of Gaussian noise on every action in the dream, the same for every candidate on an "
                        "episode: candidates must drive well under it (the saved controller drives without it)")
    p.add_argument("--output-noise", type=float, default=0.0,
                   help="std of Gaussian noise on the controller's raw outputs before the squash into the action "
                        "space (PPO's fixed std for a linear controller; it can still keep the brake off)")
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="on resuming, unpickle pycma's saved state (checkpoints/cmaes_es.pickle) so that the run "
                        "goes on exactly; unpickling runs any code in the file, so only for a folder you trust "
                        "(by default the covariance restarts)")


def _cmd_train_controller(args: argparse.Namespace) -> int:
    from dreamgym.agents.cmaes import train_controller

    controller = train_controller(
        model=args.model, revision=args.revision, out=args.out, generations=args.generations,
        popsize=args.popsize, rollouts=args.rollouts, sigma0=args.sigma0, temperature=args.temperature,
        max_steps=args.max_steps, seed=args.seed, weight_decay=args.weight_decay, device=args.device,
        eval_every=args.eval_every, start=args.start, dropout=args.dropout, ensemble=args.ensemble,
        disagreement_penalty=args.disagreement_penalty, action_noise=args.action_noise,
        output_noise=args.output_noise, unsafe_pickle=args.unsafe_pickle,
    )
    summary = controller.training
    print(f"best controller (dream fitness {summary.get('best_fitness', float('nan')):.1f} after "
          f"{summary.get('generations_done', 0)} generations) saved in {args.out}")
    return 0


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", help="controller folder, 'reference', or 'sb3:path/to/agent.zip'")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--dream", action="store_true", help="also score it in the dream for the same seeds")
    p.add_argument("--temperature", type=float, default=1.0, help="the dream's temperature (with --dream)")
    _add_model_args(p, default="the controller's own, else the shipped one")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--out", default=None, help="results JSON file to write (a folder gets results.json)")
    _add_backend_args(p)
    _add_unsafe_pickle_arg(p)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dreamgym.agents.evaluate import evaluate

    try:
        result = evaluate(
            args.agent, episodes=args.episodes, seed=args.seed, workers=args.workers, model=args.model,
            revision=args.revision, dream=args.dream, temperature=args.temperature, max_steps=args.max_steps,
            out=args.out, backend=_backend(args), allow_pickle=args.unsafe_pickle,
        )
    except RuntimeError as err:  # a worker failed or died: its message says which episode
        print(f"dreamgym evaluate: error: {err}", file=sys.stderr)
        return 1
    print(f"real:  {result['mean']:.1f} +- {result['std']:.1f} over {result['episodes']} episodes "
          f"(seeds {result['seeds'][0]}..{result['seeds'][-1]})")
    if "dream" in result:
        print(f"dream: {result['dream']['mean']:.1f} +- {result['dream']['std']:.1f} at temperature "
              f"{result['temperature']}; gap (dream - real) {result['gap']:+.1f}")
    return 0


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("agent", help="controller folder, 'reference', or 'sb3:path/to/agent.zip'")
    _add_model_args(p, default="the controller's own, else the shipped one")
    p.add_argument("--episodes", type=int, default=5, help="real episodes, and as many dream episodes")
    p.add_argument("--seed", type=int, default=40000, help="episode i uses seed + i, in the dream and the real env")
    p.add_argument("--temperature", type=float, default=1.0, help="the dream's temperature")
    p.add_argument("--max-steps", type=int, default=1000)
    p.add_argument("--horizons", type=int, nargs="+", default=[50, 200],
                   help="dream steps of the open-loop branches from real states")
    p.add_argument("--branch-every", type=int, default=25, help="real steps between open-loop branch points")
    p.add_argument("--out", default="diagnose", help="folder for diagnose.json and diagnose.png")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    from dreamgym.agents.diagnose import diagnose, format_table

    result = diagnose(
        args.agent, model=args.model, revision=args.revision, episodes=args.episodes, seed=args.seed,
        temperature=args.temperature, max_steps=args.max_steps, horizons=args.horizons,
        branch_every=args.branch_every, out=args.out,
    )
    print(format_table(result))  # diagnose itself says on stderr where the JSON and the plot went
    return 0


def _play_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--real", action="store_true", help="the real CarRacing, shown beside V's reconstruction")
    p.add_argument("--agent", default=None,
                   help="controller folder, 'reference' or 'sb3:agent.zip' drives; 'm' toggles human takeover")
    _add_model_args(p)
    p.add_argument("--temperature", type=float, default=1.0, help="the dream's starting temperature (+/- keys)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fps", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--save-frame", default=None, help=argparse.SUPPRESS)
    _add_unsafe_pickle_arg(p)


def _cmd_play(args: argparse.Namespace) -> int:
    from dreamgym.play import play

    if args.temperature <= 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    summary = play(model=args.model, revision=args.revision, real=args.real, agent=args.agent,
                   temperature=args.temperature, seed=args.seed, fps=args.fps, max_steps=args.max_steps,
                   save_frame=args.save_frame, allow_pickle=args.unsafe_pickle)
    print(f"played {summary['ticks']} steps ({summary['episodes']} episodes ended); "
          f"current episode: {summary['steps']} steps, return {summary['return']:+.1f}")
    if args.save_frame:
        print(f"wrote {args.save_frame}")
    return 0


def _video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agent", default=None,
                   help="controller folder, 'reference' or 'sb3:path/to/agent.zip' (default: the reference controller)")
    _add_model_args(p, revision=False)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="seed of the real start (the track)")
    p.add_argument("--temperature", type=float, default=1.0, help="the dream's temperature")
    p.add_argument("--out", default="dream.mp4", help=".mp4 or .gif")
    p.add_argument("--scale", type=int, default=4, help="screen pixels per frame pixel")
    _add_unsafe_pickle_arg(p)


def _cmd_video(args: argparse.Namespace) -> int:
    from dreamgym.visualize import make_video

    path, frames = make_video(agent=args.agent, steps=args.steps, out=args.out, model=args.model, seed=args.seed,
                              temperature=args.temperature, scale=args.scale, allow_pickle=args.unsafe_pickle)
    size = f"{frames.shape[2]}x{frames.shape[1]}"
    print(f"wrote {path} ({len(frames)} frames of {size}: real | V reconstruction | dream)")
    return 0


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="world model folder (its logs/vae.json and logs/rnn.json give the curves)")
    p.add_argument("--data", default=None, help="episode store for the held-out images (skipped without it)")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the model folder)")
    p.add_argument("--controller", default=None, help="controller folder with logs/cmaes.json or training_log.json")


def _cmd_inspect(args: argparse.Namespace) -> int:
    from dreamgym.visualize import inspect_world_model

    inspect_world_model(args.model_dir, data=args.data, out=args.out, controller=args.controller)
    return 0


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", help="world model folder (written by save_pretrained or dreamgym package)")
    p.add_argument("--repo-id", required=True, help="Hub repo id, org/name")
    p.add_argument("--controller", default=None, help="controller folder to ship under controller/")
    p.add_argument("--results", default=None, help="results.json from dreamgym evaluate (adds mean_reward to the card)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--dry-run", default=None, metavar="OUT_DIR", help="only stage the repo folder in OUT_DIR")


def _cmd_push(args: argparse.Namespace) -> int:
    from dreamgym.push import check_repo_id, push_to_hub, stage_repo

    check_repo_id(args.repo_id)
    if args.dry_run:
        out = stage_repo(args.model_dir, args.dry_run, controller=args.controller, results=args.results,
                         repo_id=args.repo_id)
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            print(path.relative_to(out).as_posix())
        print(f"staged {args.repo_id} in {out} (dry run: nothing uploaded)")
        return 0
    url = push_to_hub(args.model_dir, args.repo_id, controller=args.controller, results=args.results,
                      private=args.private)
    print(f"pushed {args.model_dir} to {args.repo_id}: {url}")
    return 0


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="where episodes run: worker processes here (default), or Ray tasks on a cluster "
                        "(pip install \"dreamgym[ray]\")")
    p.add_argument("--address", default=None,
                   help="with --backend ray: the cluster, 'auto' or 'ray://host:10001' (default: RAY_ADDRESS, "
                        "else a cluster running on this machine, else a new one)")


def _add_model_args(p: argparse.ArgumentParser, default: str = "the shipped one", revision: bool = True) -> None:
    """``--model`` (and ``--revision``): the world model a command works in."""
    p.add_argument("--model", default=None, help=f"world model folder or Hub repo id (default: {default})")
    if revision:
        p.add_argument("--revision", default=None, help="branch, tag or commit of a Hub model")


def _add_unsafe_pickle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--unsafe-pickle", action="store_true",
                   help="load an sb3: agent with SB3's own load, which unpickles its zip and so runs any code in it; "
                        "only for files you trust (by default nothing is unpickled and such a zip is refused)")


T = TypeVar("T", bound="DataclassInstance")


def arg(default: Any, help: str) -> Any:
    """A dataclass field that carries its command-line help, for :func:`dataclass_args`.

    A list default is copied for each instance (``default_factory``), so it is never shared.
    """
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def dataclass_args(cls: type[T], description: str | None = None, argv: list[str] | None = None) -> T:
    """Parse command-line flags into the dataclass ``cls``, as the CleanRL-style examples declare them.

    Each field becomes ``--field-name`` with the field's default and type (``None`` defaults
    take a string, booleans become ``--flag/--no-flag``, lists take any number of strings); a
    field's ``metadata["help"]`` is its help text (declare such a field with :func:`arg`).
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = cls()
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, list):
            parser.add_argument(flag, nargs="*", type=str, default=default, help=help_text)
        else:
            parser.add_argument(flag, type=str if default is None else type(default), default=default, help=help_text)
    return cls(**vars(parser.parse_args(argv)))


class Command(NamedTuple):
    """A ``dreamgym`` subcommand: its name and help, what adds its arguments, and what runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# The subcommands, in the order `dreamgym --help` lists them.
COMMANDS = [
    Command("collect", "collect real rollouts into a resumable shard store", _collect_args, _cmd_collect),
    Command(
        "verify-data", "check every shard of an episode store against its manifest; --repair fixes it",
        _verify_data_args, _cmd_verify_data,
    ),
    Command("train-vae", "train V on collected frames (resumes from checkpoints)", _train_vae_args, _cmd_train_vae),
    Command(
        "train-rnn", "train M on V's latents of the collected episodes (resumes)",
        _train_rnn_args, _cmd_train_rnn,
    ),
    Command(
        "start-bank", "add a bank of real trajectory states to a world model (start='trajectory')",
        _start_bank_args, _cmd_start_bank,
    ),
    Command(
        "ensemble", "combine the Ms of world models that share V into one world model with an ensemble of M",
        _ensemble_args, _cmd_ensemble,
    ),
    Command(
        "export-policy", "export a trained SB3 agent's policy as safetensors + JSON (no pickle to load)",
        _export_policy_args, _cmd_export_policy,
    ),
    Command("build", "collect, train V and M from one YAML config; skips finished stages", _build_args, _cmd_build),
    Command(
        "metrics", "measure a world model on held-out episodes and print the metrics",
        _metrics_args, _cmd_metrics,
    ),
    Command(
        "package", "write a built world model as a shippable folder (fp16 weights, card)",
        _package_args, _cmd_package,
    ),
    Command("card", "write a world model's model card from its metrics and build record", _card_args, _cmd_card),
    Command("push", "upload a world model (card, metrics, previews, controller) to the Hub", _push_args, _cmd_push),
    Command(
        "train-controller", "train the linear controller in the dream with CMA-ES (resumes)",
        _train_controller_args, _cmd_train_controller,
    ),
    Command(
        "evaluate", "score an agent in RealCarRacing-v0 (and with --dream, the dream gap)",
        _evaluate_args, _cmd_evaluate,
    ),
    Command(
        "diagnose", "where the dream lies to an agent: M's predictions along its real trajectories",
        _diagnose_args, _cmd_diagnose,
    ),
    Command("play", "drive the dream (or, with --real, the real car) with the arrow keys", _play_args, _cmd_play),
    Command(
        "video", "video of real | V's reconstruction | open-loop dream from one real start",
        _video_args, _cmd_video,
    ),
    Command(
        "inspect", "reconstruction, open-loop and training-curve images of a world model",
        _inspect_args, _cmd_inspect,
    ),
    Command("demo", "dream one CarRacing episode on the default world model and write a GIF", _demo_args, _cmd_demo),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``dreamgym`` argument parser: ``--debug`` and one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="dreamgym", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", required=True)
    for spec in COMMANDS:
        command = sub.add_parser(spec.name, help=spec.help)
        spec.add_arguments(command)
        command.set_defaults(func=spec.run)
        # --debug after the subcommand too; SUPPRESS keeps the subcommand from resetting the main flag.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


# Commands that end on Ctrl-C with status 130 and, unless None (the command said where its
# work is), this line; any other command lets the KeyboardInterrupt through.
_INTERRUPTED = {
    "train-controller": None,
    "evaluate": "evaluation stopped, nothing written",
    "diagnose": "diagnosis stopped, nothing written",
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``dreamgym`` command; return its exit status.

    Every expected failure (a :class:`~dreamgym.errors.DreamgymError`, bad input raising
    ``ValueError``, a file-system ``OSError``) prints one line and exits with status 2;
    ``--debug`` (or ``DREAMGYM_DEBUG=1``) shows its traceback instead. Anything else is a
    bug, and its traceback is shown.
    """
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    debug = getattr(args, "debug", False) or os.environ.get("DREAMGYM_DEBUG", "") not in ("", "0")
    try:
        return func(args)
    except KeyboardInterrupt:
        if args.command not in _INTERRUPTED:
            raise
        if _INTERRUPTED[args.command] is not None:
            print(f"\ninterrupted: {_INTERRUPTED[args.command]}", file=sys.stderr)
        return 130
    except (DreamgymError, ValueError, OSError) as err:
        # Bad input, a corrupt or unsafe file, finished work in the way: one clear line, not a traceback.
        if debug:
            raise
        message = str(err) or type(err).__name__
        print(f"dreamgym {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
