"""Worker side of the Ray Tune backend: one Ray trial = one optuna trial, run by the Objective.

A Ray trial receives only the optuna trial id. The worker re-attaches to that trial and runs
`Objective.__call__` on it (the suggestions are already stored, so they are read back), and tells
the study the outcome exactly as `study.optimize` would: a value -> COMPLETE, TrialPruned ->
PRUNED, TrialFailed (diverged, out of memory) -> FAIL. A NaN value is never told COMPLETE.
The trainer's intermediate validation points go to Tune (`tune.report`, except the final one,
which ends the trial anyway), where ASHA decides which trials stop early (see docs/ray.md).

Imports without Ray: `run_trial` and `TuneTrial` need none; `_trainable` runs inside Ray.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from search.objective import Objective, TrialFailed
from search.settings import RunSettings
from search.storage import open_storage


class TuneTrial:
    """An optuna Trial whose intermediate reports also go to Tune's scheduler.

    Everything else (suggest_*, set_user_attr, number, ...) is the wrapped optuna Trial.
    `should_prune` never says yes itself: ASHA stops a trial by ending it from the driver
    (`report` then raises SystemExit in the training thread). The final validation point is not
    sent to Tune: it ends the trial anyway, and a scheduler decision there would mislabel a
    finished trial as stopped.
    """

    def __init__(self, trial: optuna.Trial, report) -> None:
        self._trial = trial
        self._send = report
        self._fraction = 0.0
        self._last: tuple[float, int] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def set_user_attr(self, key: str, value: Any) -> None:
        if key == "last_progress":  # written by Objective just before each report
            self._fraction = float(value)
        self._trial.set_user_attr(key, value)

    def report(self, value: float, step: int) -> None:
        self._trial.report(value, step)
        self._last = (float(value), int(step))

    def should_prune(self) -> bool:
        if self._last is not None and self._fraction < 1.0:
            value, step = self._last
            self._send({"metric": value, "step": step, "fraction": self._fraction})
        self._last = None
        return False


def run_trial(
    study: optuna.Study, trial_id: int, objective: Objective, report
) -> TrialState | None:
    """Run the objective on an existing RUNNING trial and tell the study its outcome.

    Mirrors `study.optimize` with `catch=(TrialFailed,)`; other exceptions propagate (Tune
    retries the trial). Returns the state told, or None if the trial was already finished.
    """
    if study._storage.get_trial(trial_id).state != TrialState.RUNNING:
        return None  # e.g. a Tune retry of a trial that had already been told
    trial = optuna.Trial(study, trial_id)
    try:
        value = objective(TuneTrial(trial, report))
    except optuna.TrialPruned:
        return study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True).state
    except TrialFailed as exc:
        study._storage.set_trial_system_attr(trial_id, "fail_reason", str(exc))
        return study.tell(trial, state=TrialState.FAIL, skip_if_finished=True).state
    # A NaN/inf value is turned into FAIL by tell (with a warning), never COMPLETE.
    return study.tell(trial, value, skip_if_finished=True).state


_WORKER_CACHE: dict[tuple, tuple[Any, Objective]] = {}


def _trainable(
    config: dict[str, Any],
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    threads: int,
    grace_period: int,
) -> None:
    """The Ray Tune function trainable (runs in a Ray worker process)."""
    import torch

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet_optuna_warnings()
    key = (study_name, storage_url, grace_period, threads)
    if key not in _WORKER_CACHE:  # one engine and task per worker process, reused by its trials
        _WORKER_CACHE[key] = (
            open_storage(storage_url, grace_period=grace_period),
            Objective(settings, threads=threads),
        )
    storage, objective = _WORKER_CACHE[key]
    # The suggestions are already stored on the trial; the sampler here is never consulted.
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        sampler=optuna.samplers.RandomSampler(),
        pruner=optuna.pruners.NopPruner(),
    )
    run_trial(study, config["trial_id"], objective, _tune_report)


def quiet_optuna_warnings() -> None:
    """Warnings that are expected here: ask/tell with heartbeats (we record them ourselves),
    experimental/deprecated storage features, and values the worker writes a second time
    (the driver's `suggest` already set them; a retried trial reports its steps again)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    warnings.filterwarnings("ignore", message=".*has been deprecated in v4.9.0")
    warnings.filterwarnings("ignore", message="The reported value is ignored because")
    warnings.filterwarnings("ignore", message="The constraint value is ignored because")


def _tune_report(metrics: dict[str, Any]) -> None:
    from ray import tune  # only ever called inside a Ray worker

    report = getattr(tune, "report", None)
    if report is None:  # ray < 2.41: the function API's report lived in ray.train
        from ray import train

        report = train.report
    report(metrics)
