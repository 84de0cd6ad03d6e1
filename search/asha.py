"""Asynchronous successive halving with late promotion: ASHA as published, on Optuna trials.

ASHA (Li et al. 2018) promotes every candidate that is in the best 1/eta of its rung, however
early or late it arrived there: a candidate not yet in the top waits, and is promoted later if
the rung fills up with worse ones. Optuna's `SuccessiveHalvingPruner` cannot make a trial wait,
so it decides once, on arrival, against the candidates that reached the rung before it: until
eta^2 candidates have, only the best so far continues, and a good early arrival is cut for
good. On ListOps that cut the 3rd-best of 20 rung-1 candidates, which finished 3rd of 6 when
trained 10x longer (docs/results.md, section 0).

`AshaPruner` decides on arrival exactly as Optuna's pruner does (`promotable`), and then
repairs what the arrival order got wrong: after each decision at rung k, a candidate that was
cut at rung k but now ranks in the best 1/eta of the rung is promoted late. A promotion is a
WAITING copy of the cut trial (same parameters, `failed_trial` naming the original, the
`promoted_after_rung` system attribute), which the next free worker picks up; it resumes from
the checkpoint the cut trial kept (`search.objective` keeps the checkpoint of a cut candidate),
replays the decided rungs and trains on. All trials of one candidate form a *lineage* (the
original and its retries and late promotions, `lineage`): the rung's competition counts each
lineage once, and the results rank it once, by the furthest rung it reached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.optuna_private import storage_of, trial_id
from search.time_limit import TIME_LIMITED

DECIDED = "asha_decided_rung_"  # system attr: this lineage's rung k was decided ("cut"/"continue")
PROMOTED = "promoted_after_rung"  # system attr of a late promotion: the rung it was cut at
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


def lineage(t: FrozenTrial) -> int:
    """The trial number that started this candidate: retries and late promotions carry it as
    `failed_trial` (Optuna's retry attribute), so they share the original's checkpoint."""
    original = t.system_attrs.get("failed_trial")
    return t.number if original is None else int(original)


def rung_of(step: int, eta: int) -> int | None:
    """The rung a report at `step` belongs to (rung k reports at eta^k), or None."""
    rung = round(math.log(step, eta)) if step >= 1 else -1
    return rung if rung >= 0 and eta**rung == step else None


def rung_values(trials: Iterable[FrozenTrial], step: int) -> dict[int, float]:
    """The loss each candidate reported at `step`, one per lineage (a late promotion replays
    its original's values); duplicates, failed and queued trials left out."""
    out: dict[int, float] = {}
    for t in trials:
        if (
            t.state in LIVE
            and step in t.intermediate_values
            and t.user_attrs.get("status") != "duplicate"
        ):
            out.setdefault(lineage(t), t.intermediate_values[step])
    return out


def promotable(value: float, competing: list[float], eta: int) -> bool:
    """Optuna's SuccessiveHalvingPruner rule (`_is_trial_promotable_to_next_rung`, minimising):
    in the best len // eta of the rung, or the best so far while fewer than eta^2 competed."""
    if math.isnan(value):
        return False
    index = max(0, len(competing) // eta - 1)
    return value <= sorted(competing)[index]


def top_of_rung(values: dict[int, float], eta: int) -> set[int]:
    """The lineages in the best len // eta of a rung (ASHA's promotion set; ties included)."""
    if len(values) < eta:
        return set()
    threshold = sorted(values.values())[len(values) // eta - 1]
    return {k for k, v in values.items() if v <= threshold}


class AshaPruner(optuna.pruners.BasePruner):
    """Successive halving over rungs reported at steps 1, eta, eta^2, ...: decide on arrival as
    Optuna does, then promote late every cut candidate that has since entered the best 1/eta
    of its rung. `late=False` is Optuna's pruner (without its per-trial records)."""

    def __init__(self, eta: int, late: bool = True) -> None:
        self.eta = eta
        self.late = late

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        rung = None if step is None else rung_of(step, self.eta)
        if step is None or rung is None:
            return False
        key = f"{DECIDED}{rung}"
        if key in trial.system_attrs:  # a retry or a late promotion replaying a decided rung
            return False
        trials = study.get_trials(deepcopy=False)
        values = rung_values(trials, step)
        value = trial.intermediate_values[step]
        values[lineage(trial)] = value
        cut = not promotable(value, list(values.values()), self.eta)
        storage_of(study).set_trial_system_attr(trial_id(trial), key, "cut" if cut else "continue")
        if self.late:
            for t in late_promotions(trials, values, rung, self.eta, exclude=lineage(trial)):
                promote(study, t, rung)
        return cut


def late_promotions(
    trials: list[FrozenTrial], values: dict[int, float], rung: int, eta: int, exclude: int
) -> list[FrozenTrial]:
    """The cut trials to promote now: each ends a lineage that was cut at `rung` (status
    "stopped" there by the halving, not the time limit; nothing of it running or queued) and
    is in the rung's best 1/eta."""
    top = top_of_rung(values, eta) - {exclude}
    if not top:
        return []
    members: dict[int, list[FrozenTrial]] = {}
    for t in trials:
        members.setdefault(lineage(t), []).append(t)
    out = []
    for root in sorted(top):
        group = members.get(root, [])
        if any(not t.state.is_finished() for t in group):
            continue  # running, or already queued
        trained = [t for t in group if t.user_attrs.get("status") != "superseded"]
        if not trained:
            continue
        last = max(trained, key=lambda t: t.number)
        if cut_by_halving(last) and last.user_attrs.get("rung") == rung:
            out.append(last)
    return out


def cut_by_halving(t: FrozenTrial) -> bool:
    """The halving stopped `t` at its rung: pruned with status "stopped", and not by the time
    limit (search.time_limit), whose stops stay where they are."""
    a = t.user_attrs
    return t.state == TrialState.PRUNED and a.get("status") == "stopped" and TIME_LIMITED not in a


def promote(study: optuna.Study, cut: FrozenTrial, rung: int) -> None:
    """Queue a late promotion of `cut`: a WAITING copy that resumes from its checkpoint."""
    queue_copy(study, cut, {PROMOTED: rung, "retry_history": []})


def queue_copy(study: optuna.Study, t: FrozenTrial, system: dict) -> None:
    """Queue a WAITING copy of `t` in its lineage (a retry or a late promotion): the same
    parameters and user attributes (less its outcome), `failed_trial` naming the original,
    and `system` over its system attributes."""
    drop = ("status", "reason", "progress", TIME_LIMITED)
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=t.params,
            distributions=t.distributions,
            user_attrs={k: v for k, v in t.user_attrs.items() if k not in drop},
            system_attrs={**t.system_attrs, "failed_trial": lineage(t), **system},
        )
    )


def superseded_by(trials: Iterable[FrozenTrial], t: FrozenTrial) -> FrozenTrial | None:
    """An earlier copy of the same late promotion (same lineage, same rung) that is queued,
    running or done, if two workers queued one each at the same moment: then `t` is redundant
    and trains nothing. A copy that failed or was interrupted does not count: its retry (`t`,
    possibly) carries the promotion on."""
    rung = t.system_attrs.get(PROMOTED)
    if rung is None:
        return None
    for other in trials:
        if (
            other.number < t.number
            and other.system_attrs.get(PROMOTED) == rung
            and lineage(other) == lineage(t)
            and other.state != TrialState.FAIL
            and other.user_attrs.get("status") != "superseded"
        ):
            return other
    return None


def one_per_lineage(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The furthest trial of each lineage (highest rung, then the latest): a candidate promoted
    late, or retried, is one candidate."""
    best: dict[int, FrozenTrial] = {}
    for t in trials:
        key = lineage(t)
        if key not in best or _reach(t) > _reach(best[key]):
            best[key] = t
    return list(best.values())


def _reach(t: FrozenTrial) -> tuple[int, int]:
    return (t.user_attrs.get("rung") or 0, t.number)
