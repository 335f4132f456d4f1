"""Scoring an SB3 agent on the real car while it trains in the dream, on validation seeds.

An agent trained in a dream does well in the real env only up to a point: past it, it learns
to exploit M's mistakes, its dream return climbs and its real return falls. The checkpoint to
keep is therefore chosen by real returns, and to keep that choice honest it is made on
*validation* seeds, which are never the seeds a final score is reported on.

:class:`RealValidationCallback` saves the agent every ``eval_freq`` dream steps, scores the
checkpoint over the validation seeds in ``dreamgym/RealCarRacing-v0`` (in parallel worker
processes, through :func:`~dreamgym.agents.evaluate.evaluate`), logs it to SB3's logger, and
keeps the best one as ``best_model.zip``. Everything it measured is in ``validation.json``:
the real score against dream training, the curve users need to see.

With ``sample=True`` a checkpoint is scored as ``dreamgym export-policy --sample`` will drive
it: its actions drawn from the policy's Gaussian (the policy PPO optimised), not its mean,
with the noise seeded by each episode's seed. The exported policy is kept beside the zip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from dreamgym.agents.cmaes import SNAPSHOT_DIR, STAGE
from dreamgym.agents.evaluate import evaluate
from dreamgym.agents.mlp_policy import MlpPolicyAgent, world_model_record
from dreamgym.checkpoints import CHECKPOINT_DIR, checkpoint_paths
from dreamgym.files import atomic_write, atomic_write_json, read_json
from dreamgym.validation import check_int

#: The first of the real validation seeds of dreamgym's own experiments; the final test
#: seeds (:data:`TEST_SEED`) are disjoint from them and are never used for any choice.
VALIDATION_SEED = 20_000
TEST_SEED = 30_000
VALIDATION_FILE = "validation.json"


class RealValidationCallback(BaseCallback):
    """Save, score on real validation seeds, and keep the best, every ``eval_freq`` dream steps.

    Args:
        out: folder for ``checkpoints/step-N.zip``, ``best_model.zip`` and ``validation.json``.
        model: the world model the agent sees the real car through: the dream's own.
        eval_freq: dream timesteps (summed over envs) between validations.
        episodes: real validation episodes per checkpoint; episode ``i`` has seed ``seed + i``.
        seed: first validation seed.
        workers: real episodes run at once, in worker processes.
        max_steps: real episode length cap.
        dream: also score each checkpoint in the first-frame dream at ``temperature`` for the
            same seeds, so ``validation.json`` holds the dream-vs-real gap as training goes on.
        temperature: the dream's temperature for ``dream``.
        sample: score each checkpoint drawing its actions from the policy's Gaussian, as the
            policy exported with ``sample=True`` drives (PPO/A2C ``MlpPolicy``); the exported
            policy is saved as ``checkpoints/step-N-sample``.
        verbose: print a line per validation.
    """

    def __init__(
        self,
        out: str | os.PathLike,
        model: Any,
        eval_freq: int,
        episodes: int = 30,
        seed: int = VALIDATION_SEED,
        workers: int = 2,
        max_steps: int = 1000,
        dream: bool = True,
        temperature: float = 1.0,
        sample: bool = False,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        eval_freq, episodes = check_int("eval_freq", eval_freq, 1), check_int("episodes", episodes, 1)
        self.out = Path(out)
        self.world_model = model
        self.eval_freq, self.episodes, self.seed, self.workers = eval_freq, episodes, seed, workers
        self.max_steps, self.dream, self.temperature = max_steps, dream, temperature
        self.sample = bool(sample)
        self.history: list[dict[str, Any]] = []
        self.best_mean = -float("inf")
        self._next = eval_freq

    def resume(self, timesteps: int) -> None:
        """Go on with a run trained to ``timesteps`` dream steps whose ``validation.json`` is in ``out``.

        Its history is kept (entries scored on other validation seeds or episodes are refused,
        not mixed in), and the next validation is the first multiple of ``eval_freq`` past
        ``timesteps``, so a run trained on in a second process scores where one long run would.
        """
        if (self.out / VALIDATION_FILE).is_file():
            saved = load_validation(self.out)
            ran_with, settings = _validation_settings(saved), (self.episodes, self.seed, self.max_steps, self.sample)
            if ran_with != settings:
                raise ValueError(
                    f"{str(self.out / VALIDATION_FILE)!r} was scored with (episodes, seed, max_steps, sample) = "
                    f"{ran_with}, not {settings}; resume with the same validation settings"
                )
            self.history = [e for e in saved["history"] if e["timesteps"] <= timesteps]
            self.best_mean = max((e["mean"] for e in self.history), default=-float("inf"))
        self._next = (timesteps // self.eval_freq + 1) * self.eval_freq

    @property
    def best(self) -> dict[str, Any] | None:
        """The validation entry of the best checkpoint so far."""
        return best_entry(self.history)

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.eval_freq
            self.validate()
        return True

    def validate(self) -> dict[str, Any]:
        """Save the agent as it is now, score it on the validation seeds, and record it."""
        steps = int(self.num_timesteps)
        checkpoint = self.out / CHECKPOINT_DIR / f"step-{steps}.zip"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        self.model.save(checkpoint)
        agent = f"sb3:{checkpoint}"
        if self.sample:
            exported = MlpPolicyAgent.from_sb3(
                self.model, world_model=world_model_record(self.world_model),
                training={"exported_from": checkpoint.name}, sample=True,
            )
            agent = str(exported.save(checkpoint.with_name(f"{checkpoint.stem}-sample")))
        result = evaluate(
            agent, episodes=self.episodes, seed=self.seed, workers=self.workers,
            model=self.world_model, dream=self.dream, temperature=self.temperature,
            max_steps=self.max_steps, progress=False,
        )
        entry = validation_entry(result, timesteps=steps, checkpoint=str(checkpoint))
        self.history.append(entry)
        if entry["mean"] > self.best_mean:
            self.best_mean = entry["mean"]
            atomic_write(self.out / "best_model.zip", lambda tmp: shutil.copyfile(checkpoint, tmp))
        self.logger.record("validation/mean_return", entry["mean"])
        self.logger.record("validation/std_return", entry["std"])
        if self.dream:
            self.logger.record("validation/dream_mean_return", entry["dream_mean"])
        atomic_write_json(self.out / VALIDATION_FILE, validation_record(
            self.history, episodes=self.episodes, seed=self.seed, max_steps=self.max_steps,
            temperature=self.temperature, sample=self.sample,
        ))
        if self.verbose:
            dream = f", dream {entry['dream_mean']:.1f}" if self.dream else ""
            print(f"validation at {steps} dream steps: real {entry['mean']:.1f} +/- {entry['std']:.1f}{dream}")
        return entry


def _validation_settings(record: dict[str, Any]) -> tuple[Any, Any, Any, bool]:
    """What a validation record was scored with: (episodes, first seed, step cap, sample); entries compare only then."""
    return record.get("episodes"), record.get("seed"), record.get("max_steps"), record.get("sample", False) is True


def best_entry(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry of the checkpoint with the highest real mean, or None for an empty history."""
    return max(history, key=lambda e: e["mean"]) if history else None


