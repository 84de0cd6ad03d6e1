"""Candidates at the chance loss, and the pruner rule that follows from them.

A candidate whose validation loss is still within CHANCE_MARGIN of the task's chance loss (the
best constant guess, `Task.chance_loss`, stored on the study) has learned only the target
frequencies. A rung that ranks mostly such candidates orders them by noise: on ListOps at rungs
of 590K tokens, 19 of 20 candidates were at chance on rung 0, and a candidate cut there finished
2nd of 6 when trained 90x longer (docs/results.md, section 0).

`HoldAtChance` wraps a rung pruner: at a rung where at least half the candidates evaluated so
far are at chance, nobody is cut, and each candidate trains on to the next rung, where the
wrapped pruner decides again. This spends time on depth instead of breadth exactly when the
first rungs are too short to rank, so fewer candidates fit a `--timeout`; where the first rung
ranks learning models (text; recall with the CPU's 1,024-token steps), the wrapped pruner decides
everything, unchanged. `--cut-at-chance` turns the rule off.
"""

from __future__ import annotations

import optuna

from search.asha import rung_values

CHANCE_MARGIN = 0.02  # a rung loss within 2% of the chance loss (or above it) is at chance


def is_at_chance(loss: float, chance: float) -> bool:
    """The loss is within CHANCE_MARGIN of the chance loss, or above it."""
    return loss >= (1 - CHANCE_MARGIN) * chance


def mostly_at_chance(stuck: int, evaluated: int) -> bool:
    """At least half the candidates a rung evaluated were at the chance loss."""
    return evaluated > 0 and 2 * stuck >= evaluated


def rung_losses(study: optuna.Study, step: int) -> list[float]:
    """The losses the study's trained candidates reported at `step` so far, one per candidate
    (running ones included; reused duplicates and failed runs left out; a late promotion and
    its original count once)."""
    return list(rung_values(study.get_trials(deepcopy=False), step).values())


class HoldAtChance(optuna.pruners.BasePruner):
    """Cut nobody at a rung where most candidates evaluated so far are at the chance loss;
    elsewhere ask the wrapped pruner. Inert for a study without a recorded `chance_loss`."""

    def __init__(self, pruner: optuna.pruners.BasePruner) -> None:
        self.pruner = pruner

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        # The wrapped pruner is always asked, held or not: it keeps its own records of each
        # trial's rungs (search.asha.DECIDED; Optuna's halving counts `completed_rung_<k>`
        # records to tell a trial's rung, and skipping it would file the next report on the
        # wrong rung).
        cut = self.pruner.prune(study, trial)
        chance = study.user_attrs.get("chance_loss")
        step = trial.last_step
        if cut and chance is not None and step is not None:
            losses = rung_losses(study, step)
            if mostly_at_chance(sum(is_at_chance(x, chance) for x in losses), len(losses)):
                return False
        return cut
