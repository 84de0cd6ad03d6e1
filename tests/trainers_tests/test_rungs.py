"""The rung trainer: equal tokens per rung, promotion continues (never restarts), WSD decay on a
branch, checkpoint resume equal to an uninterrupted run, divergence without raising."""

from __future__ import annotations

import dataclasses

import pytest

from tests.trainers_tests.conftest import small_config as config
from trainers.proxy import Recipe
from trainers.rungs import RungSchedule, RungTrainer, decay_steps

RECIPE = Recipe(eval_batch_size=32, val_tokens=32 * 32, decay_frac=0.25, wsd_warmup_frac=0.25)
SCHEDULE = RungSchedule(first_steps=4, batch_size=8, seq_len=32, eta=3, rungs=3)


class Recording:
    """Wraps a task and records the training step index of every batch drawn."""

    def __init__(self, task) -> None:
        self.task, self.steps = task, []

    def __getattr__(self, name):
        return getattr(self.task, name)

    def train_batch(self, step, batch_size):
        self.steps.append(step)
        return self.task.train_batch(step, batch_size)


def test_schedule_tokens_are_cumulative_and_multiply_by_eta():
    assert [SCHEDULE.steps(k) for k in range(3)] == [4, 12, 36]
    assert [SCHEDULE.tokens(k) for k in range(3)] == [4 * 256, 12 * 256, 36 * 256]
    with pytest.raises(ValueError, match="eta"):
        RungSchedule(first_steps=4, batch_size=8, seq_len=32, eta=1)


def test_promotion_continues_and_tokens_are_the_sum_of_the_rungs(task):
    recorded = Recording(task)
    trainer = RungTrainer(config(task), recorded, SCHEDULE, recipe=RECIPE, threads=1)
    out = trainer.run(on_rung=lambda r: False)
    assert out.status == "ok" and [r.rung for r in out.rungs] == [0, 1, 2]
    # the evaluated model of rung k saw exactly r_k tokens: the same for every candidate
    assert [r.tokens for r in out.rungs] == [SCHEDULE.tokens(k) for k in range(3)]
    # the stable path never repeats a step; each non-final rung adds a decay branch that
    # replays the steps the stable path takes next (same data), and nothing else
    d0, d1 = decay_steps(SCHEDULE, 0, RECIPE), decay_steps(SCHEDULE, 1, RECIPE)
    assert (d0, d1) == (1, 3)
    expected = (
        list(range(0, 4 - d0))  # rung 0 stable
        + list(range(4 - d0, 4))  # rung 0 decay branch
        + list(range(4 - d0, 12 - d1))  # rung 1 stable: continues, no restart
        + list(range(12 - d1, 12))  # rung 1 decay branch
        + list(range(12 - d1, 36))  # rung 2: stable then final decay
    )
    assert recorded.steps == expected
    assert out.tokens_processed == len(expected) * SCHEDULE.batch_tokens
    assert out.tokens_processed == SCHEDULE.tokens(2) + (d0 + d1) * SCHEDULE.batch_tokens


def test_equal_tokens_within_a_rung_for_different_models(task):
    small, large = Recording(task), Recording(task)
    a = RungTrainer(config(task), small, SCHEDULE, recipe=RECIPE).run(on_rung=lambda r: True)
    b = RungTrainer(config(task, depth=2, d_model=64), large, SCHEDULE, recipe=RECIPE).run(
        on_rung=lambda r: True
    )
    assert a.status == b.status == "stopped" and len(a.rungs) == len(b.rungs) == 1
    assert a.rungs[0].tokens == b.rungs[0].tokens == SCHEDULE.tokens(0)
    assert small.steps == large.steps  # the very same batches


def test_checkpoint_resume_equals_an_uninterrupted_run(task, tmp_path):
    cfg = config(task)
    full = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, threads=1).run()
    ckpt = tmp_path / "t.pt"
    first = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run(
        on_rung=lambda r: r.rung == 1  # stop after rung 1, as if the worker died there
    )
    assert first.status == "stopped" and ckpt.is_file()
    replayed = []
    resumed = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run(
        on_rung=lambda r: replayed.append(r.rung) or False
    )
    assert resumed.status == "ok" and resumed.resumed_from == 1
    assert replayed == [0, 1, 2]  # earlier rungs are replayed to the caller, then rung 2
    assert [r.loss for r in resumed.rungs] == pytest.approx([r.loss for r in full.rungs], abs=1e-6)
    assert resumed.tokens_processed == full.tokens_processed


def test_before_rung_is_asked_before_each_rung_is_trained_on_and_can_stop_it(task, tmp_path):
    cfg, ckpt = config(task), tmp_path / "t.pt"
    asked: list[int] = []
    full = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE).run(
        before_rung=lambda r: asked.append(r.rung)  # None: go on
    )
    assert full.status == "ok" and asked == [0, 1]  # never before rung 0, nor after the top
    first = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run(
        on_rung=lambda r: r.rung == 1  # a checkpoint with rungs 0 and 1
    )
    asked.clear()
    resumed = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run(
        before_rung=lambda r: asked.append(r.rung) or "no time for rung 2"
    )
    assert asked == [1]  # a replayed rung below the checkpoint's last is not asked
    assert (resumed.status, resumed.reason) == ("stopped", "no time for rung 2")
    assert [r.rung for r in resumed.rungs] == [0, 1] and resumed.resumed_from == 1
    assert resumed.tokens_processed == full.rungs[1].tokens_processed  # nothing trained
    assert resumed.train_time == 0 and resumed.tokens_per_s == first.rungs[1].tokens_per_s > 0


