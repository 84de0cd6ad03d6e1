"""The optimize loop: ask, price, train, tell, until the study holds `--trials` candidates.

`optimize` runs Optuna's loop on a study until it holds `total` *trained* candidates
(`search.results.trained_count`: over-budget and duplicate proposals are records, not
candidates), retrying a dead worker's trial once and stopping with `SpaceExhausted` when the
sampler keeps proposing configs that cannot be trained. Where it runs: `search.workers` (local
processes) and `search.ray_backend` (a Ray cluster); how the study is opened: `search.study`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from search.asha import lineage
from search.interrupts import quiet_optuna_tracebacks
from search.objective import Objective, TrialFailed
from search.results import REJECTED, is_trained, slots_taken, trained_candidates
from search.storage import storage_failure

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MAX_CONSECUTIVE_REJECTIONS = 200  # proposals in a row that were over budget or duplicates


class SpaceExhausted(RuntimeError):
    """The sampler keeps proposing configs that are over budget or already evaluated."""


def _promotions_waiting(trials: list[optuna.trial.FrozenTrial]) -> bool:
    """A WAITING trial continues a candidate that counts already (a late promotion, or the
    retry of one)."""
    trained = {lineage(t) for t in trials if is_trained(t)}
    return any(t.state == TrialState.WAITING and lineage(t) in trained for t in trials)


def optimize(
    study: optuna.Study,
    objective: Objective,
    total: int,
    timeout: float | None = None,
    callbacks: list[Callable] | None = None,
    poll: float = 2.0,
    storage_url: str = "",
) -> None:
    """Train candidates in this process until the study holds `total` trained ones.

    Over-budget and duplicate proposals do not count, nor does a late promotion (it continues
    a candidate that counts); queued ones are run before the loop ends. When the remaining
    slots are taken by RUNNING trials, wait for them: a trial whose worker died is failed once
    its heartbeat is stale, and its retry (a WAITING trial) is picked up here and resumes from
    its checkpoint. A database failure raises StorageFailed (one line, its real cause).
    """
    quiet_optuna_tracebacks()
    objective.trials = total  # a new candidate past it is not trained (Objective.check_surplus)
    # a promotion whose rung would end past the limit is not started (search.time_limit)
    objective.deadline = None if timeout is None else time.time() + timeout
    try:
        _optimize(study, objective, total, timeout, callbacks, poll)
    except Exception as exc:  # a database error becomes one line naming its real cause
        failure = storage_failure(exc, storage_url)
        if failure is None:
            raise
        raise failure from None


def _optimize(study, objective, total, timeout, callbacks, poll) -> None:
    deadline = None if timeout is None else time.monotonic() + timeout
    rejections = 0
    seen: dict = {}

    def remember(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seen["status"] = trial.user_attrs.get("status")

    while True:
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)  # one read per loop
        done = trained_candidates(trials)
        waiting = any(t.state == TrialState.WAITING for t in trials)
        # queued late promotions run before the loop ends: they continue candidates that
        # already count (search.asha)
        if done >= total and not _promotions_waiting(trials):
            return
        if deadline is not None and time.monotonic() >= deadline:
            return
        if not waiting and len(slots_taken(trials)) >= total:
            time.sleep(poll)  # others hold the last slots; a dead one goes stale and retries
            continue
        seen.clear()
        study.optimize(
            objective,
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[*(callbacks or []), remember],
            gc_after_trial=False,
        )
        rejections = rejections + 1 if seen.get("status") in REJECTED else 0
        if rejections >= MAX_CONSECUTIVE_REJECTIONS:
            raise SpaceExhausted(
                f"{rejections} proposals in a row were over the budget or already evaluated: "
                "the space has (almost) nothing new that fits. Raise --budget, widen the space "
                "with a preset, or lower --trials"
            )
