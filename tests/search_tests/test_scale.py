"""`python -m search.scale` end to end: the grid trains, targets are met, nothing half-written."""

from __future__ import annotations

import json

import optuna
import pytest

from search.budget import format_flops
from search.retrain import train_final_job
from search.scale import result_text
from search.settings import RunSettings
from search.study import settings_from_study
from spaces import ArchConfig
from spaces.flops import estimate_flops
from tests.search_tests.conftest import TINY_BUDGET, TINY_PRESET, run_cli, run_scale, search_args
from trainers.proxy import Recipe


@pytest.fixture(scope="module")
def base_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    preset = tmp / "small.toml"  # a base with a lattice fine enough for four grid points
    preset.write_text(
        TINY_PRESET.replace("depth = [1, 2]", "depth = [2, 3]").replace(
            "head_dim = [8, 16]", "head_dim = [32]"
        )
    )
    storage = f"sqlite:///{tmp}/s.db"
    args = search_args(preset, storage, "base", 3)
    args[args.index(TINY_BUDGET)] = "6MFLOPs"
    run_cli("search.run", *args, check=True)
    return tmp, storage


@pytest.mark.slow
def test_grid_then_targets_then_export(base_study):
    tmp, storage = base_study
    proc = run_cli(
        "search.scale",
        "--study",
        "base",
        "--storage",
        storage,
        "--targets",
        "12M,24M,600M",
        "--workers",
        "1",
        check=True,
    )
    out = proc.stdout
    assert "grid: training 4 points at phi = 1" in out
    for family in ("depth", "width", "balanced"):
        assert family in out
    assert "coefficients (" in out
    base = optuna.load_study(study_name="base", storage=storage)
    scaled = optuna.load_study(study_name="base-scaled", storage=storage)
    assert len(base.user_attrs["scaling_coefficients"]) == 3
    grid = scaled.user_attrs["grid"]
    assert len(grid) == 4 and len({json.dumps(g["config"], sort_keys=True) for g in grid}) == 4
    assert all(g["status"] == "ok" and g["tokens"] > 0 for g in grid)
    chosen = min(grid, key=lambda g: g["loss"])
    assert scaled.user_attrs["coefficients"] == [chosen["alpha"], chosen["beta"], chosen["gamma"]]
    targets = [t for t in scaled.trials if t.user_attrs["role"] == "target"]
    assert len(targets) == 3
    for t in targets:
        assert 0.9 * t.user_attrs["target"] <= t.user_attrs["flops"] <= t.user_attrs["target"]
    t = targets[-1]
    path = tmp / "x.json"
    run_cli(
        "search.export",
        "--study",
        "base-scaled",
        "--storage",
        storage,
        "--trial",
        str(t.number),
        "--out",
        str(path),
        check=True,
    )
    assert ArchConfig.from_file(path).to_dict() == t.user_attrs["config"]
    again = run_cli("search.scale", "--study", "base", "--storage", storage, "--targets", "30M")
    assert again.returncode == 2 and "--overwrite" in again.stderr
    # --overwrite replaces a scaled study (the guard refuses only search studies)
    flags = ("--targets", "30M", "--coefficients", "1.2,1.1,1.0", "--overwrite")
    run_cli("search.scale", "--study", "base", "--storage", storage, *flags, check=True)
    replaced = optuna.load_study(study_name="base-scaled", storage=storage)
    assert replaced.user_attrs["kind"] == "scaled"
    assert [t.user_attrs["target"] for t in replaced.trials] == [30_000_000]
    assert len(optuna.load_study(study_name="base", storage=storage).trials) == len(base.trials)


