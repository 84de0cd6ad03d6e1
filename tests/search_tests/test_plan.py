"""The plan from the budget and the clock, and the hand baselines it times."""

from __future__ import annotations

import math

import pytest

from search.parallelism import WORKERS_PER_GPU, default_parallelism
from search.plan import (
    CPU_STEP_TOKENS,
    MIN_FIRST_STEPS,
    PlanError,
    expected_tokens_factor,
    make_plan,
)
from spaces import ArchConfig
from spaces.baselines import largest_full
from spaces.flops import estimate_flops
from trainers.proxy import Recipe
from trainers.tasks import get_task

RECIPE = Recipe(batch_tokens=4096, val_tokens=8192)


@pytest.fixture(scope="module")
def task():
    return get_task("recall", seq_len=64, n_val=128)


def test_largest_full_is_the_largest_that_fits(task):
    iface = task.interface()
    budget = 20e6
    cfg = largest_full(iface, budget, head_dim=32)
    assert cfg.attention == "full" and cfg.head_dim == 32 and cfg.ffn_mult == 4.0
    flops = estimate_flops(cfg)
    assert flops <= budget
    for depth, heads in ((cfg.depth + 1, cfg.n_heads), (cfg.depth, cfg.n_heads + 1)):
        bigger = ArchConfig(
            **{**cfg.to_dict(), "depth": depth, "n_heads": heads, "d_model": heads * 32}
        )
        assert estimate_flops(bigger) > budget or estimate_flops(bigger) <= flops
    with pytest.raises(ValueError, match="fits"):
        largest_full(iface, 10, head_dim=64)


def test_first_rung_is_sized_from_the_clock(task):
    plan = make_plan(
        task, 20_000_000, RECIPE, trials=20, timeout=600, workers=2, threads=1, flops_per_s=10e9
    )
    s = plan.schedule
    assert s.batch_size == CPU_STEP_TOKENS // 64 and s.eta == 3 and s.rungs == 3
    assert s.tokens(2) == 9 * s.tokens(0)
    assert plan.expected_candidates == 20
    # the largest first rung whose estimate fits the time: one more step would not
    assert plan.expected_seconds <= 600
    over = make_plan(
        task,
        20_000_000,
        RECIPE,
        trials=20,
        timeout=600,
        workers=2,
        threads=1,
        flops_per_s=10e9,
        first_rung_tokens=(s.first_steps + 1) * s.batch_tokens,
    )
    assert over.expected_seconds > 600
    # twice the time: about twice the first rung
    longer = make_plan(
        task, 20_000_000, RECIPE, trials=20, timeout=1200, workers=2, threads=1, flops_per_s=10e9
    )
    assert 1.9 <= longer.schedule.first_steps / s.first_steps <= 2.1


def test_explicit_rung_tokens_win_and_round_up_to_whole_steps(task):
    plan = make_plan(
        task,
        20_000_000,
        RECIPE,
        trials=5,
        timeout=None,
        workers=1,
        threads=1,
        first_rung_tokens=10_000,
        flops_per_s=1e9,
    )
    # the batch shrinks so that the first rung has FIRST_RUNG_STEPS steps: 10,000 / (64 x 64)
    assert plan.schedule.batch_size == 2
    assert plan.schedule.first_steps == math.ceil(10_000 / (2 * 64))


def test_cpu_steps_are_capped_at_cpu_step_tokens_and_a_gpu_keeps_the_recipes(task):
    # a first rung long enough that FIRST_RUNG_STEPS steps would take the recipe's whole batch
    tokens = 64 * 4096 * 4

    def batch(device: str, recipe: Recipe = RECIPE) -> int:
        plan = make_plan(
            task, 20_000_000, recipe, trials=5, timeout=None, workers=1, threads=1,
            device=device, first_rung_tokens=tokens, flops_per_s=1e9,
        )  # fmt: skip
        assert plan.schedule.first_steps * plan.schedule.batch_tokens == tokens
        return plan.schedule.batch_size

    assert CPU_STEP_TOKENS == 1024
    assert batch("cpu") == 1024 // 64  # 256 steps of 16 sequences, not 64 of 64
    assert batch("cuda") == 4096 // 64
    assert batch("cpu", Recipe(batch_tokens=512, val_tokens=8192)) == 512 // 64  # below the cap


def test_too_little_time_says_how_many_fit_or_refuses(task):
    short = make_plan(
        task, 20_000_000, RECIPE, trials=2000, timeout=600, workers=1, threads=1, flops_per_s=10e9
    )
    assert short.schedule.first_steps == MIN_FIRST_STEPS and short.schedule.batch_size == 1
    assert 9 <= short.expected_candidates < 2000
    assert "only ~" in short.describe(20_000_000)
    with pytest.raises(PlanError, match=r"--timeout \d+.*smaller --budget.*--device cuda"):
        make_plan(
            task, 20_000_000, RECIPE, trials=20, timeout=1, workers=1, threads=1, flops_per_s=1e9
        )


def test_expected_tokens_factor_matches_halving():
    # every candidate trains rung 0; 1/3 train on to 3x; 1/9 on to 9x; plus decay branches
    assert expected_tokens_factor(3, 3, Recipe(decay_frac=0.0)) == pytest.approx(
        1 + (1 / 3) * (3 - 1) + (1 / 9) * (9 - 3)
    )


