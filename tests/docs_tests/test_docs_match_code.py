"""The docs' default tables agree with the code (one source per fact: the code; these tests fail
when docs/tasks.md or README.md drift from `Task.default_seq_len` and `Task.defaults`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainers.tasks import TASKS

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = ("recall", "listops", "text")


def _task_rows() -> dict[str, list[str]]:
    rows = {}
    for line in (ROOT / "docs" / "tasks.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].strip("`") in BUILT_IN and cells[0].startswith("`"):
            rows.setdefault(cells[0].strip("`"), cells)  # the built-in tasks table
    return rows


@pytest.mark.parametrize("name", BUILT_IN)
def test_tasks_md_table_gives_the_code_default_seq_len(name):
    cells = _task_rows()[name]
    assert int(cells[4]) == TASKS.get(name).default_seq_len


@pytest.mark.parametrize("name", BUILT_IN)
def test_tasks_md_options_give_the_code_defaults(name):
    text = (ROOT / "docs" / "tasks.md").read_text()
    bullet = re.search(rf"^- `{name}`:(.*?)(?=^- |\Z)", text, re.S | re.M)
    assert bullet, f"docs/tasks.md has no options bullet for {name}"
    for option, value in TASKS.get(name).defaults.items():
        assert re.search(rf"`{option}` \({re.escape(str(value))}[;)]", bullet.group(1)), (
            f"docs/tasks.md: {name} option {option} should read `{option}` ({value}"
        )


def test_readme_seq_len_row_gives_every_task_default():
    row = next(
        line for line in (ROOT / "README.md").read_text().splitlines() if "| `--seq-len` |" in line
    )
    for name in BUILT_IN:
        assert f"{name} {TASKS.get(name).default_seq_len}" in row, row


def test_readme_flag_rows_list_every_sampler_and_pruner():
    from search.samplers import PRUNERS, SAMPLERS

    lines = (ROOT / "README.md").read_text().splitlines()
    for flag, registry in (("--sampler", SAMPLERS), ("--pruner", PRUNERS)):
        row = next(line for line in lines if line.startswith(f"| `{flag}` |"))
        assert [n for n in registry if f"`{n}`" not in row] == [], row


def _table_flags(first_row: str) -> set[str]:
    """The `--flags` named in the first column of the README table that starts at `first_row`."""
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first_row))
    flags: set[str] = set()
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        flags.update(re.findall(r"`(--[a-z-]+)", line.split("|")[1]))
    return flags


@pytest.mark.parametrize(
    ("module", "first_row"),
    [("search.run_flags", "| `--budget` |"), ("search.train", "| `CONFIG` |")],
)
def test_readme_flag_table_lists_every_flag(module, first_row):
    import importlib

    parser = importlib.import_module(module).parser()
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    flags.discard("--help")
    documented = _table_flags(first_row)
    assert sorted(flags - documented) == [], f"README's {module} table misses these flags"
    assert sorted(documented - flags) == [], f"README's {module} table names unknown flags"
