"""The module map in search/__init__.py names every module of the package, and only those."""

from __future__ import annotations

import re
from pathlib import Path

import search

ROOT = Path(__file__).resolve().parents[2]


def test_the_search_package_docstring_maps_every_module():
    listed = set(re.findall(r"^ {4}([a-z_]+) {2,}\S", search.__doc__, flags=re.M))
    modules = {p.stem for p in (ROOT / "search").glob("*.py") if p.stem != "__init__"}
    assert listed == modules, f"missing: {modules - listed}; stale: {listed - modules}"
