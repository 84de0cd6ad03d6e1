"""Pins each private-Optuna helper (search/optuna_private.py) to the installed Optuna: an upgrade
that moves one of these internals fails here, by name."""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

from search import optuna_private as op
from search.storage import open_storage, set_finished_trial_user_attr


def _study(tmp_path, name="s"):
    url = f"sqlite:///{tmp_path}/p.db"
    return url, optuna.create_study(study_name=name, storage=url)


def test_ids_and_storage_address_the_rows_the_public_api_reads(tmp_path):
    url, first = _study(tmp_path, "first")
    first.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    second = optuna.load_study(study_name="first", storage=open_storage(url))
    other = optuna.create_study(study_name="other", storage=op.storage_of(second))
    other.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert op.study_id(other) != op.study_id(first)
    assert op.storage_url(other) == url
    assert op.storage_url(optuna.create_study()) is None  # in-memory
    storage = op.storage_of(other)
    # trial ids are global across studies, numbers are per study
    t = other.get_trials()[0]
    assert (t.number, op.trial_id(t)) == (0, 3)  # rows 1, 2 are first's
    assert storage.get_trial(op.trial_id(t)).params == t.params
    storage.set_study_system_attr(op.study_id(other), "k", "v")
    assert storage.get_study_system_attrs(op.study_id(other))["k"] == "v"
    assert "k" not in storage.get_study_system_attrs(op.study_id(first))

    def objective(trial):
        assert op.trial_id(trial) == 4 and trial.number == 1  # a live optuna.Trial too
        return 0.0

    other.optimize(objective, n_trials=1)


def test_rdb_models_write_a_finished_trials_user_attr(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/p.db")
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: 1.0, n_trials=1)
    t = study.get_trials()[0]
    assert t.state == TrialState.COMPLETE
    models = op.rdb_models()
    assert {"TrialModel", "TrialUserAttributeModel"} <= set(dir(models))
    set_finished_trial_user_attr(storage, op.trial_id(t), "long", [1, 2.5])
    set_finished_trial_user_attr(storage, op.trial_id(t), "long", {"a": None})
    fresh = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/p.db")
    assert fresh.get_trials()[0].user_attrs == {"long": {"a": None}}  # updated, not added twice


def test_failed_trials_are_reported_on_the_optimize_logger(tmp_path, caplog):
    _, study = _study(tmp_path)

    def boom(trial):
        raise ValueError("boom")

    with caplog.at_level(logging.WARNING, logger=op.OPTIMIZE_LOGGER):
        study.optimize(boom, n_trials=1, catch=(ValueError,))
    assert [r.name for r in caplog.records if "boom" in r.getMessage()] == [op.OPTIMIZE_LOGGER]
