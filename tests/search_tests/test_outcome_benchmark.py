"""benchmarks.outcome's command line (a replicate's seed), its shared runs, and `kill`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.outcome import final_settings, parser
from search.settings import RunSettings
from tests.search_tests.conftest import ROOT


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


POOL_SCRIPT = """
import argparse
from benchmarks.outcome import train_rows
from search.settings import RunSettings

if __name__ == "__main__":
    config = {"vocab_size": 16, "seq_len": 32, "causal": False, "num_classes": 10, "depth": 1,
              "d_model": 16, "n_heads": 1, "ffn_mult": 1.0, "attention": "full"}
    rows = [{"kind": "pick", "rank": 1, "config": config},
            {"kind": "top", "rank": 2, "config": {**config, "d_model": 32}}]
    settings = RunSettings(budget=10**6, task="listops", seq_len=32,
                           task_options={"n_val": 16, "min_length": 8})
    train_rows(rows, settings, 10**9, 2, argparse.Namespace(jobs=2, threads=1))
"""


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_kill_stops_the_final_training_processes_not_only_the_parent():
    # before: the parent died on SIGTERM and its pool workers trained on, orphaned, for hours
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a shell's background job
    try:
        proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], cwd=ROOT, env=env)
    finally:
        signal.signal(signal.SIGINT, previous)
    children: list[int] = []
    try:
        deadline = time.time() + 120
        while len(children) < 3 and time.time() < deadline:  # the resource tracker + 2 workers
            assert proc.poll() is None
            time.sleep(0.2)
            children = _children(proc.pid)
        assert len(children) >= 3
        time.sleep(2)  # the worker is importing or training
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        deadline = time.time() + 30
        while any(_alive(c) for c in children) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(c) for c in children)
    finally:
        proc.kill()
        for c in children:
            if _alive(c):
                os.kill(c, signal.SIGKILL)


def test_scaling_outcome_trains_by_default_as_long_as_the_grids_longest_horizon():
    from benchmarks.scaling_outcome import grid_horizon
    from benchmarks.scaling_outcome import parser as scaling_parser
    from trainers.rungs import RungSchedule

    schedule = RungSchedule(first_steps=16, batch_size=8, seq_len=128)  # top: 147,456 tokens
    args = scaling_parser().parse_args(["--study", "s"])
    assert args.tokens is None and args.grid_race == 1
    assert grid_horizon(schedule, args) == 16 * 27 * 8 * 128  # one race rung: 3 x the top
    no_race = scaling_parser().parse_args(["--study", "s", "--grid-race", "0"])
    assert grid_horizon(schedule, no_race) == 147_456
    # --grid-tokens lengthens every rung by a whole factor (ceil(300,000 / 147,456) = 3)
    longer = scaling_parser().parse_args(["--study", "s", "--grid-tokens", "300000"])
    assert grid_horizon(schedule, longer) == 48 * 27 * 8 * 128


def test_scaling_rows_that_name_the_same_model_say_which_run_they_share():
    from benchmarks.scaling_outcome import mark_shared
    from spaces import ArchConfig

    base = ArchConfig(16, 32, True, depth=2, d_model=32, n_heads=2)
    wide = ArchConfig(16, 32, True, depth=2, d_model=64, n_heads=2)
    rows = [
        {"kind": "base", "factor": 1.0, "config": base},
        {"kind": "compound", "factor": 2.0, "config": wide},
        {"kind": "width-only", "factor": 2.0, "config": wide},
        {"kind": "depth-only", "factor": 2.0, "config": base},
    ]
    mark_shared(rows)
    assert [r.get("shared_with") for r in rows] == [None, None, "compound 2x", "base 1x"]


def _scaling_run(seed, losses, flops=(100e6, 190e6, 380e6, 200e6, 400e6, 180e6, 390e6)):
    kinds = [
        ("base", 1), ("compound", 2), ("compound", 4), ("width-only", 2), ("width-only", 4),
        ("depth-only", 2), ("depth-only", 4),
    ]  # fmt: skip
    rows = [
        {"kind": k, "factor": f, "config": {"d": i}, "flops": x, "loss": v}
        for i, ((k, f), x, v) in enumerate(zip(kinds, flops, losses))
    ]
    return {"study": "s", "coefficients": [1.3, 1.2, 1.0], "tokens": 4096, "train_seed": seed,
            "rows": rows}  # fmt: skip


def test_scaling_seeds_compares_the_mean_at_the_target_and_at_equal_flops(tmp_path, capsys):
    import math

    from benchmarks.scaling_seeds import at_flops
    from benchmarks.scaling_seeds import main as seeds_main

    # linear in log FLOPs: halfway in log between 100 and 400 is 200
    assert at_flops([(400, 1.0), (100, 2.0)], 200) == pytest.approx(1.5)
    assert at_flops([(100, 2.0), (400, 1.0)], 400) == 1.0
    assert at_flops([(100, 2.0), (400, 1.0)], 401) is None  # never extrapolated
    assert at_flops([(100, 2.0), (400, 1.0)], 99) is None
    # seed 0: compound loses to width-only at the 4x target (which spends more FLOPs), seed 1
    # ties it; at equal FLOPs (380) the mean of width-only is interpolated between 200 and 400
    paths = []
    for seed, losses in (
        (0, [3.0, 2.5, 2.1, 2.6, 2.0, 2.7, 2.4]),
        (1, [3.0, 2.5, 2.1, 2.6, 2.2, 2.7, 2.4]),
    ):
        path = tmp_path / f"s{seed}.json"
        path.write_text(json.dumps(_scaling_run(seed, losses)))
        paths.append(str(path))
    assert seeds_main(paths) == 0
    out = capsys.readouterr().out
    assert "       4 width-only    400 MFLOPs       2.0000       2.2000    2.1000  0.2000" in out
    assert "mean: compound by budget 3.0000, 2.5000, 2.1000 -> monotone" in out
    assert (
        "  4x: compound 2.1000 vs width-only 2.1000, depth-only 2.4000 -> at least as good" in out
    )
    at_380 = 2.6 + (2.1 - 2.6) * math.log(380 / 200) / math.log(400 / 200)
    assert f"  4x: compound 2.1000 vs width-only {at_380:.4f}, depth-only" in out
    # 2x: depth-only's 180 and 390 bracket 190; width-only's base (100) and 200 do
    assert out.count("compound at least as good at 2 of 2 budgets") == 2
    # paired: at 4x compound minus width-only is 2.1 - 2.0 and 2.1 - 2.2 under the two seeds
    assert (
        "  4x width-only +0.0000 +- 0.1000 (standard error), compound at least as good "
        "under 1 of 2 seeds" in out
    )
    assert (
        "  2x depth-only -0.2000 +- 0.0000 (standard error), compound at least as good "
        "under 2 of 2 seeds" in out
    )
    # a third seed on which compound's 4x model trains badly: the mean loses at 4x, both ways
    (tmp_path / "s2.json").write_text(
        json.dumps(_scaling_run(2, [3.0, 2.5, 2.5, 2.6, 2.2, 2.7, 2.4]))
    )
    assert seeds_main([*paths, str(tmp_path / "s2.json")]) == 0
    out = capsys.readouterr().out
    assert "  4x: compound 2.2333 vs width-only 2.1333, depth-only 2.4000 -> WORSE" in out
    assert out.count("compound at least as good at 1 of 2 budgets") == 2
    # not replicates: one line, exit 2
    other = _scaling_run(2, [3.0] * 7)
    other["rows"][3]["config"] = {"d": 99}
    (tmp_path / "o.json").write_text(json.dumps(other))
    assert seeds_main([paths[0], str(tmp_path / "o.json")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'o.json'}: other configs than {paths[0]} (not a replicate)\n"
    )
    assert seeds_main([paths[0], paths[0]]) == 2
    assert "two files have the same --train-seed ([0, 0])" in capsys.readouterr().err
    # the study's seed given (--train-seed 0) and left to the study (None) are the same runs
    # once the file records the seed it used; an older file without it is taken as distinct
    same = _scaling_run(None, [3.0, 2.5, 2.1, 2.6, 2.0, 2.7, 2.4])
    (tmp_path / "old.json").write_text(json.dumps(same))
    assert seeds_main([paths[0], str(tmp_path / "old.json")]) == 0
    assert "seeds 0, study's " in capsys.readouterr().out
    (tmp_path / "new.json").write_text(json.dumps({**same, "seed": 0}))
    assert seeds_main([paths[0], str(tmp_path / "new.json")]) == 2
    assert "two files have the same --train-seed ([0, 0])" in capsys.readouterr().err
