"""`python -m search.run --budget 2GFLOPs`: find the best architecture that fits the budget.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward pass, one
sequence. See README.md, "Running a search", for each flag and the study database.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings

import optuna

from search.budget import device_problem, format_flops
from search.cli import run_main
from search.driver import SpaceExhausted
from search.interrupts import stop_on_signals
from search.objective import forget_finished_checkpoints, make_task
from search.parallelism import default_parallelism
from search.plan import PlanError, SearchPlan, make_plan
from search.plan_speed import feasible_sample
from search.run_flags import SETTINGS_FLAGS, parser
from search.samplers import holds_at_chance
from search.settings import (
    RunSettings,
    build_settings,
    load_preset,
)
from search.storage import (
    StorageFailed,
    default_checkpoint_dir,
    is_sqlite,
)
from search.study import StudyMismatch, open_study, stored_schedule
from search.summary import summarize
from search.workers import WorkerFailed, run_local
from spaces import ArchConfig
from spaces.atomic import make_folder
from spaces.flops import estimate_flops
from trainers.tasks import Task


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
        plan = make_run_plan(args, settings, task, cheapest_cfg, workers, threads)
        if args.dry_run:
            print(plan.describe(settings.budget, holds_at_chance(settings)))
            print("dry run: no study opened, nothing trained (a resumed study keeps its rungs)")
            return 0
        plan, study = open_with_plan(args, settings, task, plan)
    except (StudyMismatch, PlanError, ValueError, ImportError) as exc:
        return fail(str(exc))
    if not args.no_baselines:
        seed_baselines(study, settings, task)
    print(plan.describe(settings.budget, holds_at_chance(settings)), flush=True)
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
    if args.checkpoint_dir and args.backend != "ray":  # Ray's may live on the cluster only
        make_folder(args.checkpoint_dir, "--checkpoint-dir", probe=True)
    task = make_task(settings)
    if problem := device_problem(settings.device):
        raise ValueError(problem)
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


def make_run_plan(
    args: argparse.Namespace,
    settings: RunSettings,
    task: Task,
    cheapest_cfg: ArchConfig,
    workers: int,
    threads: int,
) -> SearchPlan:
    """The plan: rung lengths from the clock, with the budget-sized model and a sample of the
    space timed (search.plan_speed)."""
    interface, budget = task.interface(), settings.budget
    baselines = [] if args.no_baselines else settings.space.baselines(interface, budget)
    return make_plan(
        task,
        budget,
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
        sample=feasible_sample(settings.space, interface, budget, seed=settings.seed),
        seeded=len(baselines),
    )


def open_with_plan(
    args: argparse.Namespace, settings: RunSettings, task: Task, plan: SearchPlan
) -> tuple[SearchPlan, optuna.Study]:
    """The study, created or resumed; a resumed study keeps the rungs it was created with."""
    name = study_name(args, settings)
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
        forget_finished_checkpoints(study, checkpoint_dir)
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
    forget_finished_checkpoints(study, checkpoint_dir)  # kept for late promotions until now
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
        gpus_per_trial=args.gpus_per_trial,
    )


if __name__ == "__main__":
    # `kill` stops like Ctrl-C; and a shell's background job (`cmd &`), which starts with SIGINT
    # ignored, stops on `kill -INT` as its workers do, so it is never left without workers
    with stop_on_signals():
        run_main(main)
