"""benchmarks.outcome's command line: a replicate's seed."""

from __future__ import annotations

import pytest

from benchmarks.outcome import final_settings, parser
from search.settings import RunSettings


def test_train_seed_defaults_to_the_studys_and_rejects_a_negative_one(capsys):
    assert parser().parse_args(["--study", "s"]).train_seed is None
    assert parser().parse_args(["--study", "s", "--train-seed", "1"]).train_seed == 1
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--study", "s", "--train-seed", "-1"])
    assert exit_info.value.code == 2
    assert "invalid --train-seed '-1': expected a whole number >= 0" in capsys.readouterr().err


def test_val_sequences_sets_the_tasks_n_val_for_the_final_runs_only(capsys):
    study = RunSettings(budget=20_000_000, task="listops", task_options={"max_args": 10})
    args = parser().parse_args(["--study", "s", "--val-sequences", "4096", "--train-seed", "1"])
    final = final_settings(study, args)
    assert final.task_options == {"max_args": 10, "n_val": 4096} and final.seed == 1
    assert study.task_options == {"max_args": 10} and study.seed == 0  # not modified
    same = final_settings(study, parser().parse_args(["--study", "s"]))
    assert same == study
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["--study", "s", "--val-sequences", "0"])
    assert exit_info.value.code == 2
    assert "invalid --val-sequences '0'" in capsys.readouterr().err


def test_scaling_outcome_train_seed_defaults_to_the_studys(capsys):
    from benchmarks.scaling_outcome import parser as scaling_parser

    assert scaling_parser().parse_args(["--study", "s"]).train_seed is None
    assert scaling_parser().parse_args(["--study", "s", "--train-seed", "2"]).train_seed == 2
    with pytest.raises(SystemExit) as exit_info:
        scaling_parser().parse_args(["--study", "s", "--train-seed", "x"])
    assert exit_info.value.code == 2
    assert "invalid --train-seed 'x'" in capsys.readouterr().err


def test_rows_that_name_the_same_model_share_one_run():
    import argparse

    from benchmarks.outcome import distinct_models, train_rows

    base = {"vocab_size": 16, "seq_len": 32, "causal": False, "num_classes": 10, "depth": 1}
    shape = {"d_model": 16, "n_heads": 1, "ffn_mult": 1.0}
    linear = {**base, **shape, "attention": "linear"}
    rows = [
        {"kind": "pick", "rank": 1, "config": {**linear, "attention_params": {"chunk": 32}}},
        {"kind": "top", "rank": 2, "config": {**base, **shape, "attention": "full"}},
        # bidirectional: chunk changes nothing, so this is the pick's model
        {"kind": "baseline", "rank": None, "config": {**linear, "attention_params": {"chunk": 8}}},
    ]
    assert distinct_models(rows) == 2
    settings = RunSettings(
        budget=10**6, task="listops", seq_len=32, task_options={"n_val": 16, "min_length": 8}
    )
    seen = []
    args = argparse.Namespace(jobs=1, threads=1)
    results = train_rows(rows, settings, 256, 2, args, done=seen.append)
    assert len(seen) == 2  # trained twice, not three times
    assert [r["kind"] for r in results] == ["pick", "top", "baseline"]
    assert [r["config"] for r in results] == [r["config"] for r in rows]
    pick, _, baseline = results
    assert pick["status"] == baseline["status"] == "ok"
    assert baseline["loss"] == pick["loss"] and baseline["rank"] is None
