"""The shared objective and worker loop: rejected and duplicate proposals do not count, the
rung pruner cuts at rung boundaries, and the rejection cap ends a hopeless search."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from search.budget import parse_flops
from search.driver import SpaceExhausted, optimize
from search.objective import Objective, make_task, rung_step
from search.results import ranked_trials, trained_count
from search.samplers import make_pruner, make_sampler
from search.settings import build_settings, load_preset
from search.study import open_study, stored_schedule
from tests.search_tests.conftest import TINY_BUDGET
from trainers.rungs import RungSchedule

SMALL = {
    "attention": "full",
    "depth": 1,
    "n_heads": 1,
    "head_dim": 8,
    "ffn_mult": 1.0,
    "sharing": "none",
}


def setup(tmp_path, preset, budget=TINY_BUDGET, **flags):
    settings = build_settings(load_preset(preset), {"budget": parse_flops(budget), **flags})
    task = make_task(settings)
    schedule = RungSchedule(first_steps=2, batch_size=8, seq_len=task.seq_len, eta=3, rungs=3)
    study = open_study(settings, "t", f"sqlite:///{tmp_path}/o.db", task, schedule=schedule)
    study.sampler = make_sampler(settings)
    study.pruner = make_pruner(settings)
    return (
        settings,
        study,
        Objective(settings, stored_schedule(study), threads=1, checkpoint_dir=tmp_path / "ck"),
    )


def test_duplicate_proposal_is_not_retrained(tmp_path, tiny_preset):
    _settings, study, objective = setup(tmp_path, tiny_preset)
    study.enqueue_trial(SMALL)
    study.enqueue_trial(SMALL)
    study.optimize(objective, n_trials=2)
    first, second = study.get_trials()
    assert first.user_attrs["status"] == "ok" and first.state == TrialState.COMPLETE
    assert second.user_attrs["status"] == "duplicate"
    assert second.user_attrs["duplicate_of"] == 0
    assert second.value == first.value and second.user_attrs["loss"] == first.user_attrs["loss"]
    assert trained_count(study) == 1
    assert [t.number for t in ranked_trials(study)] == [0]  # a duplicate is not a candidate
    assert not list((tmp_path / "ck").rglob("*.pt"))  # finished trials leave no checkpoint


def test_the_same_model_under_another_name_is_not_retrained(tmp_path, tiny_preset):
    # elu(x) + 1 has head-dim features: n_features names no different model (ArchConfig.identity)
    _settings, study, objective = setup(tmp_path, tiny_preset)
    linear = {**SMALL, "attention": "linear", "linear.feature_map": "elu", "linear.chunk": 32}
    study.enqueue_trial({**linear, "linear.n_features": 32})
    study.enqueue_trial({**linear, "linear.n_features": 256})
    study.optimize(objective, n_trials=2)
    first, second = study.get_trials()
    assert (first.params["linear.n_features"], second.params["linear.n_features"]) == (32, 256)
    assert first.user_attrs["status"] == "ok"
    assert second.user_attrs["status"] == "duplicate" and second.user_attrs["duplicate_of"] == 0
    assert trained_count(study) == 1


def test_over_budget_and_duplicates_do_not_count_toward_trials(tmp_path, tiny_preset):
    settings, study, objective = setup(tmp_path, tiny_preset, budget="300KFLOPs")
    big = {**SMALL, "depth": 2, "n_heads": 2, "head_dim": 16, "ffn_mult": 2.0}
    for params in (big, SMALL, SMALL, big):  # rejected, trained, duplicate, rejected
        study.enqueue_trial(params)
    optimize(study, objective, total=3)
    trials = study.get_trials()
    statuses = [t.user_attrs.get("status") for t in trials]
    assert statuses[:4] == ["over_budget", "ok", "duplicate", "over_budget"]
    assert trained_count(study) == 3  # 3 trained candidates, whatever was rejected on the way
    assert len(trials) >= 3 + 3
    for t in trials:
        if t.user_attrs.get("status") == "over_budget":
            assert t.state == TrialState.PRUNED and t.user_attrs["flops"] > settings.budget
            assert not t.intermediate_values and "tokens" not in t.user_attrs  # never trained


def test_rungs_are_reported_at_eta_powers_and_the_pruner_cuts_there(tmp_path, tiny_preset):
    # rungs of 2 steps leave every candidate at chance, where the default rule cuts nobody
    # (tests/search_tests/test_chance.py); here halving alone is under test
    settings, study, objective = setup(tmp_path, tiny_preset, cut_at_chance=True)
    optimize(study, objective, total=6)
    eta = settings.eta
    for t in study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)):
        a = t.user_attrs
        if a.get("status") not in ("ok", "stopped"):
            continue
        reached = a["rung"]
        assert sorted(t.intermediate_values) == [rung_step(k, eta) for k in range(reached + 1)]
        assert a["tokens"] == objective.schedule.tokens(reached)
        if t.state == TrialState.COMPLETE:
            assert reached == 2 and t.value == a["loss"]
        else:
            assert a["status"] == "stopped" and reached < 2
    assert trained_count(study) == 6
    # successive halving: not everyone reaches the top rung
    assert 1 <= len(study.get_trials(states=(TrialState.COMPLETE,))) < 6


def test_a_space_that_cannot_fit_is_reported(tmp_path, tiny_preset, monkeypatch):
    monkeypatch.setattr("search.driver.MAX_CONSECUTIVE_REJECTIONS", 5)
    _settings, study, objective = setup(tmp_path, tiny_preset)
    for _ in range(6):
        study.enqueue_trial(SMALL)
    with pytest.raises(SpaceExhausted, match="over the budget or already evaluated"):
        optimize(study, objective, total=3)
    assert trained_count(study) == 1


def test_equal_compute_option_stretches_small_models(tmp_path, tiny_preset):
    settings, _study, objective = setup(tmp_path, tiny_preset, evaluation="compute")
    half = objective.schedule_for(settings.budget // 2)
    assert half.first_steps == 2 * objective.schedule.first_steps
    assert objective.schedule_for(settings.budget) == objective.schedule
    tokens = build_settings(load_preset(tiny_preset), {"budget": parse_flops(TINY_BUDGET)})
    assert Objective(tokens, objective.schedule).schedule_for(1) == objective.schedule


def test_optuna_trial_values_are_losses_and_direction_is_minimize(tmp_path, tiny_preset):
    _, study, objective = setup(tmp_path, tiny_preset)
    study.enqueue_trial(SMALL)
    study.optimize(objective, n_trials=1)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    t = study.get_trials()[0]
    assert t.value == t.user_attrs["loss"] and 0 <= t.user_attrs["metric"] <= 1
    assert study.user_attrs["task_metric"] == "accuracy"


def test_end_of_run_report_never_prints_a_password(monkeypatch, capsys, tiny_preset):
    import dashboards
    from search.summary import summarize

    def no_annotation(*args, **kwargs):
        raise RuntimeError("not in this test")

    monkeypatch.setattr(dashboards, "annotate", no_annotation)
    study = optuna.create_study(direction="minimize")
    settings = build_settings(load_preset(tiny_preset), {"budget": parse_flops(TINY_BUDGET)})
    assert summarize(study, settings, "postgresql://user:secret@db.example/studies", 8) == 1
    out = capsys.readouterr()
    assert "secret" not in out.out + out.err
    assert "postgresql://user:***@db.example/studies" in out.out
