"""`python -m search.run --budget 2GFLOPs`: find the best architecture that fits the budget.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward pass, one
sequence. See README.md, "Running a search", for each flag and the study database.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
import warnings

import optuna

from search.budget import flops_arg, format_flops
from search.driver import (
    SpaceExhausted,
    StudyMismatch,
    open_study,
    optimize,
    start_workers,
    stored_schedule,
)
from search.interrupts import raise_interrupt, stop_workers
from search.objective import Objective, make_task
from search.plan import DEFAULT_TIMEOUT, PlanError, default_parallelism, make_plan
from search.progress import StudyProgress
from search.samplers import PRUNERS, SAMPLERS, describe
from search.settings import (
    DEFAULT_PROXY_COMPUTE,
    DEFAULT_TASK,
    EVALUATIONS,
    OBJECTIVES,
    RunSettings,
    build_settings,
    load_preset,
)
from search.storage import (
    DEFAULT_STORAGE,
    GRACE_PERIOD,
    StorageFailed,
    default_checkpoint_dir,
    is_sqlite,
)
from search.summary import summarize
from spaces.flops import estimate_flops

EPILOG = """examples:
  python -m search.run --budget 2GFLOPs
  python -m search.run --budget 500MFLOPs --task listops --trials 40 --timeout 1800
  python -m search.run --budget 1G --task text --data corpus.txt --seq-len 1024
  python -m search.run --budget 20MFLOPs --rung-tokens 65536 --timeout 0
  python -m search.run --budget 2GFLOPs --preset studies/recall.toml --study my-search
  python -m search.run --budget 2GFLOPs --objectives pareto --sampler nsga2
