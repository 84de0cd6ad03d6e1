"""The Optuna driver: samplers, pruners, study creation/resume, and the worker loop.

Workers are processes, never threads (the GIL and torch's own thread pool), each with its own
`torch.set_num_threads`. The parent creates the study once (with its rung schedule), then starts
the workers; each runs `optimize` on the same storage until the study holds `--trials` *trained*
candidates (`search.results.trained_count`: over-budget and duplicate proposals are records,
not candidates). Ray places the very same worker loop on a cluster (`search.ray_backend`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import platform
import sys
from collections.abc import Callable
from typing import Literal

import optuna
from optuna.trial import TrialState

from search.interrupts import quiet_optuna_tracebacks, supervise_worker
from search.objective import Objective, TrialFailed
from search.results import REJECTED, is_trained
from search.samplers import PRUNERS, SAMPLERS
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, StorageFailed, open_storage, storage_failure
from spaces.flops import FLOP_UNIT
from trainers.rungs import RungSchedule

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MAX_CONSECUTIVE_REJECTIONS = 200  # proposals in a row that were over budget or duplicates


class SpaceExhausted(RuntimeError):
    """The sampler keeps proposing configs that are over budget or already evaluated."""


class StudyMismatch(ValueError):
    """Resuming a study with settings that change what its results mean."""


SEED_STRIDE = 7919  # seed = --seed + SEED_STRIDE x offset (a prime: streams stay apart)
RESUME_STRIDE = 97  # offset per trial already in the study: a resumed session draws anew


def seed_offset(study: optuna.Study, worker: int | None = None) -> int:
    """The sampler seed offset of the parent (worker None) or of worker `worker`, given the
    trials the study already holds."""
    start = 0 if worker is None else 1 + worker
    return start + RESUME_STRIDE * len(study.get_trials(deepcopy=False))


def make_sampler(settings: RunSettings, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler; `offset` (`seed_offset`) varies the seed per worker and per resume, so that
    processes and later sessions of one study do not replay the same random stream."""
    return SAMPLERS[settings.sampler].make(settings.seed + SEED_STRIDE * offset)


def make_pruner(settings: RunSettings) -> optuna.pruners.BasePruner:
    """The rung pruner. Trials report validation loss at steps 1, eta, eta^2, ... (rung lengths
    in first-rung units), so successive halving with min_resource 1 and reduction factor eta
    keeps the best 1/eta of each rung (asynchronously: ASHA, Li et al. 2018)."""
    if settings.objectives != "single" or settings.rungs == 1:
        return optuna.pruners.NopPruner()  # multi-objective studies cannot prune
    return PRUNERS[settings.pruner].make(settings)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    import fvcore  # noqa: F401
    import torch

    def v(pkg: str) -> str:
        try:
            return version(pkg)
        except Exception:
            return "unknown"

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "fvcore": v("fvcore"),
        "attnsearch": v("attnsearch"),
    }


def open_study(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    task,
    grace_period: int = GRACE_PERIOD,
    schedule: RungSchedule | None = None,
) -> optuna.Study:
    """Create the study with its attributes and rung schedule, or resume it after checking it
    means the same. A resumed study keeps the schedule it was created with (equal tokens per
    rung across sessions): read it back with `stored_schedule`."""
    storage = open_storage(storage_url, grace_period=grace_period)
    identity = settings.identity()
    identity["seq_len"] = task.seq_len
    identity["corpus"] = getattr(task, "corpus", None)
    # candidates are ranked by validation loss (continuous; accuracy ties at chance)
    directions: list[Literal["minimize", "maximize"]] = (
        ["minimize"] if settings.objectives == "single" else ["minimize", "minimize"]
    )
    existing = {
        s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        load_if_exists=True,
        directions=directions,
        pruner=make_pruner(settings),
    )
    study.sampler = make_sampler(settings, offset=seed_offset(study))
    if study_name in existing:
        # the seed (data, init) and sampler shape the results and the export's provenance
        mixed = [
            f"{key}: study has {study.user_attrs[key]!r}, this run {value!r}"
            for key, value in (("seed", settings.seed), ("sampler", settings.sampler))
            if key in study.user_attrs and study.user_attrs[key] != value
        ]
        if mixed:
            raise StudyMismatch(
                f"study {study_name!r} was created with a different {'; '.join(mixed)}. Resume "
                "it with the same --seed and --sampler, or pass a new --study name."
            )
        stored = study.user_attrs.get("identity")
        if stored is not None and stored != json.loads(json.dumps(identity)):
            diffs = [k for k in identity if json.dumps(stored.get(k)) != json.dumps(identity[k])]
            details = "; ".join(
                f"{k}: study has {stored.get(k)!r}, this run {identity[k]!r}"
                for k in diffs
                if k not in ("space", "recipe")
            )
            if any(k in ("space", "recipe") for k in diffs):
                details += (
                    "; " + ", ".join(k for k in diffs if k in ("space", "recipe")) + " differ"
                )
            raise StudyMismatch(
                f"study {study_name!r} was created with different settings ({details.strip('; ')})"
                f". Resume it with the same settings, or pass a new --study name."
            )
        return study
    study.set_user_attr("identity", identity)
    for key, value in identity.items():
        study.set_user_attr(key, value)
    study.set_user_attr("flop_convention", FLOP_UNIT)
    study.set_user_attr("metric", "val_loss")
    study.set_user_attr("direction", "minimize")
    study.set_user_attr("task_metric", task.metric)
    study.set_user_attr("task_direction", task.direction)
    if schedule is not None:
        study.set_user_attr("schedule", schedule.to_dict())
    study.set_user_attr("sampler", settings.sampler)
    study.set_user_attr("pruner", settings.pruner)
    study.set_user_attr("seed", settings.seed)
    study.set_user_attr("interface", task.interface())
    study.set_user_attr("versions", versions())
    return study


