"""The Ray backend: `python -m search.run --backend ray [--address auto] [--cpus-per-trial K]`.

Ray only decides *where* the search runs. It places the very same worker loop as the local
backend (`search.workers.run_worker`: ask the SQL study, price, reject or reuse, train rung by
rung, let the study's pruner cut, tell) on this machine's cores or a cluster's nodes, as Ray Tune
trials, one per worker slot. So multi-fidelity, pruning, duplicates, `--trials` counting and
recovery mean exactly what they mean under the local backend (see docs/ray.md):

* the SQL study is the single source of truth; workers on any node read and write it;
* a worker whose process or node dies is restarted by Tune (`FailureConfig(max_failures=2)`);
  its trial goes stale, is failed and retried by the study's heartbeat rule, and resumes from
  its rung checkpoint where the checkpoint folder is shared (`--checkpoint-dir`);
* resume is re-running the same command.

This module holds the entry point `run_ray`, the import guard (Ray is optional: this module
imports without it and `require_ray` names the install command), and joining or starting Ray.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
from pathlib import Path
from typing import Any

import optuna

from search.progress import StudyProgress
from search.results import trained_count
from search.settings import RunSettings
from search.storage import GRACE_PERIOD, is_sqlite, open_storage, sqlite_path
from search.workers import run_worker

try:  # ray stays optional: this module imports without it, run_ray() then explains
    import ray
    from ray import tune

    _RAY_IMPORT_ERROR: ImportError | None = None
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    ray = tune = None  # type: ignore[assignment]  # ray is optional: None marks it missing
    _RAY_IMPORT_ERROR = _exc

__all__ = [
    "MAX_FAILURES",
    "RayConfigError",
    "RayUnavailable",
    "gpu_share",
    "require_ray",
    "run_ray",
]

INSTALL_HINT = "pip install -e '.[ray]'"
RESULTS_DIR_NAME = "ray_results"
MAX_FAILURES = 2  # Tune restarts a dead worker this many times


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
# Joining or starting Ray


def default_results_dir(storage_url: str) -> Path:
    """Next to a SQLite study file (studies/ray_results by default), else studies/ray_results."""
    path = sqlite_path(storage_url)
    if path:
        return Path(path).resolve().parent / RESULTS_DIR_NAME
    return Path("studies").resolve() / RESULTS_DIR_NAME


def _absolute_sqlite(url: str) -> str:
    """Ray workers may start in another directory: make a relative SQLite path absolute."""
    path = sqlite_path(url)
    if not path or path.startswith("/"):
        return url
    prefix, _, rest = url.partition(":///")
    return f"{prefix}:///{Path(path).resolve()}{rest[len(path) :]}"  # keeps any ?query


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


def _worker_trainable(
    config: dict,
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    total: int,
    deadline: float | None,
    threads: int,
    grace_period: int,
    checkpoint_dir: str | None,
) -> None:
    """One Tune trial = one worker of the shared study (the local backend's loop)."""
    remaining = None if deadline is None else max(0.0, deadline - time.time())
    run_worker(
        settings,
        study_name,
        storage_url,
        total,
        remaining,
        threads,
        int(config["worker"]),
        grace_period=grace_period,
        checkpoint_dir=checkpoint_dir,
    )
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
    tune.report({"trained": trained_count(study)})


def _init_ray(address: str | None, quiet: bool) -> None:
    """Join the cluster at `address`, or start Ray on this machine; RayConfigError says why
    not (and, for a cluster, how to give this machine its token)."""
    env = {"RAY_CHDIR_TO_TRIAL_DIR": "0"}  # trials run in the driver's directory, not Tune's
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's tables would hide our bar
    if address:
        _check_reachable(address)
        _use_token_if_available()
    try:
        if address:
            ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.WARNING)
        else:
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


def run_ray(
    settings: RunSettings,
    study_name: str,
    storage_url: str,
    trials: int,
    timeout: float | None,
    address: str | None,
    cpus_per_trial: int,
    *,
    workers: int | None = None,
    grace_period: int = GRACE_PERIOD,
    quiet: bool = False,
    results_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | None = None,
    gpus_per_trial: float | None = None,
) -> None:
    """Run the study's workers on Ray until it holds `trials` trained candidates."""
    require_ray()
    if cpus_per_trial < 1:
        raise RayConfigError(f"--cpus-per-trial must be >= 1, got {cpus_per_trial}")
    gpu = gpu_share(settings.device, gpus_per_trial)
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
    storage = open_storage(storage_url, grace_period=grace_period)
    study = optuna.load_study(study_name=study_name, storage=storage)

    _init_ray(address, quiet)

    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if cpus_per_trial > cpus:
            raise RayConfigError(
                f"--cpus-per-trial {cpus_per_trial} is more than the cluster's {cpus} CPUs"
            )
        slots = max(1, cpus // cpus_per_trial)
        if gpu:
            gpus = float(ray.cluster_resources().get("GPU", 0))
            if gpus < gpu:
                raise RayConfigError(
                    f"--device cuda needs {gpu:g} GPU per trial but the Ray cluster has "
                    f"{gpus:g}; start Ray on GPU nodes, or use --device cpu"
                )
            slots = min(slots, int(gpus / gpu + 1e-9))
        slots = min(slots, workers) if workers else slots
        trainable = tune.with_resources(
            tune.with_parameters(
                _worker_trainable,
                settings=settings,
                study_name=study_name,
                storage_url=storage_url,
                total=trials,
                deadline=None if timeout is None else time.time() + timeout,
                threads=cpus_per_trial,
                grace_period=grace_period,
                checkpoint_dir=checkpoint_dir,
            ),
            {"cpu": cpus_per_trial, "gpu": gpu},
        )
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name) + time.strftime("-%Y%m%d-%H%M%S")
        if not quiet:
            print(f"ray: {cpus} CPUs, {slots} worker(s); Tune logs in {results / name}")
        tuner = tune.Tuner(
            trainable,
            param_space={"worker": tune.grid_search(list(range(slots)))},
            tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=False),
            run_config=_run_config(name, results),
        )
        with StudyProgress(study, trials, quiet):
            tuner.fit()
    finally:
        if ray.is_initialized():
            ray.shutdown()


def gpu_share(device: str, gpus_per_trial: float | None) -> float:
    """GPUs one Ray trial asks for: none on the CPU; with CUDA `--gpus-per-trial`, by default
    1 / WORKERS_PER_GPU (trials share a GPU as local workers do: measured, one budget-sized
    candidate leaves a GPU mostly idle). Ray takes fractions up to 1, whole numbers above."""
    if not device.startswith("cuda"):
        if gpus_per_trial:
            raise RayConfigError("--gpus-per-trial needs --device cuda")
        return 0.0
    from search.parallelism import WORKERS_PER_GPU

    share = 1 / WORKERS_PER_GPU if gpus_per_trial is None else gpus_per_trial
    if not (share > 0 and (share <= 1 or float(share).is_integer())):
        raise RayConfigError(
            f"--gpus-per-trial must be a fraction in (0, 1] or a whole number, got {share:g}"
        )
    return share


def _run_config(name: str, results: Path):
    RunConfig: Any = getattr(tune, "RunConfig", None)
    FailureConfig: Any = getattr(tune, "FailureConfig", None)
    if RunConfig is None or FailureConfig is None:  # ray < 2.41
        from ray.train import FailureConfig, RunConfig
    return RunConfig(
        name=name,
        storage_path=str(results),
        failure_config=FailureConfig(max_failures=MAX_FAILURES),
        verbose=0,
    )
