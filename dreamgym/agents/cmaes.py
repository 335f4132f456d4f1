"""Training the linear controller inside the dream with CMA-ES, as Ha & Schmidhuber did.

Each generation, pycma proposes ``popsize`` parameter vectors; every one of them drives
``rollouts`` dream episodes, and its fitness is the mean return. The whole population is
evaluated as ONE batched :class:`~dreamgym.envs.dynamics.LatentDream` of
``popsize * rollouts`` episodes, so a generation costs ``max_steps`` batched torch calls
rather than ``popsize * rollouts * max_steps`` small ones.

Common random numbers: within a generation every member drives the same ``rollouts``
episodes (same start latent, same dream noise), so members are compared on equal footing
and the ranking pycma sees is far less noisy. Episode ``r`` of generation ``g`` is the dream
``DreamCarRacingEnv().reset(seed=s)`` gives for the env seed ``s`` listed in
:func:`generation_seeds` ``(seed, g, rollouts)[r]``, so any rollout can be replayed in the
single env.

Checkpoints hold the ES mean, its step size sigma and the best parameters found so far
(safetensors + a JSON sidecar, written atomically). pycma serialises its full state
(covariance matrix, evolution paths) only through pickle, so that state is written beside
the checkpoint (``checkpoints/cmaes_es.pickle``, with numpy's global random state, which
pycma draws from) but read back only when the caller passes ``unsafe_pickle=True``:
unpickling runs whatever code the file names, so it is for folders you wrote yourself.
With it, a resumed run continues exactly as if it had never stopped; without it, CMA-ES
restarts from the saved mean and sigma with a fresh, isotropic covariance, which it
re-learns within a few dozen generations.
"""

from __future__ import annotations

import math
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from gymnasium.utils import seeding
from tqdm.auto import tqdm

from dreamgym.agents.controller import (
    CONTROLLER_CONFIG_FILE,
    LinearController,
    population_actions,
    unflatten_population,
)
from dreamgym.checkpoints import (
    CHECKPOINT_DIR,
    LOG_DIR,
    module_fingerprint,
    read_checkpoint,
    run_stage,
    write_checkpoint,
)
from dreamgym.envs.common import CONTINUOUS_HIGH, CONTINUOUS_LOW
from dreamgym.envs.dynamics import (
    LatentDream,
    check_dropout,
    check_ensemble,
    check_start,
    check_temperature,
    episode_keys,
)
from dreamgym.errors import CheckpointError
from dreamgym.files import atomic_write, read_json
from dreamgym.hub import ModelSource, load_world_model
from dreamgym.models.world_model import WorldModel
from dreamgym.validation import check_int, check_number, pick_device

__all__ = ["dream_keys", "evaluate_population", "generation_seeds", "select_controller", "train_controller"]

STAGE = "cmaes"
CMAES_CHECKPOINT_FORMAT = 1
_TRAIN_STREAM, _EVAL_STREAM = 0, 1
# Options that change what a generation computes: a checkpoint made with others cannot be resumed.
SNAPSHOT_DIR = "snapshots"
ES_STATE_FILE = "cmaes_es.pickle"
_RESUME_OPTIONS = (
    "popsize", "rollouts", "temperature", "max_steps", "seed", "weight_decay", "start", "dropout",
    "ensemble", "disagreement_penalty", "action_noise", "output_noise",
)
# Options added after the first release: a checkpoint that lacks them was made with these.
_NEW_OPTION_DEFAULTS = {
    "start": "first_frame", "dropout": 0.0, "ensemble": False, "disagreement_penalty": 0.0, "action_noise": 0.0,
    "output_noise": 0.0,
}


# ------------------------------------------------------------------ seeds and keys
def generation_seeds(seed: int, generation: int, rollouts: int) -> list[int]:
    """Env seeds of the ``rollouts`` dream episodes every member drives in ``generation`` (0-based)."""
    state = np.random.SeedSequence([seed, _TRAIN_STREAM, generation]).generate_state(rollouts, dtype=np.uint32)
    return [int(s) for s in state]


