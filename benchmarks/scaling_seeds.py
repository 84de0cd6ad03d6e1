"""Replicates of `benchmarks.scaling_outcome` side by side: the mean over seeds, and each
single-axis arm at the compound config's own FLOPs.

    python -m benchmarks.scaling_seeds SEED0.json SEED1.json [SEED2.json ...]

Each file is the `--json` of one `scaling_outcome` run of the same study and coefficients with
another `--train-seed` (the same configs, so only the data, initialisation and order differ).
It prints, per budget and scaling: each seed's validation loss, the mean and the spread
(largest minus smallest); `scaling_outcome`'s two verdicts on the mean; and the verdict at
equal FLOPs. Fitted configs land anywhere in [0.90, 1.00] x their target (a 4x compound model
at 0.911 and the width-only one at 0.979 do not spend the same compute), so the last table
interpolates width-only and depth-only to the compound config's FLOPs: linear in log FLOPs
between the two points of that arm around it (the base is every arm's 1x point), never
extrapolated. Last, the paired view: under each seed, compound's loss minus each arm's at the
same target, their mean with its standard error, and under how many seeds compound was at
least as good (a seed's data order and initialisation move every arm alike, so the paired
difference is less noisy than the two means apart). FLOPs: fvcore, one multiply-add = one
FLOP, forward, one sequence.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import statistics
import sys
from typing import Any

from benchmarks.scaling_outcome import at_least_as_good, is_monotone
from search.budget import format_flops
from search.cli import Parser, run_main

ARMS = ("compound", "width-only", "depth-only")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.scaling_seeds", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="JSON", help="scaling_outcome --json files")
    return p


def load(paths: list[str]) -> list[dict[str, Any]]:
    """The runs, checked to be replicates: one study, the same configs row by row, distinct
    seeds; ValueError naming the file otherwise."""
    runs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                run = json.load(f)
            run["rows"] = [r for r in run["rows"] if r["kind"] in ("base", *ARMS)]
            for r in run["rows"]:
                _ = float(r["flops"]), float(r["factor"])  # present and numeric
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a scaling_outcome --json file ({exc!r})") from None
        runs.append(run)
    first = runs[0]
    shape = [(r["kind"], r["factor"], r["config"]) for r in first["rows"]]
    for path, run in zip(paths[1:], runs[1:]):
        if run["study"] != first["study"]:
            raise ValueError(f"{path}: study {run['study']!r}, not {first['study']!r}")
        if [(r["kind"], r["factor"], r["config"]) for r in run["rows"]] != shape:
            raise ValueError(f"{path}: other configs than {paths[0]} (not a replicate)")
    seeds = [seed_of(r) for r in runs]
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"two files have the same --train-seed ({seeds}); give one per seed")
    return runs


def seed_of(run: dict[str, Any]) -> int | None:
    """The seed a run's final models trained with: `seed` (written since 2026-12-07), else its
    `--train-seed`, where None is the study's own seed (unknown to an older file, so a file
    with None and one with the study's seed given explicitly are told apart only by `seed`)."""
    seed = run.get("seed", run.get("train_seed"))
    return None if seed is None else int(seed)


def at_flops(points: list[tuple[float, float]], flops: float) -> float | None:
    """The loss at `flops` on the line through an arm's (FLOPs, loss) points, linear in log
    FLOPs between the two around it; None outside their range."""
    points = sorted(points)
    xs = [math.log(x) for x, _ in points]
    x = math.log(flops)
    if not points or x < xs[0] or x > xs[-1]:
        return None
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return points[i][1]
    (x0, y0), (x1, y1) = (xs[i - 1], points[i - 1][1]), (xs[i], points[i][1])
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def mean_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (kind, factor): FLOPs, each seed's loss, their mean (None if any is)."""
    out = []
    for rows in zip(*(run["rows"] for run in runs)):
        losses = [r["loss"] for r in rows]
        ok = all(v is not None for v in losses)
        out.append(
            {
                "kind": rows[0]["kind"],
                "factor": rows[0]["factor"],
                "flops": rows[0]["flops"],
                "losses": losses,
                "mean": statistics.fmean(losses) if ok else None,
            }
        )
    return out


