"""The Optuna driver: samplers, pruners, study creation/resume, and local worker processes.

Workers are processes, never threads (the GIL and torch's own thread pool), each with
`torch.set_num_threads(cpus // workers)`. The parent creates the study once, then starts the
workers; each runs `study.optimize` on the same storage until the study holds `--trials`
finished trials (a study may exceed that by at most `workers - 1` when workers finish at once).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from search.objective import Objective, TrialFailed
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, open_storage

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


class StudyMismatch(ValueError):
    """Resuming a study with settings that change what its results mean."""


def make_sampler(settings: RunSettings, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler; `offset` varies the seed per worker and per resume, so that processes and
    later sessions of one study do not replay the same random stream."""
    seed = settings.seed + 7919 * offset
    name = settings.sampler
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            n_startup_trials=8,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")


def make_pruner(settings: RunSettings) -> optuna.pruners.BasePruner:
    name = settings.pruner
    if name == "median" and settings.objectives == "single":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "halving" and settings.objectives == "single":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "hyperband" and settings.objectives == "single":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()  # "none", and multi-objective studies (no pruning there)


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
    settings: RunSettings, study_name: str, storage_url: str, task, grace_period: int = GRACE_PERIOD
) -> optuna.Study:
    """Create the study with its attributes, or resume it after checking it means the same."""
    storage = open_storage(storage_url, grace_period=grace_period)
    identity = settings.identity()
    identity["seq_len"] = task.seq_len
    directions = (
        [task.direction] if settings.objectives == "single" else [task.direction, "minimize"]
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
    study.sampler = make_sampler(settings, offset=97 * len(study.get_trials(deepcopy=False)))
    if study_name in existing:
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
    study.set_user_attr("flop_convention", "fvcore: 1 multiply-add = 1 FLOP")
    study.set_user_attr("metric", task.metric)
    study.set_user_attr("direction", task.direction)
    study.set_user_attr("sampler", settings.sampler)
    study.set_user_attr("pruner", settings.pruner)
    study.set_user_attr("seed", settings.seed)
    study.set_user_attr("interface", task.interface())
    study.set_user_attr("versions", versions())
    return study


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def optimize(
    study: optuna.Study,
    objective: Objective,
    total: int,
    timeout: float | None = None,
    callbacks: list[Callable] | None = None,
) -> None:
    """Run trials in this process until the study holds `total` finished (or running) trials."""
    import time

    deadline = None if timeout is None else time.monotonic() + timeout
    optuna.storages.fail_stale_trials(study)
    while True:
        started = len(study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))
        if started >= total:
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        study.optimize(
            objective, n_trials=1, catch=(TrialFailed,), callbacks=callbacks, gc_after_trial=False
        )


def _worker(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    total: int,
    timeout: float | None,
    threads: int,
    index: int,
    grace_period: int = GRACE_PERIOD,
) -> None:
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url, grace_period=grace_period)
    objective = Objective(settings, threads=threads)
    study = optuna.load_study(study_name=study_name, storage=storage)
    offset = 1 + index + 97 * len(study.get_trials(deepcopy=False))
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=make_sampler(settings, offset),
        pruner=make_pruner(settings),
    )
    optimize(study, objective, total, timeout)


def start_workers(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    total: int,
    timeout: float | None,
    workers: int,
    grace_period: int = GRACE_PERIOD,
    threads: int | None = None,
) -> list[mp.Process]:
    """Start `workers` processes (spawned, so CUDA and torch threads start clean), each with
    `threads` torch threads (default: this machine's CPUs divided among the workers)."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    ctx = mp.get_context("spawn")
    procs = []
    for index in range(workers):
        p = ctx.Process(
            target=_worker,
            args=(settings, study_name, storage_url, total, timeout, threads, index, grace_period),
        )
        p.start()
        procs.append(p)
    return procs
