"""`python -m search.run --budget 2GFLOPs`: find the best architecture that fits the budget.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward pass, one
sequence. See README.md, "Running a search", for each flag and the study database.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import optuna
from tqdm import tqdm

from search.budget import flops_arg, format_flops
from search.driver import (
    StudyMismatch,
    finished_trials,
    open_study,
    optimize,
    start_workers,
)
from search.objective import Objective, make_task
from search.results import top_table, trial_counts
from search.settings import (
    DEFAULT_PROXY_COMPUTE,
    DEFAULT_TASK,
    OBJECTIVES,
    PRUNERS,
    SAMPLERS,
    build_settings,
    load_preset,
)
from search.storage import DEFAULT_STORAGE, GRACE_PERIOD, is_sqlite
from spaces.flops import estimate_flops

EPILOG = """examples:
  python -m search.run --budget 2GFLOPs
  python -m search.run --budget 500MFLOPs --task listops --trials 40 --workers 2
  python -m search.run --budget 1G --task text --data corpus.txt --seq-len 512
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
        help=f"built-in task (recall, listops, text) or 'pkg.module:Class'; default {DEFAULT_TASK}",
    )
    a(
        "--data",
        nargs="+",
        metavar="PATH",
        help="UTF-8 text files for --task text, e.g. --data a.txt b.txt",
    )
    a("--seq-len", type=int, help="sequence length (default: the task's), e.g. 512")
    a(
        "--trials",
        type=int,
        default=20,
        help="total finished trials the study should hold (resumes count), default 20",
    )
    a("--timeout", type=float, help="stop starting new trials after this many seconds, e.g. 600")
    a("--study", help="study name (default: <task>-<budget>); re-use a name to resume it")
    a(
        "--storage",
        default=DEFAULT_STORAGE,
        help=f"SQLAlchemy URL, default {DEFAULT_STORAGE}; "
        "e.g. postgresql://user:pw@host/db for many workers or machines",
    )
    a("--workers", type=int, default=1, help="local worker processes sharing the study, e.g. 2")
    a("--sampler", choices=SAMPLERS, help="tpe (default), random, nsga2, gp")
    a("--pruner", choices=PRUNERS, help="median (default), halving, hyperband, none")
    a(
        "--proxy-compute",
        type=flops_arg,
        help="training FLOPs per trial, same for every "
        f"candidate; default {format_flops(DEFAULT_PROXY_COMPUTE)}, e.g. 50GFLOPs",
    )
    a("--seed", type=int, help="seed for data, initialisation and the sampler; default 0")
    a("--device", help="cpu (default) or cuda, e.g. --device cuda")
    a(
        "--threads",
        type=int,
        help="torch threads per worker (default: torch's default, which "
        "honours OMP_NUM_THREADS; with --workers N: CPUs / N), e.g. 1",
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
    a("--top", type=int, default=8, help="rows of the final table, default 8")
    a("--quiet", action="store_true", help="no progress bar")
    return p


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
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
            "seed": args.seed,
            "device": args.device,
            "objectives": args.objectives,
        }
        settings = build_settings(preset, flags)
        if args.trials < 1 or args.workers < 1:
            raise ValueError("--trials and --workers must be >= 1")
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
    cheapest = min(estimate_flops(c) for c in corners)
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
    if args.workers > 1 and is_sqlite(args.storage) and ":memory:" in args.storage:
        return fail(
            "--workers > 1 needs a database file or server, not sqlite in memory; "
            "use the default sqlite file or a postgresql:// URL"
        )
    if args.backend == "ray":
        from search.ray_backend import require_ray

        try:
            require_ray()  # before the study is created: without Ray, change nothing
        except ImportError as exc:
            return fail(str(exc))
    try:
        study = open_study(settings, study_name, args.storage, task, args.grace_period)
    except (StudyMismatch, ValueError) as exc:
        return fail(str(exc))

    if args.backend == "ray":
        from search.ray_backend import RayConfigError, run_ray

        try:
            run_ray(
                settings,
                study_name,
                args.storage,
                args.trials,
                args.timeout,
                args.address,
                args.cpus_per_trial,
                grace_period=args.grace_period,
                quiet=args.quiet,
                results_dir=args.ray_results,
            )
        except (ImportError, RayConfigError) as exc:
            return fail(str(exc))
    else:
        run_optuna(settings, study, study_name, args)
    return summarize(study, settings, args)


def run_optuna(settings, study, study_name: str, args) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done = finished_trials(study)
    bar = tqdm(
        total=args.trials,
        initial=min(done, args.trials),
        unit="trial",
        disable=args.quiet,
        dynamic_ncols=True,
    )

    def refresh(study, trial=None) -> None:
        bar.n = min(finished_trials(study), args.trials)
        try:
            best = (
                f"{study.best_value:.4f}" if study.user_attrs.get("objectives") == "single" else "-"
            )
        except ValueError:
            best = "-"
        if trial is not None:
            a = trial.user_attrs
            cfg = a.get("config", {})
            current = (
                f"{a.get('variant')} span={a.get('span')} d={cfg.get('depth')} "
                f"w={cfg.get('d_model')} {format_flops(a.get('flops', 0))}"
            )
            bar.set_postfix_str(f"best={best} last={current} [{trial.state.name.lower()}]")
        bar.refresh()

    if args.workers == 1:
        objective = Objective(settings, threads=args.threads)
        optimize(study, objective, args.trials, args.timeout, callbacks=[refresh])
    else:
        procs = start_workers(
            settings,
            study_name,
            args.storage,
            args.trials,
            args.timeout,
            args.workers,
            args.grace_period,
            args.threads,
        )
        while any(p.is_alive() for p in procs):
            time.sleep(2.0)
            trials = study.get_trials(deepcopy=False)
            last = max(
                (t for t in trials if t.datetime_complete),
                default=None,
                key=lambda t: t.datetime_complete,
            )
            refresh(study, last)
        for p in procs:
            p.join()
    refresh(study)
    bar.close()


def summarize(study, settings, args) -> int:
    try:  # note + best configs as artifacts for optuna-dashboard; never fails the run
        from dashboards import annotate, default_artifact_dir

        annotate(study, default_artifact_dir(args.storage), storage_url=args.storage)
    except Exception as exc:
        print(f"warning: could not annotate the study for the dashboard: {exc}", file=sys.stderr)
    counts = trial_counts(study)
    print(
        f"\nstudy {study.study_name!r} in {args.storage}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k != "running")
    )
    table = top_table(study, args.top)
    if table.empty:
        print("no completed trial within the budget; raise --trials or --proxy-compute")
        return 1
    print(
        f"top configs (FLOPs: fvcore, 1 multiply-add = 1 FLOP; budget "
        f"{format_flops(settings.budget)}; metric: {study.user_attrs.get('metric')}, "
        f"{study.user_attrs.get('direction')})"
    )
    print(table.to_string(index=False))
    best = table.iloc[0]
    print(f"\nbest: trial {best['trial']} ({best['variant']}, {best['FLOPs']})")
    print(
        f"export it:  python -m search.export --study {study.study_name} --out best.json "
        f"--storage {args.storage}"
    )
    print(f"dashboard:  optuna-dashboard {args.storage}   (or python -m dashboards.serve)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