def test_train_with_given_coefficients_prints_results(base_study):
    _, storage = base_study
    proc = run_cli(
        "search.scale",
        "--study",
        "base",
        "--storage",
        storage,
        "--targets",
        "12M",
        "--coefficients",
        "1.2,1.1,1.0",
        "--train",
        "--tokens",
        "2048",
        "--workers",
        "1",
        "--out-study",
        "given",
        check=True,
    )
    assert "training the base and 1 scaled configs for 2,048 tokens" in proc.stdout
    assert "done 1 of 2 (" in proc.stdout and "done 2 of 2 (" in proc.stdout
    assert "): base 3x64, val loss " in proc.stdout and "): 12.0 MFLOPs target " in proc.stdout
    assert proc.stdout.count(" ok") >= 2  # base and target rows, result column
    trained = [t for t in optuna.load_study(study_name="given", storage=storage).trials]
    assert trained[0].user_attrs["status"] == "ok" and trained[0].value is not None


def test_bad_input_exits_2_and_writes_nothing(base_study):
    _, storage = base_study
    before = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    cases = [
        (["--targets", "1M"], "every target must exceed the base"),
        (["--targets", "5T", "--coefficients", "1,1,2"], "nearest reachable"),
        (["--study", "nope", "--targets", "5M"], "no study 'nope'"),
    ]
    for extra, message in cases:
        args = ["--study", "base", "--storage", storage, *extra, "--out-study", "never"]
        if "--study" in extra:
            args = ["--storage", storage, *extra]
        proc = run_cli("search.scale", *args)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    assert {s.study_name for s in optuna.get_all_study_summaries(storage)} == before


def test_divergence_reason_reaches_the_table(tmp_path):
    settings = RunSettings(
        budget=10**6,
        task="recall",
        seq_len=32,
        task_options={"num_pairs": 4, "n_val": 32},
        recipe=Recipe(base_lr=1e30, val_tokens=256),
    )
    cfg = ArchConfig(vocab_size=34, seq_len=32, causal=True, depth=1, d_model=16, n_heads=1)
    res = train_final_job((cfg.to_dict(), settings, 2048, 8, 1))
    assert res["status"] == "diverged" and res["loss"] is None
    # the rate that diverged: 1e30 * sqrt(256 / 16) for the width * sqrt(8 * 32 / 4096) for the step
    assert result_text(res).startswith("diverged: non-finite") and "(lr 1e+30)" in res["reason"]


def test_grid_seeds_average_each_point_over_its_own_seeds(monkeypatch):
    """--grid-seeds 2: every grid point trains under seeds 0 and 1 on the same (lengthened)
    schedule, and the point with the lowest mean loss wins even when another point has the
    single lowest loss."""
    import argparse

    from search import scale
    from search.compound import Coefficients
    from trainers.rungs import RungSchedule

    def cfg(depth):
        return ArchConfig(
            attention="full",
            depth=depth,
            d_model=64,
            n_heads=2,
            seq_len=32,
            vocab_size=8,
            causal=True,
        )

    reachable = [
        (Coefficients(2.0, 1.0, 1.0), "depth", cfg(2), 2.0),
        (Coefficients(1.0, 1.4, 1.0), "width", cfg(3), 2.0),
    ]
    # (depth, seed) -> loss: depth 2 has the best single run (1.0) but the worse mean (2.0)
    losses = {(2, 0): 1.0, (2, 1): 3.0, (3, 0): 1.5, (3, 1): 1.7}
    seen, given_costs = [], []

    def fake_run_jobs(fn, jobs, workers, costs=None, labels=None):
        given_costs.append(costs)
        out = []
        for cfg_dict, settings, schedule, _, checkpoint, last in jobs:
            assert checkpoint is None and last == schedule.top  # no race: no checkpoints
            seen.append((cfg_dict["depth"], settings.seed, schedule.first_steps))
            loss = losses[(cfg_dict["depth"], settings.seed)]
            out.append({"status": "ok", "reason": "", "loss": loss, "metric": -loss, "tokens": 1})
        return out

    monkeypatch.setattr(scale, "run_jobs", fake_run_jobs)
    args = argparse.Namespace(
        coefficients=None, grid_seeds=2, grid_tokens=2 * 4608 + 1, grid_race=0
    )
    schedule = RungSchedule(first_steps=4, batch_size=4, seq_len=32)  # top rung 4,608 tokens
    coeffs, family, rows = scale.choose_coefficients(
        args, reachable, RunSettings(budget=10**6), schedule, 1, 1
    )
    assert seen == [(2, 0, 12), (2, 1, 12), (3, 0, 12), (3, 1, 12)]  # rungs x3: 13,824 >= 9,217
    two, three = estimate_flops(cfg(2)), estimate_flops(cfg(3))
    assert given_costs == [[two, two, three, three]]  # one per job: the deeper point starts first
    assert (family, coeffs) == ("width", Coefficients(1.0, 1.4, 1.0))
    assert [r["loss"] for r in rows] == [2.0, 1.6] and [r["losses"] for r in rows] == [
        [1.0, 3.0],
        [1.5, 1.7],
    ]
    assert rows[1]["metric"] == -1.6 and rows[0]["seeds"] == [0, 1]


