"""Driver side of the Ray Tune backend: a Tune Searcher that owns the SQL study.

* The SQL study is the single source of truth. The Tune driver asks the study for each trial
  (`study.ask()` with the study's own sampler, in one process, so TPE sees the whole history of
  both backends) and runs `Objective.suggest` on it: the same code samples the config, counts its
  FLOPs and writes the same user attributes. An over-budget config is told PRUNED right there
  (status "over_budget" and its reason, no Ray trial started, as fast as with Optuna).
* Outcomes the worker cannot tell are told here: when ASHA stops a trial its actor is ended, so
  the driver tells PRUNED (status "stopped"); a worker that crashes is retried by Tune
  (`FailureConfig(max_failures=MAX_FAILURES)`) on the same optuna trial, and when the retries are
  used up the driver tells FAIL.
* We do not use Ray's `OptunaSearch`: it keeps an in-memory study unless given storage, decides a
  trial's state from Tune's *last reported result* (an errored or ASHA-stopped trial whose last
  report had a metric is told COMPLETE with a partial value; a NaN is only logged), cannot set our
  user attributes, and its counts start from zero on each run.
* The driver records heartbeats for the trials it owns; trials that an interrupted run leaves
  unfinished are failed and queued once more (the storage's RetryHeartbeatStaleTrialCallback),
  at once on a clean interrupt, or after `--grace-period` seconds when the driver was killed.

Imports without Ray (the base class is then `object`); only `run_ray` uses it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.driver import FINISHED, make_sampler
from search.objective import Objective
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, open_storage

try:  # ray stays optional (see search.ray_backend.require_ray)
    from ray.tune.search import Searcher
except ImportError:  # pragma: no cover - exercised by a subprocess test
    Searcher = object

MAX_FAILURES = 2  # Tune retries of a trial whose worker died or raised (not diverged/OOM)


class StudySearcher(Searcher):
    """Tune search algorithm backed by the SQL study (picklable; opens the study lazily).

    Each `suggest` asks the study for a trial, samples it with `Objective.suggest`, prunes it
    on the spot if over budget, and hands Tune only the trial id. It says FINISHED once the
    study holds `total` finished or running trials, or after `deadline` (time.time()).
    """

    def __init__(
        self,
        settings: RunSettings,
        study_name: str,
        storage_url: str,
        total: int,
        deadline: float | None,
        grace_period: int = GRACE_PERIOD,
        progress=None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.study_name = study_name
        self.storage_url = storage_url
        self.total = total
        self.deadline = deadline
        self.grace_period = grace_period
        self.progress = progress  # callable(study) or None, driver-local
        self.stopped: set[str] = set()  # Tune trial ids stopped by the scheduler
        self.requeued = 0  # trials an interrupt left unfinished (failed and queued again)
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._study: optuna.Study | None = None
        self._storage = None
        self._objective: Objective | None = None
        self._live: dict[str, tuple[int, int]] = {}  # Tune trial id -> optuna (id, number)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_study", "_storage", "_objective", "_live", "_lock", "_stop", "_heartbeat"):
            state.pop(key, None)
        state["progress"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    # -- the study and its heartbeats --------------------------------------------------------

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            self._storage = open_storage(self.storage_url, grace_period=self.grace_period)
            first = optuna.load_study(study_name=self.study_name, storage=self._storage)
            offset = 97 * len(first.get_trials(deepcopy=False))
            self._study = optuna.load_study(
                study_name=self.study_name,
                storage=self._storage,
                sampler=make_sampler(self.settings, offset),
                pruner=optuna.pruners.NopPruner(),  # Tune's scheduler prunes here
            )
            self._objective = Objective(self.settings, threads=1)
            self._heartbeat = threading.Thread(target=self._beat, daemon=True)
            self._heartbeat.start()
        return self._study

    def _beat(self) -> None:
        interval = getattr(self._storage, "heartbeat_interval", None) or 10
        while not self._stop.wait(interval):
            with self._lock:
                ids = [trial_id for trial_id, _ in self._live.values()]
            for trial_id in ids:
                try:
                    self._storage.record_heartbeat(trial_id)
                except Exception:  # a transient database error must not end the run
                    logging.getLogger(__name__).debug("heartbeat failed", exc_info=True)

    def _started(self) -> int:
        states = (*FINISHED, TrialState.RUNNING)
        return len(self.study.get_trials(deepcopy=False, states=states))

    def _progress(self) -> None:
        if self.progress is not None:
            self.progress(self.study)

    # -- Searcher API ------------------------------------------------------------------------

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and mode come from the study, not from Tune

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        study = self.study
        while True:
            if self.deadline is not None and time.time() >= self.deadline:
                return Searcher.FINISHED
            if self._started() >= self.total:
                return Searcher.FINISHED
            trial = study.ask()
            try:
                self._objective.suggest(trial)
            except optuna.TrialPruned:  # over budget: recorded, never trained
                study.tell(trial, state=TrialState.PRUNED)
                self._progress()
                continue
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            with self._lock:
                self._live[trial_id] = (trial._trial_id, trial.number)
            self._storage.record_heartbeat(trial._trial_id)
            return {"trial_id": trial._trial_id, "number": trial.number}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        with self._lock:
            owned = self._live.pop(trial_id, None)
        if owned is None:
            return
        if self.study._storage.get_trial(owned[0]).state == TrialState.RUNNING:
            if error:
                self._fail(
                    owned,
                    f"the Ray worker failed {MAX_FAILURES + 1} times "
                    "(see error.txt in the Ray results folder)",
                )
            elif trial_id in self.stopped:
                self._stopped(owned, result or {})
            else:
                self._interrupted(owned)
        self._progress()

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(
            json.dumps({"study": self.study_name, "note": "state lives in the study database"})
        )

    def restore(self, checkpoint_path: str) -> None:
        pass  # nothing to restore: the study database is the state

    # -- outcomes the worker could not tell ---------------------------------------------------

    def _stopped(self, owned: tuple[int, int], result: dict[str, Any]) -> None:
        (ot_id, number), storage = owned, self.study._storage
        step, fraction = result.get("step"), result.get("fraction")
        storage.set_trial_user_attr(ot_id, "status", "stopped")
        storage.set_trial_user_attr(
            ot_id,
            "reason",
            f"stopped by Ray Tune's ASHA scheduler at step {step} "
            f"({(fraction or 0) * 100:.0f}% of the proxy compute)",
        )
        if result.get("metric") is not None:
            storage.set_trial_user_attr(ot_id, "metric", result["metric"])
        if step is not None:
            storage.set_trial_user_attr(ot_id, "steps", step)
        self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)

    def _fail(self, owned: tuple[int, int], reason: str) -> None:
        (ot_id, number), storage = owned, self.study._storage
        storage.set_trial_user_attr(ot_id, "status", "error")
        storage.set_trial_user_attr(ot_id, "reason", reason)
        storage.set_trial_system_attr(ot_id, "fail_reason", reason)
        self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)

    def _interrupted(self, owned: tuple[int, int]) -> None:
        """The run ended before the trial did: FAIL it and queue it once more, as a dead
        worker's trial is (the storage's RetryHeartbeatStaleTrialCallback)."""
        self._fail(owned, "the Ray run ended before this trial finished; queued to run again")
        self.requeued += 1
        callback = self._storage.get_heartbeat_stale_trial_callback()
        if callback is not None:
            callback(self.study, self.study._storage.get_trial(owned[0]))

    def close(self) -> None:
        """After the Tune run: settle trials Tune never reported back, stop the heartbeats."""
        with self._lock:
            leftover = list(self._live.items())
            self._live.clear()
        for _, owned in leftover:
            if self.study._storage.get_trial(owned[0]).state == TrialState.RUNNING:
                self._interrupted(owned)
        self._stop.set()
