"""Stopping a search (issue 14): Ctrl-C with 1 and 2 workers returns the running trials to the
queue without spending `--trials`, prints one line and the summary, and the re-run resumes them;
workers of a parent killed with -9 stop on their own and return their trials too."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.interrupts import quiet_optuna_tracebacks
from search.objective import requeue
from search.optuna_private import OPTIMIZE_LOGGER
from search.results import trained_count, trial_counts
from tests.search_tests.conftest import ROOT, guard, run_cli, search_args


def load(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="stop", storage=storage)


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Started with SIGINT ignored, as a shell's background job (`cmd &`) is (an ignored signal
    # stays ignored across exec): the run must stop on it all the same, as its workers do.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "search.run", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for_a_checkpointed_trial(storage: str, proc: subprocess.Popen) -> None:
    """Until a RUNNING trial has finished rung 0 (its checkpoint is on disk)."""
    deadline = time.time() + 180
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.1)
        try:
            running = load(storage).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            continue
        if any(t.user_attrs.get("rung") == 0 for t in running):
            return
    proc.kill()
    pytest.fail("no trial finished rung 0 in time")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def assert_returned(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """No trial left RUNNING; every FAIL is an interrupted one with exactly one WAITING retry."""
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all(t.user_attrs["status"] == "interrupted" for t in stopped)
    for t in stopped:
        retries = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert len(retries) == 1 and retries[0].state == TrialState.WAITING
        assert retries[0].params == t.params
    return stopped


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_returns_the_trial_prints_the_summary_and_the_rerun_resumes(
    tmp_path, tiny_preset, workers
):
    storage = f"sqlite:///{tmp_path}/c.db"
    args = search_args(tiny_preset, storage, "stop", 3, "--workers", str(workers), "--threads", "1")
    args[args.index("--rung-tokens") + 1] = "65536"  # 256 steps first: slow enough to catch
    args += ["--rungs", "2"]  # the promoted rung, 3x longer, is all the re-run needs to train
    proc = start(args)
    wait_for_a_checkpointed_trial(storage, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    out, err = proc.communicate(timeout=guard(120))
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert "interrupted: finished trials are kept" in err
    assert f"study 'stop' in {storage}" in out and " interrupted" in out  # the summary
    study = load(storage)
    stopped = assert_returned(study)
    assert trial_counts(study)["interrupted"] == len(stopped) <= workers
    assert trained_count(study) < 3
    checkpointed = [t for t in stopped if t.user_attrs.get("rung") == 0]
    assert checkpointed and list((tmp_path / "checkpoints").rglob("trial-*.pt"))
    # The same command again: the retries run first, resume from their rung checkpoints, and
    # the interruption spent no slot: the study reaches exactly 3 trained candidates.
    rerun = run_cli("search.run", *args, check=True, timeout=400)
    assert "UserWarning" not in rerun.stderr, rerun.stderr[-2000:]
    study = load(storage)
    trials = study.get_trials()
    assert trained_count(study) == 3
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    for t in checkpointed:
        retry = next(r for r in trials if r.system_attrs.get("failed_trial") == t.number)
        assert retry.user_attrs["resumed_from"] == 0 and retry.user_attrs["status"] in (
            "ok",
            "stopped",
        )
    assert not list((tmp_path / "checkpoints").rglob("trial-*.pt"))


@pytest.mark.slow
def test_workers_stop_and_return_their_trials_when_the_parent_is_killed(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/k.db"
    args = search_args(tiny_preset, storage, "stop", 3, "--workers", "2", "--threads", "1")
    args[args.index("--rung-tokens") + 1] = "65536"
    args += ["--rungs", "2"]  # a second rung of 3x: enough to promote, not 9x
    proc = start(args)
    wait_for_a_checkpointed_trial(storage, proc)
    kids = children(proc.pid)
    workers = [p for p in kids if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    deadline = time.time() + 120
    while any(map(alive, workers)) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(map(alive, workers)), "workers outlived their parent"
    assert_returned(load(storage))


def test_requeue_copies_the_trial_and_keeps_the_original_number():
    study = optuna.create_study(storage="sqlite:///:memory:")
    trial = study.ask()
    trial.suggest_int("depth", 1, 4)
    trial.set_user_attr("status", "training")
    trial.set_user_attr("config", {"depth": 2})
    requeue(trial)
    study.tell(trial, state=TrialState.FAIL)
    first = study.get_trials()[1]
    assert first.state == TrialState.WAITING and first.params == study.trials[0].params
    assert first.system_attrs["failed_trial"] == 0 and first.system_attrs["retry_history"] == []
    assert first.user_attrs == {"config": {"depth": 2}}  # no stale status
    assert study.trials[0].user_attrs["status"] == "interrupted"
    retry = study.ask()  # the WAITING copy is what the next ask runs
    assert retry.number == 1
    requeue(retry)  # interrupted again: still points at trial 0, spends no crash retry
    second = study.get_trials()[2]
    assert second.system_attrs["failed_trial"] == 0 and second.system_attrs["retry_history"] == []


def test_optuna_log_of_an_interrupted_trial_is_dropped_and_other_failures_kept(caplog):
    quiet_optuna_tracebacks()
    quiet_optuna_tracebacks()  # idempotent
    logger = logging.getLogger(OPTIMIZE_LOGGER)
    assert len(logger.filters) == 1
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        info = sys.exc_info()
    with caplog.at_level(logging.WARNING, logger="optuna"):
        logger.warning("Trial 7 failed with parameters: {} because of ...", exc_info=info)
        logger.warning("Trial 7 failed with value None.")
        logger.warning("Trial 8 failed with value None.")
    assert [r.getMessage() for r in caplog.records] == ["Trial 8 failed with value None."]


def _log_a_failed_cursor_close(tmp_path, cause: BaseException) -> None:
    """What SQLAlchemy's `Connection._safe_close_cursor` logs (through the real engine's pool
    logger) when closing the cursor fails while `cause` is handled. The CI run met it after a
    Ctrl-C during a read: "Cannot operate on a closed database", with a traceback."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path}/r.db")
    try:
        try:
            raise cause
        except BaseException:
            try:
                raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
            except Exception:
                engine.pool.logger.error("Error closing cursor", exc_info=True)
    finally:
        engine.dispose()