def test_a_grid_point_that_diverges_under_any_seed_fails():
    from search.grid_race import merge_seeds
    from search.scale import grid_schedule
    from trainers.rungs import RungSchedule

    ok = {"status": "ok", "reason": "", "loss": 2.0, "metric": 0.5}
    bad = {"status": "diverged", "reason": "loss nan at step 7", "loss": None, "metric": None}
    merged = merge_seeds([ok, bad], [0, 1])
    assert merged["loss"] is None and merged["status"] == "diverged"
    assert merged["reason"] == "loss nan at step 7" and merged["losses"] == [2.0, None]
    schedule = RungSchedule(first_steps=4, batch_size=2, seq_len=8)  # top rung 576 tokens
    assert grid_schedule(schedule, None) == schedule == grid_schedule(schedule, 576)
    assert grid_schedule(schedule, 577).first_steps == 8


def test_grid_seeds_must_be_positive():
    proc = run_cli("search.scale", "--study", "x", "--targets", "5M", "--grid-seeds", "0")
    assert (
        proc.returncode == 2
        and "--grid-seeds" in proc.stderr
        and "whole number >= 1" in (proc.stderr)
    )
    assert "Traceback" not in proc.stderr


def snapshot(storage: str) -> dict[str, list[tuple]]:
    """Every study's trials, as (number, state, value, user attrs)."""
    return {
        s.study_name: [
            (t.number, t.state, t.value, t.user_attrs)
            for t in optuna.load_study(study_name=s.study_name, storage=storage).trials
        ]
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
    }


@pytest.fixture
def base_copy(base_study, tmp_path):
    """The base study's database, copied: each test may add studies of its own."""
    import shutil

    tmp, _ = base_study
    shutil.copy(tmp / "s.db", tmp_path / "s.db")
    return f"sqlite:///{tmp_path}/s.db"


def test_out_study_never_replaces_the_base_or_a_search_study(capsys, base_copy):
    storage = base_copy
    if "base-scaled" in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        optuna.delete_study(study_name="base-scaled", storage=storage)
    for name in ("other", "base-scaled"):  # search studies (no kind attribute)
        other = optuna.create_study(study_name=name, storage=storage)
        other.add_trial(optuna.trial.create_trial(value=1.5, user_attrs={"config": {}}))
    before = snapshot(storage)
    assert len(before["base"]) >= 3
    search_study = (
        "is a search study, not a scaled study; --overwrite only replaces scaled studies "
        '(study attr kind = "scaled")'
    )
    cases = [
        (
            ["--out-study", "base", "--overwrite"],
            "--out-study 'base' is the base study; choose another name",
        ),
        (["--out-study", "base"], "--out-study 'base' is the base study; choose another name"),
        (["--out-study", "other", "--overwrite"], f"--out-study 'other' {search_study}"),
        (["--out-study", "other"], f"--out-study 'other' {search_study}"),
        (["--overwrite"], f"'base-scaled' (the default --out-study) {search_study}"),
    ]
    for extra, message in cases:
        code, out, err = run_scale(
            capsys,
            "--study",
            "base",
            "--storage",
            storage,
            "--targets",
            "12M",
            "--coefficients",
            "1.2,1.1,1.0",
            *extra,
        )
        assert (code, out, err) == (2, "", f"error: {message}\n"), extra
    assert snapshot(storage) == before
    base = optuna.load_study(study_name="base", storage=storage)
    assert "scaled_study" not in base.user_attrs or base.user_attrs["scaled_study"] != "other"


