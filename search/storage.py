"""Study storage chosen by URL: a SQLite file by default, any SQLAlchemy URL otherwise.

SQLite is made safe for several local worker processes: WAL journal (readers never block the
writer), a 60 s busy timeout, and the study is created once by the parent before workers start.
Optuna's heartbeat marks the trials of a killed worker FAIL after `grace_period` seconds, and
`RetryHeartbeatStaleTrialCallback` re-queues them once, so no trial stays RUNNING forever.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy import event, update
from sqlalchemy.engine import Engine

from search.optuna_private import rdb_models

DEFAULT_STORAGE = "sqlite:///studies/studies.db"
HEARTBEAT_INTERVAL = 10  # seconds between a running trial's heartbeats
GRACE_PERIOD = 30  # a RUNNING trial without a heartbeat for this long is failed and retried


def safe_url(url: str) -> str:
    """`url` with any password replaced by ***, for messages and notes."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


class StorageError(ValueError):
    """The --storage URL does not lead to a usable study database; the message is one line."""


EXAMPLE_URLS = "e.g. sqlite:///studies/studies.db or postgresql://user:password@host:5432/dbname"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return safe_url(text.splitlines()[0]) if text else type(exc).__name__


class StorageFailed(RuntimeError):
    """The study database failed during a search (disk full, file removed, server gone)."""


def storage_failure(exc: BaseException, url: str) -> StorageFailed | None:
    """A one-line StorageFailed for a database error raised mid-run (Optuna wraps the real cause,
    e.g. "database or disk is full", in "invalid data in the commit"), else None."""
    from sqlalchemy.exc import SQLAlchemyError

    kinds = (optuna.exceptions.StorageInternalError, SQLAlchemyError)
    found: BaseException | None = exc
    while found is not None and not isinstance(found, kinds):
        # Optuna can mask a failed commit with "assert False, 'Should not reach.'" raised while
        # handling it: follow the implicit chain too
        found = found.__cause__ or found.__context__
    if found is None:
        return None
    root: BaseException = found
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).strip().splitlines()[0] if str(root).strip() else type(root).__name__
    message = f"the study database {safe_url(url)} failed: {safe_url(text)}"
    return StorageFailed(
        message + _disk_note(url) + "; finished trials are kept, a trial cut off resumes on the "
        "next run once the database works again"
    )


def _disk_note(url: str, only_if_full: bool = False) -> str:
    """The note ' (N bytes free on its disk)' for a SQLite database; '' for servers."""
    path = sqlite_path(url)
    if not path:
        return ""
    try:
        free = shutil.disk_usage(Path(path).resolve().parent).free
    except OSError:
        return ""
    return "" if only_if_full and free > 0 else f" ({free:,} bytes free on its disk)"


def sqlite_path(url: str) -> str | None:
    """The database file of a sqlite URL ("" for in-memory), None for other databases."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    return "" if path in ("", ":memory:") else path


def open_existing_storage(url: str) -> RDBStorage:
    """Open a study database that must already exist, for commands that read (export, scale,
    fidelity, reports): never creates a SQLite file or its folders, and sets no pragma that
    needs write access. Raises StorageError with a one-line message naming the fix."""
    if not isinstance(url, str) or "://" not in url:
        raise StorageError(f"--storage {url!r} is not a database URL; expected {EXAMPLE_URLS}")
    shown = safe_url(url)
    path = sqlite_path(url)
    if path == "":
        raise StorageError(
            f"--storage {shown}: an in-memory SQLite database holds no studies; "
            "pass the database file the search wrote, e.g. sqlite:///studies/studies.db"
        )
    if path is not None and not Path(path).is_file():
        raise StorageError(
            f"no study database at {path!r} (from --storage {shown}); run a search first "
            "(python -m search.run --budget 2GFLOPs) or pass the --storage URL it used"
        )
    url = _with_available_driver(url) if path is None else _read_only_if_needed(url, path)
    engine_kwargs = (
        {"connect_args": {"timeout": 60}} if path is not None else {"pool_pre_ping": True}
    )
    try:
        storage = RDBStorage(url, engine_kwargs=engine_kwargs)
        storage.get_all_studies()  # connect now, so a bad server or file fails here
    except ImportError as exc:
        raise StorageError(
            f"--storage {shown}: the database driver is missing ({exc}); "
            "for PostgreSQL: pip install -e '.[postgres]'"
        ) from exc
    except Exception as exc:
        raise StorageError(f"cannot open --storage {shown}: {_first_line(exc)}") from exc
    return storage


def _check_writable(path: Path, shown: str) -> None:
    """Create the database's folder; refuse a file or folder this process cannot write."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"--storage {shown}: cannot create the folder {str(path.parent)!r}: "
            f"{exc.strerror or exc}"
        ) from None
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StorageError(
            f"--storage {shown}: {str(target)!r} is read-only (a read-only file system or "
            "permissions), and a search writes its trials there; pass a writable --storage "
            "(search.export and dashboards.report can still read it)"
        )


