"""Does the search beat simpler ways of choosing an architecture? Best metric per method.

    python -m benchmarks.search_quality --quick                 # 1 seed, 6 trials: 1-2 min here
    python -m benchmarks.search_quality --out results.md        # full: 3 seeds (see below)
    python -m benchmarks.search_quality --tasks recall --trials 12 --seeds 2 --threads 2

At one fixed budget (forward FLOPs of one sequence, fvcore: 1 multiply-add = 1 FLOP), one
proxy compute and one trial count, for each task (`recall`, `listops`) and each seed (0, 1, ...;
the seed sets data, initialisation and sampler, as `search.run --seed` does), it compares:

  (a) tpe       the default search (`search.run`'s multivariate, constraint-aware TPE, median
                pruner) with `--trials` trials;
  (b) random    random search, same trial count, same pruner. With the same seed its first 8
                trials are the same configs as TPE's random start-up trials, so (a) - (b) is
                what TPE's model adds (common random numbers, less noise);
  (c) baseline  a hand-made standard Transformer: full attention, head dim 64, FFN 4x, pre-LN,
                no sharing, and the largest depth (1..12) x heads (1..16) whose forward FLOPs
                (`spaces.flops.count_flops`) fit the budget (`hand_baseline_config`), trained
                once with the same proxy recipe (`trainers.proxy.train`);
  (d) variant   the best config of each attention variant, taken from the trials that (a) and
                (b) already ran for that task and seed (no extra training; a variant that
                neither search sampled with a completed trial has no value for that seed, and
                the table says in how many seeds it was found).

"Best" is the best completed trial's value: the validation loss of its top rung (lower is
better), on the search's own rungs without a clock (`search.run --timeout 0`: 64 first-rung steps,
eta 3, 3 rungs); the baseline trains through the same rungs. Every method sees the same tokens,
recipe and seed, so the numbers compare directly. The table gives the median over seeds and the
spread (min-max). (Until the rung redesign of 2026-12-03 every method got the same proxy compute
and was scored by accuracy; docs/results.md section 1 was measured that way.)

Searches run in this process through the public pieces (`search.settings.build_settings`,
`search.study.open_study`, `search.driver.optimize`, `search.objective.Objective`) on a
temporary SQLite database (or `--storage URL`, to keep the studies, e.g. for
`python -m search.fidelity`).

Cost: a few minutes per task and seed on 2 cores at the defaults; `--quick` (1 seed, 6 trials)
checks the machinery in a minute or two, and its numbers mean nothing. `--proxy-compute` only
sets what `search.fidelity` uses later on the kept studies.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from search.budget import flops_arg, format_flops
from search.cli import Parser, run_main
from search.driver import optimize
from search.objective import Objective, make_task
from search.plan import make_plan
from search.results import feasible_trials
from search.settings import build_settings
from search.study import open_study
from spaces import ArchConfig
from spaces.flops import count_flops
from trainers.rungs import RungSchedule, RungTrainer

FULL = {"trials": 20, "seeds": 3, "budget": 100_000_000, "proxy_compute": 30_000_000_000}
QUICK = {"trials": 6, "seeds": 1, "budget": 100_000_000, "proxy_compute": 2_000_000_000}
TASKS = ("recall", "listops")
METHODS = ("tpe", "random", "baseline")
BASELINE_HEAD_DIM, BASELINE_FFN = 64, 4.0
MAX_DEPTH, MAX_HEADS = 12, 16


# -- (c) the hand baseline -------------------------------------------------------------------
def hand_baseline_config(
    interface: dict[str, Any],
    budget: int,
    *,
    max_depth: int = MAX_DEPTH,
    max_heads: int = MAX_HEADS,
    head_dim: int = BASELINE_HEAD_DIM,
    ffn_mult: float = BASELINE_FFN,
) -> ArchConfig:
    """The standard full-attention Transformer (head dim 64, FFN 4x) with the most forward
    FLOPs (`count_flops`) <= `budget` over depth 1..max_depth and heads 1..max_heads.

    FLOPs grow with depth and with heads (width = heads x head_dim), so the loops stop at the
    first shape over budget; the result is maximal: one more layer or head would not fit (or
    is outside the ranges). Raises ValueError if even depth 1 with 1 head is over budget."""

    def cfg(depth: int, heads: int) -> ArchConfig:
        return ArchConfig(
            **interface,
            attention="full",
            depth=depth,
            d_model=heads * head_dim,
            n_heads=heads,
            ffn_mult=ffn_mult,
        )

    best, best_flops = None, -1
    for heads in range(1, max_heads + 1):
        if count_flops(cfg(1, heads)) > budget:
            break
        for depth in range(1, max_depth + 1):
            flops = count_flops(cfg(depth, heads))
            if flops > budget:
                break
            if flops > best_flops:
                best, best_flops = cfg(depth, heads), flops
    if best is None:
        raise ValueError(
            f"no full-attention baseline (head dim {head_dim}, FFN {ffn_mult:g}x) fits "
            f"{format_flops(budget)} at seq_len {interface['seq_len']}; "
            f"the smallest needs {format_flops(count_flops(cfg(1, 1)))}"
        )
    return best


def describe(cfg: dict[str, Any] | None) -> str:
    """Short text of a config: `full L2 d128 h2 ffn4`, plus the span parameter if any."""
    if not cfg:
        return "-"
    c = ArchConfig.from_dict(cfg)
    span = f" span{c.span}" if c.span is not None else ""
    share = f" shared{c.unique_blocks}" if c.unique_blocks else ""
    return f"{c.attention}{span} L{c.depth} d{c.d_model} h{c.n_heads} ffn{c.ffn_mult:g}{share}"


# -- runs ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Record:
    """The outcome of one method on one task and seed."""

    task: str
    method: str  # tpe, random, baseline, or "variant:<name>"
    seed: int
    best: float | None  # best top-rung validation loss (None: no completed trial)
    config: dict[str, Any] | None
    wall: float | None = None  # seconds (None for variant rows: no training of their own)
    feasible: int | None = None  # completed trials within budget (searches only)


def _settings(task: str, sampler: str, seed: int, args: argparse.Namespace):
    flags = {
        "budget": args.budget,
        "task": task,
        "sampler": sampler,
        "proxy_compute": args.proxy_compute,
        "seed": seed,
    }
    return build_settings({}, flags)


def run_search(
    task: str, sampler: str, seed: int, args: argparse.Namespace, storage: str
) -> tuple[Record, optuna.Study]:
    settings = _settings(task, sampler, seed, args)
    t = make_task(settings)
    name = f"{task}-{sampler}-seed{seed}"
    start = time.perf_counter()
    study = open_study(settings, name, storage, t)
    objective = Objective(settings, _schedule(settings, t, args), threads=args.threads)
    optimize(study, objective, args.trials)
    wall = time.perf_counter() - start
    trials = feasible_trials(study)
    best = trials[0] if trials else None
    record = Record(
        task,
        sampler,
        seed,
        best.values[0] if best else None,
        best.user_attrs.get("config") if best else None,
        wall,
        len(trials),
    )
    return record, study


def _schedule(settings, task, args: argparse.Namespace) -> RungSchedule:
    """The search's rungs without a clock (search.run --timeout 0): 64 first-rung steps at
    the recipe's batch; the same schedule for the searches and the baseline."""
    plan = make_plan(
        task, settings.budget, settings.recipe, trials=args.trials, timeout=None, workers=1,
        threads=args.threads or 1, device=settings.device, flops_per_s=1.0,
    )  # fmt: skip
    return plan.schedule


