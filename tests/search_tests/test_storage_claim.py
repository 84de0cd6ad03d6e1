"""Two local workers never take the same queued trial (optuna/optuna#4621 on SQLite): the claim
of a WAITING trial is one conditional UPDATE (`search.storage.ClaimingRDBStorage`)."""

from __future__ import annotations

import multiprocessing as mp
import time

import optuna
from optuna.trial import TrialState

from search.optuna_private import trial_id
from search.storage import open_storage
from tests.search_tests.conftest import guard


def _work(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name="q", storage=open_storage(url))
    study.optimize(lambda t: (time.sleep(0.01), t.suggest_int("x", 0, 1000))[1], n_trials=20)


def test_two_workers_run_every_queued_trial_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path}/q.db"
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    for x in range(40):
        study.enqueue_trial({"x": x})
    procs = [mp.get_context("spawn").Process(target=_work, args=(url,)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(guard(120))
    assert [p.exitcode for p in procs] == [0, 0]  # before the fix: often [0, 1]
    trials = study.get_trials()
    assert sorted(t.params["x"] for t in trials) == list(range(40))
    assert {t.state for t in trials} == {TrialState.COMPLETE}


def test_claiming_a_trial_that_is_not_waiting_fails(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/c.db")
    study = optuna.create_study(study_name="c", storage=storage)
    study.enqueue_trial({"x": 1})
    waiting = trial_id(study.get_trials()[0])
    assert storage.set_trial_state_values(waiting, TrialState.RUNNING) is True
    assert storage.set_trial_state_values(waiting, TrialState.RUNNING) is False  # taken
    assert study.get_trials()[0].state == TrialState.RUNNING
    assert study.get_trials()[0].datetime_start is not None
