"""End-to-end: `python -m search.run` on tiny budgets (seconds each), storage, resume, export."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from search.budget import parse_flops
from search.plateau import pick
from search.results import cut_at_rung, feasible_trials, first_rung_advice, trained_count
from spaces import ArchConfig, build_model
from spaces.flops import count_flops, count_params
from tests.search_tests.conftest import ROOT, TINY_BUDGET, run_cli, search_args

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def load(storage: str, study: str) -> optuna.Study:
    return optuna.load_study(study_name=study, storage=storage)


def assert_sound(study: optuna.Study) -> None:
    budget = parse_flops(TINY_BUDGET)
    for t in study.get_trials():
        assert t.state != TrialState.RUNNING
        if t.state == TrialState.COMPLETE:
            a = t.user_attrs
            assert a["flops"] <= budget
            assert {
                "config",
                "flops",
                "budget_fraction",
                "flop_convention",
                "params",
                "tokens_per_s",
                "flops_per_s",
                "metric",
                "loss",
                "rung",
                "rungs",
                "tokens",
                "status",
            } <= set(a)
            assert t.value == a["loss"] and 0 <= a["metric"] <= 1
            assert a["rung"] == 2 and a["tokens"] == 9 * 1024
        if t.user_attrs.get("status") == "over_budget":
            assert t.state == TrialState.PRUNED and t.user_attrs["flops"] > budget
            assert "over budget" in t.user_attrs["reason"]
            assert not t.intermediate_values and "tokens" not in t.user_attrs  # never trained


def test_run_resume_and_refusals(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/s.db"
    first = run_cli("search.run", *search_args(tiny_preset, storage, "tiny", 5), check=True)
    assert "top candidates" in first.stdout and "fvcore" in first.stdout
    assert "optuna-dashboard" in first.stdout
    assert "plan: 5 candidates on rungs of 1.02K, 3.07K, 9.22K training tokens" in first.stdout
    assert "mostly still at the chance loss cuts nobody" in first.stdout  # said before training
    # "best:" names the search's first; "pick:" another (search.plateau, search.projection)
    assert re.search(r"\n(best|pick): trial \d+ \(.*of the budget\)", first.stdout)
    study = load(storage, "tiny")
    assert trained_count(study) == 5
    assert study.user_attrs["budget"] == parse_flops(TINY_BUDGET)
    assert study.user_attrs["task"] == "recall" and "versions" in study.user_attrs
    # rungs of 1K tokens teach recall nothing: the summary says its rungs ranked at chance
    chance = study.user_attrs["chance_loss"]
    assert 0 < chance <= math.log(study.user_attrs["interface"]["vocab_size"])
    assert f"note: candidates still at the chance loss ({chance:.4f} nats" in first.stdout
    # ... and, by default, those rungs cut nobody: every candidate trained every rung
    assert study.user_attrs["cut_at_chance"] is False
    assert "rung 0: 5 of 5, 0 cut; rung 1: 5 of 5, 0 cut" in first.stdout
    assert cut_at_rung(study, 0) == cut_at_rung(study, 1) == 0
    advice = first_rung_advice(study)  # read from the study's own later rungs
    assert advice is not None and advice[0] in (3_072, 9_216, 27_648)  # rung 1, 2, or 3x the top
    assert f"a first rung of --rung-tokens {advice[0]} should rank them" in first.stdout
    assert_sound(study)

    run_cli("search.run", *search_args(tiny_preset, storage, "tiny", 8), check=True)
    study = load(storage, "tiny")
    assert trained_count(study) == 8
    numbers = [t.number for t in study.get_trials()]
    assert numbers == list(range(len(numbers)))
    assert_sound(study)

    args = search_args(tiny_preset, storage, "tiny", 9)
    args[args.index(TINY_BUDGET)] = "700KFLOPs"
    refused = run_cli("search.run", *args)
    assert refused.returncode == 2
    assert "different settings" in refused.stderr and "budget" in refused.stderr
    assert trained_count(load(storage, "tiny")) == 8  # nothing added, nothing lost


@pytest.mark.parametrize(
    "budget, message",
    [("2GB", "unknown unit"), ("-1G", "positive"), ("nan", "finite"), ("", "empty")],
)
def test_bad_budget_exits_2(budget, message):
    proc = run_cli("search.run", f"--budget={budget}", "--trials", "1")
    assert proc.returncode == 2 and message in proc.stderr and "e.g." in proc.stderr


def test_infeasible_budget_exits_2_with_smallest_feasible(tmp_path, tiny_preset):
    proc = run_cli(
        "search.run",
        "--budget",
        "1KFLOPs",
        "--preset",
        str(tiny_preset),
        "--storage",
        f"sqlite:///{tmp_path}/s.db",
    )
    assert proc.returncode == 2
    assert "smallest feasible budget" in proc.stderr
    smallest = int(proc.stderr.split("--budget ")[1].split()[0])
    below = run_cli(
        "search.run",
        *search_args(tiny_preset, f"sqlite:///{tmp_path}/s.db", "below", 1),
        "--budget",
        str(smallest - 1),
    )
    assert below.returncode == 2 and "below the cheapest config" in below.stderr
    assert f"--budget {smallest} " in below.stderr  # the same smallest, one FLOP below it
    ok = run_cli(
        "search.run",
        *search_args(tiny_preset, f"sqlite:///{tmp_path}/s.db", "edge", 1),
        "--budget",
        str(smallest),
    )
    assert ok.returncode == 0, ok.stderr  # the cheapest config fits: one candidate, trained
    assert "Traceback" not in ok.stderr and "smallest feasible" not in ok.stderr
    edge = load(f"sqlite:///{tmp_path}/s.db", "edge")
    assert trained_count(edge) == 1
    assert [t.user_attrs["flops"] for t in edge.trials if t.user_attrs.get("status") == "ok"] == [
        smallest
    ]


def test_two_sqlite_workers(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/w.db"
    run_cli(
        "search.run", *search_args(tiny_preset, storage, "two", 6, "--workers", "2"), check=True
    )
    trials = load(storage, "two").get_trials()
    assert 6 <= trained_count(load(storage, "two")) <= 7
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert_sound(load(storage, "two"))


@pytest.mark.slow
def test_kill_9_during_a_promoted_rung_then_rerun_completes(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/k.db"
    args = search_args(tiny_preset, storage, "kill", 3, "--grace-period", "3")
    args[args.index("--rung-tokens") + 1] = "65536"  # 256 steps first: slow enough to catch
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "search.run", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # wait for a trial promoted past rung 0, still training
            time.sleep(0.1)
            try:
                running = load(storage, "kill").get_trials(states=(TrialState.RUNNING,))
            except KeyError:
                continue
            if any(t.user_attrs.get("rung") == 0 for t in running):
                break
        else:
            pytest.fail("no trial reached rung 1 in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = load(storage, "kill").get_trials(states=(TrialState.RUNNING,))
    assert killed and killed[0].user_attrs["rung"] == 0
    assert list((tmp_path / "checkpoints").rglob("trial-*.pt"))  # its rung-0 state is on disk
    # Re-run at once, within the grace period: it waits for the dead trial to go stale, then
    # its retry resumes from the checkpoint, and the study reaches its count.
    run_cli("search.run", *args, check=True, timeout=400)
    study = load(storage, "kill")
    trials = study.get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trained_count(study) == 3
    dead = [t for t in trials if t.state == TrialState.FAIL]
    assert len(dead) == 1 and dead[0].number == killed[0].number
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retry) == 1 and retry[0].user_attrs["resumed_from"] == 0
    assert retry[0].params == dead[0].params
    assert not list((tmp_path / "checkpoints").rglob("trial-*.pt"))


@pytest.mark.slow  # a search, two exports and the example script: ~16 s alone
def test_export_round_trip_and_example_script(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/e.db"
    run_cli("search.run", *search_args(tiny_preset, storage, "exp", 4), check=True)
    out = tmp_path / "best.json"
    (tmp_path / "dir.json").mkdir()
    for bad in ("/proc/no/such/best.json", str(tmp_path / "dir.json")):  # unwritable; a folder
        proc = run_cli("search.export", "--study", "exp", "--storage", storage, "--out", bad)
        assert proc.returncode == 2 and proc.stderr.startswith(f"error: cannot write --out {bad!r}")
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    (tmp_path / "dir.json").rmdir()
    run_cli("search.export", "--study", "exp", "--storage", storage, "--out", str(out), check=True)
    doc = json.loads(out.read_text())
    cfg = ArchConfig.from_file(out)
    assert doc["provenance"]["trial"] == pick(load(storage, "exp")).trial.number  # the summary's
    trial = [t for t in load(storage, "exp").get_trials() if t.number == doc["provenance"]["trial"]]
    assert trial and trial[0].state == TrialState.COMPLETE
    a = trial[0].user_attrs
    assert count_params(cfg) == a["params"] == sum(p.numel() for p in build_model(cfg).parameters())
    assert count_flops(cfg) == a["flops"] == doc["provenance"]["flops"]
    assert doc["provenance"]["flop_convention"].startswith("fvcore")
    yaml_out = tmp_path / "top.yaml"
    run_cli(
        "search.export",
        "--study",
        "exp",
        "--storage",
        storage,
        "--out",
        str(yaml_out),
        "--top",
        "2",
        check=True,
    )
    ranked = feasible_trials(load(storage, "exp"))  # --top K: the measured order
    assert ArchConfig.from_file(tmp_path / "top-1.yaml") == ArchConfig.from_dict(
        ranked[0].user_attrs["config"]
    )
    assert len(ranked) >= 2, "the tiny search should complete at least two candidates"
    assert ArchConfig.from_file(tmp_path / "top-2.yaml") == ArchConfig.from_dict(
        ranked[1].user_attrs["config"]
    )
    example = run_cli("examples.train_exported", str(out), "--steps", "3", check=True)
    assert "step 3" in example.stdout


def test_export_errors(tmp_path):
    proc = run_cli("search.export", "--study", "nope", "--storage", f"sqlite:///{tmp_path}/x.db")
    assert proc.returncode == 2 and "no study database at" in proc.stderr
    assert not (tmp_path / "x.db").exists()  # a read-only command creates nothing


def test_an_unusable_checkpoint_dir_exits_2_before_any_study(tmp_path, tiny_preset):
    afile = tmp_path / "afile"
    afile.write_text("x")
    storage = f"sqlite:///{tmp_path}/c.db"
    for folder, message in (
        (afile, f"error: --checkpoint-dir '{afile}' is a file; give a folder"),
        (
            afile / "sub",
            f"error: cannot create --checkpoint-dir '{afile / 'sub'}': '{afile}' is a file",
        ),
    ):
        args = search_args(tiny_preset, storage, "c", 1)
        proc = run_cli("search.run", *args, "--checkpoint-dir", str(folder))
        assert proc.returncode == 2 and proc.stderr == message + "\n", proc.stderr
    assert not (tmp_path / "c.db").exists()  # refused before the study was created


def test_export_refuses_untrained_trials_and_explains_scaled_studies(tmp_path, capsys):
    from search.export import main as export_main

    cfg = {"vocab_size": 16, "seq_len": 32, "causal": True, "depth": 1, "d_model": 32}
    cfg = ArchConfig(**cfg, n_heads=1).to_dict()
    url = f"sqlite:///{tmp_path}/x.db"
    study = optuna.create_study(storage=url, study_name="s")
    study.set_user_attr("budget", 10**6)
    over = {"config": cfg, "status": "over_budget", "reason": "2 MFLOPs > budget 1 MFLOPs"}
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=over))
    dup = {"config": cfg, "status": "duplicate", "duplicate_of": 0}
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=dup))
    out = str(tmp_path / "t.json")
    assert export_main(["--study", "s", "--storage", url, "--trial", "0", "--out", out]) == 2
    assert capsys.readouterr().err == (
        "error: --trial 0 was never trained or failed (over_budget: 2 MFLOPs > budget 1 MFLOPs); "
        "export a trained trial from the run's table, or omit --trial for the best\n"
    )
    assert export_main(["--study", "s", "--storage", url, "--trial", "1", "--out", out]) == 2
    assert "(duplicate of trial 0)" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()
    (tmp_path / "afile").write_text("x")
    bad = str(tmp_path / "afile" / "t.json")

    scaled = optuna.create_study(storage=url, study_name="s-scaled")
    scaled.set_user_attr("kind", "scaled")
    scaled.set_user_attr("base_study", "s")
    untrained = {"config": cfg, "status": "untrained", "target": 4 * 10**6}
    scaled.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=untrained))
    assert export_main(["--study", "s-scaled", "--storage", url, "--out", out]) == 2
    assert "is a scaled study (from 's'); pass --trial N" in capsys.readouterr().err
    assert export_main(["--study", "s-scaled", "--storage", url, "--trial", "0", "--out", out]) == 0
    assert ArchConfig.from_file(out).to_dict() == cfg  # a scaled target exports untrained
    capsys.readouterr()
    assert export_main(["--study", "s-scaled", "--storage", url, "--trial", "0", "--out", bad]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot write --out {bad!r}: the folder of --out "
        f"{str(tmp_path / 'afile')!r} is a file; give a folder\n"
    )


def test_a_dry_run_prints_the_plan_and_opens_no_study(tmp_path, tiny_preset, capsys):
    from search import run

    storage = f"sqlite:///{tmp_path}/d.db"
    args = search_args(tiny_preset, storage, "d", 5)
    assert run.main([*args, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: 5 candidates on rungs of 1.02K, 3.07K, 9.22K training tokens")
    assert "(8 of the space's configs timed)" in out and "expected time" in out
    assert out.endswith(
        "dry run: no study opened, nothing trained (a resumed study keeps its rungs)\n"
    )
    assert not (tmp_path / "d.db").exists()