def validation_record(
    history: list[dict[str, Any]], *, episodes: int, seed: int, max_steps: int, temperature: float | None,
    sample: bool | None = None,
) -> dict[str, Any]:
    """A ``validation.json``: what the checkpoints were scored with, their entries, and the best of them.

    ``sample`` is written only when given (a record without it was scored with the mean action).
    """
    record: dict[str, Any] = {"episodes": episodes, "seed": seed, "max_steps": max_steps, "temperature": temperature}
    if sample is not None:
        record["sample"] = sample
    return {**record, "history": history, "best": best_entry(history)}


def validation_entry(result: dict[str, Any], **where: Any) -> dict[str, Any]:
    """One checkpoint's entry of a ``validation.json``, from an :func:`~dreamgym.agents.evaluate.evaluate` result.

    ``where`` says which checkpoint it is (``timesteps``, ``checkpoint``, and ``generation``
    for a CMA-ES snapshot); the entry adds the real mean, std, standard error, returns and
    seeds, and the dream's mean and std when the evaluation scored the dream too.
    """
    episodes = len(result["returns"])
    entry = {
        **where,
        "mean": result["mean"],
        "std": result["std"],
        "stderr": result["std"] / max(episodes - 1, 1) ** 0.5,
        "returns": result["returns"],
        "seeds": result["seeds"],
    }
    if "dream" in result:
        entry["dream_mean"] = result["dream"]["mean"]
        entry["dream_std"] = result["dream"]["std"]
    return entry


def validate_controller_snapshots(
    out: str | os.PathLike,
    model: Any = None,
    episodes: int = 30,
    seed: int = VALIDATION_SEED,
    workers: int = 2,
    max_steps: int = 1000,
    temperature: float = 1.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every ES-mean snapshot of a CMA-ES run on the real validation seeds.

    ``out`` is a folder written by :func:`~dreamgym.agents.cmaes.train_controller`; its
    ``snapshots/generation-NNNN`` controllers are scored in ``RealCarRacing-v0`` (and in the
    first-frame dream at ``temperature``, for the gap) over ``episodes`` episodes from
    ``seed``, and ``validation.json`` is written as :class:`RealValidationCallback` writes it,
    with the generation and the dream steps it took. Snapshots already scored with the same
    episodes and seeds are kept, not run again, so an interrupted run resumes.
    """
    out = Path(out)
    snapshots = sorted((out / SNAPSHOT_DIR).glob("generation-*"))
    if not snapshots:
        raise FileNotFoundError(f"no snapshots in {str(out / SNAPSHOT_DIR)!r}; train with eval_every > 0 first")
    state = read_json(checkpoint_paths(out, STAGE)[1], "CMA-ES checkpoint state")
    options = state["options"]
    steps_per_generation = options["popsize"] * options["rollouts"] * options["max_steps"]
    previous = {}
    if (out / VALIDATION_FILE).is_file():
        saved = load_validation(out)
        if _validation_settings(saved) == (episodes, seed, max_steps, False):
            previous = {e["checkpoint"]: e for e in saved["history"]}
    history = []
    for snapshot in snapshots:
        if str(snapshot) not in previous:
            result = evaluate(str(snapshot), episodes=episodes, seed=seed, workers=workers, model=model, dream=True,
                              temperature=temperature, max_steps=max_steps, progress=progress)
            generation = int(snapshot.name.split("-")[1])
            previous[str(snapshot)] = validation_entry(
                result, generation=generation, timesteps=generation * steps_per_generation, checkpoint=str(snapshot)
            )
        history.append(previous[str(snapshot)])
        record = validation_record(history, episodes=episodes, seed=seed, max_steps=max_steps,
                                   temperature=temperature)
        atomic_write_json(out / VALIDATION_FILE, record)
    return record


def load_validation(out: str | os.PathLike) -> dict[str, Any]:
    """The ``validation.json`` a :class:`RealValidationCallback` wrote to ``out``."""
    path = Path(out) / VALIDATION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {VALIDATION_FILE} in {str(out)!r}")
    return read_json(path, "validation record")