def run_baseline(task: str, seed: int, args: argparse.Namespace) -> Record:
    """(c): the hand baseline trained through every rung of the same schedule; its value is
    the top rung's validation loss, as a search trial's."""
    settings = _settings(task, "tpe", seed, args)
    t = make_task(settings)
    start = time.perf_counter()
    cfg = hand_baseline_config(t.interface(), settings.budget)
    out = RungTrainer(
        cfg, t, _schedule(settings, t, args), recipe=settings.recipe, seed=settings.seed,
        device=settings.device, threads=args.threads,
    ).run()  # fmt: skip
    value = out.rungs[-1].loss if out.status == "ok" and out.rungs else None
    return Record(task, "baseline", seed, value, cfg.to_dict(), time.perf_counter() - start)


def per_variant(task: str, seed: int, studies: list[optuna.Study]) -> list[Record]:
    """(d): the best completed trial of each attention variant across the given studies."""
    maximize = studies[0].directions[0] == optuna.study.StudyDirection.MAXIMIZE
    direction = "maximize" if maximize else "minimize"  # val loss: minimize
    best: dict[str, optuna.trial.FrozenTrial] = {}
    for study in studies:
        for t in feasible_trials(study):
            v = str(t.user_attrs.get("variant"))
            if v not in best or _better(t.values[0], best[v].values[0], direction):
                best[v] = t
    return [
        Record(task, f"variant:{v}", seed, t.values[0], t.user_attrs.get("config"))
        for v, t in sorted(best.items())
    ]


def _better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


