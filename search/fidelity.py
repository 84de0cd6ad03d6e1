"""`python -m search.fidelity --study NAME`: does the proxy ranking survive longer training?

A search ranks candidates by a short proxy run. This command measures how far that ranking can
be trusted: it retrains the `--top K` best and `--random R` randomly chosen (seeded by `--seed`)
completed trials of a study with `--factor F` times the study's proxy compute, with the same
recipe and the same training seed as the study, and compares the two rankings:

* Kendall tau and Spearman rho (`scipy.stats.kendalltau` (tau-b, ties handled) and
  `scipy.stats.spearmanr`) between the proxy metric (the trial's value) and the long-run
  metric over the retrained trials;
* top-k overlap: |top-k by proxy & top-k by long run| / k, with k = min(K, n // 2) (at least 1)
  for n retrained trials, so that "top" is at most half of what was retrained; ties are broken
  by trial order (the trial listed first wins);
* the long-run rank of the proxy's pick (1: the proxy's best is also the best after the long
  run).

Direction: both metrics are the same quantity (accuracy, or bits per byte), so a positive
correlation means agreement whether the task maximizes or minimizes; "top" follows the study's
direction. The random trials are there because the best trials alone span a narrow range of
metrics, where a few noisy swaps pull tau down.

Verdict (`verdict(tau)`, thresholds `TRUSTWORTHY` and `ROUGH_GUIDE`):

    tau >= 0.6          trustworthy: the proxy ranks candidates as a longer run would
    0.3 <= tau < 0.6    rough guide: the top few are worth a longer look; consider more
                        proxy compute
    tau < 0.3           not trustworthy: raise --proxy-compute before believing the search

Stored results: on each retrained trial the user attributes `long_metric` (None when the long
run failed), `long_factor`, `long_compute`, `long_status`, `long_wall_time`; on the study the
user attribute `fidelity` (the statistics, the verdict, the trials and their metrics). A trial
already retrained with the same factor is not trained again unless `--retrain` is given (the
same seed gives the same result on CPU). FLOPs: fvcore's convention, 1 multiply-add = 1 FLOP.

Exit status: 0 done, 1 fewer than 3 long runs gave a metric, 2 bad input (unknown study, fewer
than 3 completed trials, bad numbers).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import optuna
from scipy import stats

from search.budget import format_flops
from search.objective import make_task
from search.results import feasible_trials
from search.scale import settings_from_study
from search.storage import DEFAULT_STORAGE, open_storage
from spaces import ArchConfig
from trainers.proxy import train

TRUSTWORTHY = 0.6  # tau at or above: the proxy ranking can be trusted
ROUGH_GUIDE = 0.3  # tau at or above (and below TRUSTWORTHY): a rough guide only
MIN_TRIALS = 3  # fewer points give no meaningful rank correlation
DEFAULT_TOP, DEFAULT_RANDOM, DEFAULT_FACTOR = 5, 5, 4.0

EPILOG = """examples:
  python -m search.fidelity --study recall-2.00GFLOPs
  python -m search.fidelity --study recall-2.00GFLOPs --top 5 --random 10 --factor 8 --threads 2
verdict (Kendall tau between proxy and long-run metric over the retrained trials):
  tau >= 0.6 trustworthy; 0.3 <= tau < 0.6 rough guide (consider more proxy compute);
  tau < 0.3 not trustworthy (raise --proxy-compute).
