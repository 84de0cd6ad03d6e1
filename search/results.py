"""Reading results back from the study database: counts, the ranking and the top table.

Ranking: a candidate that reached a higher rung ranks above one stopped earlier (it beat its
rung's competition), and within a rung the lower validation loss ranks first. The best trial
is the best of the top rung (a COMPLETE trial).
"""

from __future__ import annotations

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.asha import PROMOTED, lineage, one_per_lineage
from search.budget import format_flops
from search.chance import is_at_chance, mostly_at_chance
from trainers.rungs import RungSchedule

COLUMNS = [
    "trial",
    "variant",
    "span",
    "depth",
    "width",
    "heads",
    "FLOPs",
    "of budget",
    "params",
    "rung",
    "tokens",
    "val loss",
    "metric",
    "tokens/s",
]
REJECTED = ("over_budget", "duplicate", "surplus")  # proposals recorded but never trained
TRAINED = ("ok", "stopped", "diverged", "oom")  # final statuses of a trained candidate


def is_trained(t: optuna.trial.FrozenTrial) -> bool:
    """A candidate trained to a final status (what `--trials` counts). A trial whose worker died
    is not one (its retry is); rejected and duplicate proposals are not either."""
    return t.state.is_finished() and t.user_attrs.get("status") in TRAINED


NOT_CANDIDATES = (*REJECTED, "superseded", "interrupted")  # a RUNNING trial with one is not new


def slots_taken(trials: list[optuna.trial.FrozenTrial], before: int | None = None) -> set[int]:
    """The candidates (lineages) that hold a `--trials` slot: trained ones, queued or running
    continuations (a late promotion, a retry), and running new candidates (whose worker may have
    died), only those numbered below `before` when it is given."""
    taken = {lineage(t) for t in trials if is_trained(t)}
    taken |= {
        lineage(t)
        for t in trials
        if (t.state == TrialState.WAITING and lineage(t) != t.number)
        or (
            t.state == TrialState.RUNNING
            and t.user_attrs.get("status") not in NOT_CANDIDATES
            and (before is None or t.number < before or lineage(t) != t.number)
        )
    }
    return taken


