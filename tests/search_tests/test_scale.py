"""`python -m search.scale` end to end: the grid trains, targets are met, nothing half-written."""

from __future__ import annotations

import json

import optuna
import pytest

from search.retrain import train_final_job
from search.scale import result_text
from search.settings import RunSettings
from spaces import ArchConfig
from tests.search_tests.conftest import TINY_BUDGET, TINY_PRESET, run_cli, search_args
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


def test_password_never_printed():
    url = "postgresql://user:secret@127.0.0.1:1/db"
    proc = run_cli("search.scale", "--study", "x", "--storage", url, "--targets", "5M")
    assert proc.returncode != 0 and "secret" not in proc.stdout + proc.stderr


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
    assert result_text(res).startswith("diverged: non-finite") and "(lr 4e+30)" in res["reason"]
