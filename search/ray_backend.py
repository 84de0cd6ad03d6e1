"""The Ray Tune backend: `python -m search.run --backend ray [--address auto] [--cpus-per-trial K]`.

Same study, same space, same objective, same FLOP-budget rule and proxy trainer as the Optuna
backend; Ray only decides *where* and *how many at once* trials run, and which ones stop early.

Design (see docs/ray.md):

* The SQL study is the single source of truth. The driver's Tune searcher asks the study for
  each trial and prunes over-budget configs on the spot (`search.ray_searcher.StudySearcher`);
  a Ray trial receives only the optuna trial id, re-attaches to it in the worker, runs the shared
  Objective and tells the study its outcome (`search.ray_trainable`).
* Early stopping is Tune's ASHA scheduler, fed by the trainer's intermediate validation points;
  when ASHA stops a trial, the searcher tells it PRUNED (status "stopped").
* Resume is re-running the same command: `--trials` is the study's total, counted in the database,
  like the Optuna backend; we never need `Tuner.restore`.

This module holds the entry point `run_ray`, the import guard (Ray is optional: this module
imports without it and `require_ray` names the install command), joining or starting the Ray
cluster, and the scheduler choice.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

import optuna

from search.driver import FINISHED
from search.ray_searcher import MAX_FAILURES, StudySearcher
from search.ray_trainable import TuneTrial, _trainable, quiet_optuna_warnings, run_trial
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, is_sqlite, open_storage

try:  # ray stays optional: this module imports without it, run_ray() then explains
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    _RAY_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    ray = tune = None
    ASHAScheduler = FIFOScheduler = object
    _RAY_IMPORT_ERROR = _exc

__all__ = [
    "MAX_FAILURES",
    "RayConfigError",
    "RayUnavailable",
    "StudySearcher",
    "TuneTrial",
    "require_ray",
    "run_ray",
    "run_trial",
]

INSTALL_HINT = "pip install -e '.[ray]'"
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
# Scheduler: ASHA that says which trials it stopped, or FIFO


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
    quiet_optuna_warnings()
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
