"""search.retrain.run_jobs: the costliest jobs start first, `done` sees results as they finish,
the results come back in the jobs' order; and the outcome benchmark's cost estimate from the
search's measured speeds."""

from __future__ import annotations

import operator
import os
import signal
import time
from pathlib import Path

import optuna
import pytest

from benchmarks.outcome import expected_seconds, search_speeds
from search.interrupts import WorkerDied
from search.retrain import run_jobs


def test_the_costliest_jobs_start_first_and_results_keep_the_jobs_order():
    started, seen = [], []

    def fn(job):
        started.append(job)
        return job * 10

    got = run_jobs(fn, [1, 2, 3, 4], 1, done=seen.append, costs=[5.0, 9.0, 5.0, 7.0])
    assert started == [2, 4, 1, 3]  # 9, 7, then the two 5s in the jobs' order
    assert seen == [20, 40, 10, 30]  # as they finish
    assert got == [10, 20, 30, 40]  # in the jobs' order


def test_without_costs_the_jobs_start_in_order():
    started = []
    assert run_jobs(lambda j: started.append(j) or -j, [3, 1, 2], 1) == [-3, -1, -2]
    assert started == [3, 1, 2]


def test_costs_must_match_the_jobs():
    with pytest.raises(ValueError, match="costs: 2 for 3 jobs"):
        run_jobs(operator.neg, [1, 2, 3], 1, costs=[1.0, 2.0])


def test_spawned_processes_return_results_in_the_jobs_order():
    assert run_jobs(operator.neg, [1, 2, 3, 4, 5], 2, costs=[1, 5, 2, 4, 3]) == [-1, -2, -3, -4, -5]


def _after(job: tuple[str, str | None, str]) -> str:
    """Touch `name` in `folder`, once `wait_for` is there (a hang guard, not a timing)."""
    name, wait_for, folder = job
    deadline = time.monotonic() + 600
    while wait_for and not Path(folder, wait_for).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    Path(folder, name).touch()
    return name


def test_done_sees_spawned_results_as_they_finish_not_in_the_jobs_order(tmp_path):
    seen = []
    jobs = [("a", "b", str(tmp_path)), ("b", None, str(tmp_path))]  # "a" ends after "b"
    got = run_jobs(_after, jobs, 2, done=seen.append, costs=[2.0, 1.0])  # "a" starts first
    assert seen == ["b", "a"]
    assert got == ["a", "b"]  # in the jobs' order


def _die_after_seen(job: tuple[str, str]) -> dict:
    """`"die"` kills its own process once the parent has recorded the other job (a file the
    `done` callback writes; a hang guard, not a timing); any other job returns at once."""
    name, folder = job
    if name == "die":
        deadline = time.monotonic() + 600
        while not Path(folder, "seen").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGKILL)
    return {"name": name, "loss": 1.0, "status": "ok"}


def test_a_killed_process_is_an_error_naming_the_unfinished_jobs_not_a_hang(tmp_path, capsys):
    # before (multiprocessing.Pool): the parent waited forever for the killed job's result,
    # and a `kill` of the parent could not end the wait
    seen = []

    def done(result):
        seen.append(result["name"])
        Path(tmp_path, "seen").touch()

    jobs = [("ok", str(tmp_path)), ("die", str(tmp_path))]
    labels = ["base 2x64", "8x target 18x64"]
    with pytest.raises(WorkerDied) as err:
        run_jobs(_die_after_seen, jobs, 2, done=done, costs=[1.0, 2.0], labels=labels)
    assert seen == ["ok"]  # the finished job was recorded and printed first
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith("  done 1 of 2 (") and line.endswith("): base 2x64, val loss 1.0000")
    assert str(err.value) == (
        "a training process ended abruptly (killed, e.g. for memory, or crashed) with 1 of 2 "
        "jobs unfinished: 8x target 18x64; the finished ones are printed above; fewer --jobs "
        "(or --workers) use less memory"
    )


def test_labels_print_a_line_per_finished_job_with_a_failed_runs_reason(capsys):
    from search.retrain import done_line

    results = [
        {"loss": 1.23456, "status": "ok"},
        {"loss": None, "status": "diverged", "reason": "non-finite loss at step 68"},
    ]
    got = run_jobs(results.__getitem__, [0, 1], 1, labels=["base 2x64", "8x target 5x128"])
    assert got == results
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(")", 1)[1] for line in lines] == [
        ": base 2x64, val loss 1.2346",
        ": 8x target 5x128, diverged: non-finite loss at step 68",
    ]
    assert lines[0].startswith("  done 1 of 2 (") and lines[1].startswith("  done 2 of 2 (")
    assert done_line(3, 4, "x", {"loss": None, "status": "oom", "reason": ""}, 90.0) == (
        "  done 3 of 4 (1.5 min): x, oom: no loss"
    )
    with pytest.raises(ValueError, match="labels: 1 for 2 jobs"):
        run_jobs(operator.neg, [1, 2], 1, labels=["a"])


def test_expected_seconds_use_the_searchs_speed_and_the_median_per_flop_otherwise():
    rows = [
        {"flops": 10, "search_tokens_per_s": 100.0},
        {"flops": 10, "search_tokens_per_s": 200.0},
        {"flops": 20, "search_tokens_per_s": None},  # e.g. a baseline the search never trained
    ]
    # known FLOPs x tokens/s: 1,000 and 2,000; the median (upper) is 2,000 FLOP-tokens/s
    assert expected_seconds(rows, 1000) == [10.0, 5.0, 1000 * 20 / 2000]
    assert expected_seconds([{"flops": 5, "search_tokens_per_s": None}], 1000) is None


def test_search_speeds_are_the_fastest_trial_of_each_model():
    interface = {"vocab_size": 16, "seq_len": 32, "causal": False, "num_classes": 10}
    shape = {"depth": 1, "d_model": 16, "n_heads": 1, "ffn_mult": 1.0}
    linear = {**interface, **shape, "attention": "linear"}
    study = optuna.create_study()
    for cfg, rate in [
        ({**linear, "attention_params": {"chunk": 32}}, 100.0),
        ({**linear, "attention_params": {"chunk": 8}}, 300.0),  # bidirectional: the same model
        ({**interface, **shape, "attention": "full"}, 50.0),
        ({**interface, **shape, "attention": "full", "d_model": 32}, None),  # never measured
    ]:
        trial = study.ask()
        trial.set_user_attr("config", cfg)
        trial.set_user_attr("tokens_per_s", rate)
        study.tell(trial, 1.0)
    speeds = sorted(search_speeds(study).values())
    assert speeds == [50.0, 300.0]


def test_a_cli_under_run_interruptible_reports_a_dead_worker_in_one_line_exit_1(capsys):
    from search.interrupts import run_interruptible

    def main() -> int:
        raise WorkerDied("a training process ended abruptly ... unfinished: 8x target 18x64")

    assert run_interruptible(main, "interrupted") == 1
    assert capsys.readouterr().err == (
        "error: a training process ended abruptly ... unfinished: 8x target 18x64\n"
    )