# -- the table -------------------------------------------------------------------------------
LABELS = {
    "tpe": "(a) TPE search (default)",
    "random": "(b) random search",
    "baseline": "(c) hand baseline: full, head dim 64, FFN 4x, largest that fits",
}


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summary_rows(records: list[Record], seeds: list[int]) -> list[dict[str, str]]:
    """One row per task and method: median and min-max over seeds of the best metric."""
    rows = []
    tasks = list(dict.fromkeys(r.task for r in records))
    for task in tasks:
        mine = [r for r in records if r.task == task]
        methods = [m for m in METHODS if any(r.method == m for r in mine)]
        methods += sorted({r.method for r in mine if r.method.startswith("variant:")})
        for method in methods:
            rs = sorted((r for r in mine if r.method == method), key=lambda r: r.seed)
            values = [r.best for r in rs if r.best is not None]
            walls = [r.wall for r in rs if r.wall is not None]
            feasible = [r.feasible for r in rs if r.feasible is not None]
            first = next((r for r in rs if r.best is not None), None)
            label = LABELS.get(method) or f"(d) best `{method.split(':', 1)[1]}` from (a)+(b)"
            rows.append(
                {
                    "task": task,
                    "method": label,
                    "median": _fmt(statistics.median(values)) if values else "-",
                    "spread": f"{_fmt(min(values))}-{_fmt(max(values))}" if values else "-",
                    "seeds": f"{len(values)}/{len(seeds)}",
                    "feasible": str(statistics.median(feasible)) if feasible else "-",
                    "wall": f"{statistics.median(walls):.0f}" if walls else "-",
                    "config": describe(first.config) if first else "-",
                }
            )
    return rows


def markdown(rows: list[dict[str, str]], meta: dict[str, Any]) -> str:
    head = (
        f"Budget {format_flops(meta['budget'])} forward per sequence (fvcore: 1 multiply-add"
        f" = 1 FLOP), the search's rungs (no clock), {meta['trials']} trials per search, "
        f"seeds {meta['seeds']}, threads "
        f"{meta['threads']}; value: validation loss of the top rung (lower is better); "
        f"total {meta['total_s']:.0f} s.\n\n"
    )
    cols = [
        ("task", "task"),
        ("method", "method"),
        ("median", "best val loss (median)"),
        ("spread", "min-max"),
        ("seeds", "seeds"),
        ("feasible", "completed trials (median)"),
        ("wall", "wall s (median)"),
        ("config", f"best config (seed {meta['seeds'][0]})"),
    ]
    lines = [
        "| " + " | ".join(title for _, title in cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    lines += ["| " + " | ".join(r[key] for key, _ in cols) + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


# -- CLI -------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m benchmarks.search_quality",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a(
        "--quick",
        action="store_true",
        help=f"tiny smoke run: {QUICK['seeds']} seed, {QUICK['trials']} trials, budget "
        f"{format_flops(QUICK['budget'])}, proxy compute {format_flops(QUICK['proxy_compute'])}",
    )
    a("--trials", type=int, help=f"trials per search (default {FULL['trials']})")
    a("--seeds", type=int, help=f"number of seeds 0..N-1 (default {FULL['seeds']})")
    a(
        "--budget",
        type=flops_arg,
        help=f"forward FLOPs per sequence (default {format_flops(FULL['budget'])})",
    )
    a(
        "--proxy-compute",
        type=flops_arg,
        help=f"training FLOPs per trial (default {format_flops(FULL['proxy_compute'])})",
    )
    a("--tasks", nargs="+", choices=TASKS, default=list(TASKS), help="default: recall listops")
    a("--threads", type=int, help="torch threads (default: torch's, honours OMP_NUM_THREADS)")
    a("--storage", help="keep the studies in this SQLAlchemy URL (default: a temporary file)")
    a("--out", type=Path, help="also write the markdown table to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    base = QUICK if args.quick else FULL
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.trials < 1 or args.seeds < 1 or (args.threads is not None and args.threads < 1):
        print("error: --trials, --seeds and --threads must be >= 1", file=sys.stderr)
        return 2
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    seeds = list(range(args.seeds))
    records: list[Record] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="search_quality-") as tmp:
        storage = args.storage or f"sqlite:///{tmp}/studies.db"
        for task in args.tasks:
            for seed in seeds:
                studies = []
                for sampler in ("tpe", "random"):
                    record, study = run_search(task, sampler, seed, args, storage)
                    records.append(record)
                    studies.append(study)
                    print(
                        f"{task} seed {seed} {sampler}: best {_fmt(record.best)} "
                        f"({record.feasible} completed, {record.wall:.0f} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                try:
                    record = run_baseline(task, seed, args)
                except ValueError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                records.append(record)
                print(
                    f"{task} seed {seed} baseline {describe(record.config)}: "
                    f"{_fmt(record.best)} ({record.wall:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                records += per_variant(task, seed, studies)
    meta = {
        "budget": args.budget,
        "proxy_compute": args.proxy_compute,
        "trials": args.trials,
        "seeds": seeds,
        "threads": args.threads or "torch default",
        "total_s": time.perf_counter() - start,
    }
    table = markdown(summary_rows(records, seeds), meta)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table, encoding="utf-8")
        print(f"written to {args.out}", file=sys.stderr)
    return 0


__all__ = [
    "Record",
    "describe",
    "hand_baseline_config",
    "markdown",
    "per_variant",
    "run_baseline",
    "run_search",
    "summary_rows",
]


if __name__ == "__main__":
    run_main(main)