def test_write_study_never_replaces_a_search_study(base_copy):
    """The guard at the one place a study is deleted: a search study made while the scale
    trained is refused there too, and kept."""
    from search.compound import Coefficients
    from search.scaled_study import ScaleOutcome, write_study

    storage = base_copy
    base = optuna.load_study(study_name="base", storage=storage)
    optuna.create_study(study_name="late", storage=storage).add_trial(
        optuna.trial.create_trial(value=2.0)
    )
    before = snapshot(storage)
    cfg = ArchConfig.from_dict(base.best_trial.user_attrs["config"])
    outcome = ScaleOutcome(0, cfg, Coefficients(1.2, 1.1, 1.0), "given", [], [], [None])
    for name in ("late", "base"):
        with pytest.raises(ValueError) as exc:
            write_study(storage, base, name, outcome, 0.25, RunSettings(budget=10**6))
        assert str(exc.value) == (
            f"study {name!r} is a search study, not a scaled study; nothing was written "
            "(choose another --out-study)"
        )
    assert snapshot(storage) == before


def test_a_scaled_study_as_the_base_names_its_base(capsys, base_copy):
    storage = base_copy
    grown = optuna.create_study(study_name="grown", storage=storage)
    grown.set_user_attr("kind", "scaled")
    grown.set_user_attr("base_study", "base")
    code, out, err = run_scale(capsys, "--study", "grown", "--storage", storage, "--targets", "12M")
    assert (code, out, err) == (
        2,
        "",
        "error: 'grown' is a scaled study (from 'base'); pass --study base\n",
    )


def test_unreachable_targets_name_the_nearest_flops_once(capsys, base_copy):
    code, _, err = run_scale(
        capsys,
        "--study",
        "base",
        "--storage",
        base_copy,
        "--targets",
        "5T",
        "--coefficients",
        "1,1,2",
        "--out-study",
        "never",
    )
    assert code == 2 and err.count("\n") == 1 and err.count("nearest reachable") == 1, err
    assert err.startswith(
        "error: coefficients (1.0, 1.0, 2.0) stop growing below the target "
        "5,000,000,000,000 FLOPs (a span reaches the sequence length, or a size hits "
        "spaces.config.LIMITS); the nearest reachable is "
    )
    nearest = err.split("the nearest reachable is ")[1].split(" FLOPs (")[0]
    assert err.endswith(f" FLOPs ({format_flops(int(nearest.replace(',', '')))})\n")


def test_scaling_outcome_trains_a_model_two_rows_name_once(base_study, tmp_path):
    """Given width-only's own coefficients, the compound config is the width-only one: one run,
    one result, in both rows, and the table says which run a row shares."""
    _, storage = base_study
    out = tmp_path / "scaling.json"
    proc = run_cli(
        "benchmarks.scaling_outcome",
        *("--study", "base", "--storage", storage, "--factors", "2", "--tokens", "2048"),
        *("--coefficients", "1.0,1.25,1.0", "--jobs", "1", "--json", str(out)),
        check=True,
    )
    assert "training 4 configs (3 distinct models) for 2,048 tokens each" in proc.stdout
    assert "(the compound 2x model, one run)" in proc.stdout
    assert [f"done {k} of 3 (" in proc.stdout for k in (1, 2, 3, 4)] == [True] * 3 + [False]
    written = json.loads(out.read_text())
    study_seed = settings_from_study(optuna.load_study(study_name="base", storage=storage)).seed
    assert (written["train_seed"], written["seed"]) == (None, study_seed)  # the seed it used
    rows = {r["kind"]: r for r in written["rows"]}
    assert rows["width-only"]["config"] == rows["compound"]["config"]
    assert rows["width-only"]["shared_with"] == "compound 2x"
    assert rows["width-only"]["loss"] == rows["compound"]["loss"] is not None
    assert rows["depth-only"]["config"] != rows["compound"]["config"]
    assert "shared_with" not in rows["depth-only"]