def _eval_seeds(seed: int, episodes: int) -> list[int]:
    # The same episodes at every evaluation, so the scores of successive evaluations compare.
    return [int(s) for s in np.random.SeedSequence([seed, _EVAL_STREAM]).generate_state(episodes, dtype=np.uint32)]


def dream_keys(seeds: Sequence[int]) -> np.ndarray:
    """The dream RNG keys that ``DreamCarRacingEnv.reset(seed=s)`` uses for each env seed ``s``."""
    return episode_keys([seeding.np_random(int(s))[0] for s in seeds])


# ----------------------------------------------------------------------- rollouts
@torch.inference_mode()
def evaluate_population(
    world_model: WorldModel,
    params: np.ndarray,
    seeds: Sequence[int],
    temperature: float = 1.0,
    max_steps: int = 1000,
    return_lengths: bool = False,
    start: str | float = "first_frame",
    dropout: float = 0.0,
    ensemble: bool = False,
    disagreement_penalty: float = 0.0,
    action_noise: float = 0.0,
    output_noise: float = 0.0,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Dream returns of ``P`` controllers, each on the same episodes (one per env seed).

    All ``P * len(seeds)`` episodes run as one :class:`LatentDream` batch on the world
    model's device. There is no autoreset: once an episode terminates its return is frozen
    and its row keeps stepping unseen until the batch is done (or all rows have ended).

    Args:
        world_model: the dream.
        params: (P, 3 * obs_dim + 3) flat controller parameters (see ``LinearController.flat``).
        seeds: env seeds of the episodes; episode ``r`` of every member is the dream
            ``DreamCarRacingEnv().reset(seed=seeds[r])`` starts.
        temperature: the dream's temperature tau.
        max_steps: truncation horizon.
        return_lengths: also return the episodes' lengths.
        start: where dream episodes start, ``"first_frame"``, ``"trajectory"`` or the fraction of trajectory starts.
        dropout: dream-time dropout of M, one mask per episode.
        ensemble: dream with the world model's ensemble of Ms, one member per episode.
        disagreement_penalty: with ``ensemble``, rewards minus this times the members'
            disagreement (see :class:`~dreamgym.envs.dynamics.LatentDream`).
        action_noise: the std of Gaussian noise added to every action, which is then clipped
            to the action space: the counterpart of a PPO policy's fixed std. Episode ``r``
            gets the same noise for every member, drawn from ``seeds``, so members are still
            compared on equal terms.
        output_noise: the std of Gaussian noise added to the controller's raw outputs,
            before the squash into the action space: PPO's Gaussian is drawn around an
            unbounded mean and then clipped, and this is its counterpart for the linear
            controller. Unlike ``action_noise`` a candidate can keep the brake off under it
            (a raw brake far below 0 stays below 0), where noise added after the squash
            brakes on half of all steps whatever the candidate does. Drawn like ``action_noise``,
            from its own stream.

    Returns:
        float64 (P, len(seeds)) returns, and with ``return_lengths`` int64 (P, len(seeds)) lengths.
    """
    cfg = world_model.config
    obs_dim = cfg.z_dim + cfg.rnn_hidden
    params = np.atleast_2d(np.asarray(params))
    population, rollouts = len(params), len(seeds)
    device = world_model.device
    weights, biases = (t.to(device) for t in unflatten_population(params, obs_dim))

    n = population * rollouts
    dream = LatentDream(
        world_model, n, temperature, start=start, dropout=dropout, ensemble=ensemble,
        disagreement_penalty=disagreement_penalty,
    )
    # Row p * rollouts + r is member p's episode r: every member gets the same keys.
    dream.reset(np.arange(n), np.tile(dream_keys(seeds), population))
    returns = torch.zeros(n, dtype=torch.float64, device=device)
    alive = torch.ones(n, dtype=torch.bool, device=device)
    lengths = torch.zeros(n, dtype=torch.int64, device=device)
    noise = _ActionNoise(seeds, action_noise, device) if action_noise > 0 else None
    raw_noise = _EpisodeNoise(seeds, output_noise, device, stream=4) if output_noise > 0 else None
    z, h = dream.z, dream.h
    for _ in range(max_steps):
        obs = torch.cat([z, h], dim=1).view(population, rollouts, obs_dim)
        actions = population_actions(weights, biases, obs, raw_noise.draw() if raw_noise is not None else None)
        if noise is not None:
            actions = noise(actions)
        actions = actions.reshape(n, 3)
        out = dream.step(actions)
        # The reward of the terminating step still counts, as in the env.
        returns += torch.where(alive, out.reward.double(), 0.0)
        lengths += alive
        alive &= ~out.terminated
        if not alive.any():
            break
        z, h = out.z, out.h
    returns_array = returns.view(population, rollouts).cpu().numpy()
    if return_lengths:
        return returns_array, lengths.view(population, rollouts).cpu().numpy()
    return returns_array


class _EpisodeNoise:
    """Gaussian noise of std ``std``, (R, 3) per step: row ``r`` for episode ``r`` of every member.

    Drawn from ``seeds`` and ``stream`` alone, so that the same episodes get the same noise
    (members compare on equal terms, a rerun is the same), and on the CPU, so that a run's
    noise does not depend on the device it dreams on.
    """

    def __init__(self, seeds: Sequence[int], std: float, device: torch.device, stream: int) -> None:
        entropy = np.random.SeedSequence([stream, *map(int, seeds)]).generate_state(1)[0]
        self.generator = torch.Generator().manual_seed(int(entropy))
        self.std, self.rollouts, self.device = std, len(seeds), device

    def draw(self) -> torch.Tensor:
        """This step's (R, 3) float32 noise."""
        return self.std * torch.randn(self.rollouts, 3, generator=self.generator).to(self.device)


class _ActionNoise(_EpisodeNoise):
    """Gaussian action noise for :func:`evaluate_population`, the same for every member on an episode."""

    def __init__(self, seeds: Sequence[int], std: float, device: torch.device) -> None:
        super().__init__(seeds, std, device, stream=3)
        self.low = torch.as_tensor(CONTINUOUS_LOW, device=device)
        self.high = torch.as_tensor(CONTINUOUS_HIGH, device=device)

    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """(P, R, 3) float32 actions plus this step's (R, 3) noise, clipped to CarRacing's action space."""
        return torch.clamp(actions + self.draw(), self.low, self.high)


# -------------------------------------------------------------------- checkpoints
def _save_checkpoint(out: Path, mean: np.ndarray, best: np.ndarray, state: dict[str, Any]) -> None:
    tensors = {
        "mean": torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float64)),
        "best": torch.from_numpy(np.ascontiguousarray(best, dtype=np.float32)),
    }
    write_checkpoint(out, STAGE, tensors, state, CMAES_CHECKPOINT_FORMAT)