def equal_flops(rows: list[dict[str, Any]]) -> list[tuple[float, float, dict[str, float | None]]]:
    """(factor, compound's mean loss, {arm: its mean interpolated to compound's FLOPs})."""
    base = rows[0]
    arms = {
        k: [(base["flops"], base["mean"])]
        + [(r["flops"], r["mean"]) for r in rows if r["kind"] == k and r["mean"] is not None]
        for k in ARMS[1:]
    }
    out = []
    for r in rows:
        if r["kind"] == "compound" and r["mean"] is not None:
            out.append(
                (r["factor"], r["mean"], {k: at_flops(p, r["flops"]) for k, p in arms.items()})
            )
    return out


def paired(rows: list[dict[str, Any]]) -> list[tuple[float, str, list[float]]]:
    """(factor, arm, compound's loss minus the arm's under each seed) at every target where
    both trained under every seed: the differences a seed's own noise partly cancels out of."""
    by = {(r["kind"], r["factor"]): r["losses"] for r in rows}
    out = []
    for r in rows:
        if r["kind"] != "compound":
            continue
        for arm in ARMS[1:]:
            pairs = list(zip(r["losses"], by.get((arm, r["factor"]), [])))
            if pairs and all(c is not None and a is not None for c, a in pairs):
                out.append((r["factor"], arm, [c - a for c, a in pairs]))
    return out


def standard_error(xs: list[float]) -> float | None:
    """The standard error of the mean of `xs` (sample deviation / sqrt n); None below 2."""
    return statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None


def _loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def report(runs: list[dict[str, Any]], paths: list[str]) -> None:
    rows = mean_rows(runs)
    seeds = ["study's" if seed is None else seed for seed in map(seed_of, runs)]
    print(
        f"study {runs[0]['study']}, coefficients {tuple(runs[0]['coefficients'])}, "
        f"{runs[0]['tokens']:,} tokens per config; seeds {', '.join(map(str, seeds))} "
        f"({', '.join(paths)})"
    )
    head = " ".join(f"{'seed ' + str(s):>12s}" for s in seeds)
    print(f"{'x budget':>8s} {'scaling':11s} {'FLOPs':>12s} {head} {'mean':>9s} {'spread':>7s}")
    for r in rows:
        done = [v for v in r["losses"] if v is not None]
        spread = f"{max(done) - min(done):.4f}" if len(done) > 1 else "-"
        print(
            f"{r['factor']:8g} {r['kind']:11s} {format_flops(r['flops']):>12s} "
            + " ".join(f"{_loss(v):>12s}" for v in r["losses"])
            + f" {_loss(r['mean']):>9s} {spread:>7s}"
        )
    by = {(r["kind"], r["factor"]): r["mean"] for r in rows}
    factors = sorted({r["factor"] for r in rows if r["kind"] == "compound"})
    chain = [rows[0]["mean"]] + [by["compound", f] for f in factors]
    monotone = is_monotone(chain)
    print(
        f"\nmean: compound by budget {', '.join(_loss(x) for x in chain)} -> "
        f"{'monotone' if monotone else 'NOT monotone'}   [target: monotone]"
    )
    same_target = [(f, by["compound", f], {k: by[k, f] for k in ARMS[1:]}) for f in factors]
    for title, verdicts in (
        ("at the same target", same_target),
        ("at the compound config's FLOPs (interpolated)", equal_flops(rows)),
    ):
        wins = 0
        print(f"mean, {title}:")
        for f, c, others in verdicts:
            ok = at_least_as_good(c, others)
            wins += ok
            print(
                f"  {f:g}x: compound {_loss(c)} vs "
                + ", ".join(f"{k} {_loss(v)}" for k, v in others.items())
                + f" -> {'at least as good' if ok else 'WORSE'}"
            )
        print(f"  compound at least as good at {wins} of {len(verdicts)} budgets   [target: all]")
    print("paired by seed, compound minus each arm at the same target (below 0: compound ahead):")
    for f, arm, diffs in paired(rows):
        se = standard_error(diffs)
        ahead = sum(d <= 0 for d in diffs)
        print(
            f"  {f:g}x {arm:10s} {statistics.fmean(diffs):+.4f}"
            + ("" if se is None else f" +- {se:.4f} (standard error)")
            + f", compound at least as good under {ahead} of {len(diffs)} seeds"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        runs = load(args.runs)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report(runs, args.runs)
    return 0


if __name__ == "__main__":
    run_main(main)
