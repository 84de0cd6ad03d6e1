"""`python -m search.fidelity --study NAME`: does the proxy ranking survive longer training?

A search ranks candidates by short training (its rungs). This command measures how far that
ranking can be trusted: it retrains the `--top K` best and `--random R` randomly chosen (seeded
by `--seed`) completed trials of a study `--factor F` times longer, with the same recipe, batch
and training seed as the study, and compares the two rankings. The long run is what a user
does with the pick: F x the tokens the search judged the trial on, with `search.train`'s
trainer (`search.retrain.train_config`), so every candidate of a `--evaluation tokens` study
sees the same tokens. A study without a stored rung schedule (made before the rung evaluator)
was ranked by equal-compute proxy runs, and its long runs keep that: F x its proxy compute with
`trainers.proxy`. The statistics:

* Kendall tau and Spearman rho (`scipy.stats.kendalltau` (tau-b, ties handled) and
  `scipy.stats.spearmanr`) between the proxy metric (the trial's value) and the long-run
  metric over the retrained trials;
* top-k overlap: |top-k by proxy & top-k by long run| / k, with k = min(K, n // 2) (at least 1)
  for n retrained trials, so that "top" is at most half of what was retrained; ties are broken
  by trial order (the trial listed first wins);
* the long-run rank of the proxy's pick (1: the proxy's best is also the best after the long
  run).

Direction: both metrics are the same quantity (the validation loss for studies that rank by it,
as `search.run` now does; accuracy or bits per byte for older studies), so a positive
correlation means agreement whether the task maximizes or minimizes; "top" follows the study's
direction. The random trials are there because the best trials alone span a narrow range of
metrics, where a few noisy swaps pull tau down.

Verdict: `search.fidelity_stats.verdict(tau)` (thresholds `TRUSTWORTHY`, `ROUGH_GUIDE` there).

Stored results: on each retrained trial the user attributes `long_metric` (None when the long
run failed), `long_factor`, `long_tokens` (or `long_compute` for an equal-compute study),
`long_status`, `long_wall_time`; on the study the
user attribute `fidelity` (the statistics, the verdict, the trials and their metrics). A trial
already retrained with the same factor is not trained again unless `--retrain` is given (the
same seed gives the same result on CPU). FLOPs: fvcore's convention, 1 multiply-add = 1 FLOP.

Exit status: 0 done, 1 fewer than 3 long runs gave a metric, 2 bad input (unknown study, fewer
than 3 completed trials, bad numbers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import random
import sys
from collections.abc import Sequence

import optuna

from search.budget import device_arg, device_problem, whole_number_arg
from search.cli import Parser, run_main
from search.fidelity_runs import LongRuns, long_run
from search.fidelity_stats import (
    ROUGH_GUIDE,
    TRUSTWORTHY,
    default_k,
    fidelity_stats,
    verdict,
)
from search.parallelism import default_parallelism
from search.results import feasible_trials
from search.storage import (
    DEFAULT_STORAGE,
    StorageError,
    open_existing_storage,
    safe_url,
)
from search.study import check_task_trusted, settings_from_study, stored_schedule
from spaces.flops import FLOP_UNIT

__all__ = [
    "DEFAULT_FACTOR",
    "DEFAULT_RANDOM",
    "DEFAULT_TOP",
    "MIN_TRIALS",
    "FidelityError",
    "main",
    "parser",
    "run",
    "select_trials",
]

MIN_TRIALS = 3  # fewer points give no meaningful rank correlation
DEFAULT_TOP, DEFAULT_RANDOM, DEFAULT_FACTOR = 5, 5, 4.0

EPILOG = f"""examples:
  python -m search.fidelity --study recall-2.00GFLOPs
  python -m search.fidelity --study recall-2.00GFLOPs --top 5 --random 10 --factor 8 --threads 2
verdict (Kendall tau between proxy and long-run metric over the retrained trials):
  tau >= {TRUSTWORTHY} trustworthy; {ROUGH_GUIDE} <= tau < {TRUSTWORTHY} rough guide (consider
  longer rungs); tau < {ROUGH_GUIDE} not trustworthy (give the search longer rungs: a longer
  --timeout or a larger --rung-tokens).
