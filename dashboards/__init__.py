"""Looking at studies: optuna-dashboard on the study database, notes and artifacts, HTML reports.

* `python -m dashboards.serve` starts optuna-dashboard (loopback only by default).
* `dashboards.annotate(study, artifact_dir, top=3)` writes the study's markdown note and attaches
  the exported config of its best trials as downloadable artifacts (idempotent).
* `python -m dashboards.report --study NAME --out DIR` writes a self-contained HTML report.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward, one sequence.
See docs/dashboards.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from search.storage import safe_url

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

__all__ = [
    "DEFAULT_ARTIFACT_DIR",
    "StorageError",
    "annotate",
    "default_artifact_dir",
    "open_existing_storage",
    "safe_url",
]

DEFAULT_ARTIFACT_DIR = Path("studies/artifacts")
EXAMPLE_URLS = "e.g. sqlite:///studies/studies.db or postgresql://user:password@host:5432/dbname"


class StorageError(ValueError):
    """The --storage URL does not lead to a readable study database."""


def sqlite_path(url: str) -> str | None:
    """The database file of a sqlite URL ("" for in-memory), None for other databases."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split(":///", 1)[1] if ":///" in url else ""
    path = path.split("?", 1)[0]
    return "" if path in ("", ":memory:") else path


def default_artifact_dir(storage_url: str) -> Path:
    """Where artifacts live when no directory is given: `artifacts/` next to a SQLite database
    file (so `sqlite:///studies/studies.db` -> `studies/artifacts`), else `studies/artifacts`."""
    path = sqlite_path(storage_url)
    if path:
        return Path(path).parent / "artifacts"
    return DEFAULT_ARTIFACT_DIR


def open_existing_storage(url: str) -> RDBStorage:
    """Open a study database that must already exist; never creates an empty SQLite file.

    Raises StorageError with a message naming the problem and the fix.
    """
    from optuna.storages import RDBStorage

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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StorageError(f"cannot open --storage {shown}: {first}") from exc
    return storage


def __getattr__(name: str):
    # `annotate` imports optuna-dashboard, torch (via spaces) and search; load it on first use.
    if name == "annotate":
        from dashboards.notes import annotate

        return annotate
    raise AttributeError(f"module 'dashboards' has no attribute {name!r}")
