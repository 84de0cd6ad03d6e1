"""--timeout inside a trial (search/time_limit.py): a promotion whose rung would end past the
limit is not started; the candidate stays at the rung it reached, is never promoted late, and
the summary names it."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from dashboards.notes import _pick_notes
from search.asha import AshaPruner
from search.driver import optimize
from search.results import ranked_trials, trained_count
from search.samplers import promotes_late
from search.time_limit import TIME_LIMITED, next_rung_seconds, past_limit, time_note
from tests.search_tests.test_asha import arrive
from tests.search_tests.test_objective import SMALL, setup
from trainers.proxy import Recipe
from trainers.rungs import RungResult, RungSchedule

SCHEDULE = RungSchedule(first_steps=10, batch_size=2, seq_len=64, eta=3, rungs=3)


def result(rung: int, tokens_per_s: float = 1000.0) -> RungResult:
    tokens = SCHEDULE.tokens(rung)
    return RungResult(rung, tokens, tokens, 2.0, 0.5, 1.0, tokens_per_s)


def test_the_next_rung_is_priced_at_the_trials_own_speed():
    recipe = Recipe()  # decay 0.2 of a rung's steps, 32,768 validation tokens
    assert (recipe.decay_frac, recipe.val_tokens) == (0.2, 32768)
    # rung 0 -> 1: (30 - 10) steps x 128 tokens, a 6-step decay branch, one validation
    assert next_rung_seconds(SCHEDULE, recipe, result(0)) == (2560 + 768 + 32768 / 3) / 1000
    # rung 1 -> 2, the top: its decay is part of its steps, so no branch
    assert next_rung_seconds(SCHEDULE, recipe, result(1)) == (7680 + 32768 / 3) / 1000
    # twice the speed, half the time
    assert next_rung_seconds(SCHEDULE, recipe, result(1, 2000.0)) == (7680 + 32768 / 3) / 2000


def test_a_rung_that_would_end_past_the_limit_is_not_started():
    recipe, r = Recipe(), result(0)
    need = next_rung_seconds(SCHEDULE, recipe, r)  # 14.25 s
    assert past_limit(None, SCHEDULE, recipe, r, now=0.0) is None  # no limit
    assert past_limit(need, SCHEDULE, recipe, r, now=0.0) is None  # ends exactly at the limit
    reason = past_limit(need, SCHEDULE, recipe, r, now=0.5)
    assert reason == (
        "time limit: rung 1 would take about 14 s and 14 s of --timeout were left; stopped at "
        "rung 0 (a longer --timeout lets candidates like it continue)"
    )
    assert past_limit(0.0, SCHEDULE, recipe, result(2), now=100.0) is None  # the top rung


def test_a_promotion_the_clock_cannot_afford_stops_the_candidate_at_its_rung(
    tmp_path, tiny_preset, monkeypatch
):
    settings, study, objective = setup(tmp_path, tiny_preset)
    assert promotes_late(settings)  # a cut candidate's checkpoint would be kept
    study.enqueue_trial(SMALL)
    optimize(study, objective, total=1)  # no limit: through the top rung
    monkeypatch.setattr("search.time_limit.next_rung_seconds", lambda *a: 1e6)
    study.enqueue_trial({**SMALL, "depth": 2})
    study.enqueue_trial({**SMALL, "head_dim": 16})
    optimize(study, objective, total=3, timeout=3600)  # rung 1 would take 11.6 days
    assert trained_count(study) == 3
    first, *stopped = study.get_trials()
    assert first.state == TrialState.COMPLETE and TIME_LIMITED not in first.user_attrs
    assert [t.state for t in stopped] == [TrialState.PRUNED, TrialState.PRUNED]  # no copies
    for t in stopped:
        a = t.user_attrs
        assert (a["status"], a["rung"], a["tokens"]) == ("stopped", 0, objective.schedule.tokens(0))
        assert a["reason"] == a[TIME_LIMITED] and a["reason"].startswith("time limit: rung 1 ")
        assert sorted(t.intermediate_values) == [1]  # reported rung 0 only
    assert not list((tmp_path / "ck").rglob("*.pt"))  # no late promotion needs them
    ranked = [t.number for t in ranked_trials(study)]
    assert ranked[0] == 0 and sorted(ranked) == [0, 1, 2]  # the top rung ranks first
    note = (
        "note: --timeout stopped 2 promoted candidate(s) before a rung that would have ended "
        "past the limit (trial 1 at rung 0, trial 2 at rung 0); they rank by the rung they "
        "reached. A longer --timeout lets such candidates continue."
    )
    assert time_note(study) == note
    assert note in _pick_notes(study)  # the dashboard's study note has it too


def test_without_the_clocks_objection_the_same_candidates_reach_the_top(tmp_path, tiny_preset):
    _settings, study, objective = setup(tmp_path, tiny_preset)
    study.enqueue_trial(SMALL)
    optimize(study, objective, total=1, timeout=3600)  # a tiny model: well within the hour
    (t,) = study.get_trials()
    assert t.state == TrialState.COMPLETE and t.user_attrs["rung"] == 2
    assert TIME_LIMITED not in t.user_attrs


def test_a_candidate_the_clock_stopped_is_never_promoted_late():
    study = optuna.create_study(pruner=AshaPruner(3))
    arrive(study, 5)
    trial = study.ask()  # loss 1: the halving lets it continue, the clock stops it
    trial.suggest_float("x", 0.0, 1.0)
    trial.report(1.0, 1)
    assert not trial.should_prune()
    for key, value in (("rung", 0), ("loss", 1.0), ("status", "stopped"), (TIME_LIMITED, "t")):
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.PRUNED)
    for v in (4, 3, 2, 6):  # cut on arrival
        arrive(study, v)
    # six on the rung, its best two: trial 1 (the clock's) and trial 4 (the halving's cut):
    # only the halving's cut is promoted late (search/asha.py's own test promotes trial 4 too)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [w.system_attrs["failed_trial"] for w in waiting] == [4]
