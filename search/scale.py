"""`python -m search.scale --study NAME --targets 4GFLOPs,8GFLOPs`: grow the search's pick.

EfficientNet-style compound scaling (README, "Compound scaling"), on measured FLOPs:

1. Grid (skipped with `--coefficients`): one grid point per family (depth-led, width-led,
   span-led, balanced; see search/compound.py) whose rounded config at phi = 1 measures about 2x
   the base. Each is trained with the study's own evaluator: the same tokens as the search gave
   its candidates (all rungs of its schedule). The lowest validation loss picks the coefficients;
   points tied within 2% of the best train on for `--grid-race` more rungs (search.grid_race).
2. Fit: every target gets the config on those coefficients' path that lands in [0.90, 1.00] x
   target (exit 2, naming the nearest reachable FLOPs, when none does).
3. With `--train`, each scaled config (and the base) trains with `search.train`'s trainer for
   `--tokens`, and the results are printed, divergence reasons included.

Nothing is written until all of that succeeded: then the scaled configs, the grid and the
results are stored as a study of their own, `<study>-scaled`, linked to the base study.
FLOPs: fvcore, one multiply-add = one FLOP, forward, one sequence.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import warnings
from typing import Any, cast

import optuna
import pandas as pd
from sqlalchemy.exc import SQLAlchemyError

from search.budget import (
    format_flops,
)
from search.cli import run_main
from search.compound import Coefficients, ScalingError, scale_to_targets
from search.compound_grid import grid
from search.grid_race import (
    GridRace,
    merge_seeds,
    race_schedule,
    record,
    tied_leaders,
)
from search.interrupts import run_interruptible
from search.parallelism import default_parallelism
from search.plateau import TIE_MARGIN, pick
from search.retrain import run_jobs, study_schedule, train_final_job, train_rungs_job
from search.scale_flags import check_flags, parser
from search.scaled_study import ScaleOutcome, write_study
from search.settings import RunSettings
from search.storage import (
    StorageError,
    open_existing_storage,
    safe_url,
)
from search.study import check_task_trusted, settings_from_study
from spaces import ArchConfig
from spaces.flops import FLOP_CONVENTION, count_flops, count_params, estimate_flops
from spaces.layers import describe_stack
from trainers.rungs import RungSchedule


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def pick_base(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """The trial to scale: `number`, else the search's pick (as its summary names it)."""
    if number is not None:
        for t in study.get_trials(deepcopy=False):
            if t.number == number and "config" in t.user_attrs:
                return t
        raise LookupError(f"study {study.study_name!r} has no trial {number} with a config")
    return pick(study).trial  # the summary's pick (search.plateau)


def shape(cfg: ArchConfig) -> dict[str, Any]:
    return {
        **({"stack": describe_stack(cfg)} if cfg.layer_attention else {}),
        "depth": cfg.depth,
        "width": cfg.d_model,
        "heads": cfg.n_heads,
        "ffn": cfg.ffn_mult,
        "span": cfg.span,
        "FLOPs": format_flops(count_flops(cfg)),
    }


def result_text(r: dict[str, Any]) -> str:
    if r["status"] == "ok":
        return "ok"
    return f"{r['status']}: {r['reason']}"


class ScaleFailed(Exception):
    """Every grid point failed to train: exit 1 (the reasons are printed above)."""


INTERRUPTED = (
    "interrupted: nothing was written (the scaled study is written once all its training is done)"
)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        check_flags(args)
        storage, study, base_t, out_name = open_base(args)
        base = ArchConfig.from_dict(base_t.user_attrs["config"])
        base_flops = count_flops(base)
        if min(args.targets) <= base_flops:
            raise ValueError(f"every target must exceed the base's {format_flops(base_flops)}")
        settings = settings_from_study(study, args.device, args.allow_task)
        print(
            f"base: trial {base_t.number}, {describe_stack(base)} depth {base.depth} width "
            f"{base.d_model} heads {base.n_heads} span {base.span}: {format_flops(base_flops)} "
            f"({FLOP_CONVENTION})",
            flush=True,
        )
        reachable = reachable_candidates(args, base)  # validated before anything trains
        schedule = study_schedule(study, settings, base.seq_len)
        workers, threads = default_parallelism(args.workers, args.threads, settings.device)
        coeffs, source, grid_rows = choose_coefficients(
            args, reachable, settings, schedule, workers, threads
        )
    except ScaleFailed as exc:
        return fail(str(exc), 1)
    except (ValueError, LookupError) as exc:
        return fail(str(exc))
    scaled = scale_to_targets(base, coeffs, args.targets, estimate_flops)
    trained: list[dict[str, Any] | None] = [None] * (len(scaled) + 1)
    if args.train:  # the base and every scaled config, equal tokens
        tokens = args.tokens or schedule.tokens(schedule.top)
        print(
            f"training the base and {len(scaled)} scaled configs for {tokens:,} tokens", flush=True
        )
        configs = [base] + [cfg for _, cfg, _ in scaled]
        jobs = [(c.to_dict(), settings, tokens, schedule.batch_size, threads) for c in configs]
        costs = [float(estimate_flops(c)) for c in configs]  # equal tokens: FLOPs set the time
        labels = ["base"] + [f"{format_flops(t)} target" for t, _, _ in scaled]
        labels = [f"{name} {c.depth}x{c.d_model}" for name, c in zip(labels, configs)]
        got = run_jobs(train_final_job, jobs, workers, costs=costs, labels=labels)
        trained = cast("list[dict[str, Any] | None]", got)
    outcome = ScaleOutcome(base_t.number, base, coeffs, source, grid_rows, scaled, trained)
    try:  # open_base refused a non-scaled --out-study; this guards one made since then
        write_study(storage, study, out_name, outcome, args.tolerance, settings)
    except ValueError as exc:
        return fail(str(exc))
    print_outcome(args, outcome, out_name)
    return 0


