"""The pick, and what it is when the search's ranking carries no evidence.

A byte-level language model first learns the bigram statistics (the next byte given the
previous one), then sits near that loss (`Task.plateau_loss`, stored on the study as
`plateau_loss`) for a long stretch before longer context pays. While every candidate is
there, their order is the order of who reached the bigram level first, which favours shallow,
wide models, and it says nothing about who wins when trained for real.

Measured on the default README run (2 GFLOPs, 512 tokens, the standard library; docs/results.md
section 0): after the search's 0.5M-token top rung every candidate was within 5% of the bigram
loss (2.42 nats) and the pick, a one-layer window model, led. Trained 10x longer, it finished
0.85 nats behind the full-attention hand baseline. The order turned once the leaders were about
5% below the bigram loss (1.2M tokens) and had settled at 12% below (2.4M tokens); the text
searches at 20 MFLOPs and 128 tokens, whose picks beat every baseline when trained long, ended
25% below it.

So when the search's first-ranked candidate is not at least PLATEAU_MARGIN below the plateau,
the pick is the hand baseline the study was seeded with (`search.run.seed_baselines`): the
best ranked of the multi-layer ones (a one-layer model cannot form induction heads). On that
run this is full attention 3x256, which reached 1.414 nats after 4.88M tokens, against 2.069
and 2.322 for two runs' first and 1.470 for the best of `benchmarks.outcome`'s hand baselines.
The summary says so and names the search's own first; `search.export --trial N` exports any
trial. A study without a recorded plateau loss, or without seeded baselines, keeps the
search's first (the summary still warns).

Past the plateau the search decides, which is necessary, not sufficient: at 200 MFLOPs its
first was 32% below the bigram loss after 4.36M tokens, and trained 10x longer it still ended
0.07 nats behind the full-attention baseline, which left a later plateau (docs/results.md,
section 0).

All of the above was measured with learned absolute positions. Full attention's long plateau
came largely from them. With rotary positions, the default since (spaces/rotary.py), the same
default run's first was 23% below the bigram loss after 0.59M tokens. The search picked full
attention 3x256 itself, and this rule did not fire (docs/results.md, section 0, "Rotary
positions"). It stays as the guard for short rungs: other corpora, larger budgets, a busy
machine.

Past the plateau the pick is the top rung's candidate whose loss projects lowest one rung
further (`search.projection`; the measured order stands when a candidate there was still at
the chance loss one rung earlier), and candidates within TIE_MARGIN of the pick on its rung are
named as tied (`tie_note`).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from search.asha import cut_by_halving, lineage, rung_values
from search.projection import projected_first
from search.results import attention_label, best_trial, ranked_trials
from search.time_limit import time_note

PLATEAU_MARGIN = 0.10  # a first-ranked loss above 90% of the plateau loss is "on the plateau"
# Two candidates whose top-rung losses are within TIE_MARGIN of each other are tied: one config
# trained under two seeds moved by up to 1.3% (0.025 nats at about 2 nats; the text and recall
# grids of docs/results.md section 0b), so the difference of two such figures can reach about 2%.
TIE_MARGIN = 0.02
MAX_NAMED = 3  # candidates a note names before "and N more"


def on_plateau(loss: float, plateau: float) -> bool:
    """The loss is not at least PLATEAU_MARGIN below the plateau loss."""
    return loss > (1 - PLATEAU_MARGIN) * plateau


@dataclass(frozen=True)
class Pick:
    """The trial a user should train, the search's own first-ranked trial, and the study's
    plateau loss when the search's first was still on it (`fallback`: the pick is then a
    seeded hand baseline, or the search's first if the study has none). Past the plateau the
    pick is the top rung's candidate with the lowest loss projected one rung further
    (`search.projection`; `projected` holds those projections by trial number)."""

    trial: optuna.trial.FrozenTrial
    ranked_first: optuna.trial.FrozenTrial
    plateau: float | None = None
    projected: dict[int, float] | None = None

    @property
    def fallback(self) -> bool:
        return self.trial.number != self.ranked_first.number


def seeded_baselines(
    study: optuna.Study, ranked: list[optuna.trial.FrozenTrial] | None = None
) -> list[optuna.trial.FrozenTrial]:
    """The trained hand baselines the study started from, the preferred fallback first:
    multi-layer before one-layer, then in the search's own order. (Not by FLOPs: each is
    already the largest of its head dim, and at 200 MFLOPs the larger one, 8 layers x 32 with
    one head, trained to 1.64 nats where 3 x 64 reached 1.27; the search had ranked it lower.)"""
    ranked = ranked_trials(study) if ranked is None else ranked  # `pick` passes its own
    seeded = [t for t in ranked if t.user_attrs.get("seeded") == "baseline"]
    return sorted(seeded, key=lambda t: t.user_attrs.get("config", {}).get("depth", 1) < 2)


def pick(study: optuna.Study) -> Pick:
    """The study's pick (LookupError when no candidate finished the top rung within the
    budget, as `search.results.best_trial`)."""
    best = best_trial(study)
    ranked = ranked_trials(study)
    first = ranked[0] if ranked else best
    plateau = study.user_attrs.get("plateau_loss")
    loss = first.user_attrs.get("loss")
    if plateau is None or loss is None or not on_plateau(loss, plateau):
        ahead = projected_first(
            ranked, study.user_attrs.get("eta", 3), study.user_attrs.get("chance_loss")
        )
        if ahead is None:
            return Pick(first, first)
        return Pick(ahead[0], first, projected=ahead[1])
    baselines = seeded_baselines(study, ranked)
    return Pick(baselines[0] if baselines else first, first, plateau)


def _trial(t: optuna.trial.FrozenTrial) -> str:
    a = t.user_attrs
    depth = a.get("config", {}).get("depth")
    return f"trial {t.number} ({attention_label(a)}, {depth} layers x {a.get('d_model')})"


def _seeded(t: optuna.trial.FrozenTrial) -> str:
    return ", a seeded hand baseline" if t.user_attrs.get("seeded") == "baseline" else ""


REMEDY = "For the search to decide, its rungs must be longer: raise --timeout or use --device cuda."


def fallback_note(p: Pick) -> str | None:
    """What the summary and `search.export` print when the pick is not the search's first:
    the first was on the plateau, or another candidate projects lower (None otherwise)."""
    first = p.ranked_first
    if p.plateau is None:
        if not p.fallback or p.projected is None:
            return None
        return (
            f"note: the pick is {_trial(p.trial)}, not the search's first, {_trial(first)}: "
            f"one rung further (each one's last drop per rung repeated) it projects to "
            f"{p.projected[p.trial.number]:.4f} nats against {p.projected[first.number]:.4f} "
            f"(search/projection.py). Export the search's first with --trial {first.number}."
        )
    head = (
        f"note: the search's first, {_trial(first)}, was still on the task's plateau: val loss "
        f"{first.user_attrs['loss']:.4f} against {p.plateau:.4f} nats from the previous token "
        f"alone, less than {PLATEAU_MARGIN:.0%} below it, where the candidates' order is noise "
        f"(search/plateau.py)"
    )
    if p.fallback:
        return (
            f"{head}. So the pick is the seeded hand baseline, {_trial(p.trial)}; export the "
            f"search's first with --trial {first.number}. {REMEDY}"
        )
    return f"{head}, and the study has no seeded hand baseline to fall back on. {REMEDY}"


def tied_with(study: optuna.Study, p: Pick) -> list[optuna.trial.FrozenTrial]:
    """The other candidates that reached the pick's rung with a validation loss within
    TIE_MARGIN of the pick's (either side: a fallback pick may rank below them), best first."""
    a = p.trial.user_attrs
    rung, loss = a.get("rung"), a.get("loss")
    if loss is None:
        return []
    return [
        t
        for t in ranked_trials(study)
        if t.number != p.trial.number
        and t.user_attrs.get("rung") == rung
        and abs(t.user_attrs["loss"] - loss) <= TIE_MARGIN * loss
    ]


