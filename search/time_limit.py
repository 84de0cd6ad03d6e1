"""The time limit inside a trial: a promotion starts only if its rung can end in time.

`--timeout` used to be checked between trials only, so a candidate that started before the limit
trained all the rungs it was promoted to: the default run (README command 1) planned 10.0 min and
took 14.6: four candidates reached the 1.29M-token top rung, three of them near the budget at
3.1-3.9K tokens/s, about six minutes each (docs/results.md, section 0). Now, before a trial
trains on from a rung (`RungTrainer.run`'s `before_rung`: after each rung the pruner lets it
continue from, and once after a resume, from the checkpoint's last rung), it estimates the next
rung's time from its own training speed so far and stops where it is when the rung would end
past the limit. It is then "stopped" at the rung it reached, like a candidate the halving cut,
and ranks as one; `TIME_LIMITED` (a user attribute) names why, a late promotion (search.asha)
never restarts it, and its checkpoint is deleted.

The estimate: the next rung's stable tokens, plus its decay branch below the top rung, at the
trial's measured training tokens/s, plus one validation (forward only, a third of a training
token's cost). A trial that has not reached its first rung is never stopped: a new candidate
starts only before the limit (search.driver), so a run can end up to one first rung late.
"""

from __future__ import annotations

import time

import optuna

from trainers.proxy import Recipe
from trainers.rungs import RungResult, RungSchedule, decay_steps

TIME_LIMITED = "time_limited"  # user attr: why the time limit stopped this trial


def next_rung_seconds(schedule: RungSchedule, recipe: Recipe, result: RungResult) -> float:
    """Seconds to train and validate the rung after `result`'s, at its measured speed."""
    nxt = result.rung + 1
    tokens: float = schedule.tokens(nxt) - schedule.tokens(result.rung)
    if nxt != schedule.top:  # a decay branch, discarded after the evaluation
        tokens += decay_steps(schedule, nxt, recipe) * schedule.batch_tokens
    tokens += recipe.val_tokens / 3  # validation: forward only
    return tokens / max(result.tokens_per_s, 1e-9)


def past_limit(
    deadline: float | None,
    schedule: RungSchedule,
    recipe: Recipe,
    result: RungResult,
    now: float | None = None,
) -> str | None:
    """Why the rung after `result` would end past `deadline` (time.time()), or None when it fits
    (or there is no limit, or `result` is the top rung)."""
    if deadline is None or result.rung >= schedule.top:
        return None
    now = time.time() if now is None else now
    need = next_rung_seconds(schedule, recipe, result)
    if now + need <= deadline:
        return None
    left = max(0.0, deadline - now)
    return (
        f"time limit: rung {result.rung + 1} would take about {need:.0f} s and "
        f"{left:.0f} s of --timeout were left; stopped at rung {result.rung} "
        "(a longer --timeout lets candidates like it continue)"
    )


def time_note(study: optuna.Study) -> str | None:
    """The summary's and the dashboard's note naming the candidates the limit stopped below a
    rung the halving had promoted them to (they rank by the rung they reached, which is not
    their loss's doing); None when it stopped none."""
    stopped = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
        if TIME_LIMITED in t.user_attrs and t.user_attrs.get("status") == "stopped"
    ]
    if not stopped:
        return None
    where = ", ".join(f"trial {t.number} at rung {t.user_attrs.get('rung')}" for t in stopped)
    return (
        f"note: --timeout stopped {len(stopped)} promoted candidate(s) before a rung that would "
        f"have ended past the limit ({where}); they rank by the rung they reached. A longer "
        "--timeout lets such candidates continue."
    )


__all__ = ["TIME_LIMITED", "next_rung_seconds", "past_limit", "time_note"]