FLOPs: fvcore convention, one multiply-add = one FLOP (GFLOPs = GMACs), forward, one sequence."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m search.run",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a(
        "--budget",
        type=flops_arg,
        help="max forward FLOPs of one sequence, e.g. 2GFLOPs, 500M, "
        "1.5e9 (required unless the preset sets it)",
    )
    a(
        "--task",
        help="built-in task (text, recall, listops) or 'pkg.module:Class'; default "
        f"{DEFAULT_TASK} (byte-level LM on the Python standard library's sources)",
    )
    a(
        "--data",
        nargs="+",
        metavar="PATH",
        help="UTF-8 text files for --task text (default: the interpreter's stdlib sources)",
    )
    a("--seq-len", type=int, help="sequence length (default: the task's; text 512), e.g. 1024")
    a(
        "--trials",
        type=int,
        default=20,
        help="trained candidates the study should hold (over-budget and duplicate proposals "
        "do not count; a resumed study counts what it has), default 20",
    )
    a(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds for the search (default {DEFAULT_TIMEOUT:g}); the plan sizes the rungs "
        "to fit, and no new candidate starts after it; 0 = no limit",
    )
    a(
        "--evaluation",
        choices=EVALUATIONS,
        help="tokens (default: every candidate trains on the same tokens per rung, as the user "
        "will train it) or compute (the same training FLOPs: smaller models see more tokens)",
    )
    a(
        "--rung-tokens",
        type=int,
        help="training tokens of the first rung (default: planned from --timeout), e.g. 65536",
    )
    a("--eta", type=int, help="successive halving: rung growth and 1/eta promoted; default 3")
    a("--rungs", type=int, help="rungs per candidate (top = eta^(rungs-1) x first); default 3")
    a("--study", help="study name (default: <task>-<budget>); re-use a name to resume it")
    a(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"SQLAlchemy URL, default {DEFAULT_STORAGE}; "
        "e.g. postgresql://user:pw@host/db for many workers or machines",
    )
    a(
        "--workers",
        type=int,
        help="worker processes sharing the study (default: one per CPU core, one per GPU "
        "with --device cuda)",
    )
    a("--sampler", choices=list(SAMPLERS), help=describe(SAMPLERS, RunSettings.sampler))
    a(
        "--pruner",
        choices=list(PRUNERS),
        help="how candidates are cut between rungs: " + describe(PRUNERS, RunSettings.pruner),
    )
    a(
        "--proxy-compute",
        type=flops_arg,
        help="training FLOPs of the equal-compute proxy runs that search.fidelity uses; "
        f"default {format_flops(DEFAULT_PROXY_COMPUTE)}",
    )
    a("--seed", type=int, help="seed for data, initialisation and the sampler; default 0")
    a("--device", help="cpu (default) or cuda, e.g. --device cuda")
    a(
        "--threads",
        type=int,
        help="torch threads per worker (default 1 on CPU, with one worker per core: on a busy "
        "machine 2 threads per process measured up to 23x slower), e.g. 2",
    )
    a(
        "--checkpoint-dir",
        metavar="DIR",
        help="rung checkpoints, so a killed worker's trial resumes (default: checkpoints/ "
        "next to the SQLite file); use a shared folder for several machines",
    )
    a("--preset", help="study preset TOML that overrides defaults, e.g. studies/recall.toml")
    a(
        "--objectives",
        choices=OBJECTIVES,
        help="single (default: best metric within budget) or "
        "pareto (metric vs FLOPs, multi-objective)",
    )
    a(
        "--backend",
        choices=("optuna", "ray"),
        default="optuna",
        help="optuna (default, local processes) or ray (Ray Tune, local or a cluster)",
    )
    a("--address", help="Ray cluster address for --backend ray, e.g. auto or ray://host:10001")
    a("--cpus-per-trial", type=int, default=1, help="CPUs per Ray trial (--backend ray), e.g. 2")
    a(
        "--ray-results",
        metavar="DIR",
        help="Ray Tune's own result folders (--backend ray); default ray_results/ next to a "
        "SQLite study file, else studies/ray_results",
    )
    a(
        "--grace-period",
        type=int,
        default=GRACE_PERIOD,
        help="seconds without a heartbeat after "
        f"which a dead worker's RUNNING trial is failed and retried once; default {GRACE_PERIOD}",
    )
    a(
        "--no-baselines",
        action="store_true",
        help="do not start a new study from the hand baselines (full attention, head dim 64 "
        "and 32, FFN 4x, the largest in the space that fits)",
    )
    a("--top", type=int, default=8, help="rows of the final table, default 8")
    a("--quiet", action="store_true", help="no progress bar")
    return p


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        preset = load_preset(args.preset) if args.preset else {}
        flags = {
            "budget": args.budget,
            "task": args.task,
            "data": args.data,
            "seq_len": args.seq_len,
            "sampler": args.sampler,
            "pruner": args.pruner,
            "proxy_compute": args.proxy_compute,
            "evaluation": args.evaluation,
            "rung_tokens": args.rung_tokens,
            "eta": args.eta,
            "rungs": args.rungs,
            "seed": args.seed,
            "device": args.device,
            "objectives": args.objectives,
        }
        settings = build_settings(preset, flags)
        if args.trials < 1:
            raise ValueError(f"--trials must be >= 1, got {args.trials}")
        for name in ("workers", "threads", "top"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1, got {value}")
        if args.timeout < 0:
            raise ValueError(f"--timeout must be >= 0 seconds (0 = no limit), got {args.timeout}")
        task = make_task(settings)
    except ValueError as exc:
        return fail(str(exc))
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return fail(
                "--device cuda was given but torch sees no CUDA device "
                "(install a CUDA build of torch, see README)"
            )
    interface = task.interface()
    try:
        corners = settings.space.corners(interface)
    except ValueError as exc:
        return fail(str(exc))
    cheapest_cfg = min(corners, key=estimate_flops)
    cheapest = estimate_flops(cheapest_cfg)
    if settings.budget < cheapest:
        return fail(
            f"budget {format_flops(settings.budget)} is below the cheapest config of the space "
            f"({format_flops(cheapest)} for task {settings.task!r} at seq_len {task.seq_len}); "
            f"the smallest feasible budget is --budget {cheapest} ({format_flops(cheapest)}), "
            "or narrow the space with a preset"
        )
    study_name = (
        args.study
        or f"{settings.task.replace(':', '.')}-{format_flops(settings.budget)}".replace(" ", "")
    )
    workers, threads = default_parallelism(args.workers, args.threads, settings.device)
    if args.backend == "ray":
        workers = args.workers or workers
        threads = args.cpus_per_trial
    if workers > 1 and is_sqlite(args.storage) and ":memory:" in args.storage:
        return fail(
            "several workers need a database file or server, not sqlite in memory; "
            "use the default sqlite file, a postgresql:// URL, or --workers 1"
        )
    if args.backend == "ray":
        from search.ray_backend import require_ray

        try:
            require_ray()  # before the study is created: without Ray, change nothing
        except ImportError as exc:
            return fail(str(exc))
    timeout = args.timeout or None
    try:
        plan = make_plan(
            task,
            settings.budget,
            settings.recipe,
            trials=args.trials,
            timeout=timeout,
            workers=workers,
            threads=threads,
            device=settings.device,
            eta=settings.eta,
            rungs=settings.rungs,
            first_rung_tokens=settings.rung_tokens,
            fallback=cheapest_cfg,
        )
        study = open_study(
            settings, study_name, args.storage, task, args.grace_period, plan.schedule
        )
    except (StudyMismatch, PlanError, ValueError) as exc:
        return fail(str(exc))
    schedule = stored_schedule(study)
    if schedule is not None and schedule != plan.schedule:
        plan = dataclasses.replace(plan, schedule=schedule)  # a resumed study keeps its rungs
        print("resuming: the study keeps the rung lengths it was created with")
    elif schedule is None:  # a study created before the rung evaluator
        return fail(
            f"study {study_name!r} was made by an older version without rung schedules; "
            "pass a new --study name"
        )
    if not args.no_baselines and not study.get_trials(deepcopy=False):
        seeds = settings.space.baselines(interface, settings.budget)
        for params in seeds:
            study.enqueue_trial(params, user_attrs={"seeded": "baseline"})
        if seeds:
            shapes = ", ".join(
                f"{p['depth']} layers x {p['n_heads'] * p['head_dim']} (head dim {p['head_dim']})"
                for p in seeds
            )
            print(f"starting from the hand baselines: full attention, {shapes}")
    print(plan.describe(settings.budget), flush=True)
    checkpoint_dir = str(args.checkpoint_dir or default_checkpoint_dir(args.storage))
    try:
        if args.backend == "ray":
            from search.ray_backend import RayConfigError, run_ray

            try:
                run_ray(
                    settings,
                    study_name,
                    args.storage,
                    args.trials,
                    timeout,
                    args.address,
                    args.cpus_per_trial,
                    workers=args.workers,
                    grace_period=args.grace_period,
                    quiet=args.quiet,
                    results_dir=args.ray_results,
                    checkpoint_dir=checkpoint_dir,
                )
            except (ImportError, RayConfigError) as exc:
                return fail(str(exc))
        else:
            run_local(
                settings, study, study_name, args, plan, workers, threads, timeout, checkpoint_dir
            )
    except SpaceExhausted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return summarize(study, settings, args.storage, args.top) or 1
    except StorageFailed as exc:
        if str(exc):  # empty: a worker has printed it
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except WorkerFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        summarize(study, settings, args.storage, args.top)
        return 1
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished trials are kept; re-run the same command to resume "
            "(an interrupted trial resumes from its last rung checkpoint)",
            file=sys.stderr,
        )
        summarize(study, settings, args.storage, args.top)
        return 130
    return summarize(study, settings, args.storage, args.top)


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


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, raise_interrupt)  # `kill` stops like Ctrl-C
    sys.exit(main())
