"""The plan's speed of an average candidate: a timed random sample of the space."""

from __future__ import annotations

import math

import pytest

from search.plan import AVERAGE_FLOP_FRACTION, _tokens, make_plan
from search.plan_speed import SAMPLE_SIZE, feasible_sample, seconds_per_token
from spaces.baselines import largest_any_head_dim
from spaces.flops import estimate_flops
from spaces.space import SearchSpace
from trainers.proxy import Recipe
from trainers.tasks import get_task

RECIPE = Recipe(batch_tokens=4096, val_tokens=8192)
BUDGET = 20_000_000


@pytest.fixture(scope="module")
def task():
    return get_task("recall", seq_len=64, n_val=128)


def test_the_sample_is_feasible_seeded_and_drawn_from_the_space(task):
    space, iface = SearchSpace(), task.interface()
    sample = feasible_sample(space, iface, BUDGET, seed=0)
    assert len(sample) == SAMPLE_SIZE
    assert all(estimate_flops(cfg) <= BUDGET for cfg in sample)
    assert {cfg.attention for cfg in sample} <= set(space.valid_variants(64, iface["causal"]))
    assert feasible_sample(space, iface, BUDGET, seed=0) == sample  # the same draw per seed
    assert feasible_sample(space, iface, BUDGET, seed=1) != sample
    assert feasible_sample(space, iface, BUDGET, n=3, seed=0) == sample[:3]
    # a budget below every config of the space: no sample (the plan then assumes, see below)
    assert feasible_sample(space, iface, 1000, seed=0) == []


def test_the_average_candidate_counts_the_sample_and_the_seeded_baselines(task):
    """trials 20, 2 seeded baselines at the budget-sized model's speed, 18 at the sample's."""
    flops_per_s, sample_s = 1e9, 5e-5
    sample = feasible_sample(SearchSpace(), task.interface(), BUDGET, seed=0)
    ref_s = seconds_per_token(flops_per_s, largest_any_head_dim(task.interface(), BUDGET))
    kw = dict(trials=20, timeout=None, workers=2, threads=1, first_rung_tokens=65536)
    plan = make_plan(
        task, BUDGET, RECIPE, flops_per_s=flops_per_s, sample=sample, seeded=2,
        sample_s_per_token=sample_s, **kw,
    )  # fmt: skip
    assert plan.timed == SAMPLE_SIZE
    assert math.isclose(1 / plan.candidate_tokens_per_s, (2 * ref_s + 18 * sample_s) / 20)
    line = f"an average candidate at {_tokens(plan.candidate_tokens_per_s)} (8 of the space's"
    assert line in plan.describe(BUDGET)
    # time follows the average candidate's seconds per token (validation included)
    slower = make_plan(
        task, BUDGET, RECIPE, flops_per_s=flops_per_s, sample=sample, seeded=0,
        sample_s_per_token=2 * sample_s, **kw,
    )  # fmt: skip
    alone = make_plan(
        task, BUDGET, RECIPE, flops_per_s=flops_per_s, sample=sample, seeded=0,
        sample_s_per_token=sample_s, **kw,
    )  # fmt: skip
    assert math.isclose(slower.expected_seconds, 2 * alone.expected_seconds)
    assert math.isclose(1 / alone.candidate_tokens_per_s, sample_s)


def test_slower_candidates_get_shorter_rungs_under_the_clock(task):
    sample = feasible_sample(SearchSpace(), task.interface(), BUDGET, seed=0)
    kw = dict(trials=20, timeout=600, workers=2, threads=1, flops_per_s=1e9, sample=sample)
    fast = make_plan(task, BUDGET, RECIPE, sample_s_per_token=1e-5, **kw)
    slow = make_plan(task, BUDGET, RECIPE, sample_s_per_token=4e-5, **kw)
    assert slow.schedule.tokens(0) < fast.schedule.tokens(0)
    assert slow.expected_seconds <= 600 and fast.expected_seconds <= 600


def test_without_a_sample_an_average_candidate_is_assumed(task):
    plan = make_plan(
        task, BUDGET, RECIPE, trials=20, timeout=None, workers=2, threads=1,
        flops_per_s=1e9, first_rung_tokens=65536,
    )  # fmt: skip
    ref = largest_any_head_dim(task.interface(), BUDGET)
    assumed = AVERAGE_FLOP_FRACTION * BUDGET / estimate_flops(ref) * seconds_per_token(1e9, ref)
    assert plan.timed == 0 and math.isclose(1 / plan.candidate_tokens_per_s, assumed)
    assert "an average candidate" not in plan.describe(BUDGET)


def test_the_sample_is_timed_for_real(task):
    sample = feasible_sample(SearchSpace(), task.interface(), BUDGET, n=2, seed=0)
    plan = make_plan(
        task, BUDGET, RECIPE, trials=20, timeout=None, workers=1, threads=1,
        first_rung_tokens=4096, sample=sample,
    )  # fmt: skip
    assert plan.timed == 2
    assert math.isfinite(plan.candidate_tokens_per_s) and plan.candidate_tokens_per_s > 0
