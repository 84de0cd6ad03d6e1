"""Two workers on a real PostgreSQL server, started by the test on a free loopback port."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

import optuna
import pytest
from optuna.trial import TrialState

from search.results import trained_count
from tests.search_tests.conftest import run_cli, search_args


def _bindir() -> str | None:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if os.path.exists(f"{d}/initdb") and os.path.exists(f"{d}/pg_ctl"):
            return d
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's "
            "'postgresql' package (.ci/run does)"
        )
    pytest.importorskip("psycopg", reason="PostgreSQL driver missing: pip install -e '.[postgres]'")
    root = tempfile.mkdtemp(prefix="attnsearch-pg-")
    data, port = os.path.join(root, "data"), _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the 'postgres' user
        shutil.chown(root, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    run(
        f"{bindir}/pg_ctl",
        "-D",
        data,
        "-l",
        os.path.join(root, "log"),
        "-w",
        "-o",
        f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off",
        "start",
    )
    try:
        run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "studies")
        yield f"postgresql://postgres@127.0.0.1:{port}/studies"
    finally:
        subprocess.run(
            [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgres(postgres_url, tiny_preset):
    run_cli(
        "search.run", *search_args(tiny_preset, postgres_url, "pg", 6, "--workers", "2"), check=True
    )
    from search.storage import open_storage

    study = optuna.load_study(study_name="pg", storage=open_storage(postgres_url))
    trials = study.get_trials()
    assert 6 <= trained_count(study) <= 7  # over-budget and duplicate proposals do not count
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert any(t.state == TrialState.COMPLETE for t in trials)
