"""A study's trials as the report reads them: one `Point` per trial, the Pareto front, the best
so far, parameter importances and the rows of a scaling study.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward, one sequence.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from search.results import promoted_late

UNKNOWN = "unknown"
MIN_IMPORTANCE_TRIALS = 3  # completed trials needed before importances are attempted
FEW_IMPORTANCE_TRIALS = 50  # below this the report says the importances are rough


@dataclasses.dataclass
class Point:
    """One trial as the report draws it."""

    number: int
    kind: str  # complete, pruned (stopped early), promoted_late, over_budget, failed, running
    variant: str
    flops: float | None
    metric: float | None
    status: str
    reason: str
    stack: str = ""  # a hybrid's layers, e.g. "window64 x5 + full x1" (variant: its family)


def as_float(value: Any) -> float | None:
    """A finite int or float as float; anything else (bool, str, None, nan, inf) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def family(attrs: dict) -> str:
    """The colour group: the variant, or base+global variants for a hybrid ("window+full")."""
    variant = str(attrs.get("variant") or UNKNOWN)
    layers = (attrs.get("config") or {}).get("layer_attention")
    if not attrs.get("stack") or not layers:
        return variant
    others = dict.fromkeys(spec["attention"] for spec in layers if spec)
    return "+".join([variant, *others])


def points(study: optuna.Study) -> list[Point]:
    out = []
    trials = study.get_trials(deepcopy=False)
    promoted = promoted_late(trials)  # a later trial continued the candidate: not a result
    for t in trials:
        a = t.user_attrs
        if t.state == TrialState.COMPLETE:
            kind, metric = "complete", as_float(t.values[0]) if t.values else None
        elif t.number in promoted:
            kind, metric = "promoted_late", None
        elif t.state == TrialState.PRUNED:
            over = a.get("status") == "over_budget"
            kind = "over_budget" if over else "pruned"
            metric = None if over else as_float(a.get("metric"))
            if metric is None and not over and t.intermediate_values:
                metric = as_float(t.intermediate_values[max(t.intermediate_values)])
        elif t.state == TrialState.FAIL:
            kind, metric = "failed", None
        else:
            kind, metric = t.state.name.lower(), None
        out.append(
            Point(
                number=t.number,
                kind=kind,
                variant=family(a),
                flops=as_float(a.get("flops")),
                metric=metric,
                status=str(a.get("status") or ""),
                reason=str(a.get("reason") or ""),
                stack=str(a.get("stack") or ""),
            )
        )
    return out


def pareto_front(pts: Iterable[Point], maximize: bool) -> list[Point]:
    """Non-dominated points (lower FLOPs, better metric), by increasing FLOPs."""
    usable = [p for p in pts if p.flops is not None and p.metric is not None]
    sign = -1.0 if maximize else 1.0
    usable.sort(key=lambda p: (p.flops, sign * cast(float, p.metric)))
    front: list[Point] = []
    for p in usable:
        if not front or sign * cast(float, p.metric) < sign * cast(float, front[-1].metric):
            front.append(p)
    return front


def best_so_far(pts: Iterable[Point], maximize: bool, budget: float | None) -> list[Point]:
    """(trial number order) the running best among completed trials within the budget."""
    out, best = [], None
    for p in sorted(pts, key=lambda p: p.number):
        if p.kind != "complete" or p.metric is None:
            continue
        if budget is not None and p.flops is not None and p.flops > budget:
            continue
        if best is None or (
            p.metric > cast(float, best.metric) if maximize else p.metric < cast(float, best.metric)
        ):
            best = p
        out.append(dataclasses.replace(best, number=p.number))
    return out


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """(importances or None, a sentence for the report)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed trials; "
            f"this study has {len(done)}. Run more trials (resume with the same --study)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # PED-ANOVA: Optuna's own, no scikit-learn, and it covers the conditional
            # parameters of each variant; deterministic.
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            imp = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=lambda t: t.values[0]
            )
    except Exception as exc:
        return None, f"Parameter importances could not be computed ({type(exc).__name__}: {exc})."
    imp = {k: float(v) for k, v in imp.items() if math.isfinite(v)}
    if not imp:
        return None, (
            "Parameter importances are empty: no parameter varies among the completed trials."
        )
    note = (
        f"PED-ANOVA importances (Optuna) over {len(done)} completed trials: how much each "
        "parameter's distribution differs between the top 10% of trials and all of them "
        "(a variant's own parameters count where that variant was sampled); they sum to 1."
    )
    if len(done) < FEW_IMPORTANCE_TRIALS:
        note += (
            f" With fewer than {FEW_IMPORTANCE_TRIALS} completed trials the top 10% holds "
            "only a few trials: read them as rough."
        )
    return imp, note


def scaling_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        flops, metric = as_float(a.get("flops")), as_float(a.get("metric"))
        if "target" in a and flops and metric is not None and t.state != TrialState.FAIL:
            rows.append(
                {"trial": t.number, "target": a["target"], "flops": flops, "metric": metric}
            )
    return rows
