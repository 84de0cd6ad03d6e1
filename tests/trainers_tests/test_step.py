"""Device dispatch of the shared training step: what the CPU keeps and what CUDA gets (fused
AdamW, bf16 autocast, pinned non-blocking batches). The CUDA halves run only with a device."""

from __future__ import annotations

import math

import pytest
import torch

from spaces import build_model
from tests.trainers_tests.conftest import small_config
from trainers.proxy import Recipe
from trainers.step import (
    READ_EVERY,
    Diverged,
    autocast,
    check_finite_weights,
    make_optimizer,
    should_read,
    train_step,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_the_cpu_keeps_fp32_and_foreach_adamw(task):
    model = build_model(small_config(task))
    opt, peak = make_optimizer(model, small_config(task), Recipe(), 1024)
    assert not opt.defaults.get("fused") and peak == Recipe().lr_for(small_config(task), 1024)
    assert opt.defaults["foreach"] is True
    with autocast(torch.device("cpu")):
        assert model(task.train_batch(0, 2).tokens).dtype == torch.float32


def test_the_peak_learning_rate_shrinks_with_width_and_with_a_step_below_the_recipes(task):
    """`base_lr * sqrt(256 / d_model) * sqrt(min(1, step tokens / lr_batch_tokens))`: the CPU's
    1,024-token step takes half the 4,096-token rate, a larger step keeps it (never raised)."""
    recipe = Recipe()
    assert (recipe.base_lr, recipe.lr_batch_tokens) == (2e-3, 4096)
    wide, narrow = (small_config(task, d_model=d) for d in (256, 64))
    assert recipe.lr_for(wide, 4096) == 2e-3
    assert recipe.lr_for(wide, 1024) == 1e-3
    assert recipe.lr_for(wide, 16384) == 2e-3
    assert recipe.lr_for(narrow, 4096) == 4e-3
    assert recipe.lr_for(narrow, 256) == pytest.approx(1e-3)
    # what the optimizer gets; an explicit rate wins
    assert make_optimizer(build_model(narrow), narrow, recipe, 1024)[1] == 2e-3
    assert make_optimizer(build_model(narrow), narrow, recipe, 1024, lr=5e-4)[1] == 5e-4


def test_the_width_power_sets_how_fast_the_rate_falls_with_width(task):
    """`lr_width_power` 1 (muP's rule for Adam) with the base that keeps width 192 where the
    square root puts it: width 64 gets sqrt(3) and width 32 sqrt(6) times the default rule."""
    sqrt_rule = Recipe()
    assert sqrt_rule.lr_width_power == 0.5
    linear = Recipe(base_lr=2e-3 * math.sqrt(192 / 256), lr_width_power=1.0)
    w192, w64, w32 = (small_config(task, d_model=d) for d in (192, 64, 32))
    assert linear.lr_for(w192, 1024) == pytest.approx(sqrt_rule.lr_for(w192, 1024), rel=1e-12)
    assert linear.lr_for(w64, 1024) / sqrt_rule.lr_for(w64, 1024) == pytest.approx(math.sqrt(3))
    assert linear.lr_for(w32, 1024) / sqrt_rule.lr_for(w32, 1024) == pytest.approx(math.sqrt(6))
    assert Recipe(lr_width_power=0.0).lr_for(w32, 4096) == 2e-3  # no width factor


def test_the_cpu_step_gives_the_per_tensor_loops_numbers_bit_for_bit(task):
    """Foreach AdamW and foreach clipping are a speed change only: 40 steps at a high learning
    rate, with clipping active, end in the same weights as torch's per-tensor loops."""
    cfg, recipe, lr = small_config(task), Recipe(), 3e-2
    torch.manual_seed(0)
    ours = build_model(cfg)
    theirs = build_model(cfg)
    theirs.load_state_dict(ours.state_dict())
    opt, _ = make_optimizer(ours, cfg, recipe, 1024, lr=lr)
    loop = torch.optim.AdamW(
        theirs.parameters(),
        lr=lr,
        betas=recipe.betas,
        weight_decay=recipe.weight_decay,
        foreach=False,
    )
    clipped = 0
    for step in range(40):
        batch = task.train_batch(step, 4)
        train_step(ours, opt, task, batch, lr, 0.5, step)
        loss = task.loss(theirs(batch.tokens, batch.mask), batch)
        loop.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5, foreach=False)
        clipped += bool(norm > 0.5)
        loop.step()
    assert clipped > 0
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_batch_moved_to_the_cpu_is_the_same_batch(task):
    batch = task.train_batch(3, 4)
    moved = batch.to("cpu")
    for name in ("tokens", "targets", "mask"):
        a, b = getattr(batch, name), getattr(moved, name)
        assert torch.equal(a, b) and b.device.type == "cpu"


