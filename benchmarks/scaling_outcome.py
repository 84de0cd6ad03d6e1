"""Does compound scaling earn its keep? Scale the search's pick and train everything for real.

    python -m benchmarks.scaling_outcome --study text-20MFLOPs [--factors 2,4,8] [--tokens 3M]
        [--grid-seeds 2] [--grid-tokens 2M] [--grid-race 1] [--trial N] [--coefficients a,b,g]

1. `search.scale` (the CLI's own code) trains its grid at phi = 1 with the study's evaluator and
   fits the pick to factor x the study's budget, for each factor: the compound-scaled configs.
2. The same targets are fitted with width-only (alpha = gamma = 1) and depth-only (beta =
   gamma = 1) coefficients.
3. The base and every scaled config train with `search.train`'s trainer for the same tokens,
   `--jobs` processes at once, one torch thread each. By default that is the grid's longest
   horizon (the study's top rung, lengthened by `--grid-tokens`, x eta per `--grid-race`
   rung): the horizon at which the grid chose the coefficients. Rows that name the same model
   (a compound config that is also the width-only one) share one run.

It prints one table (budget x scaling: shape, FLOPs, validation loss, task metric) and two
verdicts: whether the compound configs improve monotonically with budget, and whether they are
at least as good as width-only and depth-only at every budget. `--json` writes every figure.
FLOPs: fvcore, one multiply-add = one FLOP, forward, one sequence.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
import warnings
from dataclasses import replace
from typing import Any

import optuna

from benchmarks.outcome import INTERRUPTED, describe, once_per_model
from search import scale
from search.budget import count_arg, format_flops, whole_number_arg
from search.cli import Parser, run_main
from search.compound import Coefficients, scale_to_targets
from search.grid_race import race_schedule
from search.interrupts import run_interruptible
from search.retrain import run_jobs, study_schedule, train_final_job
from search.storage import DEFAULT_STORAGE, open_storage
from search.study import settings_from_study
from spaces import ArchConfig
from spaces.flops import count_flops, estimate_flops

SINGLE_AXIS = {
    "width-only": Coefficients(1.0, 1.25, 1.0),
    "depth-only": Coefficients(1.3, 1.0, 1.0),
}


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.scaling_outcome", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="a finished search.run study")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default {DEFAULT_STORAGE}")
    p.add_argument("--factors", default="2,4,8", help="targets = factor x budget (default 2,4,8)")
    p.add_argument(
        "--tokens",
        type=count_arg,
        help="tokens each (default: the grid's longest horizon, the study's top rung x eta per "
        "--grid-race rung)",
    )
    p.add_argument("--jobs", type=int, default=2, help="training processes at once (default 2)")
    p.add_argument(
        "--train-seed",
        type=whole_number_arg("--train-seed", 0),
        help="seed of the final runs' task data, initialisation and data order, for a "
        "replicate (default: the study's; the grid keeps the study's)",
    )
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    p.add_argument(
        "--grid-seeds", type=int, default=1, help="search.scale --grid-seeds (default 1)"
    )
    p.add_argument(
        "--grid-tokens", type=count_arg, help="search.scale --grid-tokens (default its rungs)"
    )
    p.add_argument(
        "--grid-race",
        type=whole_number_arg("--grid-race", 0),
        default=1,
        help="search.scale --grid-race (default 1)",
    )
    p.add_argument("--trial", type=int, help="search.scale --trial (default: the search's pick)")
    p.add_argument(
        "--coefficients",
        help="search.scale --coefficients: skip the grid, e.g. to train an earlier run's "
        "compound configs (its printed coefficients) for more tokens",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = open_storage(args.storage)
    study = optuna.load_study(study_name=args.study, storage=storage)
    settings = settings_from_study(study)
    factors = [float(x) for x in args.factors.split(",")]
    targets = [round(f * settings.budget) for f in factors]
    base = ArchConfig.from_dict(scale.pick_base(study, args.trial).user_attrs["config"])
    started = time.perf_counter()

    out_study = f"{args.study}-compound"
    code = scale.main(
        ["--study", args.study, "--storage", args.storage, "--out-study", out_study,
         "--overwrite", "--workers", str(args.jobs), "--grid-seeds", str(args.grid_seeds),
         *(["--grid-tokens", str(args.grid_tokens)] if args.grid_tokens else []),
         "--grid-race", str(args.grid_race),
         *(["--trial", str(args.trial)] if args.trial is not None else []),
         *(["--coefficients", args.coefficients] if args.coefficients else []),
         "--targets", ",".join(str(t) for t in targets)]
    )  # fmt: skip
    if code != 0:
        return code
    scaled = optuna.load_study(study_name=out_study, storage=storage)
    coeffs = scaled.user_attrs["coefficients"]
    grid_s = time.perf_counter() - started
    rows: list[dict[str, Any]] = [{"kind": "base", "factor": 1.0, "config": base}]
    compound = sorted(
        (t for t in scaled.trials if t.user_attrs["role"] == "target"),
        key=lambda t: t.user_attrs["target"],
    )
    for f, t in zip(factors, compound):
        rows.append(
            {
                "kind": "compound",
                "factor": f,
                "config": ArchConfig.from_dict(t.user_attrs["config"]),
            }
        )
    for kind, c in SINGLE_AXIS.items():
        fitted = scale_to_targets(base, c, [float(t) for t in targets], estimate_flops)
        for f, (_, cfg, _) in zip(factors, fitted):
            rows.append({"kind": kind, "factor": f, "config": cfg})

    schedule = study_schedule(study, settings, base.seq_len)
    args.tokens = args.tokens or grid_horizon(schedule, args)
    final = settings if args.train_seed is None else replace(settings, seed=args.train_seed)
    configs = [r["config"] for r in rows]
    mark_shared(rows)
    print(
        f"\ntraining {len(rows)} configs ({len({c.identity() for c in configs})} distinct models) "
        f"for {args.tokens:,} tokens each (batch {schedule.batch_size} x {schedule.seq_len}), "
        f"{args.jobs} at once, seed {final.seed}",
        flush=True,
    )

    def train(order: list[int]) -> list[dict]:
        jobs = [(configs[i].to_dict(), final, args.tokens, schedule.batch_size, 1) for i in order]
        costs = [float(estimate_flops(configs[i])) for i in order]  # the largest first
        labels = [describe(configs[i]) for i in order]
        return run_jobs(train_final_job, jobs, args.jobs, costs=costs, labels=labels)

    for r, res in zip(rows, once_per_model(configs, train)):
        r.update(res)
    wall = time.perf_counter() - started
    report(rows, settings, coeffs, factors, wall, grid_s, args, seed=final.seed)
    return 0


def grid_horizon(schedule, args: argparse.Namespace) -> int:
    """The longest training the grid could give a point: the study's rungs (lengthened by
    `--grid-tokens`) and `--grid-race` more."""
    longest = race_schedule(scale.grid_schedule(schedule, args.grid_tokens), args.grid_race)
    return longest.tokens(longest.top)


def mark_shared(rows: list[dict[str, Any]]) -> None:
    """Note on each row that names an earlier row's model which one it shares a run with."""
    seen: dict[Any, str] = {}
    for r in rows:
        key = r["config"].identity()
        if key in seen:
            r["shared_with"] = seen[key]
        else:
            seen[key] = f"{r['kind']} {r['factor']:g}x"


