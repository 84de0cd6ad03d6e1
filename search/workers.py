"""Worker processes on this machine: start them, watch them, report how they ended.

Workers are processes, never threads (the GIL and torch's own thread pool), each with its own
`torch.set_num_threads`. The parent creates the study once (with its rung schedule), then starts
the workers; each runs `run_worker`, the loop every backend runs (Ray places the same function
on a cluster, `search.ray_backend`), until the study holds `--trials` trained candidates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import sys
import time

import optuna

from search.driver import SpaceExhausted, optimize
from search.interrupts import stop_workers, supervise_worker
from search.objective import Objective
from search.progress import StudyProgress
from search.samplers import make_pruner, make_sampler, seed_offset
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, StorageFailed, open_storage
from search.study import stored_schedule


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


def worker_device(device: str, index: int, gpus: int) -> str:
    """Workers spread over the GPUs: with `--device cuda` and several visible GPUs, worker i
    trains on cuda:(i mod gpus) (so WORKERS_PER_GPU workers share each by default); `cuda:N`,
    `cpu` and a single GPU (e.g. a Ray task, which sees only its own) are used as given."""
    if device == "cuda" and gpus > 1:
        return f"cuda:{index % gpus}"
    return device


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
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    settings = dataclasses.replace(settings, device=worker_device(settings.device, index, gpus))
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


def run_local(
    settings, study, study_name, args, plan, workers, threads, timeout, checkpoint_dir
) -> None:
    """Workers on this machine: in this process for one worker, else spawned processes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with StudyProgress(study, args.trials, args.quiet):
        if workers == 1:
            import torch

            torch.set_num_threads(threads)
            objective = Objective(
                settings, plan.schedule, threads=threads, checkpoint_dir=checkpoint_dir
            )
            optimize(study, objective, args.trials, timeout, storage_url=args.storage)
            return
        procs = start_workers(
            settings,
            study_name,
            args.storage,
            args.trials,
            timeout,
            workers,
            threads,
            args.grace_period,
            checkpoint_dir,
        )
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(1.0)
        except KeyboardInterrupt:
            stop_workers(procs)  # each returns its running trial to the queue
            raise
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join()
        report_workers([p.exitcode for p in procs])


def report_workers(codes: list[int | None]) -> None:
    """After the workers ended: a database failure (exit 2, already printed by the worker) ends
    the run with exit 2; a worker killed by a signal is a warning (another worker or the next run
    retries its trial); any other failure ends the run with exit 1 after the summary."""
    for index, code in enumerate(codes):
        if code is not None and code < 0:
            print(
                f"warning: worker {index} was killed by signal {-code}; its trial is retried "
                "once its heartbeat is stale (by another worker, or by the next run)",
                file=sys.stderr,
            )
    if 2 in codes:  # the worker printed the database's error in one line
        raise StorageFailed("")
    failed = [c for c in codes if c is not None and c > 0]
    if failed:
        raise WorkerFailed(f"a worker process exited with status {failed[0]} (its error is above)")


class WorkerFailed(RuntimeError):
    """A local worker process ended with an unexpected error."""