def test_the_loss_is_read_every_step_on_the_cpu_and_every_eighth_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # no GPU needed to name one
    assert all(should_read(s, cpu) for s in range(20))
    assert [s for s in range(24) if should_read(s, cuda)] == [7, 15, 23]
    assert READ_EVERY == 8


def _nan_loss(logits, batch):
    return logits.float().sum() * float("nan")


def test_a_read_nan_raises_before_the_weights_move_an_unread_one_does_not(task):
    model = build_model(small_config(task))
    opt, _ = make_optimizer(model, small_config(task), Recipe(), 1024)
    before = [p.detach().clone() for p in model.parameters()]
    batch = task.train_batch(0, 2)
    with pytest.raises(Diverged, match="step 4"):
        train_step(model, opt, task, batch, 1e-3, 1.0, 3, _nan_loss)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    loss = train_step(model, opt, task, batch, 1e-3, 1.0, 3, _nan_loss, read=False)
    assert loss.dim() == 0 and not loss.requires_grad and torch.isnan(loss)
    with pytest.raises(Diverged, match="non-finite weights after step 4"):
        check_finite_weights(model, 4)  # the unread NaN reached the weights: caught here


def test_finite_weights_pass_the_check(task):
    check_finite_weights(build_model(small_config(task)), 0)


def test_the_final_trainer_reads_on_the_cuda_cadence(task, monkeypatch):
    """With the CUDA cadence (forced on the CPU), progress comes every READ_EVERY steps and at
    each evaluation, whose train loss is a fresh read, and the rates stay sane."""
    import trainers.final as final

    monkeypatch.setattr(final, "should_read", lambda step, device: (step + 1) % READ_EVERY == 0)
    t = final.FinalTrainer(
        small_config(task),
        task,
        32 * 8 * 20,
        batch_size=8,
        recipe=Recipe(val_tokens=256),
        eval_every=5,
    )
    seen = []
    res = t.run(on_progress=lambda p: seen.append(p.step))
    assert seen == [5, 8, 10, 15, 16, 20]
    assert res.status == "ok" and [e.step for e in res.history] == [5, 10, 15, 20]
    assert all(e.train_loss == e.train_loss for e in res.history)  # read, not NaN


@CUDA
def test_cuda_gets_fused_adamw_bf16_and_pinned_batches(task):
    model = build_model(small_config(task)).cuda()
    opt, _ = make_optimizer(model, small_config(task), Recipe(), 1024)
    assert opt.defaults["fused"] is True
    batch = task.train_batch(0, 2).to("cuda")
    assert batch.tokens.is_cuda and batch.mask.is_cuda
    with autocast(torch.device("cuda")):
        assert model(batch.tokens, batch.mask).dtype == torch.bfloat16


def test_the_gpu_benchmark_runs_its_code_on_the_cpu(tmp_path, capsys):
    """benchmarks/gpu_speed.py measures on a GPU; --quick runs the same code on tiny CPU sizes
    so the script a device session depends on is known to work before one is lent."""
    import json

    from benchmarks import gpu_speed

    out = tmp_path / "gpu.json"
    # part 4 (torch.compile) is left out here: ~70 s of compiling on this machine
    argv = ["--device", "cpu", "--quick", "--json", str(out), "--parts", "train,attention,profile"]
    assert gpu_speed.main(argv) == 0
    doc = json.loads(out.read_text())
    assert [r["variant"] for r in doc["train"]] == ["full", "window", "linear"]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in doc["train"])
    assert all(r["tokens_per_s_read_every_step"] > 0 for r in doc["train"])
    assert doc["compile"] == []
    assert {(r["n"], r["variant"]) for r in doc["attention"]} == {
        (n, v) for n in (512, 1024) for v in ("full", "window", "sparse", "linear")
    }
    printed = capsys.readouterr().out
    assert "x faster than full" in printed
    assert "profile: window attention, n = 1024" in printed and "Self CPU" in printed