FLOPs: fvcore convention, one multiply-add = one FLOP."""


class FidelityError(ValueError):
    """Bad input: unknown study, too few trials, bad numbers (exit status 2)."""


# -- pure parts ------------------------------------------------------------------------------
def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _top(values: Sequence[float], k: int, direction: str) -> set[int]:
    """Indices of the k best values; ties broken by position (the earlier index wins)."""
    sign = -1.0 if direction == "maximize" else 1.0
    order = sorted(range(len(values)), key=lambda i: (sign * values[i], i))
    return set(order[:k])


def fidelity_stats(
    proxy: Sequence[float], long: Sequence[float], direction: str, k: int
) -> dict[str, Any]:
    """Agreement between proxy and long-run metrics of the same trials (paired by position).

    Returns n, k, direction, kendall_tau, kendall_p, spearman_rho, spearman_p (None where
    undefined, e.g. every metric tied), top_k_overlap (|top-k by proxy & top-k by long| / k,
    "top" by `direction`, ties broken by position) and proxy_pick_long_rank (1-based rank,
    under the long run, of the trial the proxy ranks first; ties again by position).
    """
    proxy, long = [float(x) for x in proxy], [float(x) for x in long]
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if len(proxy) != len(long):
        raise ValueError(f"proxy and long differ in length: {len(proxy)} vs {len(long)}")
    n = len(proxy)
    if n < 2:
        raise ValueError(f"need at least 2 paired metrics, got {n}")
    if not all(math.isfinite(x) for x in proxy + long):
        raise ValueError("metrics must be finite numbers")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    tau = stats.kendalltau(proxy, long)
    rho = stats.spearmanr(proxy, long)
    top_proxy, top_long = _top(proxy, k, direction), _top(long, k, direction)
    pick = min(_top(proxy, 1, direction))
    sign = -1.0 if direction == "maximize" else 1.0
    long_order = sorted(range(n), key=lambda i: (sign * long[i], i))
    return {
        "n": n,
        "k": k,
        "direction": direction,
        "kendall_tau": _finite(tau.statistic),
        "kendall_p": _finite(tau.pvalue),
        "spearman_rho": _finite(rho.statistic),
        "spearman_p": _finite(rho.pvalue),
        "top_k_overlap": len(top_proxy & top_long) / k,
        "proxy_pick_long_rank": long_order.index(pick) + 1,
    }


def verdict(tau: float | None) -> str:
    """Plain-language reading of Kendall tau (thresholds: module docstring)."""
    if tau is None or not math.isfinite(tau):
        return (
            "undefined: the metrics are all tied, so no ranking can be compared; "
            "retrain more trials (--random) or raise --factor"
        )
    if tau >= TRUSTWORTHY:
        return (
            f"trustworthy (tau {tau:.2f} >= {TRUSTWORTHY}): the proxy ranks candidates "
            "much as the longer run does"
        )
    if tau >= ROUGH_GUIDE:
        return (
            f"rough guide ({ROUGH_GUIDE} <= tau {tau:.2f} < {TRUSTWORTHY}): the proxy's top few "
            "are worth a longer look, but its exact order is not; consider more proxy compute "
            "(--proxy-compute)"
        )
    says = "says little about" if tau >= 0 else "runs against"
    return (
        f"not trustworthy (tau {tau:.2f} < {ROUGH_GUIDE}): the proxy ranking {says} the ranking "
        "after longer training; raise --proxy-compute before believing the search"
    )


def default_k(top: int, n: int) -> int:
    """k of the top-k overlap: min(--top, n // 2), at least 1."""
    return max(1, min(top, n // 2))


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


# -- storage ---------------------------------------------------------------------------------
def set_finished_trial_user_attr(
    storage: optuna.storages.RDBStorage, trial_id: int, key: str, value: Any
) -> None:
    """Set a user attribute on a trial that has already finished.

    `storage.set_trial_user_attr` refuses finished trials (`UpdateFinishedTrialError`), and
    Optuna has no public API to annotate a completed trial, so this writes the row through
    Optuna's own RDB model (the same table and JSON encoding `set_trial_user_attr` uses).
    """
    from optuna.storages._rdb import models

    value_json = json.dumps(value)
    session = storage.scoped_session()
    try:
        row = (
            session.query(models.TrialUserAttributeModel)
            .filter(models.TrialUserAttributeModel.trial_id == trial_id)
            .filter(models.TrialUserAttributeModel.key == key)
            .one_or_none()
        )
        if row is None:
            session.add(
                models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=value_json)
            )
        else:
            row.value_json = value_json
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


# -- CLI -------------------------------------------------------------------------------------
def _count(name: str, minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(
                f"invalid {name} {text!r}: expected a whole number >= {minimum}"
            )
        return value

    return parse


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 1):
        raise argparse.ArgumentTypeError(
            f"invalid --factor {text!r}: expected a finite number > 1 (the long run's compute "
            "as a multiple of the proxy compute), e.g. 4"
        )
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 too; say what a good call looks like
        self.print_usage(sys.stderr)
        self.exit(2, f"error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m search.fidelity",
        description=__doc__.split("\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a("--study", required=True, help="study to check, e.g. recall-2.00GFLOPs")
    a(
        "--top",
        type=_count("--top", 0),
        default=DEFAULT_TOP,
        help=f"retrain the K best completed trials, default {DEFAULT_TOP}",
    )
    a(
        "--random",
        type=_count("--random", 0),
        default=DEFAULT_RANDOM,
        help=f"and R random other completed trials, default {DEFAULT_RANDOM}",
    )
    a(
        "--factor",
        type=_factor,
        default=DEFAULT_FACTOR,
        help=f"long run = F x the study's proxy compute, default {DEFAULT_FACTOR:g}",
    )
    a("--storage", default=DEFAULT_STORAGE, help=f"SQLAlchemy URL, default {DEFAULT_STORAGE}")
    a(
        "--seed",
        type=_count("--seed", 0),
        default=0,
        help="seed of the random choice of trials, default 0 (training uses the study's seed)",
    )
    a("--threads", type=_count("--threads", 1), help="torch threads, e.g. 2")
    a("--device", default=None, help="cpu (default) or cuda")
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
        raise FidelityError(f"no study {name!r} in {url} (studies there: {known})") from None


def run(args: argparse.Namespace) -> int:
    storage = open_storage(args.storage)
    study = _load(storage, args.study, args.storage)
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
    chosen = select_trials(trials, args.top, args.random, args.seed)
    if len(chosen) < MIN_TRIALS:
        raise FidelityError(f"only {len(chosen)} trials selected; raise --top or --random")
    direction = study.user_attrs.get("direction", "maximize")
    metric_name = study.user_attrs.get("metric", "metric")
    settings = settings_from_study(study, args.device)
    if settings.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise FidelityError("--device cuda was given but torch sees no CUDA device")
    task = make_task(settings)
    long_compute = round(settings.proxy_compute * args.factor)
    print(
        f"study {args.study!r}: {len(trials)} completed trials; retraining {len(chosen)} "
        f"({sum(r == 'top' for _, r in chosen)} best, {sum(r == 'random' for _, r in chosen)} "
        f"random, seed {args.seed}) with {args.factor:g} x the proxy compute = "
        f"{format_flops(long_compute)} training FLOPs each (proxy "
        f"{format_flops(settings.proxy_compute)}; fvcore: 1 multiply-add = 1 FLOP), "
        f"training seed {settings.seed}",
        flush=True,
    )
    rows = []
    for t, role in chosen:
        a = t.user_attrs
        reuse = (
            not args.retrain
            and a.get("long_factor") == args.factor
            and a.get("long_compute") == long_compute
            and "long_status" in a
        )
        if reuse:
            long_metric, status, wall = a.get("long_metric"), a["long_status"], None
        else:
            cfg = ArchConfig.from_dict(a["config"])
            r = train(
                cfg,
                task,
                long_compute,
                recipe=settings.recipe,
                seed=settings.seed,
                device=settings.device,
                threads=args.threads,
            )
            status, wall = r.status, r.wall_time
            long_metric = r.metric if r.status == "ok" and r.metric is not None else None
            if long_metric is not None and not math.isfinite(long_metric):
                long_metric, status = None, "diverged"
            for key, value in (
                ("long_metric", long_metric),
                ("long_factor", args.factor),
                ("long_compute", long_compute),
                ("long_status", status),
                ("long_wall_time", wall),
            ):
                set_finished_trial_user_attr(storage, t._trial_id, key, value)
        rows.append(
            {
                "trial": t.number,
                "chosen": role,
                "variant": a.get("variant"),
                "proxy": t.values[0],
                "long": long_metric,
                "status": status,
            }
        )
        shown = "failed" if long_metric is None else f"{long_metric:.4f}"
        took = "stored" if reuse else f"{wall:.1f}s"
        print(
            f"  trial {t.number:>4} ({role:>6}, {a.get('variant')}): proxy {t.values[0]:.4f}"
            f" -> long {shown} [{status}, {took}]",
            flush=True,
        )
    usable = [r for r in rows if r["long"] is not None]
    if len(usable) < MIN_TRIALS:
        print(
            f"error: only {len(usable)} long run(s) gave a metric (see statuses above); "
            f"at least {MIN_TRIALS} are needed",
            file=sys.stderr,
        )
        return 1
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
        "long_compute": long_compute,
        "top": args.top,
        "random": args.random,
        "seed": args.seed,
        "trials": [r["trial"] for r in usable],
        "proxy_metrics": [r["proxy"] for r in usable],
        "long_metrics": [r["long"] for r in usable],
        "chosen": [r["chosen"] for r in usable],
        "failed_trials": [r["trial"] for r in rows if r["long"] is None],
        "flop_convention": "fvcore: 1 multiply-add = 1 FLOP",
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    study.set_user_attr("fidelity", fidelity)

    def num(x: float | None) -> str:
        return "undefined" if x is None else f"{x:.3f}"

    print(
        f"\nproxy ({format_flops(settings.proxy_compute)}) vs long run "
        f"({format_flops(long_compute)}) over {len(usable)} trials, metric {metric_name} "
        f"({direction}):"
    )
    print(f"  Kendall tau    {num(result['kendall_tau'])}  (p {num(result['kendall_p'])})")
    print(f"  Spearman rho   {num(result['spearman_rho'])}  (p {num(result['spearman_p'])})")
    print(
        f"  top-{k} overlap  {result['top_k_overlap']:.2f}  (k = min(--top, n // 2); "
        f"the proxy's pick ranks {result['proxy_pick_long_rank']} of {len(usable)} "
        "after the long run)"
    )
    print(f"verdict: {text}")
    if len(usable) < 8:
        print(f"note: {len(usable)} trials give a noisy tau; retrain more with --random")
    if result["kendall_tau"] is not None and result["kendall_tau"] < TRUSTWORTHY:
        print(
            f"hint: e.g. python -m search.run ... --proxy-compute "
            f"{format_flops(long_compute).replace(' ', '')} --study <new name>"
        )
    print(f"stored: trial attrs long_metric/long_factor, study attr 'fidelity' in {args.storage}")
    return 0


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
    sys.exit(main())
