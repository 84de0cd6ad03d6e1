"""Training a study's configs again, the way the study judged its candidates.

`train_rungs_job` runs one config through the rungs of the study's schedule (no pruning),
`train_final_job` / `train_config` train one for final tokens with `search.train`'s trainer, and
`run_jobs` runs many at once in spawned processes. Used by `search.scale` (the grid and the
scaled configs) and the outcome benchmarks; results are plain data (status, reason, loss,
metric, tokens, tokens_per_s).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import optuna

from search.interrupts import WorkerDied, stop_on_signals
from search.objective import make_task
from search.settings import RunSettings
from search.study import stored_schedule
from spaces import ArchConfig
from trainers.final import FinalTrainer
from trainers.rungs import RungSchedule, RungTrainer

R = TypeVar("R")


def train_config(
    cfg_dict: dict, settings: RunSettings, tokens: int, batch_size: int, threads: int
) -> dict[str, Any]:
    """Train one config as a study's settings describe (task, recipe, seed, device); the result
    as plain data (status, reason, loss, metric, tokens, tokens_per_s, wall_time)."""
    res = FinalTrainer(
        ArchConfig.from_dict(cfg_dict),
        make_task(settings),
        tokens,
        batch_size=batch_size,
        recipe=settings.recipe,
        seed=settings.seed,
        device=settings.device,
        threads=threads,
    ).run()
    ok = res.status == "ok"
    return {
        "status": res.status,
        "reason": res.reason,
        "loss": res.loss if ok else None,
        "metric": res.metric if ok else None,
        "tokens": res.tokens,
        "tokens_per_s": res.tokens_per_s,
        "wall_time": res.wall_time,
    }


def study_schedule(study: optuna.Study, settings: RunSettings, seq_len: int) -> RungSchedule:
    """The schedule the study judged its candidates by (a default one for older studies)."""
    schedule = stored_schedule(study)
    if schedule is not None:
        return schedule
    batch = max(1, round(settings.recipe.batch_tokens / seq_len))
    return RungSchedule(first_steps=16, batch_size=batch, seq_len=seq_len)


def train_rungs_job(job: tuple) -> dict[str, Any]:
    """Worker: one config through every rung of the schedule (no pruning). A job of six,
    `(config, settings, schedule, threads, checkpoint, last)`, trains through rung `last` only,
    continued from the checkpoint when it holds an earlier rung of this run (and leaves its
    stable state there: the compound grid's race, search.grid_race)."""
    cfg_dict, settings, schedule, threads, *more = job
    checkpoint, last = more or (None, schedule.top)
    warnings.filterwarnings("ignore")
    out = RungTrainer(
        ArchConfig.from_dict(cfg_dict),
        make_task(settings),
        schedule,
        recipe=settings.recipe,
        seed=settings.seed,
        device=settings.device,
        threads=threads,
        checkpoint=checkpoint,
    ).run(on_rung=lambda r: r.rung >= last)
    reached = out.last
    ok = reached is not None and reached.rung == last and out.status in ("ok", "stopped")
    return {
        "status": "ok" if ok else out.status,
        "reason": "" if ok else out.reason,
        "loss": reached.loss if ok and reached else None,
        "metric": reached.metric if ok and reached else None,
        "tokens": reached.tokens if reached else 0,
        "tokens_per_s": out.tokens_per_s,
        "rung_losses": [r.loss for r in out.rungs],  # each rung reached, in order
        "resumed_from": out.resumed_from,  # the checkpoint's last rung; None when it started
    }


def train_final_job(job: tuple) -> dict[str, Any]:
    """Worker: one config trained for `tokens` by `search.train`'s trainer."""
    warnings.filterwarnings("ignore")
    return train_config(*job)


def run_jobs(
    fn: Callable[[Any], R],
    jobs: list,
    workers: int,
    done: Callable[[R], None] | None = None,
    costs: list[float] | None = None,
    labels: list[str] | None = None,
) -> list[R]:
    """`fn` over `jobs` in `workers` spawned processes (in this one when there is one worker or
    one job); the results in the jobs' order, while `done` sees each as it comes. With `costs`
    (e.g. expected seconds, one per job) the costliest start first, so that no long job starts
    last while the other processes sit idle (longest-processing-time-first); without them the
    jobs start in order. `kill` or Ctrl-C raises KeyboardInterrupt here and terminates the
    processes (`search.interrupts.stop_on_signals`), where before they trained on without their
    parent. With `labels` (one per job) each finished job prints a line (`done_line`).

    A process that dies abruptly (the kernel's out-of-memory killer, a crash) raises
    `WorkerDied` naming the jobs that had not finished, after `done` saw every finished one;
    before (`multiprocessing.Pool`), the parent waited forever for the lost job, and a `kill`
    of the parent could not end the wait either."""
    if costs is not None and len(costs) != len(jobs):
        raise ValueError(f"costs: {len(costs)} for {len(jobs)} jobs; give one per job")
    if labels is not None and len(labels) != len(jobs):
        raise ValueError(f"labels: {len(labels)} for {len(jobs)} jobs; give one per job")
    started = time.perf_counter()
    order = list(range(len(jobs)))
    if costs is not None:
        order.sort(key=lambda i: -costs[i])  # stable: equal costs keep the jobs' order
    results: dict[int, R] = {}

    def record(i: int, result: R) -> None:
        results[i] = result
        if labels is not None:
            elapsed = time.perf_counter() - started
            print(done_line(len(results), len(jobs), labels[i], result, elapsed), flush=True)
        if done is not None:
            done(result)

    if workers <= 1 or len(jobs) <= 1:
        for i in order:
            record(i, fn(jobs[i]))
    else:
        with stop_on_signals():
            _run_spawned(fn, jobs, order, min(workers, len(jobs)), record, labels)
    return [results[i] for i in range(len(jobs))]


def _run_spawned(
    fn: Callable[[Any], R],
    jobs: list,
    order: list[int],
    workers: int,
    record: Callable[[int, R], None],
    labels: list[str] | None,
) -> None:
    """`run_jobs` in `workers` spawned processes: jobs submitted in `order` (a process takes
    the next one as it frees up), each result recorded as it comes."""
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        pending: dict[Future, int] = {pool.submit(fn, jobs[i]): i for i in order}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            broken = False
            for future in sorted(finished, key=lambda f: order.index(pending[f])):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                record(pending.pop(future), result)
            if broken:  # every unfinished job is lost with the pool
                raise WorkerDied(_died(pending.values(), len(jobs), labels))
    finally:  # on an error or an interrupt the other processes must not train on
        _terminate(pool)


def _died(unfinished, total: int, labels: list[str] | None) -> str:
    names = sorted(unfinished)
    shown = [labels[i] if labels else f"job {i + 1}" for i in names]
    return (
        f"a training process ended abruptly (killed, e.g. for memory, or crashed) with "
        f"{len(names)} of {total} jobs unfinished: {'; '.join(shown)}; the finished ones are "
        "printed above; fewer --jobs (or --workers) use less memory"
    )


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's processes now (`terminate_workers` from Python 3.14, else by hand)."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(10)


def done_line(k: int, n: int, label: str, result: Any, elapsed: float) -> str:
    """`  done k of n (elapsed): label, val loss X` for a result dict; a run without a loss gives
    its status and reason instead (a diverged run says why)."""
    loss = result.get("loss")
    what = (
        f"val loss {loss:.4f}"
        if loss is not None
        else f"{result.get('status')}: {result.get('reason') or 'no loss'}"
    )
    return f"  done {k} of {n} ({elapsed / 60:.1f} min): {label}, {what}"
