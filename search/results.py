"""Reading results back from the study database: the top-configs table and trial counts."""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.budget import format_flops

COLUMNS = [
    "trial",
    "variant",
    "span",
    "depth",
    "width",
    "heads",
    "FLOPs",
    "params",
    "metric",
    "tokens/s",
]


def trial_counts(study: optuna.Study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "over_budget": 0, "failed": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED and t.user_attrs.get("status") == "over_budget":
            counts["over_budget"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    return counts


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials within the study's budget, best first."""
    budget = study.user_attrs.get("budget")
    direction = study.user_attrs.get("direction", "maximize")
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if budget is None or t.user_attrs.get("flops", 0) <= budget
    ]
    trials.sort(key=lambda t: t.values[0], reverse=direction == "maximize")
    return trials


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    trials = feasible_trials(study)
    if not trials:
        raise LookupError(f"study {study.study_name!r} has no completed trial within its budget")
    return trials[0]


def top_table(study: optuna.Study, k: int = 10) -> pd.DataFrame:
    rows = []
    for t in feasible_trials(study)[:k]:
        a, cfg = t.user_attrs, t.user_attrs.get("config", {})
        rows.append(
            {
                "trial": t.number,
                "variant": a.get("variant"),
                "span": "-" if a.get("span") is None else a.get("span"),
                "depth": cfg.get("depth"),
                "width": cfg.get("d_model"),
                "heads": cfg.get("n_heads"),
                "FLOPs": format_flops(a.get("flops", 0)),
                "params": f"{a.get('params', 0):,}",
                "metric": round(t.values[0], 4),
                "tokens/s": round(a.get("tokens_per_s") or 0),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
