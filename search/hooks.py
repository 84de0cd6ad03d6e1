"""Hooks other packages plug into, so that search depends on nothing above it.

`attnsearch.after_run` entry points (see pyproject.toml) are called as `hook(study,
storage_url)` after every `search.run`, before its summary; dashboards registers its study note
and best-config artifacts this way. A hook that fails prints a warning and never fails the run.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import optuna

AFTER_RUN = "attnsearch.after_run"


def run_after_run_hooks(study: optuna.Study, storage_url: str) -> None:
    for hook in entry_points(group=AFTER_RUN):
        try:
            hook.load()(study, storage_url)
        except Exception as exc:  # a plug-in must not cost the user their summary
            print(f"warning: after-run hook {hook.name!r} failed: {exc}", file=sys.stderr)