FLOPs: fvcore convention, one multiply-add = one FLOP."""


class FidelityError(ValueError):
    """Bad input: unknown study, too few trials, bad numbers (exit status 2)."""


def select_trials(
    trials: Sequence[optuna.trial.FrozenTrial], top: int, n_random: int, seed: int
) -> list[tuple[optuna.trial.FrozenTrial, str]]:
    """The first `top` of `trials` (best first) and `n_random` of the rest, drawn with `seed`.

    Returns (trial, "top" | "random") pairs; the random ones in trial-number order."""
    chosen = [(t, "top") for t in trials[:top]]
    rest = sorted(trials[top:], key=lambda t: t.number)
    drawn = random.Random(seed).sample(rest, min(n_random, len(rest)))
    chosen += [(t, "random") for t in sorted(drawn, key=lambda t: t.number)]
    return chosen


# -- CLI -------------------------------------------------------------------------------------
def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 1):
        raise argparse.ArgumentTypeError(
            f"invalid --factor {text!r}: expected a finite number > 1 (the long run as a "
            "multiple of the search's training), e.g. 4"
        )
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m search.fidelity",
        description=__doc__.split("\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--study", required=True, help="study to check, e.g. recall-2.00GFLOPs")
    a(
        "--top",
        type=whole_number_arg("--top", 0),
        default=DEFAULT_TOP,
        help=f"retrain the K best completed trials, default {DEFAULT_TOP}",
    )
    a(
        "--random",
        type=whole_number_arg("--random", 0),
        default=DEFAULT_RANDOM,
        help=f"and R random other completed trials, default {DEFAULT_RANDOM}",
    )
    a(
        "--factor",
        type=_factor,
        default=DEFAULT_FACTOR,
        help="long run = F x the tokens the search trained each trial on (older equal-compute "
        f"studies: F x their proxy compute), default {DEFAULT_FACTOR:g}",
    )
    a("--storage", default=DEFAULT_STORAGE, help=f"SQLAlchemy URL, default {DEFAULT_STORAGE}")
    a(
        "--seed",
        type=whole_number_arg("--seed", 0),
        default=0,
        help="seed of the random choice of trials, default 0 (training uses the study's seed)",
    )
    a(
        "--threads",
        type=whole_number_arg("--threads", 1),
        help="torch threads (default 1 on CPU: robust on a busy machine), e.g. 2",
    )
    a("--device", type=device_arg, default=None, help="cpu (default), cuda, cuda:N or mps")
    a(
        "--allow-task",
        metavar="IMPORT_PATH",
        help="import this user task (pkg.module:Class) if the study names it; a study's "
        "stored import path is never imported otherwise",
    )
    a(
        "--retrain",
        action="store_true",
        help="retrain trials that already hold a long run with this factor",
    )
    return p


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _load(storage: optuna.storages.RDBStorage, name: str, url: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
        known = ", ".join(names[:10]) if names else "none"
        raise FidelityError(
            f"no study {name!r} in {safe_url(url)} (studies there: {known})"
        ) from None


def run(args: argparse.Namespace) -> int:
    storage, study, trials = open_checked(args)
    chosen = select_trials(trials, args.top, args.random, args.seed)
    if len(chosen) < MIN_TRIALS:
        raise FidelityError(f"only {len(chosen)} trials selected; raise --top or --random")
    metric_name = study.user_attrs.get("metric", "metric")
    settings = settings_from_study(study, args.device, args.allow_task)
    if problem := device_problem(settings.device):
        raise FidelityError(problem)
    schedule = stored_schedule(study)
    _, threads = default_parallelism(1, args.threads, settings.device)
    plan = LongRuns(args.factor, schedule, settings, threads, args.retrain)
    print(
        f"study {args.study!r}: {len(trials)} completed trials; retraining {len(chosen)} "
        f"({sum(r == 'top' for _, r in chosen)} best, {sum(r == 'random' for _, r in chosen)} "
        f"random, seed {args.seed}) {plan.describe()}, training seed {settings.seed}",
        flush=True,
    )
    rows = []
    for t, role in chosen:
        rows.append(long_run(t, role, storage, plan, metric_name))
    usable = [r for r in rows if r["long"] is not None]
    if len(usable) < MIN_TRIALS:
        print(
            f"error: only {len(usable)} long run(s) gave a metric (see statuses above); "
            f"at least {MIN_TRIALS} are needed",
            file=sys.stderr,
        )
        return 1
    direction = study.user_attrs.get("direction", "maximize")
    k = default_k(args.top, len(usable))
    result = fidelity_stats([r["proxy"] for r in usable], [r["long"] for r in usable], direction, k)
    text = verdict(result["kendall_tau"])
    fidelity = {
        **result,
        "verdict": text,
        "thresholds": {"trustworthy": TRUSTWORTHY, "rough_guide": ROUGH_GUIDE},
        "metric": metric_name,
        "factor": args.factor,
        "proxy_compute": settings.proxy_compute,
        "long_compute": plan.compute,
        "long_runs": plan.describe(),
        "first_rung_tokens": first_rung_tokens(study),
        "top": args.top,
        "random": args.random,
        "seed": args.seed,
        "trials": [r["trial"] for r in usable],
        "proxy_metrics": [r["proxy"] for r in usable],
        "long_metrics": [r["long"] for r in usable],
        "chosen": [r["chosen"] for r in usable],
        "failed_trials": [r["trial"] for r in rows if r["long"] is None],
        "flop_convention": FLOP_UNIT,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    study.set_user_attr("fidelity", fidelity)
    print_report(args, fidelity, direction, k, len(usable))
    return 0


def open_checked(args: argparse.Namespace):
    """(storage, study, its feasible trials); FidelityError when it cannot be measured."""
    try:
        storage = open_existing_storage(args.storage)
    except StorageError as exc:
        raise FidelityError(str(exc)) from None
    study = _load(storage, args.study, args.storage)
    check_task_trusted(study, args.allow_task)  # before any trained-trial checks
    if study.user_attrs.get("kind") == "scaled":
        raise FidelityError(
            f"{args.study!r} is a scaled study (from {study.user_attrs.get('base_study')!r}); "
            "search.fidelity measures a search study: pass --study "
            f"{study.user_attrs.get('base_study')}"
        )
    if "identity" not in study.user_attrs:
        raise FidelityError(
            f"study {args.study!r} was not made by search.run (no 'identity' attribute), so "
            "its proxy settings are unknown"
        )
    if args.top + args.random < MIN_TRIALS:
        raise FidelityError(
            f"--top {args.top} --random {args.random} retrains fewer than {MIN_TRIALS} trials; "
            "rank correlations need at least 3, e.g. --top 5 --random 5"
        )
    trials = feasible_trials(study)
    if len(trials) < MIN_TRIALS:
        raise FidelityError(
            f"study {args.study!r} has {len(trials)} completed trial(s) within its budget; "
            f"at least {MIN_TRIALS} are needed (run more: python -m search.run ... --trials N)"
        )
    return storage, study, trials


def first_rung_tokens(study: optuna.Study) -> int | None:
    """Training tokens of the study's first rung (None for a study without a stored schedule)."""
    schedule = stored_schedule(study)
    return None if schedule is None else schedule.tokens(0)


