"""`python -m search.run --budget 2GFLOPs`: find the best architecture that fits the budget.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward pass, one
sequence. See README.md, "Running a search", for each flag and the study database.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import warnings

import optuna

from search.budget import flops_arg, format_flops
from search.driver import SpaceExhausted
from search.interrupts import raise_interrupt
from search.objective import make_task
from search.plan import DEFAULT_TIMEOUT, PlanError, SearchPlan, default_parallelism, make_plan
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
from search.study import StudyMismatch, open_study, stored_schedule
from search.summary import summarize
from search.workers import WorkerFailed, run_local
from spaces import ArchConfig
from spaces.flops import estimate_flops
from trainers.tasks import Task

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


# the flags that become RunSettings fields (a preset may set the same fields)
SETTINGS_FLAGS = (
    "budget",
    "task",
    "data",
    "seq_len",
    "sampler",
    "pruner",
    "proxy_compute",
    "evaluation",
    "rung_tokens",
    "eta",
    "rungs",
    "seed",
    "device",
    "objectives",
)


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        settings, task = read_settings(args)
        cheapest_cfg = cheapest_config(settings, task)
        workers, threads = parallelism(args, settings)
        plan, study = plan_and_open(args, settings, task, cheapest_cfg, workers, threads)
    except (StudyMismatch, PlanError, ValueError, ImportError) as exc:
        return fail(str(exc))
    if not args.no_baselines:
        seed_baselines(study, settings, task)
    print(plan.describe(settings.budget), flush=True)
    return search(args, settings, study, plan, workers, threads)


def read_settings(args: argparse.Namespace) -> tuple[RunSettings, Task]:
    """The run's settings (preset, then flags) and its task; ValueError names a bad flag."""
    preset = load_preset(args.preset) if args.preset else {}
    flags = {name: getattr(args, name) for name in SETTINGS_FLAGS}
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
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(
                "--device cuda was given but torch sees no CUDA device "
                "(install a CUDA build of torch, see README)"
            )
    return settings, task


def cheapest_config(settings: RunSettings, task: Task) -> ArchConfig:
    """The space's cheapest config; ValueError when even it is over the budget."""
    cheapest_cfg = min(settings.space.corners(task.interface()), key=estimate_flops)
    cheapest = estimate_flops(cheapest_cfg)
    if settings.budget < cheapest:
        raise ValueError(
            f"budget {format_flops(settings.budget)} is below the cheapest config of the space "
            f"({format_flops(cheapest)} for task {settings.task!r} at seq_len {task.seq_len}); "
            f"the smallest feasible budget is --budget {cheapest} ({format_flops(cheapest)}), "
            "or narrow the space with a preset"
        )
    return cheapest_cfg


def parallelism(args: argparse.Namespace, settings: RunSettings) -> tuple[int, int]:
    """(workers, torch threads per worker); checks Ray is there before anything is created."""
    workers, threads = default_parallelism(args.workers, args.threads, settings.device)
    if args.backend == "ray":
        workers = args.workers or workers
        threads = args.cpus_per_trial
    if workers > 1 and is_sqlite(args.storage) and ":memory:" in args.storage:
        raise ValueError(
            "several workers need a database file or server, not sqlite in memory; "
            "use the default sqlite file, a postgresql:// URL, or --workers 1"
        )
    if args.backend == "ray":
        from search.ray_backend import require_ray

        require_ray()  # ImportError before the study is created: without Ray, change nothing
    return workers, threads


def study_name(args: argparse.Namespace, settings: RunSettings) -> str:
    default = f"{settings.task.replace(':', '.')}-{format_flops(settings.budget)}"
    return args.study or default.replace(" ", "")


def plan_and_open(
    args: argparse.Namespace,
    settings: RunSettings,
    task: Task,
    cheapest_cfg: ArchConfig,
    workers: int,
    threads: int,
) -> tuple[SearchPlan, optuna.Study]:
    """The plan (rung lengths from the clock) and the study, created or resumed; a resumed
    study keeps the rungs it was created with."""
    name = study_name(args, settings)
    plan = make_plan(
        task,
        settings.budget,
        settings.recipe,
        trials=args.trials,
        timeout=args.timeout or None,
        workers=workers,
        threads=threads,
        device=settings.device,
        eta=settings.eta,
        rungs=settings.rungs,
        first_rung_tokens=settings.rung_tokens,
        fallback=cheapest_cfg,
    )
    study = open_study(settings, name, args.storage, task, args.grace_period, plan.schedule)
    schedule = stored_schedule(study)
    if schedule is None:  # a study created before the rung evaluator
        raise ValueError(
            f"study {name!r} was made by an older version without rung schedules; "
            "pass a new --study name"
        )
    if schedule != plan.schedule:
        plan = dataclasses.replace(plan, schedule=schedule)
        print("resuming: the study keeps the rung lengths it was created with")
    return plan, study


def seed_baselines(study: optuna.Study, settings: RunSettings, task: Task) -> None:
    """A new study starts from the hand baselines (full attention, the largest that fits)."""
    if study.get_trials(deepcopy=False):
        return
    seeds = settings.space.baselines(task.interface(), settings.budget)
    for params in seeds:
        study.enqueue_trial(params, user_attrs={"seeded": "baseline"})
    if seeds:
        shapes = ", ".join(
            f"{p['depth']} layers x {p['n_heads'] * p['head_dim']} (head dim {p['head_dim']})"
            for p in seeds
        )
        print(f"starting from the hand baselines: full attention, {shapes}")


def search(
    args: argparse.Namespace,
    settings: RunSettings,
    study: optuna.Study,
    plan: SearchPlan,
    workers: int,
    threads: int,
) -> int:
    """Run the workers (here, or on Ray), then print the summary; the exit status."""
    checkpoint_dir = str(args.checkpoint_dir or default_checkpoint_dir(args.storage))
    timeout = args.timeout or None
    try:
        if args.backend == "ray":
            from search.ray_backend import RayConfigError

            try:
                run_on_ray(args, settings, study.study_name, timeout, checkpoint_dir)
            except (ImportError, RayConfigError) as exc:
                return fail(str(exc))
        else:
            run_local(
                settings,
                study,
                study.study_name,
                args,
                plan,
                workers,
                threads,
                timeout,
                checkpoint_dir,
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


def run_on_ray(args, settings, name, timeout, checkpoint_dir) -> None:
    from search.ray_backend import run_ray

    run_ray(
        settings,
        name,
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


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, raise_interrupt)  # `kill` stops like Ctrl-C
    sys.exit(main())