def tie_note(study: optuna.Study, p: Pick) -> str | None:
    """What the summary prints when other candidates tie with the pick on its rung (None when
    none does): their order is within the spread between training seeds, and at 200 MFLOPs
    the pick of such a tie (a windowed model 1.0% ahead of the seeded full-attention
    baseline) ended 0.031 nats behind it when trained 3x longer, while at 20 MFLOPs another
    (0.4% ahead) stayed 0.021 ahead at 10x (docs/results.md, section 0)."""
    tied = tied_with(study, p)
    if not tied:
        return None
    loss = p.trial.user_attrs["loss"]
    names = "; ".join(f"{_trial(t)} {t.user_attrs['loss']:.4f}" + _seeded(t) for t in tied)
    return (
        f"note: tied with the pick on its rung, within {TIE_MARGIN:.0%} of its val loss "
        f"{loss:.4f} (the spread between training seeds): {names}. Their order at this length "
        f"is not evidence: train them too (search.export --trial N, then search.train) or "
        f"raise --timeout for longer rungs."
    )


def passed_over(study: optuna.Study, p: Pick) -> list[tuple[optuna.trial.FrozenTrial, int, float]]:
    """(trial, rung, the pick's loss on that rung) for each candidate the halving cut on a rung
    below the pick's while its loss there was lower than the pick's on the same rung, best
    first. Optuna's rule decides on arrival (`search.asha.promotable`): until a rung fills, the
    best so far continues, so an early arrival may go on while a later, better one is cut and
    the late promotion's best 1/eta is already taken. Candidates stopped by the time limit are
    left out (`time_note` names those), and so are candidates with a queued or running
    continuation (a late promotion not run yet, when --timeout ended the search first: the
    summary counts it as waiting)."""
    eta = study.user_attrs.get("eta", 3)
    top = p.trial.user_attrs.get("rung") or 0
    trials = study.get_trials(deepcopy=False)
    going_on = {lineage(t) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    ours = {r: rung_values(trials, eta**r).get(lineage(p.trial)) for r in range(top)}
    out = []
    for t in ranked_trials(study):
        rung = t.user_attrs.get("rung")
        if rung is None or rung >= top or not cut_by_halving(t) or lineage(t) in going_on:
            continue
        theirs = ours[rung]
        if theirs is not None and t.user_attrs["loss"] < theirs:
            out.append((t, rung, theirs))
    return sorted(out, key=lambda x: (-x[1], x[0].user_attrs["loss"]))  # nearest rung first


def passed_over_note(study: optuna.Study, p: Pick) -> str | None:
    """What the summary prints when the halving cut candidates that were ahead of the pick on
    the rung where they were cut (None when it cut none). On the default README run of
    2026-12-07 (the third, docs/results.md section 0) the seeded full 6x192 with head dim 32
    was cut at rung 1 with 2.0233 nats, ahead of the pick's 2.0400 there (the same shape with
    head dim 64, promoted on arrival); trained for 4.88M tokens it ended 0.064 ahead."""
    over = passed_over(study, p)
    if not over:
        return None
    names = "; ".join(
        f"{_trial(t)} {t.user_attrs['loss']:.4f} at rung {rung} (the pick: {ours:.4f})" + _seeded(t)
        for t, rung, ours in over[:MAX_NAMED]
    )
    more = f" and {len(over) - MAX_NAMED} more" if len(over) > MAX_NAMED else ""
    return (
        f"note: cut by the halving though ahead of the pick where they stopped: {names}{more}. "
        f"The halving promotes early arrivals on the best so far (search/asha.py), so the pick "
        f"went on without beating them there: train them too (search.export --trial N, then "
        f"search.train) or raise --timeout for more promotions."
    )


def pick_notes(study: optuna.Study, p: Pick) -> list[str]:
    """Every note on the pick, in the order the summary and the dashboard show them: the time
    limit stopped promoted candidates (`search.time_limit`), the pick is not the search's
    first, others tie with it, and the halving cut some that were ahead of it."""
    notes = (time_note(study), fallback_note(p), tie_note(study, p), passed_over_note(study, p))
    return [n for n in notes if n]


__all__ = [
    "MAX_NAMED",
    "PLATEAU_MARGIN",
    "TIE_MARGIN",
    "Pick",
    "fallback_note",
    "on_plateau",
    "passed_over",
    "passed_over_note",
    "pick",
    "pick_notes",
    "seeded_baselines",
    "tie_note",
    "tied_with",
]
