"""search.retrain.run_jobs: the costliest jobs start first, results come back in the jobs'
order; and the outcome benchmark's cost estimate from the search's measured speeds."""

from __future__ import annotations

import operator

import optuna
import pytest

from benchmarks.outcome import expected_seconds, search_speeds
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
