"""The `python -m search.scale` command line: every flag, its default and help text, and the
checks the parser cannot make (`check_flags`), all before anything is opened or trained.
Kept apart from search/scale.py as search/run_flags.py is from search/run.py."""

from __future__ import annotations

import argparse
import math

from search.budget import (
    count_arg,
    device_arg,
    device_problem,
    flops_list_arg,
    format_flops,
    number_arg,
    whole_number_arg,
)
from search.cli import Parser
from search.compound import Coefficients
from search.compound_grid import RATIO_TOLERANCE
from search.plateau import TIE_MARGIN
from search.storage import DEFAULT_STORAGE

DESCRIPTION = (
    "`python -m search.scale --study NAME --targets 4GFLOPs,8GFLOPs`: grow the search's pick."
)


def parse_coefficients(text: str) -> Coefficients:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if (
        len(values) != 3
        or not all(math.isfinite(v) and v >= 1.0 for v in values)
        or not any(v > 1.0 for v in values)  # 1,1,1 grows nothing: no target is reachable
    ):
        raise argparse.ArgumentTypeError(
            f"invalid --coefficients {text!r}: expected three numbers >= 1 for depth, width and "
            "span, at least one > 1, e.g. 1.2,1.1,1.15"
        )
    return Coefficients(*values)


def out_study_arg(text: str) -> str:
    """`--out-study`: a name; an empty one was silently replaced by the default before."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            f"invalid --out-study {text!r}: expected a study name, e.g. text-2.00GFLOPs-scaled "
            "(leave the flag out for the default <study>-scaled)"
        )
    return text


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.scale", description=DESCRIPTION)
    a = p.add_argument
    a("--study", required=True, help="base study, e.g. text-2.00GFLOPs")
    a(
        "--targets",
        required=True,
        type=flops_list_arg,
        help="comma-separated FLOP targets, e.g. 4GFLOPs,8GFLOPs,16GFLOPs",
    )
    a(
        "--coefficients",
        type=parse_coefficients,
        help="alpha,beta,gamma to skip the grid, e.g. 1.2,1.1,1.15",
    )
    a("--trial", type=int, help="base trial number (default: the search's pick)")
    a(
        "--grid-seeds",
        type=whole_number_arg("--grid-seeds", 1),
        default=1,
        help="train each grid point with this many seeds (init and data order) and rank by "
        "the mean validation loss, default 1",
    )
    a(
        "--grid-tokens",
        type=count_arg,
        help="train each grid point for at least this many tokens, e.g. 2M (default: the "
        "study's rungs; longer rungs keep the study's batch and anytime schedule)",
    )
    a(
        "--grid-race",
        type=whole_number_arg("--grid-race", 0),
        default=1,
        help=f"grid points within {TIE_MARGIN * 100:.0f}%% of the best loss are tied: train them "
        "on, continued, for "
        "up to this many more rungs (eta x the tokens each) while a tie remains, and pick the "
        "best at the longest horizon; 0 picks among ties by the study's rungs (default 1)",
    )
    a("--storage", default=DEFAULT_STORAGE, help=f"study database URL, default {DEFAULT_STORAGE}")
    a(
        "--tolerance",
        type=number_arg("--tolerance", 0, 1, str(RATIO_TOLERANCE)),
        default=RATIO_TOLERANCE,
        help="coefficient sets whose rounded config measures 2x the base FLOPs +- this fraction "
        f"are candidates for grid points (default {RATIO_TOLERANCE}); each chosen point is then "
        "fitted to 2x +- 0.2x",
    )
    a(
        "--train",
        action="store_true",
        help="also train the base and each scaled config for --tokens (search.train's trainer)",
    )
    a(
        "--tokens",
        type=count_arg,
        help="training tokens per config with --train (default: the study's top rung), e.g. 2M",
    )
    a(
        "--workers",
        type=whole_number_arg("--workers", 1),
        help="training processes at once (default: one per CPU core)",
    )
    a(
        "--threads",
        type=whole_number_arg("--threads", 1),
        help="torch threads per process (default 1 on CPU)",
    )
    a("--out-study", type=out_study_arg, help="name of the scaled study (default <study>-scaled)")
    a("--overwrite", action="store_true", help="replace an existing scaled study")
    a("--device", type=device_arg, default=None, help="cpu (default), cuda, cuda:N or mps")
    a(
        "--allow-task",
        metavar="IMPORT_PATH",
        help="import this user task (pkg.module:Class) if the study names it; a study's "
        "stored import path is never imported otherwise",
    )
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Usage errors the parser cannot see, before anything opens or trains (ValueError)."""
    seen: set[int] = set()
    for target in args.targets:
        if target in seen:
            raise ValueError(
                f"--targets names {format_flops(target)} ({target:,} FLOPs) twice; "
                "give each target once"
            )
        seen.add(target)
    if args.tokens is not None and not args.train:
        raise ValueError("--tokens needs --train (it sets how long --train trains each config)")
    if args.device is not None and (problem := device_problem(args.device)):
        raise ValueError(problem)


__all__ = ["check_flags", "out_study_arg", "parse_coefficients", "parser"]
