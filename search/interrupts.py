"""Stopping a search cleanly: Ctrl-C, a terminated parent, and workers that outlive theirs.

What a stop does (docs/reliability.md):
- The running trial is returned to the queue (`search.objective.requeue`): it is marked
  `interrupted`, and a WAITING copy resumes from its last rung checkpoint on the next run. It
  never counts toward `--trials` (`search.results.is_trained`).
- Optuna's own "trial failed" log lines with a KeyboardInterrupt (or database error) traceback
  are dropped; the CLI prints one line (and, after Ctrl-C, the summary) instead. A candidate
  that diverged or ran out of memory (`TrialFailed`) keeps Optuna's one-line warning, without
  the traceback.
- Local worker processes stop with their parent: the parent forwards the interrupt, and each
  worker watches its parent and interrupts itself if the parent dies (even by `kill -9`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

STOP_TIMEOUT = 60.0  # seconds the parent waits for interrupted workers to return their trial
REDELIVER_DELAY = 0.1  # seconds before an interrupt that a callback swallowed is sent again


def _quiet_types() -> tuple[type[BaseException], ...]:
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    return (KeyboardInterrupt, StorageInternalError, SQLAlchemyError)


class _DropInterrupts(logging.Filter):
    """Optuna logs a failed trial as two warnings: the traceback, then "Trial N failed with
    value None." For an interruption or a database failure both go (the CLI prints one line
    with the real cause); every other failure is still logged."""

    def __init__(self) -> None:
        super().__init__()
        self._follow_up: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        from search.objective import TrialFailed

        exc = record.exc_info[0] if record.exc_info else None
        if exc is not None and issubclass(exc, _quiet_types()):
            number = record.getMessage().split(" ", 2)[1]  # "Trial N failed with parameters..."
            self._follow_up = f"Trial {number} failed with value"
            return False
        if exc is not None and issubclass(exc, TrialFailed):
            # a candidate that diverged or ran out of memory: its one-line reason, no traceback
            # (the run's summary counts it as failed)
            number = record.getMessage().split(" ", 2)[1]
            self._follow_up = f"Trial {number} failed with value"
            record.exc_info, record.exc_text = None, None
            return True
        if self._follow_up is not None and record.getMessage().startswith(self._follow_up):
            self._follow_up = None
            return False
        return True


_FILTER = _DropInterrupts()

# SQLAlchemy logs through one logger per pool class (no handler: Python's last-resort handler
# prints it with its traceback).
_POOL_LOGGERS = tuple(
    f"sqlalchemy.pool.impl.{name}"
    for name in ("QueuePool", "NullPool", "SingletonThreadPool", "StaticPool")
)


class _DropInterruptedCursorClose(logging.Filter):
    """Ctrl-C during a database read: SQLAlchemy closes the cursor of the connection it just
    dropped, and logs "Error closing cursor" with a traceback when that fails ("Cannot operate
    on a closed database"). That failure is a consequence of the interruption, which the CLI
    reports in one line; any other cursor failure is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Error closing cursor" or not record.exc_info:
            return True
        exc: BaseException | None = record.exc_info[1]
        while exc is not None:
            if isinstance(exc, KeyboardInterrupt):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


_POOL_FILTER = _DropInterruptedCursorClose()


def _thread_hook(args: threading.ExceptHookArgs) -> None:
    """Optuna's heartbeat thread dies on a database failure; the main thread meets the same
    failure and reports it in one line, so the thread's traceback is dropped."""
    exc = args.exc_value
    while exc is not None and not isinstance(exc, _quiet_types()):
        exc = exc.__cause__ or exc.__context__
    if exc is None:
        _ORIGINAL_HOOK(args)


_ORIGINAL_HOOK = threading.excepthook


def quiet_optuna_tracebacks() -> None:
    """Drop the tracebacks Optuna logs or its heartbeat thread prints for a trial ended by
    Ctrl-C or a database failure, and SQLAlchemy's cursor-close traceback after a Ctrl-C
    (idempotent)."""
    from search.optuna_private import OPTIMIZE_LOGGER

    logger = logging.getLogger(OPTIMIZE_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    for name in _POOL_LOGGERS:
        pool_logger = logging.getLogger(name)
        if _POOL_FILTER not in pool_logger.filters:
            pool_logger.addFilter(_POOL_FILTER)
    threading.excepthook = _thread_hook


def _redeliver_lost_interrupt(args) -> None:
    """`sys.unraisablehook`: an interrupt raised while Python ran a weakref callback or a
    finalizer (SQLAlchemy's registry runs one while garbage is collected) cannot propagate.
    Python would print "Exception ignored in ..." with a traceback and run on, and a worker,
    whose handler ignores later SIGINTs, would ignore its parent's forward too: only the
    parent's terminate, STOP_TIMEOUT later, would end it. So the interrupt is sent again,
    silently, a moment later from another thread (sent from here, its handler would run at
    once, inside this hook, and be swallowed again): the handler then runs in the code the
    callback interrupted. Any other unraisable exception is reported as before."""
    if args.exc_type is None or not issubclass(args.exc_type, KeyboardInterrupt):
        _ORIGINAL_UNRAISABLE_HOOK(args)
        return
    main = threading.current_thread() is threading.main_thread()
    if main and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # `_interrupt_once` fired
        signal.signal(signal.SIGINT, _interrupt_once)
    threading.Thread(target=_interrupt_later, daemon=True).start()


def _interrupt_later() -> None:
    time.sleep(REDELIVER_DELAY)
    os.kill(os.getpid(), signal.SIGINT)


_ORIGINAL_UNRAISABLE_HOOK = sys.unraisablehook


def install_lost_interrupt_hook() -> None:
    """Deliver again an interrupt that a callback swallowed (`_redeliver_lost_interrupt`)."""
    sys.unraisablehook = _redeliver_lost_interrupt


def _interrupt_once(signum, frame) -> None:
    # A worker may get SIGINT twice (the terminal's, then the parent's forward): the second must
    # not interrupt the first one's cleanup, so later ones are ignored.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def raise_interrupt(signum, frame) -> None:
    """A SIGTERM handler: stop like Ctrl-C (trial returned, summary printed)."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def stop_on_signals():
    """While the block runs, SIGTERM and SIGINT raise KeyboardInterrupt in this process, even
    when SIGINT came inherited ignored (a shell's background job). A process pool inside
    then terminates its workers on `kill`, where the default SIGTERM would kill the parent
    alone and leave them training on, orphaned. Off the main thread it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    term = signal.signal(signal.SIGTERM, raise_interrupt)
    intr = signal.signal(signal.SIGINT, signal.default_int_handler)
    hook = sys.unraisablehook
    install_lost_interrupt_hook()
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, term)
        signal.signal(signal.SIGINT, intr)
        sys.unraisablehook = hook


class WorkerDied(RuntimeError):
    """A worker process ended abruptly (killed by a signal, e.g. the kernel's out-of-memory
    killer, or crashed) before returning its result; the message names what it was running."""


def run_interruptible(main: Callable[[], int], message: str) -> int:
    """A CLI's `__main__`: `main()` under `stop_on_signals`; Ctrl-C or `kill` prints `message`
    (one line on stderr, no traceback) and gives exit status 130. A worker process that died
    (`WorkerDied`) is one `error:` line and exit status 1."""
    with stop_on_signals():
        try:
            return main()
        except KeyboardInterrupt:
            print(message, file=sys.stderr)
            return 130
        except WorkerDied as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1


def _watch_parent(parent: mp.process.BaseProcess) -> None:
    parent.join()  # returns when the parent process is gone
    os.kill(os.getpid(), signal.SIGINT)


def supervise_worker() -> None:
    """In a local worker process: stop cleanly on the first SIGINT or SIGTERM, and interrupt
    itself when its parent dies."""
    signal.signal(signal.SIGINT, _interrupt_once)
    signal.signal(signal.SIGTERM, _interrupt_once)
    quiet_optuna_tracebacks()  # an interrupt may come before the worker's loop installs it
    install_lost_interrupt_hook()
    parent = mp.parent_process()
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def stop_workers(procs: list, timeout: float = STOP_TIMEOUT) -> None:
    """Interrupt live workers, give them `timeout` seconds to return their trials, then
    terminate the rest."""
    for p in procs:
        if p.is_alive() and p.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join()


__all__ = [
    "WorkerDied",
    "install_lost_interrupt_hook",
    "quiet_optuna_tracebacks",
    "raise_interrupt",
    "run_interruptible",
    "stop_workers",
    "supervise_worker",
]
