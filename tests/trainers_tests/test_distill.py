"""Distillation: the KD term is Hinton's T^2-scaled KL, zero against itself, counted in compute."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from spaces import build_model
from spaces.flops import count_flops
from tests.trainers_tests.conftest import small_config
from trainers.distill import Teacher
from trainers.final import FinalTrainer
from trainers.proxy import Recipe
from trainers.tasks import IGNORE_INDEX, Batch, get_task

RECIPE = Recipe(val_tokens=256, eval_batch_size=16)


def test_self_distillation_at_t1_weight1_has_zero_loss_at_step_0(task):
    cfg = small_config(task)
    torch.manual_seed(0)
    student = build_model(cfg)
    teacher = Teacher(copy.deepcopy(student), cfg, task, kd_weight=1.0, temperature=1.0)
    batch = task.train_batch(0, 4)
    loss = teacher.loss(student(batch.tokens, batch.mask), batch)
    assert abs(loss.item()) < 1e-6
    assert task.loss(student(batch.tokens, batch.mask), batch).item() > 1.0  # the task loss isn't


def _hand_kl(student, teacher, temperature):
    """KL(teacher_T || student_T) of two lists of logits, with math only."""

    def softmax(row):
        z = [x / temperature for x in row]
        m = max(z)
        e = [math.exp(x - m) for x in z]
        return [x / sum(e) for x in e]

    p, q = softmax(teacher), softmax(student)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def test_kl_term_matches_a_hand_computed_value_on_a_tiny_lm_batch():
    task = get_task("recall", seq_len=16, num_pairs=2, n_val=8)
    v = task.vocab_size
    gen = torch.Generator().manual_seed(3)
    student = torch.randn(1, 16, v, generator=gen, dtype=torch.float64)
    teacher = torch.randn(1, 16, v, generator=gen, dtype=torch.float64) * 2
    targets = torch.full((1, 16), IGNORE_INDEX)
    targets[0, 3], targets[0, 6] = 1, 2  # two scored tokens; the rest must not count
    ones = torch.ones(1, 16, dtype=torch.bool)
    batch = Batch(torch.zeros(1, 16, dtype=torch.long), targets, ones)
    t = 2.0
    got = float(task.distill_loss(student.float(), teacher.float(), batch, t))
    rows = [3, 6]
    want = t**2 * sum(_hand_kl(student[0, i].tolist(), teacher[0, i].tolist(), t) for i in rows)
    assert got == pytest.approx(want / len(rows), rel=1e-5)


def test_kl_term_on_classification_logits():
    task = get_task("listops", seq_len=16, n_val=8)
    student = torch.tensor([[0.0, 1.0] + [0.0] * 8, [2.0, -1.0] + [0.0] * 8])
    teacher = torch.tensor([[1.0, 0.0] + [0.0] * 8, [0.0, 0.0] + [0.5] * 8])
    batch = Batch(
        torch.zeros(2, 16, dtype=torch.long), torch.tensor([0, 3]), torch.ones(2, 16, dtype=bool)
    )
    got = float(task.distill_loss(student, teacher, batch, 1.0))
    want = sum(_hand_kl(student[i].tolist(), teacher[i].tolist(), 1.0) for i in range(2)) / 2
    assert got == pytest.approx(want, rel=1e-5)


def test_teacher_must_share_the_task_interface(task):
    other = get_task("recall", seq_len=32, num_pairs=4, num_values=40, n_val=32)
    cfg = small_config(other)
    with pytest.raises(ValueError, match=r"does not share the task's interface: vocab_size="):
        Teacher(build_model(cfg), cfg, task)
    cfg = small_config(task)
    with pytest.raises(ValueError, match=r"--kd-weight must be in \[0, 1\]"):
        Teacher(build_model(cfg), cfg, task, kd_weight=1.5)
    with pytest.raises(ValueError, match="--temperature must be a positive number"):
        Teacher(build_model(cfg), cfg, task, temperature=float("nan"))


def test_teacher_forward_counts_in_the_training_compute(task):
    student_cfg = small_config(task)
    teacher_cfg = small_config(task, depth=2, d_model=64)
    teacher = Teacher(build_model(teacher_cfg), teacher_cfg, task)
    t = FinalTrainer(student_cfg, task, 32 * 8 * 3, batch_size=8, recipe=RECIPE, teacher=teacher)
    per_step = (3 * count_flops(student_cfg) + count_flops(teacher_cfg)) * 8
    assert t.flops_per_step == per_step
    res = t.run()
    assert res.status == "ok" and res.train_flops == 3 * per_step


def _train(task, tokens, out=None, **kw):
    cfg = kw.pop("cfg", None) or small_config(task)
    return FinalTrainer(cfg, task, tokens, batch_size=8, recipe=RECIPE, out=out, **kw)


def test_a_student_learns_from_the_teacher_alone(task, tmp_path):
    """kd-weight 1 ignores the labels: what the student learns comes from the teacher."""
    teacher_run = _train(task, 32 * 8 * 150, tmp_path / "teacher", seed=1).run()
    assert teacher_run.status == "ok" and teacher_run.loss < 2.5  # chance is ln 32 = 3.47
    teacher = Teacher.load(tmp_path / "teacher", task, kd_weight=1.0, temperature=1.0)
    untrained = _train(task, 32 * 8, lr=1e-12).run()
    student = _train(task, 32 * 8 * 150, teacher=teacher).run()
    assert student.status == "ok"
    assert student.loss < untrained.loss - 0.5


def test_resume_refuses_a_different_teacher_setting(task, tmp_path):
    cfg = small_config(task)
    make = lambda w: Teacher(build_model(cfg), cfg, task, kd_weight=w)
    _train(task, 32 * 8 * 4, tmp_path / "run", eval_every=2, teacher=make(0.5)).run(
        should_stop=lambda: True
    )
    with pytest.raises(ValueError, match=r"differs in: teacher"):
        _train(task, 32 * 8 * 4, tmp_path / "run", eval_every=2, teacher=make(0.7)).run(resume=True)