def stored_schedule(study: optuna.Study) -> RungSchedule | None:
    data = study.user_attrs.get("schedule")
    return None if data is None else RungSchedule(**data)


def _in_training(trials: list[optuna.trial.FrozenTrial]) -> int:
    """RUNNING trials that are (or were, if their worker died) training a candidate."""
    return sum(
        1
        for t in trials
        if t.state == TrialState.RUNNING and t.user_attrs.get("status") not in REJECTED
    )


def optimize(
    study: optuna.Study,
    objective: Objective,
    total: int,
    timeout: float | None = None,
    callbacks: list[Callable] | None = None,
    poll: float = 2.0,
    storage_url: str = "",
) -> None:
    """Train candidates in this process until the study holds `total` trained ones.

    Over-budget and duplicate proposals do not count. When the remaining slots are taken by
    RUNNING trials, wait for them: a trial whose worker died is failed once its heartbeat is
    stale, and its retry (a WAITING trial) is picked up here and resumes from its checkpoint.
    A database failure raises StorageFailed (one line, its real cause).
    """
    quiet_optuna_tracebacks()
    try:
        _optimize(study, objective, total, timeout, callbacks, poll)
    except Exception as exc:  # a database error becomes one line naming its real cause
        failure = storage_failure(exc, storage_url)
        if failure is None:
            raise
        raise failure from None


def _optimize(study, objective, total, timeout, callbacks, poll) -> None:
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    rejections = 0
    seen: dict = {}

    def remember(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen["status"] = trial.user_attrs.get("status")

    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)  # one read per loop
        done = sum(map(is_trained, trials))
        if done >= total:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if not waiting and done + _in_training(trials) >= total:
            time.sleep(poll)  # others hold the last slots; a dead one goes stale and retries
            continue
        seen.clear()
        study.optimize(
            objective,
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[*(callbacks or []), remember],
            gc_after_trial=False,
        )
        rejections = rejections + 1 if seen.get("status") in REJECTED else 0
        if rejections >= MAX_CONSECUTIVE_REJECTIONS:
            raise SpaceExhausted(
                f"{rejections} proposals in a row were over the budget or already evaluated: "
                "the space has (almost) nothing new that fits. Raise --budget, widen the space "
                "with a preset, or lower --trials"
            )


def load_for_worker(
    settings: RunSettings, study_name: str, storage_url: str, index: int, grace_period: int
) -> optuna.Study:
    """The study with this worker's own sampler seed stream and the rung pruner."""
    storage = open_storage(storage_url, grace_period=grace_period)
    study = optuna.load_study(study_name=study_name, storage=storage)
    offset = seed_offset(study, index)
    return optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(settings, offset),
        pruner=make_pruner(settings),
    )


def run_worker(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    total: int,
    timeout: float | None,
    threads: int,
    index: int,
    grace_period: int = GRACE_PERIOD,
    checkpoint_dir: str | None = None,
) -> None:
    """One worker: the loop every backend runs (a local process, or a Ray task)."""
    import warnings

    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    study = load_for_worker(settings, study_name, storage_url, index, grace_period)
    schedule = stored_schedule(study)
    if schedule is None:
        raise RuntimeError(f"study {study_name!r} has no rung schedule; run search.run first")
    objective = Objective(settings, schedule, threads=threads, checkpoint_dir=checkpoint_dir)
    try:
        optimize(study, objective, total, timeout, storage_url=storage_url)
    except SpaceExhausted as exc:
        print(f"error: {exc}", flush=True)
    except StorageFailed as exc:  # one line; the parent reports the exit status
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # the parent reports the interruption; no traceback per worker
        pass


def local_worker(*args, **kwargs) -> None:
    """A worker process started by `start_workers`: stops with its parent (search.interrupts)."""
    supervise_worker()
    with contextlib.suppress(KeyboardInterrupt):  # interrupted before its loop started
        run_worker(*args, **kwargs)


def start_workers(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    total: int,
    timeout: float | None,
    workers: int,
    threads: int,
    grace_period: int = GRACE_PERIOD,
    checkpoint_dir: str | None = None,
) -> list[mp.process.BaseProcess]:
    """Start `workers` processes (spawned, so CUDA and torch threads start clean)."""
    ctx = mp.get_context("spawn")
    procs: list[mp.process.BaseProcess] = []
    for index in range(workers):
        p = ctx.Process(
            target=local_worker,
            args=(settings, study_name, storage_url, total, timeout, threads, index),
            kwargs={"grace_period": grace_period, "checkpoint_dir": checkpoint_dir},
            daemon=True,  # ended at the parent's exit; search.interrupts covers kill -9
        )
        p.start()
        procs.append(p)
    return procs