def open_base(args: argparse.Namespace):
    """(storage, study, base trial, name of the scaled study); ValueError says what is wrong."""
    where = safe_url(args.storage)
    try:
        storage = open_existing_storage(args.storage)
        study = optuna.load_study(study_name=args.study, storage=storage)
    except StorageError:
        raise
    except KeyError:
        raise ValueError(f"no study {args.study!r} in {where}") from None
    except (ValueError, ImportError, OSError, SQLAlchemyError) as exc:
        raise ValueError(f"cannot open {where}: {safe_url(str(exc).splitlines()[0])}") from None
    if study.user_attrs.get("kind") == "scaled":
        base_name = study.user_attrs.get("base_study")
        raise ValueError(
            f"{args.study!r} is a scaled study (from {base_name!r}); pass --study {base_name}"
        )
    out_name = args.out_study or f"{args.study}-scaled"
    named = (
        f"--out-study {out_name!r}" if args.out_study else f"{out_name!r} (the default --out-study)"
    )
    if out_name == args.study:
        raise ValueError(f"{named} is the base study; choose another name")
    kinds = {
        s.study_name: s.user_attrs.get("kind", "search")
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }
    if out_name in kinds and kinds[out_name] != "scaled":
        raise ValueError(
            f"{named} is a {kinds[out_name]} study, not a scaled study; "
            '--overwrite only replaces scaled studies (study attr kind = "scaled")'
        )
    if out_name in kinds and not args.overwrite:
        raise ValueError(f"study {out_name!r} exists; pass --overwrite or --out-study NAME")
    check_task_trusted(study, args.allow_task)
    base_t = pick_base(study, args.trial)
    return storage, study, base_t, out_name


Candidate = tuple[Coefficients, str, ArchConfig | None, float | None]


def reachable_candidates(args: argparse.Namespace, base: ArchConfig) -> list[Candidate]:
    """The coefficients to try (given, or the grid's points) that reach every target."""
    candidates: list[Candidate]
    if args.coefficients is not None:
        candidates = [(args.coefficients, "given", None, None)]
    else:
        points, widen = grid(base, estimate_flops, args.tolerance)
        if widen > 1:
            print(f"grid: bands around 2x widened {widen:g}x (a coarse lattice near this base)")
        candidates = [(p.coeffs, p.family, p.config, p.ratio) for p in points]
        if not candidates:
            raise ValueError("no grid point measures 2x the base; raise --tolerance (e.g. 0.4)")
    reachable, errors = [], []
    for cand in candidates:
        try:
            scale_to_targets(base, cand[0], args.targets, estimate_flops)
            reachable.append(cand)
        except ScalingError as exc:
            errors.append(exc)
    if not reachable:  # the first candidate's error names the nearest reachable FLOPs
        raise ValueError(str(errors[0]))
    return reachable


