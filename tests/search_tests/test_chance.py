"""A rung that ranks mostly at-chance candidates cuts nobody (search.chance.HoldAtChance)."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.asha import DECIDED, AshaPruner
from search.chance import HoldAtChance, is_at_chance, rung_losses
from search.run_flags import SETTINGS_FLAGS, parser
from search.samplers import holds_at_chance, make_pruner
from search.settings import RunSettings, build_settings

CHANCE = 2.25  # at chance: loss >= 0.98 x 2.25 = 2.205


def _study(rung0: list[float], chance: float | None = CHANCE, status: str = "ok") -> optuna.Study:
    """A study whose earlier candidates reported `rung0` on rung 0 (step 1) and stopped there."""
    study = optuna.create_study()
    if chance is not None:
        study.set_user_attr("chance_loss", chance)
    for loss in rung0:
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.PRUNED,
                intermediate_values={1: loss},
                user_attrs={"status": status},
            )
        )
    return study


def _decide(study: optuna.Study, pruner: optuna.pruners.BasePruner, loss: float) -> bool:
    """Would `pruner` cut a new candidate that reports `loss` on rung 0?"""
    trial = study.ask()
    trial.report(loss, step=1)
    frozen = study._storage.get_trial(trial._trial_id)
    return pruner.prune(study, frozen)


def halving() -> optuna.pruners.BasePruner:
    return AshaPruner(3)  # what --pruner halving makes (search.asha)


def test_at_chance_is_within_two_percent_of_the_chance_loss_or_above() -> None:
    assert is_at_chance(2.205, CHANCE) and is_at_chance(2.4, CHANCE)
    assert not is_at_chance(2.2049, CHANCE)


def test_a_rung_mostly_at_chance_cuts_nobody_where_halving_would() -> None:
    study = _study([2.30, 2.28, 2.25, 2.21, 1.50])  # 4 of 5 at chance, then the new one: 5 of 6
    assert _decide(study, halving(), 2.40)  # the worst of 6: halving alone cuts it
    study = _study([2.30, 2.28, 2.25, 2.21, 1.50])
    assert not _decide(study, HoldAtChance(halving()), 2.40)


def test_a_held_trial_is_decided_again_on_the_next_rung() -> None:
    # the wrapped pruner is asked even for a held trial (it records its decision); the held
    # trial's next report is judged on rung 1, against rung 1's candidates
    study = _study([2.30, 2.28, 2.25, 2.21, 1.50])
    study.pruner = HoldAtChance(halving())
    trial = study.ask()
    trial.report(2.40, step=1)
    assert not trial.should_prune()  # held: halving alone cuts it (previous test)
    trial.report(1.90, step=3)
    assert not trial.should_prune()  # the first on rung 1: the best there
    attrs = study._storage.get_trial(trial._trial_id).system_attrs
    assert attrs[f"{DECIDED}0"] == "cut" and attrs[f"{DECIDED}1"] == "continue"


def test_a_rung_of_learning_candidates_is_cut_as_halving_cuts_it() -> None:
    rung0 = [1.50, 1.40, 1.60, 1.30, 2.30]  # 1 of 5 at chance; the new one makes 2 of 6
    for loss, cut in ((2.40, True), (1.20, False)):
        assert _decide(_study(rung0), HoldAtChance(halving()), loss) is cut
        assert _decide(_study(rung0), halving(), loss) is cut


def test_exactly_half_at_chance_holds() -> None:
    # 2 of 5 earlier ones at chance and the new one at chance: 3 of 6, "at least half"
    assert not _decide(_study([2.30, 2.28, 1.5, 1.4, 1.3]), HoldAtChance(halving()), 2.40)


def test_reused_duplicates_are_not_counted_as_candidates() -> None:
    study = _study([1.50, 1.40, 1.60, 1.30])
    for _ in range(6):  # six records of an at-chance result, reused, never trained
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.PRUNED,
                intermediate_values={1: 2.30},
                user_attrs={"status": "duplicate"},  # reported, never asked to prune
            )
        )
    assert len(rung_losses(study, 1)) == 4
    assert _decide(study, HoldAtChance(halving()), 2.40)  # 1 of 5 at chance: cut


def test_a_study_without_a_chance_loss_is_left_to_the_wrapped_pruner() -> None:
    study = _study([2.30, 2.28, 2.25, 2.21, 1.50], chance=None)
    assert _decide(study, HoldAtChance(halving()), 2.40)


@pytest.mark.parametrize(
    "pruner, cut_at_chance, held",
    [
        ("halving", False, True),
        ("median", False, True),
        ("halving", True, False),
        ("hyperband", False, False),  # brackets, and the samplers' isinstance view of them
        ("none", False, False),
    ],
)
def test_which_pruners_hold(pruner: str, cut_at_chance: bool, held: bool) -> None:
    settings = RunSettings(budget=10**6, pruner=pruner, cut_at_chance=cut_at_chance)
    made = make_pruner(settings)
    assert isinstance(made, HoldAtChance) is held and holds_at_chance(settings) is held
    if pruner == "hyperband":
        assert isinstance(made, optuna.pruners.HyperbandPruner)


def test_the_flag_and_the_preset_key() -> None:
    def settings(argv: list[str], preset: dict | None = None) -> RunSettings:
        args = parser().parse_args(["--budget", "1MFLOPs", *argv])
        return build_settings(preset or {}, {k: getattr(args, k) for k in SETTINGS_FLAGS})

    assert settings([]).cut_at_chance is False
    assert settings(["--cut-at-chance"]).cut_at_chance is True
    assert settings([], {"cut_at_chance": True}).cut_at_chance is True
    with pytest.raises(ValueError, match="cut_at_chance must be true or false, got 'yes'"):
        settings([], {"cut_at_chance": "yes"})
    # a multi-objective study cannot prune at all, so there is nothing to hold
    assert not holds_at_chance(RunSettings(budget=10**6, objectives="pareto"))


@pytest.mark.parametrize("pruner, cut", [("halving", False), ("hyperband", True), ("none", True)])
def test_the_study_records_whether_its_pruner_cut_at_chance(tmp_path, pruner: str, cut: bool):
    # the summary's note reads this: hyperband is never wrapped, so its cuts were noise
    from search.objective import make_task
    from search.study import open_study

    settings = RunSettings(budget=10**6, task="recall", pruner=pruner)
    study = open_study(settings, "s", f"sqlite:///{tmp_path}/s.db", make_task(settings))
    assert study.user_attrs["cut_at_chance"] is cut
