"""The end of a search run: trial counts, the top candidates, the pick and what to do next.

Reads only the study database (`search.results`), so it reports the same for any backend and
for a resumed or interrupted study.
"""

from __future__ import annotations

import optuna

from search.budget import format_flops
from search.chance import CHANCE_MARGIN, mostly_at_chance
from search.hooks import run_after_run_hooks
from search.plateau import Pick, pick, pick_notes
from search.results import (
    OPTIONAL_COUNTS,
    at_chance_by_rung,
    attention_label,
    cut_at_rung,
    first_rung_advice,
    top_table,
    trained_count,
    trial_counts,
)
from search.settings import RunSettings
from search.storage import safe_url
from search.time_limit import time_note
from trainers.rungs import RungSchedule

MAX_FAILED_SHOWN = 5


def summarize(study: optuna.Study, settings: RunSettings, storage: str, top: int) -> int:
    """Print the end-of-run report; the exit status: 0 with a pick, 1 without."""
    shown = safe_url(storage)  # never print a password
    run_after_run_hooks(study, storage)  # e.g. dashboards' note and best-config artifacts
    counts = trial_counts(study)
    print(
        f"\nstudy {study.study_name!r} in {shown}: "
        + ", ".join(f"{v} {k}" for k, v in counts.items() if v or k not in OPTIONAL_COUNTS)
    )
    failed = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
        if t.user_attrs.get("status") in ("diverged", "oom")
    ]
    for t in failed[:MAX_FAILED_SHOWN]:  # a diverged candidate says why, not only in the database
        a = t.user_attrs
        print(f"trial {t.number} {a['status']}: {a.get('reason', '')} ({a.get('variant')})")
    if len(failed) > MAX_FAILED_SHOWN:
        print(f"... and {len(failed) - MAX_FAILED_SHOWN} more failed (see the dashboard)")
    table = top_table(study, top)
    try:
        chosen: Pick | None = pick(study)
    except LookupError:
        chosen = None
    if table.empty or chosen is None:
        print(
            f"no candidate finished the top rung within the budget ({trained_count(study)} "
            "trained); raise --trials or --timeout"
        )
        note = time_note(study)
        if note:
            print(note)
        if not table.empty:
            print(table.to_string(index=False))
        return 1
    print(
        f"top candidates (FLOPs: fvcore, 1 multiply-add = 1 FLOP; budget "
        f"{format_flops(settings.budget)}; ranked by rung reached, then validation loss; "
        f"metric: {study.user_attrs.get('task_metric')})"
    )
    print(table.to_string(index=False))
    print_chance_note(study)
    best = chosen.trial
    a = best.user_attrs
    metric = a.get("metric")
    label = "pick" if chosen.fallback else "best"
    print(
        f"\n{label}: trial {best.number} ({attention_label(a)}, {a.get('config', {}).get('depth')} "
        f"layers x {a.get('d_model')}, {format_flops(a.get('flops', 0))} = "
        f"{a.get('flops', 0) / settings.budget:.1%} of the budget), val loss "
        f"{a.get('loss'):.4f}, {study.user_attrs.get('task_metric')} "
        f"{'-' if metric is None else format(metric, '.4f')} after {a.get('tokens', 0):,} tokens"
    )
    for note in pick_notes(study, chosen):
        print(note)
    print(
        f"export it:  python -m search.export --study {study.study_name} --out best.json "
        f"--storage {shown}"
    )
    print(f"dashboard:  optuna-dashboard {shown}   (or python -m dashboards.serve)")
    return 0


def print_chance_note(study: optuna.Study) -> None:
    """Say so when at least half the candidates on a rung were still at the chance loss: the
    rung's order among them was noise. Under the default rule such a rung cut nobody
    (`search.chance.HoldAtChance`: the study's `cut_at_chance` is False), which the note
    counts; with --cut-at-chance (or a study from before the rule) its cuts were noise. Name a
    first rung that would rank them, read from this study's own later rungs
    (`search.results.first_rung_advice`)."""
    stuck = [(r, k, n) for r, k, n in at_chance_by_rung(study) if mostly_at_chance(k, n)]
    if not stuck:
        return
    chance = study.user_attrs["chance_loss"]
    held = study.user_attrs.get("cut_at_chance") is False
    where = "; ".join(
        f"rung {r}: {k} of {n}" + (f", {cut_at_rung(study, r)} cut" if held else "")
        for r, k, n in stuck
    )
    consequence = (
        "a rung cuts nobody while at least half of those it has ranked so far are at chance, "
        "as their order is noise (--cut-at-chance cuts anyway: faster, but by chance)"
        if held
        else "those cuts were noise"
    )
    print(
        f"note: candidates still at the chance loss ({chance:.4f} nats, the best constant "
        f"guess, within {CHANCE_MARGIN:.0%}) when their rung ranked them ({where}); "
        f"{consequence}."
    )
    advice = first_rung_advice(study)
    if advice is None:
        print(
            "      Longer rungs would rank them: raise --timeout or --rung-tokens, or use "
            "--device cuda"
        )
        return
    tokens, rung = advice
    s = RungSchedule(**study.user_attrs["schedule"])
    seen = (
        f"most had left it by rung {rung} ({tokens:,} tokens)"
        if rung is not None
        else f"most were still at it on the top rung ({s.tokens(s.top):,} tokens)"
    )
    print(  # every rung grows by the same factor, so each candidate's training does too
        f"      In this study {seen}: a first rung of --rung-tokens {tokens} should rank them "
        f"({tokens / s.tokens(0):.0f}x this run's training per candidate), or use --device cuda"
    )
