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

from search.storage import sqlite_path

__all__ = [
    "DEFAULT_ARTIFACT_DIR",
    "annotate",
    "annotate_run",
    "default_artifact_dir",
]

DEFAULT_ARTIFACT_DIR = Path("studies/artifacts")


def default_artifact_dir(storage_url: str) -> Path:
    """Where artifacts live when no directory is given: `artifacts/` next to a SQLite database
    file (so `sqlite:///studies/studies.db` -> `studies/artifacts`), else `studies/artifacts`."""
    path = sqlite_path(storage_url)
    if path:
        return Path(path).parent / "artifacts"
    return DEFAULT_ARTIFACT_DIR


def annotate_run(study, storage_url: str) -> None:
    """The `attnsearch.after_run` hook (pyproject.toml): note and best-config artifacts for
    optuna-dashboard after every search.run."""
    from dashboards.notes import annotate

    annotate(study, default_artifact_dir(storage_url), storage_url=storage_url)


def __getattr__(name: str):
    # `annotate` imports optuna-dashboard, torch (via spaces) and search; load it on first use.
    if name == "annotate":
        from dashboards.notes import annotate

        return annotate
    raise AttributeError(f"module 'dashboards' has no attribute {name!r}")
