"""The Ray Tune backend: `python -m search.run --backend ray [--address auto] [--cpus-per-trial K]`.

Same study, same space, same objective, same FLOP-budget rule and proxy trainer as the Optuna
backend; Ray only decides *where* and *how many at once* trials run, and which ones stop early.

Design (see docs/ray.md):

* The SQL study is the single source of truth. The Tune driver asks the study for each trial
  (`study.ask()` with the study's own sampler, in one process, so TPE sees the whole history of
  both backends) and runs `Objective.suggest` on it: the same code samples the config, counts its
  FLOPs and writes the same user attributes. An over-budget config is told PRUNED right there
  (status "over_budget" and its reason, no Ray trial started, as fast as with Optuna).
* A Ray trial receives only the optuna trial id. The worker re-attaches to that trial and runs
  `Objective.__call__` on it (the suggestions are already stored, so they are read back), and
  tells the study the outcome exactly as `study.optimize` would: a value -> COMPLETE, TrialPruned
  -> PRUNED, TrialFailed (diverged, out of memory) -> FAIL. A NaN value is never told COMPLETE.
* Early stopping is Tune's ASHA scheduler, fed by the trainer's intermediate validation points
  (`tune.report`, except the final one, which ends the trial anyway). When ASHA stops a trial its
  actor is ended, so the *driver* tells PRUNED (status "stopped"). A worker that crashes is retried
  by Tune (`FailureConfig(max_failures=MAX_FAILURES)`) on the same optuna trial; when the retries
  are used up the driver tells FAIL.
* We do not use Ray's `OptunaSearch`: it keeps an in-memory study unless given storage, decides a
  trial's state from Tune's *last reported result* (an errored or ASHA-stopped trial whose last
  report had a metric is told COMPLETE with a partial value; a NaN is only logged), cannot set our
  user attributes, and its counts start from zero on each run.
* Resume is re-running the same command: `--trials` is the study's total, counted in the database,
  like the Optuna backend; we never need `Tuner.restore`. The driver records heartbeats for the
  trials it owns; trials that an interrupted run leaves unfinished are failed and queued once more
  (the storage's RetryHeartbeatStaleTrialCallback), at once on a clean interrupt, or after
  `--grace-period` seconds when the driver was killed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.driver import FINISHED, make_sampler
from search.objective import Objective, TrialFailed
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, is_sqlite, open_storage

try:  # ray stays optional: this module imports without it, run_ray() then explains
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import Searcher

    _RAY_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    ray = tune = None
    ASHAScheduler = FIFOScheduler = Searcher = object
    _RAY_IMPORT_ERROR = _exc

INSTALL_HINT = "pip install -e '.[ray]'"
MAX_FAILURES = 2  # Tune retries of a trial whose worker died or raised (not diverged/OOM)
RESULTS_DIR_NAME = "ray_results"
ASHA_REDUCTION_FACTOR = 2
ASHA_GRACE_PERIOD = 1  # validation points a trial always gets before ASHA may stop it


class RayUnavailable(ImportError):
    """`--backend ray` without Ray Tune installed."""


class RayConfigError(ValueError):
    """A `--backend ray` setting that cannot work (message says why and what to do)."""


def require_ray() -> None:
    """Raise RayUnavailable, naming the install command, when Ray Tune cannot be imported."""
    if _RAY_IMPORT_ERROR is not None:
        raise RayUnavailable(
            f"--backend ray needs Ray Tune, which is not installed ({_RAY_IMPORT_ERROR}); "
            f"install it with: {INSTALL_HINT}"
        )


# --------------------------------------------------------------------------------------------
# Worker side: one Ray trial = one optuna trial, run by the shared Objective.


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
    _quiet_optuna_warnings()
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


def _quiet_optuna_warnings() -> None:
    """Warnings that are expected here: ask/tell with heartbeats (we record them ourselves),
    experimental/deprecated storage features, and values the worker writes a second time
    (the driver's `suggest` already set them; a retried trial reports its steps again)."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
    warnings.filterwarnings("ignore", message=".*has been deprecated in v4.9.0")
    warnings.filterwarnings("ignore", message="The reported value is ignored because")
    warnings.filterwarnings("ignore", message="The constraint value is ignored because")


def _tune_report(metrics: dict[str, Any]) -> None:
    report = getattr(tune, "report", None)
    if report is None:  # ray < 2.41: the function API's report lived in ray.train
        from ray import train

        report = train.report
    report(metrics)


# --------------------------------------------------------------------------------------------
# Driver side: a Tune Searcher that asks the SQL study, and ASHA that says which trials it stopped.


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


def make_scheduler(settings: RunSettings, direction: str, searcher: StudySearcher):
    """ASHA on the validation metric, or FIFO for `--pruner none` and Pareto studies."""
    if settings.objectives != "single" or settings.pruner == "none":
        return FIFOScheduler()
    return RecordingASHA(
        searcher,
        time_attr="training_iteration",  # one per validation point (recipe.n_evals in all)
        metric="metric",
        mode="max" if direction == "maximize" else "min",
        max_t=max(2, settings.recipe.n_evals),
        grace_period=ASHA_GRACE_PERIOD,
        reduction_factor=ASHA_REDUCTION_FACTOR,
    )


class RecordingASHA(ASHAScheduler):
    """ASHA that tells the searcher which trials it stopped (vs. ended by an interrupt)."""

    def __init__(self, searcher: StudySearcher, **kwargs) -> None:
        super().__init__(**kwargs)
        self._searcher = searcher

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        if action == self.STOP:
            self._searcher.stopped.add(trial.trial_id)
        return action


# --------------------------------------------------------------------------------------------
# Entry point


def default_results_dir(storage_url: str) -> Path:
    """Next to a SQLite study file (studies/ray_results by default), else studies/ray_results."""
    if is_sqlite(storage_url):
        path = storage_url.split(":///", 1)[-1]
        if path and path != ":memory:":
            return Path(path).resolve().parent / RESULTS_DIR_NAME
    return Path("studies").resolve() / RESULTS_DIR_NAME


def _absolute_sqlite(url: str) -> str:
    """Ray workers may start in another directory: make a relative SQLite path absolute."""
    if not is_sqlite(url):
        return url
    prefix, _, path = url.partition(":///")
    if not path or path == ":memory:" or path.startswith("/"):
        return url
    return f"{prefix}:///{Path(path).resolve()}"


def _check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) nobody listens on; Ray itself retries for
    minutes. `auto` is left to Ray, which fails at once when this node has no cluster."""
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address == "auto" or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise RayConfigError(
            f"cannot reach the Ray cluster at --address {address} ({exc}); start one with "
            "`ray start --head` (see docs/ray.md) or fix --address"
        ) from exc


def _use_token_if_available() -> None:
    """Clusters that recent Ray versions start with `ray start` require an auth token. Ray's own
    local start turns token mode on when a token exists; joining by address does not, so do it
    here (harmless against a cluster without authentication). RAY_AUTH_MODE, if set, wins."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _trial_dirname(trial) -> str:
    return f"trial-{trial.config.get('number', 'x')}-{trial.trial_id}"