def trained_candidates(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trained candidates among `trials`: a candidate promoted late (`search.asha`) or retried
    is one, however many trials it took."""
    return len({lineage(t) for t in trials if is_trained(t)})


def trained_count(study: optuna.Study) -> int:
    return trained_candidates(study.get_trials(deepcopy=False))


def ranked_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trained candidates within the budget, best first: higher rung, then lower loss. A
    candidate promoted late is listed once, by the furthest rung it reached."""
    budget = study.user_attrs.get("budget")
    out = []
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    for t in study.get_trials(deepcopy=False, states=states):
        a = t.user_attrs
        if a.get("status") not in ("ok", "stopped") or a.get("loss") is None:
            continue
        if budget is not None and a.get("flops", 0) > budget:
            continue
        out.append(t)
    out = one_per_lineage(out)
    out.sort(key=lambda t: (-(t.user_attrs.get("rung") or 0), t.user_attrs["loss"]))
    return out


OPTIONAL_COUNTS = ("promoted_late", "superseded", "surplus", "interrupted", "running", "waiting")
# (shown only when non-zero)


def trial_counts(study: optuna.Study) -> dict[str, int]:
    counts = {
        "complete": 0,
        "pruned": 0,
        "promoted_late": 0,  # cut, then promoted: a later trial of the same candidate went on
        "superseded": 0,  # a second copy of one late promotion (two workers queued it at once)
        "over_budget": 0,
        "duplicate": 0,
        "surplus": 0,  # a new proposal past --trials at the run's end (Objective.check_surplus)
        "failed": 0,
        "interrupted": 0,  # returned to the queue by Ctrl-C; its retry is "waiting"
        "running": 0,
        "waiting": 0,
    }
    trials = study.get_trials(deepcopy=False)
    promoted = promoted_late(trials)
    for t in trials:
        status = t.user_attrs.get("status")
        if status in REJECTED and t.state != TrialState.RUNNING:
            counts[status] += 1
        elif status == "superseded" and t.state.is_finished():
            counts["superseded"] += 1
        elif t.number in promoted:
            counts["promoted_late"] += 1
        elif t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["interrupted" if status == "interrupted" else "failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
        elif t.state == TrialState.WAITING:
            counts["waiting"] += 1
    return counts


def promoted_late(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """The numbers of the cut (PRUNED) trials that a later trial of the same candidate continued
    as a late promotion from the rung they were cut at: the candidate went on, so they are not
    its result."""
    promotions = {
        (lineage(o), o.system_attrs[PROMOTED], o.number)
        for o in trials
        if PROMOTED in o.system_attrs
    }
    return {
        t.number
        for t in trials
        if t.state == TrialState.PRUNED
        and any(
            line == lineage(t) and rung == t.user_attrs.get("rung") and number > t.number
            for line, rung, number in promotions
        )
    }


def feasible_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials within the study's budget, best first (duplicates left out)."""
    budget = study.user_attrs.get("budget")
    direction = study.user_attrs.get("direction", "maximize")
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (budget is None or t.user_attrs.get("flops", 0) <= budget)
        and t.user_attrs.get("status") != "duplicate"
    ]
    trials.sort(key=lambda t: t.values[0], reverse=direction == "maximize")
    return trials


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    trials = feasible_trials(study)
    if not trials:
        raise LookupError(f"study {study.study_name!r} has no completed trial within its budget")
    return trials[0]


def attention_label(attrs: dict) -> str | None:
    """A trial's attention for tables: the variant, or a hybrid's stack ("window64 x5 + full
    x1"); trials store "stack" only for hybrids."""
    return attrs.get("stack") or attrs.get("variant")


def _row(t: optuna.trial.FrozenTrial) -> dict:
    """The columns every table has: the trial, its shape and cost, its speed."""
    a, cfg = t.user_attrs, t.user_attrs.get("config", {})
    return {
        "trial": t.number,
        "variant": attention_label(a),
        "span": "-" if a.get("span") is None else a.get("span"),
        "depth": cfg.get("depth"),
        "width": cfg.get("d_model"),
        "heads": cfg.get("n_heads"),
        "FLOPs": format_flops(a.get("flops", 0)),
        "params": f"{a.get('params', 0):,}",
        "tokens/s": round(a.get("tokens_per_s") or 0),
    }


def top_table(study: optuna.Study, k: int = 10) -> pd.DataFrame:
    """The top `k` of the ranking, with budget fraction and rung; studies made before the rung
    evaluator (no `rung` attribute) fall back to completed trials by value."""
    ranked = ranked_trials(study)
    if not any("rung" in t.user_attrs for t in ranked):
        legacy = [{**_row(t), "metric": round(t.values[0], 4)} for t in feasible_trials(study)]
        return pd.DataFrame(legacy[:k], columns=LEGACY_COLUMNS)
    budget = study.user_attrs.get("budget") or 0
    rows = []
    for t in ranked[:k]:
        a = t.user_attrs
        rows.append(
            {
                **_row(t),
                "of budget": f"{a.get('flops', 0) / budget:.1%}" if budget else "-",
                "rung": a.get("rung"),
                "tokens": f"{a.get('tokens') or 0:,}",
                "val loss": round(a["loss"], 4),
                "metric": None if a.get("metric") is None else round(a["metric"], 4),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


LEGACY_COLUMNS = [c for c in COLUMNS if c not in ("of budget", "rung", "tokens", "val loss")]


def at_chance_by_rung(study: optuna.Study, top: bool = False) -> list[tuple[int, int, int]]:
    """(rung, candidates still at the chance loss there, candidates evaluated there) for each
    rung below the top (with `top`, the top rung too): a loss within CHANCE_MARGIN of the
    study's `chance_loss` (the best constant guess) means the model learned only the target
    frequencies, so the rung's cuts among such candidates are noise. Empty for a study without
    a recorded chance loss."""
    chance = study.user_attrs.get("chance_loss")
    eta, rungs = study.user_attrs.get("eta"), study.user_attrs.get("rungs")
    if chance is None or eta is None or rungs is None:
        return []
    out = []
    trials = ranked_trials(study)
    for rung in range(int(rungs) - (0 if top else 1)):  # rung r is reported at step eta^r
        losses = [
            t.intermediate_values[eta**rung] for t in trials if eta**rung in t.intermediate_values
        ]
        stuck = sum(is_at_chance(loss, chance) for loss in losses)
        out.append((rung, stuck, len(losses)))
    return out


def cut_at_rung(study: optuna.Study, rung: int) -> int:
    """Candidates the pruner stopped after `rung` (status "stopped" there)."""
    return sum(
        1
        for t in ranked_trials(study)
        if t.user_attrs.get("status") == "stopped" and t.user_attrs.get("rung") == rung
    )


def first_rung_advice(study: optuna.Study) -> tuple[int, int | None] | None:
    """A first rung long enough to rank this study's candidates, from its own rungs:
    (tokens, the rung whose length that is). After the last rung that ranked mostly
    at-chance candidates, the first rung where most had left chance; (eta x the top rung's
    tokens, None) when none had, even on the top rung. None when no rung ranked mostly at
    chance, or the study has no recorded schedule (made before the rung evaluator)."""
    counts = at_chance_by_rung(study, top=True)
    schedule = study.user_attrs.get("schedule")
    stuck = [rung for rung, k, n in counts[:-1] if mostly_at_chance(k, n)]
    if not stuck or not schedule:
        return None
    s = RungSchedule(**schedule)
    for rung, k, n in counts[max(stuck) + 1 :]:
        if n and not mostly_at_chance(k, n):
            return s.tokens(rung), rung
    return s.eta * s.tokens(s.top), None