def choose_coefficients(
    args: argparse.Namespace,
    reachable: list[Candidate],
    settings: RunSettings,
    schedule: RungSchedule,
    workers: int,
    threads: int,
) -> tuple[Coefficients, str, list[dict[str, Any]]]:
    """(coefficients, where they came from, the grid rows trained): the given ones, or the grid
    point with the lowest validation loss after the study's rungs, tied leaders raced on
    (search.grid_race)."""
    if args.coefficients is not None:
        return args.coefficients, "given", []
    longer = grid_schedule(schedule, args.grid_tokens)
    stretch = longer.first_steps // schedule.first_steps
    schedule = longer
    seeds = [settings.seed + k for k in range(args.grid_seeds)]
    print(
        f"grid: training {len(reachable)} points at phi = 1 for {schedule.tokens(schedule.top):,} "
        f"tokens each (the study's rungs{f' x {stretch}' if stretch > 1 else ''}"
        f"{f', {len(seeds)} seeds each' if len(seeds) > 1 else ''}), {workers} at once",
        flush=True,
    )
    configs = [cast(ArchConfig, c[2]) for c in reachable]
    with tempfile.TemporaryDirectory(prefix="grid-") as tmp:
        folder = tmp if args.grid_race else None
        longest = race_schedule(schedule, args.grid_race)
        race = GridRace(configs, seeds, settings, longest, threads, folder)
        names = [c[1] for c in reachable]
        jobs, costs = race.jobs(range(len(configs)), schedule.top)
        labels = race.labels(range(len(configs)), names)
        got = run_jobs(train_rungs_job, jobs, workers, costs=costs, labels=labels)
        grid_rows: list[dict[str, Any]] = []
        for i, (c, family, cfg, ratio) in enumerate(reachable):
            assert cfg is not None and ratio is not None  # grid points carry both
            grid_rows.append(
                {
                    "family": family,
                    "alpha": c.alpha,
                    "beta": c.beta,
                    "gamma": c.gamma,
                    "ratio": round(ratio, 3),
                    "config": cfg.to_dict(),
                }
            )
            record(grid_rows[-1], merge_seeds(race.of(got, i), seeds))
        print_grid(grid_rows)
        for rung in range(schedule.top + 1, schedule.top + 1 + args.grid_race):
            lead = tied_leaders(grid_rows)
            if len(lead) < 2:
                break
            print(
                f"grid: {len(lead)} points within {TIE_MARGIN:.0%} of the best loss "
                f"({', '.join(grid_rows[i]['family'] for i in lead)}): training them on to "
                f"{race.schedule.tokens(rung):,} tokens (race rung {rung - schedule.top} of "
                f"{args.grid_race}, continued from their checkpoints)",
                flush=True,
            )
            jobs, costs = race.jobs(lead, rung)
            labels = race.labels(lead, names)
            got = run_jobs(train_rungs_job, jobs, workers, costs=costs, labels=labels)
            for k, i in enumerate(lead):
                record(grid_rows[i], merge_seeds(race.of(got, k), seeds))
            print_grid([grid_rows[i] for i in lead])
    lead = tied_leaders(grid_rows)
    if not lead:
        raise ScaleFailed("every grid point failed to train (reasons above)")
    top = grid_rows[lead[0]]
    return Coefficients(top["alpha"], top["beta"], top["gamma"]), top["family"], grid_rows


def grid_schedule(schedule: RungSchedule, tokens: int | None) -> RungSchedule:
    """The study's schedule, its rungs lengthened by a whole factor until the top one holds at
    least `tokens` (same batch, eta and anytime learning-rate schedule)."""
    if tokens is None or tokens <= schedule.tokens(schedule.top):
        return schedule
    factor = math.ceil(tokens / schedule.tokens(schedule.top))
    return dataclasses.replace(schedule, first_steps=schedule.first_steps * factor)


def print_outcome(args: argparse.Namespace, outcome: ScaleOutcome, out_name: str) -> None:
    rows = []
    base_flops = count_flops(outcome.base)
    for (target, cfg, phi), res in zip(
        [(base_flops, outcome.base, 0.0), *outcome.scaled], outcome.trained
    ):
        row = {"target": format_flops(target), "phi": round(phi, 2), **shape(cfg)}
        row["x target"] = round(count_flops(cfg) / target, 3)
        row["params"] = f"{count_params(cfg):,}"
        if res is not None:
            row["val loss"] = None if res["loss"] is None else round(res["loss"], 4)
            row["metric"] = None if res["metric"] is None else round(res["metric"], 4)
            row["result"] = result_text(res)
        rows.append(row)
    rows[0]["target"] = "base"
    c = outcome.coeffs
    print(
        f"\ncoefficients ({outcome.source}): alpha={c.alpha} beta={c.beta} "
        f"gamma={c.gamma}; stored on study {args.study!r}"
    )
    print(f"scaled study {out_name!r} (FLOPs: fvcore, 1 multiply-add = 1 FLOP):")
    print(pd.DataFrame(rows).to_string(index=False))
    for res in outcome.trained:
        if res is not None and res["status"] != "ok":
            print(f"warning: a config {res['status']}: {res['reason']}", file=sys.stderr)
    print(
        f"\nexport one:  python -m search.export --study {out_name} --trial N --out x.json "
        f"--storage {safe_url(args.storage)}"
    )


def print_grid(rows: list[dict[str, Any]]) -> None:
    table = []
    for g in rows:
        cfg = ArchConfig.from_dict(g["config"])
        table.append(
            {
                "family": g["family"],
                "alpha,beta,gamma": f"{g['alpha']},{g['beta']},{g['gamma']}",
                **shape(cfg),
                "x base": g["ratio"],
                "tokens": f"{g['tokens']:,}",
                "val loss": None if g["loss"] is None else round(g["loss"], 4),
                "metric": None if g["metric"] is None else round(g["metric"], 4),
                **({"per seed": seed_losses(g)} if len(g.get("losses", [])) > 1 else {}),
                "result": result_text(g),
            }
        )
    print(pd.DataFrame(table).to_string(index=False), flush=True)


def seed_losses(g: dict[str, Any]) -> str:
    return "/".join("-" if x is None else f"{x:.3f}" for x in g["losses"])


if __name__ == "__main__":
    # `kill` stops like Ctrl-C: one line, 130
    run_main(lambda: run_interruptible(main, INTERRUPTED))