def run_ray(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    trials: int,
    timeout: float | None,
    address: str | None,
    cpus_per_trial: int,
    *,
    grace_period: int = GRACE_PERIOD,
    quiet: bool = False,
    results_dir: str | os.PathLike | None = None,
) -> None:
    """Run trials of the existing study on Ray Tune until it holds `trials` finished trials."""
    require_ray()
    if cpus_per_trial < 1:
        raise RayConfigError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    if is_sqlite(storage_url) and ":memory:" in storage_url:
        raise RayConfigError(
            "--backend ray needs a database file or server, not sqlite in memory; "
            "use the default sqlite file or a postgresql:// URL"
        )
    storage_url = _absolute_sqlite(storage_url)
    if settings.data:
        settings = dataclasses.replace(
            settings, data=[str(Path(p).resolve()) for p in settings.data]
        )
    results = Path(results_dir).resolve() if results_dir else default_results_dir(storage_url)
    results.mkdir(parents=True, exist_ok=True)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_optuna_warnings()
    storage = open_storage(storage_url, grace_period=grace_period)
    study = optuna.load_study(study_name=study_name, storage=storage)
    optuna.storages.fail_stale_trials(study)  # trials of a killed earlier run: FAIL + retry
    direction = study.user_attrs.get("direction", "maximize")

    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}  # trials run in the driver's directory, not Tune's
    # Tune's own tables would interleave with our progress bar; trial errors are still logged.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if address:
        _check_reachable(address)
        _use_token_if_available()
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
        else:
            # Local workers inherit this environment; no runtime_env, so that the workers Ray
            # prestarts at init can run trials at once.
            os.environ.update(env)
            ray.init(
                address="local",
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=not quiet,
            )
    except (ConnectionError, ValueError, RuntimeError) as exc:
        hint = (
            "; if the cluster uses token authentication, give this machine its token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token, see docs/ray.md)"
            if address
            else ""
        )
        raise RayConfigError(
            f"cannot start or join Ray at {address or 'local'}: {exc}{hint}"
        ) from exc

    bar = None
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpu = 1 if settings.device.startswith("cuda") else 0
        slots = max(1, cpus // cpus_per_trial)
        if gpu:
            slots = min(slots, max(1, int(ray.cluster_resources().get("GPU", 1))))
        if cpus_per_trial > cpus:
            raise RayConfigError(
                f"--cpus-per-trial {cpus_per_trial} is more than the cluster's {cpus} CPUs"
            )

        from tqdm import tqdm

        bar = tqdm(
            total=trials,
            initial=min(_finished(study), trials),
            unit="trial",
            disable=quiet,
            dynamic_ncols=True,
        )

        def progress(s: optuna.Study) -> None:
            bar.n = min(_finished(s), trials)
            bar.refresh()

        searcher = StudySearcher(
            settings,
            study_name,
            storage_url,
            trials,
            None if timeout is None else time.time() + timeout,
            grace_period,
            progress=progress,
        )
        trainable = tune.with_resources(
            tune.with_parameters(
                _trainable,
                settings=settings,
                study_name=study_name,
                storage_url=storage_url,
                threads=cpus_per_trial,
                grace_period=grace_period,
            ),
            {"cpu": cpus_per_trial, "gpu": gpu},
        )
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name) + time.strftime("-%Y%m%d-%H%M%S")
        if not quiet:
            print(f"ray: {cpus} CPUs, {slots} trial(s) at once; Tune results in {results / name}")
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=make_scheduler(settings, direction, searcher),
                num_samples=-1,  # the searcher says when the study holds enough trials
                max_concurrent_trials=slots,
                reuse_actors=True,
                trial_dirname_creator=_trial_dirname,
            ),
            run_config=_run_config(name, results),
        )
        try:
            tuner.fit()
        finally:
            searcher.close()
            progress(study)
        if searcher.requeued:
            print(
                f"\nray: interrupted; {searcher.requeued} unfinished trial(s) failed and queued to "
                "run again. Resume by re-running the same command: the study database holds "
                "the state (Tune's Tuner.restore hint above is not needed).",
                file=sys.stderr,
            )
    finally:
        if bar is not None:
            bar.close()
        if ray.is_initialized():
            ray.shutdown()


def _run_config(name: str, results: Path):
    RunConfig = getattr(tune, "RunConfig", None)
    FailureConfig = getattr(tune, "FailureConfig", None)
    if RunConfig is None or FailureConfig is None:  # ray < 2.41
        from ray.train import FailureConfig, RunConfig
    return RunConfig(
        name=name,
        storage_path=str(results),
        failure_config=FailureConfig(max_failures=MAX_FAILURES),
        verbose=0,
    )


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))