def _read_only_if_needed(url: str, path: str) -> str:
    """A SQLite file we may not write (a read-only mount, a file without write permission) is
    opened read-only, so commands that only read it (export, report) still work: on a read-only
    folder as `immutable` (SQLite cannot create the WAL index there, and nothing can change the
    file), else with `mode=ro`. Writable files keep the URL as given."""
    file = Path(path).resolve()
    if os.access(file.parent, os.W_OK) and os.access(file, os.W_OK):
        return url
    flag = "mode=ro" if os.access(file.parent, os.W_OK) else "immutable=1"
    return f"sqlite:///file:{quote(str(file))}?{flag}&uri=true"


class ClaimingRDBStorage(RDBStorage):
    """RDBStorage whose claim of a WAITING trial is one conditional UPDATE.

    Optuna takes a queued trial (an enqueued baseline, a heartbeat or Ctrl-C retry) by reading
    its state and then writing RUNNING. `SELECT ... FOR UPDATE` makes that atomic on PostgreSQL,
    but SQLite ignores it, so two local workers could both take the same trial and one then
    crashes with "Cannot tell a COMPLETE trial" (optuna/optuna#4621). `UPDATE ... WHERE state =
    WAITING` is atomic on every database: exactly one worker's update matches.
    """

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        if state != TrialState.RUNNING or values is not None:
            return super().set_trial_state_values(trial_id, state, values)
        table = rdb_models().TrialModel  # Optuna's own table model
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(table)
                .where(table.trial_id == trial_id, table.state == TrialState.WAITING)
                .values(state=TrialState.RUNNING, datetime_start=datetime.now())
            )
        return claimed.rowcount == 1


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def open_storage(
    url: str = DEFAULT_STORAGE,
    heartbeat_interval: int | None = None,
    grace_period: int = GRACE_PERIOD,
) -> RDBStorage:
    """Open (creating if needed) the study database at `url`, with heartbeats and retries."""
    if heartbeat_interval is None:
        heartbeat_interval = max(1, min(HEARTBEAT_INTERVAL, grace_period // 3))
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(
            f"--storage {url!r} is not a database URL; expected e.g. {DEFAULT_STORAGE} or "
            "postgresql://user:password@host:5432/dbname"
        )
    shown = safe_url(url)
    url = _with_available_driver(url)
    engine_kwargs: dict[str, Any] = {}
    if is_sqlite(url):
        path = sqlite_path(url)
        if path:
            _check_writable(Path(path), shown)
        engine_kwargs = {"connect_args": {"timeout": 60}}
        if not event.contains(Engine, "connect", _sqlite_pragmas):
            event.listen(Engine, "connect", _sqlite_pragmas)
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():  # heartbeat and retry callbacks are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return ClaimingRDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
    except ImportError as exc:
        raise StorageError(
            f"the database driver for {url.split(':', 1)[0]!r} is missing ({exc}); "
            "for PostgreSQL: pip install -e '.[postgres]'"
        ) from exc
    except Exception as exc:  # bad scheme, unreachable server, corrupt or unwritable file
        note = _disk_note(url, only_if_full=True)
        raise StorageError(f"cannot open --storage {shown}: {_first_line(exc)}{note}") from exc


def _with_available_driver(url: str) -> str:
    """`postgresql://` means psycopg2 to SQLAlchemy; use psycopg 3 (our `postgres` extra) when
    only that is installed."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg"):
            return "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    """WAL + normal sync for SQLite connections; a no-op for other databases."""
    module = type(dbapi_connection).__module__
    if "sqlite" not in module:
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def default_checkpoint_dir(url: str) -> Path:
    """Where rung checkpoints live: `checkpoints/` beside a SQLite file, else
    `studies/checkpoints` (for several machines, pass a shared folder with --checkpoint-dir)."""
    path = sqlite_path(url)
    if path:
        return Path(path).resolve().parent / "checkpoints"
    return Path("studies/checkpoints").resolve()


def set_finished_trial_user_attr(storage: RDBStorage, trial_id: int, key: str, value: Any) -> None:
    """Set a user attribute on a trial that has already finished.

    `storage.set_trial_user_attr` refuses finished trials (`UpdateFinishedTrialError`), and
    Optuna has no public API to annotate a completed trial, so this writes the row through
    Optuna's own RDB model (the same table and JSON encoding `set_trial_user_attr` uses).
    """
    models = rdb_models()
    value_json = json.dumps(value)
    session = storage.scoped_session()
    try:
        row = (
            session.query(models.TrialUserAttributeModel)
            .filter(models.TrialUserAttributeModel.trial_id == trial_id)
            .filter(models.TrialUserAttributeModel.key == key)
            .one_or_none()
        )
        if row is None:
            session.add(
                models.TrialUserAttributeModel(trial_id=trial_id, key=key, value_json=value_json)
            )
        else:
            row.value_json = value_json
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()