def test_sqlalchemys_cursor_close_traceback_after_ctrl_c_is_dropped_and_others_kept(
    tmp_path, caplog
):
    quiet_optuna_tracebacks()
    with caplog.at_level(logging.ERROR, logger="sqlalchemy"):
        _log_a_failed_cursor_close(tmp_path, KeyboardInterrupt())
        assert not caplog.records
        _log_a_failed_cursor_close(tmp_path, sqlite3.OperationalError("disk I/O error"))
    assert [r.getMessage() for r in caplog.records] == ["Error closing cursor"]


@pytest.mark.slow
def test_one_of_two_workers_killed_the_other_finishes_the_study(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/w.db"
    args = search_args(
        tiny_preset, storage, "stop", 3, "--workers", "2", "--threads", "1", "--grace-period", "3"
    )
    args[args.index("--rung-tokens") + 1] = "65536"
    args += ["--rungs", "2"]  # a second rung of 3x: enough to promote, not 9x
    proc = start(args)
    wait_for_a_checkpointed_trial(storage, proc)
    kids = children(proc.pid)
    workers = [p for p in kids if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=guard(400))
    assert proc.returncode == 0, err[-2000:]
    assert "killed by signal 9; its trial is retried" in err and "Traceback" not in err
    study = load(storage)
    assert trained_count(study) == 3
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_a_diverged_candidate_is_one_warning_line_without_a_traceback():
    """Optuna logs a failed trial with its traceback, then "Trial N failed with value None.";
    for a candidate that diverged (TrialFailed) the first stays as one line, the second goes.
    Seen in the README's default run before: a diverged linear model printed a traceback."""
    from search.interrupts import _DropInterrupts
    from search.objective import TrialFailed

    def record(msg, exc=None):
        info = None
        if exc is not None:
            try:
                raise exc
            except TrialFailed:
                info = sys.exc_info()
        return logging.LogRecord("optuna", logging.WARNING, __file__, 1, msg, None, info)

    f = _DropInterrupts()
    first = record("Trial 2 failed with parameters: {} because of the following error: "
                   "TrialFailed('diverged: non-finite training loss at step 105')",
                   TrialFailed("diverged: non-finite training loss at step 105"))  # fmt: skip
    assert f.filter(first) is True and first.exc_info is None
    assert "Traceback" not in logging.Formatter().format(first)
    assert f.filter(record("Trial 2 failed with value None.")) is False
    assert f.filter(record("Trial 3 finished with value 1.0")) is True


LOST_INTERRUPT = """
import gc, signal, time, weakref
from search.interrupts import stop_on_signals, supervise_worker
{setup}  # either sets its SIGINT handler: a background job starts with SIGINT ignored
class Thing:
    pass
def collected(ref):  # a weakref callback, as SQLAlchemy's registry runs while collecting
    signal.raise_signal(signal.SIGINT)  # Ctrl-C lands while it runs
thing = Thing()
ref = weakref.ref(thing, collected)
try:
    del thing
    gc.collect()
    time.sleep(30)  # training on
    print("ran on")
except KeyboardInterrupt:
    print("stopped")
"""


WORKER, PARENT = "supervise_worker()", "ctx = stop_on_signals(); ctx.__enter__()"  # ctx kept


@pytest.mark.parametrize("setup", [WORKER, PARENT])
def test_an_interrupt_raised_inside_a_weakref_callback_is_delivered_again_not_lost(setup):
    """Seen in CI: Ctrl-C reached a worker while SQLAlchemy's weakref callback ran during
    garbage collection. An exception there cannot propagate: Python printed "Exception ignored
    in ..." with a traceback and ran on, and the worker, whose handler ignores later SIGINTs,
    would ignore its parent's forward too. Now the interrupt is raised again, silently, in the
    code the callback interrupted."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", LOST_INTERRUPT.format(setup=setup)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=guard(60),
    )
    assert proc.stdout == "stopped\n", proc.stderr[-2000:]
    assert proc.stderr == ""
