"""`python -m dashboards.serve` and `dashboards.annotate`: the dashboard answers its JSON API and
renders in headless Chromium; notes and artifacts are written once; bad input exits 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import optuna_dashboard
import pytest

from dashboards import serve
from dashboards.notes import MARKER, annotate, artifact_name
from search.export import document
from tests.dashboards_tests.conftest import free_port
from tests.search_tests.conftest import ROOT

CONVENTION = "fvcore: 1 multiply-add = 1 FLOP"
START_TIMEOUT = 120.0  # seconds for the server to import torch & co on a busy machine


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.status == 200, url
        return r.read()


def get_json(url: str) -> dict:
    return json.loads(get(url))


@pytest.fixture(scope="module")
def dashboard(built_study, tmp_path_factory):
    """A real `python -m dashboards.serve` subprocess; yields its base URL; always stopped."""
    port = free_port()
    logs = tmp_path_factory.mktemp("serve-logs")
    artifacts = tmp_path_factory.mktemp("artifacts")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "dashboards.serve", "--storage", built_study.storage]
    cmd += ["--port", str(port), "--artifacts", str(artifacts)]
    with open(logs / "out", "wb") as out, open(logs / "err", "wb") as err:
        # files, not pipes: the server logs every request and a full pipe would block it
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"dashboards.serve exited {proc.returncode}:\n"
                    + (logs / "err").read_text(errors="replace")[-3000:]
                )
            try:
                get(f"{base}/api/studies", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"dashboards.serve did not answer within {START_TIMEOUT:.0f} s")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_api_lists_the_study_its_trials_note_and_artifacts(dashboard, built_study):
    studies = get_json(f"{dashboard}/api/studies")["study_summaries"]
    ours = [s for s in studies if s["study_name"] == built_study.name]
    assert len(ours) == 1, studies
    study_id = ours[0]["study_id"]

    detail = get_json(f"{dashboard}/api/studies/{study_id}")
    study = built_study.load()
    assert [t["number"] for t in detail["trials"]] == [t.number for t in study.trials]
    assert {t["state"] for t in detail["trials"]} <= {"Complete", "Pruned", "Fail"}

    note = detail["note"]["body"]
    assert CONVENTION in note and f"python -m search.export --study {built_study.name}" in note
    assert "successive halving over rungs of" in note and "budget" in note and MARKER in note

    with_artifacts = [t for t in detail["trials"] if t["artifacts"]]
    assert with_artifacts, "the best trials should carry their exported config"
    for t in with_artifacts:
        (meta,) = t["artifacts"]
        frozen = study.trials[t["number"]]
        assert meta["filename"] == artifact_name(frozen)
        url = f"{dashboard}/artifacts/{study_id}/{t['trial_id']}/{meta['artifact_id']}"
        assert json.loads(get(url)) == json.loads(json.dumps(document(study, frozen)))
        assert t["note"]["body"].startswith(f"### Trial {t['number']}")


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="chromium is not installed (Debian: apt-get install -y --no-install-recommends "
    "chromium; .ci/run installs it)",
)
def test_dashboard_renders_in_headless_chromium(dashboard, built_study, tmp_path):
    cmd = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        f"{dashboard}/dashboard",
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert built_study.name in dom, dom[-2000:]
    assert "MINIMIZE" in dom.upper()  # loss; the study card, rendered by the app from /api/studies


def fresh_copy(built_study, tmp_path: Path) -> optuna.Study:
    """The study's attributes and trials in a new database: no note, no artifact yet (the
    dashboard fixture may already have annotated the original)."""
    src = built_study.load()
    dst = optuna.create_study(
        study_name=src.study_name,
        storage=f"sqlite:///{tmp_path / 'copy.db'}",
        directions=src.directions,
    )
    for key, value in src.user_attrs.items():
        dst.set_user_attr(key, value)
    dst.add_trials(src.trials)
    return dst


def test_annotate_is_idempotent_and_keeps_user_notes(built_study, tmp_path):
    study = fresh_copy(built_study, tmp_path)
    art = tmp_path / "artifacts"

    first = annotate(study, art, top=3)
    assert first.uploaded and not first.present
    files = sorted(p.name for p in art.iterdir())
    assert sorted(first.artifacts.values()) == files
    for number, artifact_id in first.artifacts.items():
        doc = json.loads((art / artifact_id).read_text())
        assert doc == json.loads(json.dumps(document(study, study.trials[number])))
    note = optuna_dashboard.get_note(study)
    assert CONVENTION in note and "trial-" in note

    second = annotate(study, art, top=3)
    assert not second.note_written and not second.uploaded
    assert second.present == first.uploaded and second.artifacts == first.artifacts
    assert sorted(p.name for p in art.iterdir()) == files
    assert optuna_dashboard.get_note(study) == note

    # a user's text below the marker survives a rewrite (here: the export commands name
    # another storage; a different top K need not change the note when the tiny search has
    # one complete trial); a lost artifact file comes back
    optuna_dashboard.save_note(study, note + "\n\nmy own remark\n")
    lost = next(iter(first.artifacts.values()))  # the best trial's
    (art / lost).unlink()
    third = annotate(study, art, top=1, storage_url="sqlite:////elsewhere/studies.db")
    assert third.note_written and not third.uploaded and (art / lost).exists()
    updated = optuna_dashboard.get_note(study)
    assert "my own remark" in updated and "sqlite:////elsewhere/studies.db" in updated


def test_bad_storage_exits_2_without_creating_a_database(tmp_path, capsys):
    missing = tmp_path / "missing.db"
    assert serve.main(["--storage", f"sqlite:///{missing}"]) == 2
    assert "no study database" in capsys.readouterr().err and not missing.exists()
    assert serve.main(["--storage", "studies.db"]) == 2
    assert "not a database URL" in capsys.readouterr().err
    assert serve.main(["--storage", "sqlite:///:memory:"]) == 2
    assert "in-memory" in capsys.readouterr().err
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    assert serve.main(["--storage", f"sqlite:///{garbage}"]) == 2
    assert "cannot open" in capsys.readouterr().err


def test_host_warning_and_listen_errors(built_study, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: calls.append(k))
    base = ["--storage", built_study.storage, "--no-annotate", "--port", "8123"]

    assert serve.main(base) == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["port"] == 8123
    assert calls[-1]["artifact_store"] is not None
    assert "WARNING" not in capsys.readouterr().err

    assert serve.main([*base, "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert calls[-1]["host"] == "0.0.0.0"
    assert "WARNING" in err and "NO authentication" in err and "127.0.0.1" in err

    def busy(*a, **k):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(optuna_dashboard, "run_server", busy)
    assert serve.main(base) == 2
    assert "cannot listen on 127.0.0.1:8123" in capsys.readouterr().err


@pytest.mark.parametrize(
    "host, loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
    ],
)
def test_is_loopback(host, loopback):
    assert serve.is_loopback(host) is loopback