def _es_state_path(out: Path) -> Path:
    return out / CHECKPOINT_DIR / ES_STATE_FILE


def _save_es_state(out: Path, generation: int, es: Any) -> None:
    # numpy's global generator goes with it: pycma draws its candidates from np.random.
    blob = pickle.dumps({"generation": generation, "es": es, "np_random": np.random.get_state()})  # noqa: NPY002 - pycma's generator
    atomic_write(_es_state_path(out), blob)


def _load_es_state(out: Path, generation: int) -> Any | None:
    """The pycma ES saved after ``generation`` (numpy's global generator restored with it), or None."""
    path = _es_state_path(out)
    if not path.is_file():
        return None
    try:
        saved = pickle.loads(path.read_bytes())  # only reached with unsafe_pickle=True
    except Exception as err:  # any unpickling failure means: no usable state
        tqdm.write(f"pycma state {str(path)!r} is unreadable ({type(err).__name__}); restarting the covariance")
        return None
    if not isinstance(saved, dict) or saved.get("generation") != generation:
        return None  # written for another generation: the run was killed between the two writes
    np.random.set_state(saved["np_random"])  # noqa: NPY002 - pycma's generator
    return saved["es"]


def _load_checkpoint(out: Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
    checkpoint = read_checkpoint(out, STAGE, CMAES_CHECKPOINT_FORMAT)
    if checkpoint is None:
        return None
    tensors, state = checkpoint
    if not {"mean", "best"} <= set(tensors):
        raise CheckpointError(
            f"CMA-ES checkpoint in {str(out)!r} lacks 'mean' or 'best'; delete it to train from scratch"
        )
    return tensors["mean"].numpy(), tensors["best"].numpy(), state


def _describe_model(model: ModelSource, revision: str | None) -> dict[str, Any]:
    """How ``controller.json`` names the world model, so that evaluation can load it again."""
    if isinstance(model, WorldModel):
        return {"model": None, "revision": None, "source": "in-memory"}
    if model is None:
        return {"model": None, "revision": None, "source": "default"}
    text = os.fspath(model)
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        # Absolute, so that evaluating from another working directory finds it.
        return {"model": str(Path(expanded).resolve()), "revision": None, "source": "path"}
    return {"model": text, "revision": revision, "source": "hub"}


def _cma_seed(seed: int, generation: int) -> int:
    # pycma treats seed 0 (and None) as "seed from the clock"; derive a positive seed per
    # (run seed, start generation) so that a run and its resumption are each reproducible.
    return int(np.random.SeedSequence([seed, 2, generation]).generate_state(1, dtype=np.uint32)[0] % (2**31 - 2)) + 1


# ------------------------------------------------------------------------ training
def _checked_options(
    generations: int,
    popsize: int,
    rollouts: int,
    sigma0: float,
    temperature: float,
    max_steps: int,
    seed: int,
    weight_decay: float,
    eval_every: int,
    eval_rollouts: int,
    dropout: float,
    action_noise: float = 0.0,
    output_noise: float = 0.0,
) -> dict[str, Any]:
    """The options of :func:`train_controller` that need no world model, checked."""
    options = {
        "generations": check_int("generations", generations, 0),
        "popsize": check_int("popsize", popsize, 2),
        "rollouts": check_int("rollouts", rollouts, 1),
        "max_steps": check_int("max_steps", max_steps, 1),
        "eval_every": check_int("eval_every", eval_every or 0, 0),
        "eval_rollouts": check_int("eval_rollouts", eval_rollouts, 1),
        "seed": check_int("seed", seed, 0),
        "temperature": check_temperature(temperature),
        "dropout": check_dropout(dropout),
    }
    if not (math.isfinite(sigma0) and sigma0 > 0):
        raise ValueError(f"sigma0 must be a finite number > 0, got {sigma0!r}")
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    for name, value in (("action_noise", action_noise), ("output_noise", output_noise)):
        options[name] = check_number(name, value)
        if options[name] < 0:
            raise ValueError(f"{name} must be a finite number >= 0 (the std of the noise), got {value!r}")
    return options


class _ControllerRun:
    """One :func:`train_controller` run: the dream, its options, the ES and the best candidate so far.

    ``options`` are saved in the checkpoint and the controllers' records, in this key order.
    """

    def __init__(
        self,
        world_model: WorldModel,
        out: Path,
        options: dict[str, Any],
        record: dict[str, Any],
        device: torch.device,
        progress: bool,
    ) -> None:
        self.world_model, self.out, self.options = world_model, out, options
        self.record, self.device, self.progress = record, device, progress
        self.fingerprint = module_fingerprint(world_model)
        n_params = options["n_params"]
        self.done = 0
        self.history: list[dict[str, Any]] = []
        self.mean, self.sigma = np.zeros(n_params), float(options["sigma0"])
        self.best_params, self.best_fitness = np.zeros(n_params, dtype=np.float32), -math.inf
        self.es: Any = None

    def controller(self, params: np.ndarray, history: list[dict[str, Any]], **score: Any) -> LinearController:
        """A controller of ``params``, recording the run so far (``history``) and ``score``."""
        summary = {
            "algorithm": "CMA-ES (pycma)",
            "generations_done": len(history),
            **score,
            "options": self.options,
            "world_model_fingerprint": self.fingerprint,
            "device": str(self.device),
        }
        return LinearController.from_flat(
            params, self.options["obs_dim"], world_model=self.record, temperature=self.options["temperature"],
            training=summary,
        )

    def best(self) -> LinearController:
        """The best candidate so far, as ``out`` holds it."""
        return self.controller(
            self.best_params, self.history, selected="best candidate", best_fitness=self.best_fitness
        )

    def resume(self) -> None:
        """Pick up the run from the checkpoint in ``out``, if any, refusing one of another model or options."""
        checkpoint = _load_checkpoint(self.out)
        if checkpoint is None:
            return
        self.mean, self.best_params, state = checkpoint
        where = self.out / CHECKPOINT_DIR
        if state.get("world_model_fingerprint") != self.fingerprint:
            raise CheckpointError(
                f"the CMA-ES checkpoint in {where} was trained in a different world model; "
                "use another output folder or delete the checkpoint to start over"
            )
        saved, options = state.get("options", {}), self.options
        changed = [
            f"{k}: {saved.get(k, _NEW_OPTION_DEFAULTS.get(k))!r} -> {options[k]!r}"
            for k in _RESUME_OPTIONS
            if saved.get(k, _NEW_OPTION_DEFAULTS.get(k)) != options[k]
        ]
        if changed or len(self.mean) != options["n_params"]:
            raise CheckpointError(
                f"the CMA-ES checkpoint in {where} was made with other options ({'; '.join(changed)}); "
                "pass the same options to resume, or use another output folder"
            )
        self.done, self.history = int(state["generation"]), list(state["history"])
        self.sigma, self.best_fitness = float(state["sigma"]), float(state["best_fitness"])
        # The controller in `out` may lag its checkpoint if a run was killed between the two writes.
        self.best().save(self.out)

    def evolution_strategy(self, unsafe_pickle: bool) -> Any:
        """The pycma ES to run the generations left with: the saved one (``unsafe_pickle``), else a new one."""
        import cma  # deferred: pycma takes most of a second to import, and only training needs it

        if self.done and unsafe_pickle:
            es = _load_es_state(self.out, self.done)
            if es is not None:
                if self.progress:
                    tqdm.write(f"resuming CMA-ES exactly at generation {self.done + 1}/{self.options['generations']}")
                return es
        if self.done and self.progress:
            how = "" if unsafe_pickle else "; pass unsafe_pickle (--unsafe-pickle) to resume pycma's saved state"
            tqdm.write(
                f"resuming CMA-ES at generation {self.done + 1}/{self.options['generations']} "
                f"(covariance restarts from identity{how})"
            )
        cma_options = {"popsize": self.options["popsize"], "seed": _cma_seed(self.options["seed"], self.done),
                       "verbose": -9}
        return cma.CMAEvolutionStrategy(self.mean, self.sigma, cma_options)

    def dream_returns(self, params: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """(P, len(seeds)) dream returns of the controllers ``params`` on the episodes of ``seeds``."""
        o = self.options
        returns = evaluate_population(
            self.world_model, params, seeds, o["temperature"], o["max_steps"], start=o["start"],
            dropout=o["dropout"], ensemble=o["ensemble"], disagreement_penalty=o["disagreement_penalty"],
            action_noise=o["action_noise"], output_noise=o["output_noise"],
        )
        return cast(np.ndarray, returns)

    def generation(self, index: int) -> dict[str, Any]:
        """Run generation ``index`` (0-based): ask, score in the dream, tell; return its log entry."""
        o, es = self.options, self.es
        started = time.perf_counter()
        candidates = np.asarray(es.ask())
        fitness = self.dream_returns(candidates, generation_seeds(o["seed"], index, o["rollouts"])).mean(axis=1)
        penalty = o["weight_decay"] * np.mean(candidates**2, axis=1)
        es.tell(list(candidates), list(-(fitness - penalty)))
        top = int(np.argmax(fitness))
        if fitness[top] > self.best_fitness:
            self.best_fitness = float(fitness[top])
            # float32, as the controller holds it: the candidate was scored with these very values.
            self.best_params = candidates[top].astype(np.float32)
        entry: dict[str, Any] = {
            "generation": index + 1,
            "best": float(fitness[top]),
            "mean": float(fitness.mean()),
            "std": float(fitness.std()),
            "worst": float(fitness.min()),
            "best_ever": self.best_fitness,
            "sigma": float(es.sigma),
        }
        if o["eval_every"] and ((index + 1) % o["eval_every"] == 0 or index + 1 == o["generations"]):
            self.evaluate_held_out(index, entry)
        entry["seconds"] = time.perf_counter() - started
        return entry

    def evaluate_held_out(self, index: int, entry: dict[str, Any]) -> None:
        """Score the ES mean and the best candidate on the held-out episodes into ``entry``; save the mean."""
        held_out = self.dream_returns(
            np.stack([self.es.mean, self.best_params]), _eval_seeds(self.options["seed"], self.options["eval_rollouts"])
        )
        entry.update(
            eval_es_mean=float(held_out[0].mean()), eval_es_mean_std=float(held_out[0].std()),
            eval_best=float(held_out[1].mean()), eval_best_std=float(held_out[1].std()),
        )
        mean_controller = self.controller(
            np.asarray(self.es.mean), [*self.history, entry], selected="ES mean", held_out_return=entry["eval_es_mean"]
        )
        mean_controller.save(self.out / "mean")
        # Kept per generation, so that the real score can be traced against dream
        # training afterwards: where it peaks is what the dream's exploitation costs.
        mean_controller.save(self.out / SNAPSHOT_DIR / f"generation-{index + 1:04d}")

    def save(self, history: list[dict[str, Any]]) -> None:
        """Checkpoint the run after the last generation of ``history``, then save the best candidate."""
        state = {
            "generation": history[-1]["generation"],
            "sigma": float(self.es.sigma),
            "best_fitness": self.best_fitness,
            "history": history,
            "options": self.options,
            "world_model": self.record,
            "world_model_fingerprint": self.fingerprint,
        }
        # pycma's state, then the checkpoint: a kill between them leaves a pycma state of a
        # generation the checkpoint does not hold, which resume sees and passes over.
        _save_es_state(self.out, state["generation"], self.es)
        # Checkpoint before the controller: a kill between them leaves a controller that resume rewrites.
        _save_checkpoint(self.out, np.asarray(self.es.mean), self.best_params, state)
        self.best().save(self.out)  # `history` is the run's own

    def report(self, bar: Any, entry: dict[str, Any]) -> None:
        """Show a finished generation on the progress bar (and its held-out scores above it)."""
        bar.set_postfix(
            best=f"{entry['best']:.1f}", mean=f"{entry['mean']:.1f}", best_ever=f"{self.best_fitness:.1f}",
            sigma=f"{entry['sigma']:.3f}", s_per_gen=f"{entry['seconds']:.1f}", refresh=False,
        )
        bar.update(1)
        if "eval_es_mean" in entry and self.progress:
            tqdm.write(
                f"generation {entry['generation']}: held-out dream return of the ES mean {entry['eval_es_mean']:.1f}, "
                f"of the best candidate {entry['eval_best']:.1f} ({self.options['eval_rollouts']} episodes)"
            )

    def run(self, es: Any) -> LinearController:
        """Run the generations left with the evolution strategy ``es``; return the best candidate."""
        self.es = es
        total = self.options["generations"]
        with tqdm(total=total, initial=self.done, desc="CMA-ES", unit="gen", disable=not self.progress) as bar:
            run_stage(
                self.out, STAGE, what="CMA-ES", unit="generation", done=self.done, total=total,
                history=self.history, step=self.generation, save=self.save,
                report=lambda entry: self.report(bar, entry),
            )
        return self.best()


def train_controller(
    model: ModelSource = None,
    out: str | os.PathLike | None = None,
    generations: int = 200,
    popsize: int = 64,
    rollouts: int = 16,
    sigma0: float = 0.1,
    temperature: float = 1.0,
    max_steps: int = 1000,
    seed: int = 0,
    weight_decay: float = 0.01,
    device: str | torch.device | None = None,
    progress: bool = True,
    eval_every: int = 25,
    eval_rollouts: int = 256,
    revision: str | None = None,
    start: str | float = "first_frame",
    dropout: float = 0.0,
    ensemble: bool = False,
    disagreement_penalty: float = 0.0,
    action_noise: float = 0.0,
    output_noise: float = 0.0,
    unsafe_pickle: bool = False,
) -> LinearController:
    """Train the paper's linear controller in the dream with CMA-ES and save the best one to ``out``.

    Each generation, the ``popsize`` candidates (pycma's ``CMAEvolutionStrategy`` from a zero
    vector with step size ``sigma0``) each drive the same ``rollouts`` dream episodes, all in
    one batch; a candidate's fitness is its mean return. pycma minimises
    ``-(fitness - weight_decay * mean(params ** 2))``, the L2 penalty of the paper's code.

    Written to ``out`` after every generation (each file atomically):

    - ``controller.safetensors`` + ``controller.json``: the best candidate so far (highest
      generation fitness, without the penalty), loadable with ``LinearController.load(out)``;
    - ``checkpoints/cmaes.safetensors`` + ``cmaes_state.json``: ES mean, sigma, best
      parameters, generation, history and options;
    - ``checkpoints/cmaes_es.pickle``: pycma's whole state, read only with ``unsafe_pickle``;
    - ``logs/cmaes.json``: one entry per generation (generation, best, mean, std, sigma,
      seconds, and every ``eval_every`` generations the scores of the ES mean and of the best
      candidate on ``eval_rollouts`` fixed held-out dream episodes).

    Every ``eval_every`` generations the ES mean is also saved as a controller in ``out/mean``
    and in ``out/snapshots/generation-NNNN``:
    the best candidate's fitness is the maximum of noisy estimates and so biased upwards, and
    the mean is often the better controller; the held-out scores in the log tell which.

    Calling again with the same ``out`` resumes after the last finished generation, and
    does nothing if all ``generations`` are done. Raising ``generations`` extends a run. The
    resumed run is the one that never stopped with ``unsafe_pickle=True``; without it pycma
    restarts from the saved mean and sigma with a fresh covariance (see the module doc).

    Args:
        model: the world model to dream in: a :class:`~dreamgym.WorldModel`, a folder, a
            Hub repo id, or None for the one shipped with dreamgym.
        out: output folder.
        generations: total number of CMA-ES generations.
        popsize: candidates per generation.
        rollouts: dream episodes per candidate per generation.
        sigma0: initial CMA-ES step size.
        temperature: the dream's temperature tau (the paper trains at 1.15 for Doom).
        max_steps: steps per dream episode.
        seed: seeds pycma and the episodes of each generation.
        weight_decay: L2 penalty coefficient on the parameters.
        device: torch device of the dream; None picks CUDA when available, else CPU.
        progress: show a tqdm bar over generations.
        eval_every: generations between held-out evaluations; 0 for none.
        eval_rollouts: dream episodes per held-out evaluation.
        revision: branch, tag or commit when ``model`` is a Hub repo id.
        start: where dream episodes start: ``"first_frame"`` (the paper) or
            ``"trajectory"`` (real states along real trajectories; pair it with a short
            ``max_steps``, so that the fitness averages many short segments), or a number ``p``:
            from trajectory states with probability ``p``, else from first frames.
        dropout: dream-time dropout of M, a new mask per episode (Dropout's Dream Land).
        ensemble: dream with the world model's ensemble of Ms (``train-rnn
            --ensemble-size K``), one member drawn per episode, so that a candidate scores well
            only by driving well under every member.
        disagreement_penalty: with ``ensemble``, each step's reward minus this times the
            members' disagreement (MOPO's pessimism; see
            :class:`~dreamgym.envs.dynamics.LatentDream`).
        action_noise: the std of Gaussian noise added to every action in the dream (then
            clipped to the action space), so that a candidate scores well only by driving well
            under that much noise, as PPO with a fixed std does. The saved controller drives
            without it. Measured in v1's dream at 1.0: a negative result, since noise after
            the squash brakes on half of all steps whatever a candidate does.
        output_noise: the std of Gaussian noise added to the controller's raw outputs
            before the squash (see :func:`evaluate_population`): the closer counterpart of
            PPO's fixed std, under which a candidate can still keep the brake off.
        unsafe_pickle: on resuming, unpickle pycma's saved state, so that the run goes on
            exactly; unpickling runs any code in the file, so only for a folder you trust.

    Returns:
        the best controller found.
    """
    if out is None:
        raise TypeError("train_controller() needs out= (the output folder)")
    checked = _checked_options(
        generations, popsize, rollouts, sigma0, temperature, max_steps, seed, weight_decay, eval_every, eval_rollouts,
        dropout, action_noise, output_noise,
    )
    out = Path(out)
    device = pick_device(device)
    world_model = load_world_model(model, revision=revision, device=str(device))
    check_start(start, world_model)
    ensemble, disagreement_penalty = check_ensemble(ensemble, disagreement_penalty, world_model)
    obs_dim = world_model.config.z_dim + world_model.config.rnn_hidden
    options = {
        **{k: checked[k] for k in ("popsize", "rollouts", "temperature", "max_steps", "seed")},
        "weight_decay": weight_decay, "sigma0": sigma0,
        **{k: checked[k] for k in ("generations", "eval_every", "eval_rollouts")},
        "obs_dim": obs_dim, "n_params": 3 * obs_dim + 3,
        "start": start, "dropout": checked["dropout"],
        "ensemble": ensemble, "disagreement_penalty": disagreement_penalty,
        "action_noise": checked["action_noise"], "output_noise": checked["output_noise"],
    }
    run = _ControllerRun(world_model, out, options, _describe_model(model, revision), device, progress)
    run.resume()
    if run.done >= options["generations"]:
        return run.best()
    return run.run(run.evolution_strategy(unsafe_pickle))


def select_controller(out: str | os.PathLike) -> Path:
    """The controller of a :func:`train_controller` run to use: the ES mean or the best candidate.

    The best candidate's score is the maximum of many noisy estimates and so flatters it; the
    run's last held-out evaluation scores both on the same fixed dream episodes. This returns
    ``out / "mean"`` when the ES mean scored at least as well there, else ``out``.

    Raises:
        FileNotFoundError: ``out`` holds no controller.
    """
    out = Path(out)
    if not (out / CONTROLLER_CONFIG_FILE).is_file():
        raise FileNotFoundError(f"no controller in {str(out)!r}: run `dreamgym train-controller --out {out}` first")
    history = read_json(out / LOG_DIR / f"{STAGE}.json", "CMA-ES log", expect=list, default=[])
    evaluated = [e for e in history if isinstance(e, dict) and "eval_es_mean" in e]
    if (
        evaluated
        and (out / "mean" / CONTROLLER_CONFIG_FILE).is_file()
        and evaluated[-1]["eval_es_mean"] >= evaluated[-1]["eval_best"]
    ):
        return out / "mean"
    return out