def test_expected_tokens_factor_when_rungs_at_chance_cut_nobody():
    no_decay = Recipe(decay_frac=0.0)
    # the first rung holds: everyone trains on to 3x, 1/3 to 9x
    assert expected_tokens_factor(3, 3, no_decay, held=1) == 1 + (3 - 1) + (1 / 3) * (9 - 3)
    # every rung below the top holds: everyone trains every rung, 9 first-rung counts
    assert expected_tokens_factor(3, 3, no_decay, held=2) == 9
    assert expected_tokens_factor(3, 3, no_decay, held=0) == expected_tokens_factor(3, 3, no_decay)
    # decay branches: one per rung below the top, decay_frac x that rung's tokens, for everyone
    # who reached it (rungs 0 and 1: 1 and 3 first-rung counts)
    decay = Recipe(decay_frac=0.25)
    assert expected_tokens_factor(3, 3, decay, held=0) == 1 + 2 * (2 / 3) + 0.25 * (1 + 1)
    assert expected_tokens_factor(3, 3, decay, held=1) == 1 + 2 + 2 + 0.25 * (1 + 3)
    assert expected_tokens_factor(3, 3, decay, held=2) == 9 + 0.25 * (1 + 3)


def test_the_plan_prices_rungs_that_hold_at_chance(task):
    kw = dict(trials=20, workers=2, threads=1, flops_per_s=1e9)
    timed = make_plan(task, 20_000_000, RECIPE, timeout=600, **kw)
    base = expected_tokens_factor(3, 3, RECIPE)
    first, every = (expected_tokens_factor(3, 3, RECIPE, held=h) / base for h in (1, 2))
    assert timed.held == (first, every)
    text = timed.describe(20_000_000, holds_at_chance=True)
    per = timed.expected_seconds / timed.expected_candidates
    n1, n2 = (min(20, int(600 / (per * r))) for r in (first, every))
    assert (
        f"and then each candidate trains longer: x{first:.1f} if the first rung holds (about "
        f"{n1} candidates fit the limit), x{every:.1f} if every rung below the top holds "
        f"(about {n2})"
    ) in text
    assert "holds" not in timed.describe(20_000_000, holds_at_chance=False)
    # a limit far beyond the plan's time: every candidate still fits when the rungs hold
    roomy = make_plan(task, 20_000_000, RECIPE, timeout=10**6, first_rung_tokens=65536, **kw)
    assert "(about 20 candidates fit the limit)" in roomy.describe(20_000_000, True)
    untimed = make_plan(task, 20_000_000, RECIPE, timeout=None, first_rung_tokens=65536, **kw)
    text = untimed.describe(20_000_000, holds_at_chance=True)
    from search.plan import _duration

    t1, t2 = (untimed.expected_seconds * r for r in (first, every))
    assert (
        f"about {_duration(t1)} if the first rung holds, {_duration(t2)} if every rung below "
        "the top holds"
    ) in text


def test_default_parallelism_is_one_thread_per_worker_per_core(monkeypatch):
    monkeypatch.setattr("search.parallelism.cpu_count", lambda: 4)
    assert default_parallelism(None, None, "cpu") == (4, 1)
    assert default_parallelism(None, 2, "cpu") == (2, 2)
    assert default_parallelism(3, 1, "cpu") == (3, 1)
    # fewer workers than cores still get 1 thread each: robust when the machine is busy
    assert default_parallelism(2, None, "cpu") == (2, 1)
    assert default_parallelism(1, None, "cpu") == (1, 1)  # search.train's default


def test_search_train_defaults_to_one_torch_thread_on_the_cpu(monkeypatch, tmp_path):
    from search import train

    monkeypatch.setattr("search.parallelism.cpu_count", lambda: 4)
    threads: list[int] = []
    monkeypatch.setattr("torch.set_num_threads", threads.append)
    cfg = tmp_path / "c.json"
    cfg.write_text(
        '{"vocab_size": 16, "seq_len": 32, "causal": false, "num_classes": 10, "depth": 1, '
        '"d_model": 32, "n_heads": 1}'
    )
    argv = [str(cfg), "--task", "listops", "--tokens", "4096", "--out", str(tmp_path / "r")]
    trainer, _, _ = train.build(train.parser().parse_args(argv))
    assert threads == [1] and trainer.steps == 1
    train.build(train.parser().parse_args([*argv, "--threads", "3"]))
    assert threads == [1, 3]


def test_cuda_defaults_to_four_workers_per_gpu_sharing_the_cores(monkeypatch):
    monkeypatch.setattr("search.parallelism.cpu_count", lambda: 16)
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert WORKERS_PER_GPU == 4
    assert default_parallelism(None, None, "cuda") == (8, 2)  # 4 on each of 2 GPUs
    assert default_parallelism(None, None, "cuda:1") == (4, 4)  # one named GPU
    assert default_parallelism(2, None, "cuda") == (2, 8)  # --workers 2: one per GPU


def test_one_worker_per_gpu_each_on_its_own_device():
    from search.workers import worker_device

    assert [worker_device("cuda", i, 4) for i in range(5)] == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:3",
        "cuda:0",
    ]
    assert worker_device("cuda", 3, 1) == "cuda"  # one GPU (or a Ray task's own)
    assert worker_device("cuda:1", 0, 4) == "cuda:1"  # pinned by the user
    assert worker_device("cpu", 2, 4) == "cpu"