def print_report(args: argparse.Namespace, f: dict, direction: str, k: int, n: int) -> None:
    def num(x: float | None) -> str:
        return "undefined" if x is None else f"{x:.3f}"

    print(
        f"\nthe search's ranking vs long runs ({f.get('long_runs') or f['long_compute']}) over "
        f"{n} trials, metric {f['metric']} ({direction}):"
    )
    print(f"  Kendall tau    {num(f['kendall_tau'])}  (p {num(f['kendall_p'])})")
    print(f"  Spearman rho   {num(f['spearman_rho'])}  (p {num(f['spearman_p'])})")
    print(
        f"  top-{k} overlap  {f['top_k_overlap']:.2f}  (k = min(--top, n // 2); "
        f"the proxy's pick ranks {f['proxy_pick_long_rank']} of {n} "
        "after the long run)"
    )
    print(f"verdict: {f['verdict']}")
    if n < 8:
        print(f"note: {n} trials give a noisy tau; retrain more with --random")
    if f["kendall_tau"] is not None and f["kendall_tau"] < TRUSTWORTHY:
        print(
            "hint: the search's rungs are too short to rank these candidates; give a new "
            "study longer rungs: a longer --timeout, or "
            + (
                f"--rung-tokens {3 * f['first_rung_tokens']} (3x this study's first rung)"
                if f.get("first_rung_tokens")
                else "a larger --rung-tokens"
            )
        )
    print(
        "stored: trial attrs long_metric/long_factor, study attr 'fidelity' in "
        f"{safe_url(args.storage)}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return run(args)
    except FidelityError as exc:
        return fail(str(exc))
    except ValueError as exc:  # a malformed storage URL, a study whose settings do not load
        return fail(str(exc))


if __name__ == "__main__":
    run_main(main)
