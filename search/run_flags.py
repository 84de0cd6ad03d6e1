"""The `python -m search.run` command line: every flag, its default and its help text.

Kept apart from search/run.py (which only parses, calls and prints) because the flag list is
long and is what the README's flag table documents (tests/docs_tests check the two agree).
"""

from __future__ import annotations

import argparse

from search.budget import flops_arg, format_flops
from search.cli import Parser
from search.plan import DEFAULT_TIMEOUT
from search.samplers import PRUNERS, SAMPLERS, describe
from search.settings import (
    DEFAULT_PROXY_COMPUTE,
    DEFAULT_TASK,
    EVALUATIONS,
    OBJECTIVES,
    RunSettings,
)
from search.storage import DEFAULT_STORAGE, GRACE_PERIOD

EPILOG = """examples:
  python -m search.run --budget 2GFLOPs
  python -m search.run --budget 500MFLOPs --task listops --trials 40 --timeout 1800
  python -m search.run --budget 1G --task text --data corpus.txt --seq-len 1024
  python -m search.run --budget 20MFLOPs --rung-tokens 65536 --timeout 0
  python -m search.run --budget 2GFLOPs --preset studies/recall.toml --study my-search
  python -m search.run --budget 2GFLOPs --objectives pareto --sampler nsga2
FLOPs: fvcore convention, one multiply-add = one FLOP (GFLOPs = GMACs), forward, one sequence."""


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m search.run",
        description="`python -m search.run --budget 2GFLOPs`: find the best architecture that "
        "fits the budget.",
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
        "to fit, no new candidate starts after it, and no promotion whose rung would end "
        "after it; 0 = no limit",
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
        help="worker processes sharing the study (default: CPU cores / --threads, one per core "
        "by default; with --device cuda, 4 per GPU: a budget-sized candidate leaves a GPU "
        "mostly idle)",
    )
    a("--sampler", choices=list(SAMPLERS), help=describe(SAMPLERS, RunSettings.sampler))
    a(
        "--pruner",
        choices=list(PRUNERS),
        help="how candidates are cut between rungs: " + describe(PRUNERS, RunSettings.pruner),
    )
    a(
        "--cut-at-chance",
        action="store_true",
        default=None,
        help="cut at every rung, even one where most candidates are still at the chance loss "
        "(default: such a rung cuts nobody, since its order is noise; that costs time, so "
        "fewer candidates fit --timeout)",
    )
    a(
        "--proxy-compute",
        type=flops_arg,
        help="legacy: training FLOPs of the equal-compute runs that ranked studies made before "
        "the rung evaluator (search.fidelity retrains those with --factor x this); it does not "
        f"change how the search ranks candidates; default {format_flops(DEFAULT_PROXY_COMPUTE)}",
    )
    a("--seed", type=int, help="seed for data, initialisation and the sampler; default 0")
    a("--device", help="cpu (default), cuda, cuda:N or mps, e.g. --device cuda")
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
        "next to the SQLite file, studies/checkpoints for other databases); use a shared "
        "folder for several machines",
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
    a(
        "--address",
        help="Ray cluster address for --backend ray, e.g. auto or ray://host:10001 (default: a "
        "private Ray instance on this machine)",
    )
    a(
        "--cpus-per-trial",
        type=int,
        default=1,
        help="CPUs and torch threads per Ray trial (--backend ray; replaces --threads), "
        "default 1, e.g. 2",
    )
    a(
        "--gpus-per-trial",
        type=float,
        help="GPUs per Ray trial with --device cuda (--backend ray); default 0.25: 4 trials "
        "share a GPU, as local workers do; 1 = a GPU each",
    )
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
        "and 32, FFN 4x: the largest in the space that fits, and the largest with two or more "
        "layers where that one has one)",
    )
    a("--top", type=int, default=8, help="rows of the final table, default 8")
    a("--quiet", action="store_true", help="no progress bar")
    a(
        "--dry-run",
        action="store_true",
        help="time the models and print the plan (rungs, expected candidates and time), then "
        "exit without opening the study or training",
    )
    return p


# the flags that become RunSettings fields (a preset may set the same fields)
SETTINGS_FLAGS = (
    "budget",
    "task",
    "data",
    "seq_len",
    "sampler",
    "pruner",
    "cut_at_chance",
    "proxy_compute",
    "evaluation",
    "rung_tokens",
    "eta",
    "rungs",
    "seed",
    "device",
    "objectives",
)
