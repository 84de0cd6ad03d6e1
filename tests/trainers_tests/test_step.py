"""Device dispatch of the shared training step: what the CPU keeps and what CUDA gets (fused
AdamW, bf16 autocast, pinned non-blocking batches). The CUDA halves run only with a device."""

from __future__ import annotations

import pytest
import torch

from spaces import build_model
from tests.trainers_tests.conftest import small_config
from trainers.proxy import Recipe
from trainers.step import autocast, make_optimizer

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_the_cpu_keeps_fp32_and_the_default_adamw(task):
    model = build_model(small_config(task))
    opt, peak = make_optimizer(model, small_config(task), Recipe())
    assert not opt.defaults.get("fused") and peak == Recipe().lr_for(small_config(task))
    with autocast(torch.device("cpu")):
        assert model(task.train_batch(0, 2).tokens).dtype == torch.float32


def test_a_batch_moved_to_the_cpu_is_the_same_batch(task):
    batch = task.train_batch(3, 4)
    moved = batch.to("cpu")
    for name in ("tokens", "targets", "mask"):
        a, b = getattr(batch, name), getattr(moved, name)
        assert torch.equal(a, b) and b.device.type == "cpu"


@CUDA
def test_cuda_gets_fused_adamw_bf16_and_pinned_batches(task):
    model = build_model(small_config(task)).cuda()
    opt, _ = make_optimizer(model, small_config(task), Recipe())
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
    assert gpu_speed.main(["--device", "cpu", "--quick", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [r["variant"] for r in doc["train"]] == ["full", "window", "linear"]
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in doc["train"])
    assert {(r["n"], r["variant"]) for r in doc["attention"]} == {
        (n, v) for n in (512, 1024) for v in ("full", "window", "sparse", "linear")
    }
    assert "x faster than full" in capsys.readouterr().out
