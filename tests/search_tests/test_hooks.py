"""search depends on nothing above it: dashboards plugs in through an entry point."""

from __future__ import annotations

import ast
from importlib.metadata import EntryPoint
from pathlib import Path

import search.hooks
from search.hooks import AFTER_RUN, run_after_run_hooks

ROOT = Path(__file__).resolve().parents[2]


def test_search_never_imports_dashboards():
    for path in (ROOT / "search").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "dashboards" for n in names), path


def test_dashboards_registers_its_after_run_hook():
    (hook,) = [e for e in search.hooks.entry_points(group=AFTER_RUN) if e.name == "dashboard_notes"]
    assert hook.value == "dashboards:annotate_run" and callable(hook.load())


_CALLS: list = []


def _broken(study, url):
    raise RuntimeError("boom")


def _record(study, url):
    _CALLS.append((study, url))


def test_a_failing_hook_warns_and_the_others_still_run(monkeypatch, capsys):
    here = "tests.search_tests.test_hooks"
    hooks = [
        EntryPoint("broken", f"{here}:_broken", AFTER_RUN),
        EntryPoint("rec", f"{here}:_record", AFTER_RUN),
    ]
    monkeypatch.setattr(search.hooks, "entry_points", lambda group: hooks)
    _CALLS.clear()
    run_after_run_hooks("study", "sqlite:///x.db")
    assert capsys.readouterr().err == "warning: after-run hook 'broken' failed: boom\n"
    assert _CALLS == [("study", "sqlite:///x.db")]