def is_monotone(chain: list[float | None]) -> bool:
    """Every budget's loss below the one before (the target's first verdict)."""
    return all(a is not None and b is not None and b < a for a, b in itertools.pairwise(chain))


def at_least_as_good(compound: float | None, others: dict[str, float | None]) -> bool:
    """Compound's loss no higher than each single-axis one that trained (the second verdict)."""
    return compound is not None and all(v is None or compound <= v for v in others.values())


def report(rows, settings, coeffs, factors, wall, grid_s, args, seed: int) -> None:
    budget = settings.budget
    print(
        f"\nstudy {args.study}: budget {format_flops(budget)}, compound coefficients "
        f"(alpha, beta, gamma) = {tuple(coeffs)}; {args.tokens:,} tokens per config"
    )
    print(
        f"{'x budget':>8s} {'scaling':11s} {'config':36s} {'FLOPs':>12s} {'x target':>8s} "
        f"{'val loss':>9s} {'metric':>8s} {'result':>8s}"
    )
    for r in rows:
        cfg = r["config"]
        target = r["factor"] * budget
        loss = "-" if r["loss"] is None else f"{r['loss']:.4f}"
        metric = "-" if r["metric"] is None else f"{r['metric']:.4f}"
        print(
            f"{r['factor']:8g} {r['kind']:11s} {describe(cfg):36s} "
            f"{format_flops(count_flops(cfg)):>12s} {count_flops(cfg) / target:8.3f} {loss:>9s} "
            f"{metric:>8s} {r['status']:>8s}"
            + (f"  (the {r['shared_with']} model, one run)" if "shared_with" in r else "")
        )
    base = rows[0]
    by = {(r["kind"], r["factor"]): r for r in rows}
    chain = [base["loss"]] + [by[("compound", f)]["loss"] for f in factors]
    monotone = is_monotone(chain)
    print(
        f"\ncompound, val loss by budget (base, {', '.join(f'{f:g}x' for f in factors)}): "
        f"{', '.join('-' if x is None else f'{x:.4f}' for x in chain)} -> "
        f"{'monotone' if monotone else 'NOT monotone'}   [target: monotone]"
    )
    wins = []
    for f in factors:
        c = by[("compound", f)]["loss"]
        others = {k: by[(k, f)]["loss"] for k in SINGLE_AXIS}
        ok = at_least_as_good(c, others)
        wins.append(ok)
        print(
            f"{f:g}x budget: compound {c if c is None else round(c, 4)} vs "
            + ", ".join(f"{k} {v if v is None else round(v, 4)}" for k, v in others.items())
            + f" -> {'at least as good' if ok else 'WORSE'}"
        )
    print(
        f"compound at least as good as width-only and depth-only at {sum(wins)} of "
        f"{len(wins)} budgets   [target: all]"
    )
    print(f"total wall time {wall / 60:.1f} min (grid and fit {grid_s / 60:.1f} min)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            out = [
                {**r, "config": r["config"].to_dict(), "flops": count_flops(r["config"])}
                for r in rows
            ]
            json.dump(
                {
                    "study": args.study,
                    "coefficients": coeffs,
                    "tokens": args.tokens,
                    "train_seed": args.train_seed,  # None: the study's
                    "seed": seed,  # the seed the final runs used, whichever it was
                    "rows": out,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    run_main(lambda: run_interruptible(main, INTERRUPTED))
