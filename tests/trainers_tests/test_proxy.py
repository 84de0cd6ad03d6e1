"""The proxy trainer: same compute for all, deterministic, robust, reports through a callback."""

from __future__ import annotations

import torch

from spaces.flops import training_flops_per_sequence
from tests.trainers_tests.conftest import small_config as config
from trainers.proxy import Recipe, plan, train

RECIPE = Recipe(batch_size=8, n_evals=4, eval_batch_size=32)


def test_same_seed_same_result(task):
    cfg = config(task)
    compute = 30 * RECIPE.batch_size * training_flops_per_sequence(cfg)
    a = train(cfg, task, compute, recipe=RECIPE, seed=3, threads=1)
    b = train(cfg, task, compute, recipe=RECIPE, seed=3, threads=1)
    assert a.status == b.status == "ok" and a.steps == b.steps == 30
    assert a.loss == b.loss and a.metric == b.metric and a.history == b.history
    c = train(cfg, task, compute, recipe=RECIPE, seed=4, threads=1)
    assert c.loss != a.loss


def test_equal_compute_gives_smaller_models_more_steps(task):
    small, large = config(task, d_model=16), config(task, d_model=64, depth=2)
    compute = 1e10
    # 3 x forward FLOPs per sequence: 370,176 (small) and 7,440,384 (large), 20.1x apart
    assert training_flops_per_sequence(small) == 370_176
    assert training_flops_per_sequence(large) == 7_440_384
    assert plan(small, compute, RECIPE) == (3377, 8)  # 1e10 / (8 x 370,176) = 3376.8
    assert plan(large, compute, RECIPE) == (168, 8)  # 1e10 / (8 x 7,440,384) = 168.0
    for cfg in (small, large):  # the whole number of steps nearest the compute
        per_step = RECIPE.batch_size * training_flops_per_sequence(cfg)
        steps = plan(cfg, compute, RECIPE)[0]
        assert abs(steps * per_step - compute) <= per_step / 2


def test_absurd_learning_rate_diverges_within_one_interval_without_raising(task):
    cfg = config(task)
    steps = 40
    compute = steps * RECIPE.batch_size * training_flops_per_sequence(cfg)
    result = train(
        cfg,
        task,
        compute,
        recipe=Recipe(batch_size=8, base_lr=1e8, warmup_frac=0, grad_clip=1e9),
        seed=0,
        threads=1,
    )
    assert result.status == "diverged"
    assert result.metric is None and "non-finite" in result.reason
    assert result.steps <= steps // RECIPE.n_evals


def test_callback_sees_increasing_progress_and_can_stop(task):
    cfg = config(task)
    compute = 40 * RECIPE.batch_size * training_flops_per_sequence(cfg)
    seen = []
    full = train(cfg, task, compute, recipe=RECIPE, callback=seen.append, threads=1)
    assert full.status == "ok" and len(seen) == RECIPE.n_evals
    fractions = [p.fraction for p in seen]
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions)
    assert fractions[-1] == 1.0 and [p.step for p in seen] == [10, 20, 30, 40]
    assert all(0 <= p.metric <= 1 for p in seen)
    assert full.metric == seen[-1].metric

    stopped = train(cfg, task, compute, recipe=RECIPE, callback=lambda p: p.step >= 20, threads=1)
    assert stopped.status == "stopped" and stopped.steps == 20 and len(stopped.history) == 2


def test_out_of_memory_becomes_a_status(task):
    def boom(point):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    cfg = config(task)
    compute = 8 * RECIPE.batch_size * training_flops_per_sequence(cfg)
    result = train(cfg, task, compute, recipe=RECIPE, callback=boom, threads=1)
    assert result.status == "oom" and "out of memory" in result.reason


def test_result_record_fields(task):
    cfg = config(task)
    compute = 8 * RECIPE.batch_size * training_flops_per_sequence(cfg)
    r = train(cfg, task, compute, recipe=RECIPE, threads=1)
    assert r.tokens == r.steps * RECIPE.batch_size * cfg.seq_len
    assert r.tokens_per_s > 0 and r.flops_per_s > 0 and r.wall_time > 0
    assert set(r.to_dict()) >= {
        "metric",
        "loss",
        "steps",
        "tokens",
        "wall_time",
        "tokens_per_s",
        "flops_per_s",
        "status",
    }


def test_default_plan_same_steps_batch_absorbs_cost(task):
    recipe = Recipe()  # steps 200, batch derived from compute
    small, large = config(task, d_model=16), config(task, d_model=64, depth=2)
    compute = 200 * 8 * training_flops_per_sequence(large)
    (s_small, b_small), (s_large, b_large) = (
        plan(small, compute, recipe),
        plan(large, compute, recipe),
    )
    assert s_large == 200 and b_large == 8
    assert b_small > 4 * b_large and abs(s_small - 200) <= 200 * 0.1
    for cfg, (steps, batch) in ((small, (s_small, b_small)), (large, (s_large, b_large))):
        spent = steps * batch * training_flops_per_sequence(cfg)
        assert abs(spent - compute) <= 0.06 * compute  # same compute for both, up to rounding
    tiny_compute = training_flops_per_sequence(large) * 3
    assert plan(large, tiny_compute, recipe) == (3, 1)  # batch clamps at 1, steps move