def test_a_resumed_run_times_only_the_tokens_it_trained(task, tmp_path):
    cfg, ckpt = config(task), tmp_path / "t.pt"
    first = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run(
        on_rung=lambda r: r.rung == 1
    )
    resumed = RungTrainer(cfg, task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run()
    trained = resumed.tokens_processed - first.rungs[1].tokens_processed
    # rung 2 from rung 1's stable state (rung 1's decay was a discarded branch)
    stable = SCHEDULE.steps(1) - decay_steps(SCHEDULE, 1, RECIPE)
    assert trained == (SCHEDULE.steps(2) - stable) * SCHEDULE.batch_tokens
    assert resumed.tokens_per_s == pytest.approx(trained / resumed.train_time)
    assert resumed.rungs[2].tokens_per_s == pytest.approx(trained / resumed.train_time)


def test_checkpoint_of_another_config_is_ignored(task, tmp_path):
    ckpt = tmp_path / "t.pt"
    RungTrainer(config(task), task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt).run(
        on_rung=lambda r: True
    )
    other = RungTrainer(config(task, d_model=16), task, SCHEDULE, recipe=RECIPE, checkpoint=ckpt)
    assert other.run().resumed_from is None


@pytest.fixture
def seen(monkeypatch):
    """(step index, learning rate) of every optimizer step the rung trainer takes."""
    out = []
    real = RungTrainer._step

    def step(self, model, opt, index, lr, read):
        out.append((index, lr))
        return real(self, model, opt, index, lr, read)

    monkeypatch.setattr(RungTrainer, "_step", step)
    return out


def test_learning_rate_is_warmup_stable_decay_on_every_rung(task, seen):
    trainer = RungTrainer(config(task), task, SCHEDULE, recipe=RECIPE)
    trainer.run()
    peak = RECIPE.lr_for(config(task), SCHEDULE.batch_tokens)
    lrs = [lr for _, lr in seen]
    assert lrs[0] == pytest.approx(peak)  # warm-up of round(0.25 * 4) = 1 step
    # each rung's evaluated model ends its decay at lr 0: positions of the last decay steps
    ends = [i for i, (_, lr) in enumerate(seen) if lr == 0.0]
    assert len(ends) == 3
    # between decays the stable phase is back at the peak (the branch was discarded)
    assert all(lr == pytest.approx(peak) for lr in lrs[ends[0] + 1 : ends[0] + 3])


def test_divergence_is_a_status_not_an_exception(task):
    cfg = config(task)
    out = RungTrainer(cfg, task, SCHEDULE, recipe=dataclasses.replace(RECIPE, base_lr=1e6)).run()
    assert out.status == "diverged" and "non-finite" in out.reason


def test_a_candidate_beyond_the_devices_memory_is_oom_without_allocating(task, monkeypatch):
    monkeypatch.setattr("spaces.memory.device_memory", lambda device="cpu": 2**10)  # 1 KiB
    monkeypatch.setattr("trainers.rungs.build_model", lambda cfg: pytest.fail("model built"))
    out = RungTrainer(config(task), task, SCHEDULE, recipe=RECIPE).run()
    assert out.status == "oom" and out.rungs == []
    assert out.reason.startswith("model too large: training at batch 8 requires at least")


def test_the_default_warm_up_spans_rung_0_and_the_stable_phase_then_holds_the_peak(task, seen):
    """Recipe's default: warm-up over all of rung 0 (a quarter of it reordered candidates,
    docs/results.md 0), so rung 0's decay starts below the peak and later rungs run at it."""
    recipe = dataclasses.replace(RECIPE, wsd_warmup_frac=Recipe().wsd_warmup_frac)
    schedule = RungSchedule(first_steps=8, batch_size=8, seq_len=32, eta=3, rungs=2)
    RungTrainer(config(task), task, schedule, recipe=recipe).run()
    peak = recipe.lr_for(config(task), schedule.batch_tokens)
    # rung 0: 8 steps, decay over round(0.25 * 8) = 2; warm-up (i + 1) / 8 for steps 0-5
    assert [lr / peak for _, lr in seen[:6]] == pytest.approx([(i + 1) / 8 for i in range(6)])
    assert [lr / peak for _, lr in seen[6:8]] == pytest.approx([7 / 8 * 0.5, 0.0])
    # back on the kept stable state: step 6 continues the warm-up, step 7 reaches the peak
    assert [(i, lr / peak) for i, lr in seen[8:10]] == [(6, pytest.approx(7 / 8)), (7, 1.0)]
    assert all(lr == pytest.approx(peak) for i, lr in seen[10:] if i < 24 - 6)
