"""Real storage faults (issue 14): a disk that fills up mid-search and a read-only database,
on a small tmpfs and a read-only bind mount. Mounting needs root with CAP_SYS_ADMIN (CI's
machine has it); elsewhere these tests skip with that reason."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from search.plateau import pick
from search.results import trained_count
from tests.search_tests.conftest import run_cli, search_args


def mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here (needs root with CAP_SYS_ADMIN): {proc.stderr.strip()}")


@pytest.fixture
def mounts():
    points: list[Path] = []
    yield points
    for point in reversed(points):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system holding `folder` until about `leave` bytes are free."""
    import shutil

    filler = folder / "filler"
    with open(filler, "wb") as f:
        remaining = shutil.disk_usage(folder).free - leave
        while remaining > 0:
            chunk = min(remaining, 1 << 16)
            try:
                f.write(b"\0" * chunk)
                f.flush()
            except OSError:
                break
            remaining -= chunk
    return filler


def completed(storage: str, study: str) -> dict[int, float]:
    s = optuna.load_study(study_name=study, storage=storage)
    return {t.number: t.value for t in s.get_trials(states=(TrialState.COMPLETE,))}


@pytest.mark.slow
def test_a_disk_that_fills_mid_search_is_one_line_and_keeps_finished_trials(
    tmp_path, tiny_preset, mounts
):
    disk = tmp_path / "disk"
    disk.mkdir()
    mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    mounts.append(disk)
    storage = f"sqlite:///{disk}/s.db"
    args = search_args(tiny_preset, storage, "full", 1, "--grace-period", "3", "--threads", "1")
    run_cli("search.run", *args, check=True)
    before = completed(storage, "full")
    assert len(before) == 1
    filler = fill(disk, leave=64 * 1024)
    args[args.index("--trials") + 1] = "6"
    proc = run_cli("search.run", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error:"))
    assert "database or disk is full" in line and "bytes free on its disk" in line
    assert "finished trials are kept" in line
    filler.unlink()
    after = completed(storage, "full")
    assert after.items() >= before.items()  # nothing finished was lost or changed
    args[args.index("--trials") + 1] = "3"
    run_cli("search.run", *args, check=True, timeout=400)  # the same study goes on
    study = optuna.load_study(study_name="full", storage=storage)
    assert trained_count(study) == 3
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert not list(disk.rglob("*.tmp*"))  # no half-written checkpoint left by the full disk


def test_a_read_only_database_can_be_exported_and_reported_but_not_searched(
    tmp_path, tiny_preset, mounts
):
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    storage = f"sqlite:///{src}/s.db"
    args = search_args(tiny_preset, storage, "ro", 2, "--threads", "1")
    run_cli("search.run", *args, check=True)
    best = pick(optuna.load_study(study_name="ro", storage=storage)).trial  # what export writes
    mount("--bind", str(src), str(ro))
    mounts.append(ro)
    mount("-o", "remount,ro,bind", str(ro))
    digest = hashlib.sha256((src / "s.db").read_bytes()).hexdigest()
    ro_url = f"sqlite:///{ro}/s.db"
    out = tmp_path / "best.json"
    run_cli("search.export", "--study", "ro", "--storage", ro_url, "--out", str(out), check=True)
    assert json.loads(out.read_text())["provenance"]["trial"] == best.number
    run_cli(
        "dashboards.report", "--study", "ro", "--storage", ro_url, "--out",
        str(tmp_path / "rep"), check=True,
    )  # fmt: skip
    assert (tmp_path / "rep" / "index.html").is_file()
    ro_args = search_args(tiny_preset, ro_url, "ro", 4, "--threads", "1")
    proc = run_cli("search.run", *ro_args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is read-only" in proc.stderr and "Traceback" not in proc.stderr
    assert hashlib.sha256((src / "s.db").read_bytes()).hexdigest() == digest
