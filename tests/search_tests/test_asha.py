"""ASHA with late promotion (search/asha.py): on arrival it decides as Optuna's successive
halving does; a cut candidate that later ranks in the best 1/eta of its rung is promoted, resumes
from its own checkpoint, and counts and ranks as one candidate."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.trial import TrialState

from dashboards.trials import points
from search.asha import PROMOTED, AshaPruner, lineage, superseded_by
from search.driver import optimize
from search.objective import forget_finished_checkpoints
from search.results import ranked_trials, trained_count, trial_counts
from tests.search_tests.test_objective import SMALL, setup


def arrive(study: optuna.Study, value: float, steps=(1,)) -> list[bool]:
    """One candidate reporting `value` at each of `steps` until it is cut, recorded as the
    objective records it; its decisions."""
    trial = study.ask()
    trial.suggest_float("x", 0.0, 1.0)
    decisions = []
    for rung, step in enumerate(steps):
        trial.report(value, step)
        cut = trial.should_prune()
        decisions.append(cut)
        trial.set_user_attr("rung", rung)
        trial.set_user_attr("loss", value)
        if cut:
            trial.set_user_attr("status", "stopped")
            study.tell(trial, state=TrialState.PRUNED)
            return decisions
    trial.set_user_attr("status", "ok")
    study.tell(trial, value)
    return decisions


def test_on_arrival_it_decides_as_optunas_successive_halving():
    for seed in range(12):
        rng = random.Random(seed)
        values = [round(rng.uniform(0, 3), 1) for _ in range(40)]  # ties included
        decisions = {}
        for name, pruner in (
            ("optuna", optuna.pruners.SuccessiveHalvingPruner(1, 3, 0)),
            ("asha", AshaPruner(3, late=False)),
        ):
            study = optuna.create_study(pruner=pruner)
            decisions[name] = [arrive(study, v, steps=(1, 3, 9)) for v in values]
        assert decisions["asha"] == decisions["optuna"], seed
        assert any(d == [True] for d in decisions["asha"])  # some cut on rung 0
        assert any(d == [False, True] for d in decisions["asha"])  # and some on rung 1


def test_a_cut_candidate_that_later_ranks_in_the_best_third_is_promoted_late():
    study = optuna.create_study(pruner=AshaPruner(3))
    # on arrival: 5 (first, kept), 1 (best so far, kept), then 4, 3, 2 cut: until six have
    # arrived only the best so far continues
    decisions = [arrive(study, v) for v in (5, 1, 4, 3, 2)]
    assert decisions == [[False], [False], [True], [True], [True]]
    assert not study.get_trials(states=(TrialState.WAITING,))  # best 5 // 3 = 1: trial 1
    assert arrive(study, 6) == [True]
    # six on the rung: its best 2 are trials 1 (continued) and 4 (cut on arrival): promoted
    (copy,) = study.get_trials(states=(TrialState.WAITING,))
    assert copy.params == study.trials[4].params
    assert lineage(copy) == 4 and copy.system_attrs[PROMOTED] == 0
    assert copy.user_attrs["loss"] == 2 and "status" not in copy.user_attrs


def test_a_late_promotion_replays_its_decided_rungs_and_counts_once():
    study = optuna.create_study(pruner=AshaPruner(3))
    for v in (5, 1, 4, 3, 2, 6):
        arrive(study, v, steps=(1, 3))
    trial = study.ask()  # the WAITING copy of trial 4
    assert trial.number == 6 and trial.params == study.trials[4].params
    trial.report(2.0, 1)  # replayed from the checkpoint: decided already, not decided again
    assert not trial.should_prune()
    trial.report(0.5, 3)
    assert not trial.should_prune()  # rung 1: 0.5 is the best there
    trial.set_user_attr("status", "ok")
    trial.set_user_attr("rung", 1)
    trial.set_user_attr("loss", 0.5)
    study.tell(trial, 0.5)
    assert trained_count(study) == 6  # six candidates, seven trials
    ranked = ranked_trials(study)
    assert [t.number for t in ranked][:2] == [6, 1]  # rung 1: 0.5 (promoted late), then 1.0
    assert len(ranked) == 6 and 4 not in [t.number for t in ranked]
    counts = trial_counts(study)
    assert counts["promoted_late"] == 1 and counts["pruned"] == 3 and counts["complete"] == 3
    # the report draws the candidate once: by its promotion, not also by its cut original
    kinds = {p.number: p.kind for p in points(study)}
    assert kinds[4] == "promoted_late" and kinds[6] == "complete"
    assert sorted(kinds.values()).count("pruned") == 3


def test_two_copies_of_one_late_promotion_train_once():
    study = optuna.create_study(pruner=AshaPruner(3))
    for v in (5, 1, 4, 3, 2, 6):
        arrive(study, v)
    (copy,) = study.get_trials(states=(TrialState.WAITING,))
    study.add_trial(copy)  # what a second worker queuing it at the same moment leaves
    first, second = study.get_trials(states=(TrialState.WAITING,))
    assert superseded_by(study.trials, first) is None
    assert superseded_by(study.trials, second).number == first.number
    a, b = study.ask(), study.ask()  # two workers pick them up
    assert (a.number, b.number) == (first.number, second.number)
    b.set_user_attr("status", "superseded")
    study.tell(b, state=TrialState.PRUNED)
    a.set_user_attr("status", "interrupted")  # Ctrl-C: its requeued copy carries it on
    study.tell(a, state=TrialState.FAIL)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=first.params,
            distributions=first.distributions,
            system_attrs=first.system_attrs,
        )
    )
    assert superseded_by(study.trials, study.trials[-1]) is None
    # the redundant copy (it carries the original's rung and loss) hides nothing: the
    # candidate is still ranked, by its original
    assert 4 in [t.number for t in ranked_trials(study)]
    assert trained_count(study) == 6


def test_a_late_promotion_resumes_from_the_cut_candidates_checkpoint(tmp_path, tiny_preset):
    # rungs of 2 steps leave candidates at chance, where the default rule cuts nobody
    _settings, study, objective = setup(tmp_path, tiny_preset, cut_at_chance=True)
    arrive(study, 0.1)  # a better candidate is on rung 0 first: SMALL is cut on arrival
    study.enqueue_trial(SMALL)
    study.optimize(objective, n_trials=1)
    cut = study.trials[-1]
    assert cut.user_attrs["status"] == "stopped" and cut.user_attrs["rung"] == 0
    checkpoint = tmp_path / "ck" / "t" / f"trial-{cut.number}.pt"
    assert checkpoint.is_file()  # kept: it may be promoted later
    for _ in range(4):  # four worse arrivals: six on the rung, SMALL is in its best two
        arrive(study, 100.0)
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    assert lineage(waiting) == cut.number
    optimize(study, objective, total=trained_count(study))  # runs the queued promotion
    promoted = study.trials[waiting.number]
    a = promoted.user_attrs
    assert promoted.state == TrialState.COMPLETE and a["status"] == "ok" and a["rung"] == 2
    assert a["resumed_from"] == 0  # continued from the cut trial's rung-0 state
    assert a["tokens"] == objective.schedule.tokens(2)  # the sum of its rungs, no restart
    assert promoted.intermediate_values[1] == cut.intermediate_values[1]  # replayed
    assert not checkpoint.exists()  # finished: its checkpoint is gone
    assert trained_count(study) == 6
    assert ranked_trials(study)[0].number == promoted.number

    # the same candidate trained straight through the rungs reaches the same losses
    (tmp_path / "b").mkdir()
    _settings2, study2, objective2 = setup(tmp_path / "b", tiny_preset, pruner="none")
    study2.enqueue_trial(SMALL)
    study2.optimize(objective2, n_trials=1)
    assert study2.trials[0].intermediate_values == promoted.intermediate_values
    assert study2.trials[0].value == promoted.value


def test_checkpoints_kept_for_late_promotion_go_when_the_run_ends(tmp_path, tiny_preset):
    _settings, study, objective = setup(tmp_path, tiny_preset, cut_at_chance=True)
    arrive(study, 0.1)
    study.enqueue_trial(SMALL)
    study.optimize(objective, n_trials=1)
    folder = tmp_path / "ck" / "t"
    assert [p.name for p in folder.glob("*.pt")] == [f"trial-{study.trials[-1].number}.pt"]
    running = study.ask()  # a candidate still training keeps its checkpoint
    (folder / f"trial-{running.number}.pt").write_bytes(b"state")
    assert forget_finished_checkpoints(study, tmp_path / "ck") == 1
    assert [p.name for p in folder.glob("*.pt")] == [f"trial-{running.number}.pt"]


def test_a_new_trial_past_trials_at_the_end_is_surplus_and_not_trained(tmp_path, tiny_preset):
    # the race: two workers see one queued late promotion when the study holds its --trials;
    # one pops it, and the other's ask creates a new trial instead
    _settings, study, objective = setup(tmp_path, tiny_preset)
    study.pruner = AshaPruner(3)
    for v in (5, 1, 4, 3, 2, 6):
        arrive(study, v)
    assert trained_count(study) == 6
    objective.trials = 6  # what optimize(study, objective, total=6) sets
    promotion = study.ask()  # the first worker pops the queued promotion of trial 4
    assert lineage(study.trials[promotion.number]) == 4
    study.enqueue_trial(SMALL)  # the second worker's ask: a new candidate
    study.optimize(objective, n_trials=1)
    new = study.trials[-1]
    assert new.state == TrialState.PRUNED and new.user_attrs["status"] == "surplus"
    assert "tokens" not in new.user_attrs and not list((tmp_path / "ck").rglob("*.pt"))
    assert trained_count(study) == 6 and trial_counts(study)["surplus"] == 1
    # the promotion itself continues a candidate that counts: never surplus
    objective.check_surplus(promotion)


def test_of_two_new_candidates_for_the_last_slot_the_earlier_trains(tmp_path, tiny_preset):
    _settings, study, objective = setup(tmp_path, tiny_preset)
    arrive(study, 1.0)
    objective.trials = 2
    first, second = study.ask(), study.ask()  # two workers, one slot left
    first.set_user_attr("status", "training")
    objective.check_surplus(first)  # the earlier keeps the slot, whatever the later is doing
    with pytest.raises(optuna.TrialPruned):
        objective.check_surplus(second)
    assert second.study.trials[second.number].user_attrs["status"] == "surplus"
    first.set_user_attr("status", "over_budget")  # the earlier was rejected: the slot is free
    for _ in range(3):  # queued new candidates (seeded baselines) take no slot until they start
        study.enqueue_trial(SMALL)
    third = study.ask()  # pops the first of them
    objective.check_surplus(third)
