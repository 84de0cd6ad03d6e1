"""Issue 17's GPU figures in one short run, measured side by side on one host.

    python -m benchmarks.gpu_speed --device cuda --json gpu.json     # about 5 minutes on one GPU
    python -m benchmarks.gpu_speed --device cpu --quick               # a smoke run of the script

1. Peak: a large bf16 matmul (hardware FLOPs: a multiply-add counts 2), the MFU denominator.
2. Training MFU of budget-sized models (0.5, 2 and 8 GFLOPs; full, window 256, linear attention,
   head dim 64, FFN 4x, the largest that fits, text at 2048 tokens): steady-state steps of the
   shared training step (bf16 autocast, fused AdamW on CUDA). Model FLOPs per step =
   3 x count_flops x batch (fvcore MACs) x 2 (hardware FLOPs); MFU = that / step time / peak.
   The step syncs once for the loss (`loss.item()`); that is part of what is measured.
3. Attention forward+backward at n = 4K, 16K and 64K (batch 1, 8 heads of 64, bf16, causal):
   each variant's module against full attention (SDPA: flash where the GPU has it); a size that
   runs out of memory is reported as such.

The default search on `--device cuda` is measured with the CLI itself:
`python -m search.run --budget 2GFLOPs --device cuda --timeout 600` prints its plan (top-rung
tokens) and its trained candidates. Targets (issue 17): MFU >= 40%; window, sparse and linear
>= 8x faster than full at 16K. Nothing here asserts them: the figures are printed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from spaces import ATTENTION, build_model
from spaces.baselines import largest_of
from spaces.flops import TRAIN_FLOPS_FACTOR, count_flops
from trainers.proxy import Recipe
from trainers.step import autocast, is_oom, make_optimizer, train_step
from trainers.tasks import Batch

SPANS = {"window": {"window": 256}, "sparse": {"block": 128}, "linear": {}, "full": {}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    """Median seconds of `fn()` after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def peak_flops(device: torch.device, n: int, reps: int) -> float:
    """Hardware FLOP/s of an n x n x n matmul (bf16 on CUDA, fp32 on the CPU)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return 2 * n**3 / timed(lambda: a @ b, device, reps)


def train_mfu(variant: str, budget: float, seq_len: int, batch: int, device, steps: int, peak):
    """(config, tokens/s, MFU) of steady-state training steps of a budget-sized model."""
    iface = {"vocab_size": 256, "seq_len": seq_len, "causal": True}
    cfg = largest_of(iface, budget, variant, SPANS[variant])
    model = build_model(cfg).to(device).train()
    opt, _ = make_optimizer(model, cfg, Recipe())
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (batch, seq_len + 1), generator=gen)
    data = Batch(tokens[:, :-1], tokens[:, 1:], torch.ones(batch, seq_len, dtype=torch.bool))
    task = _LMLoss()
    step = [0]

    def one() -> None:
        train_step(model, opt, task, data.to(device), 1e-4, 1.0, step[0])  # type: ignore[arg-type]
        step[0] += 1

    seconds = timed(one, device, steps)
    model_flops = 2 * TRAIN_FLOPS_FACTOR * count_flops(cfg) * batch
    return cfg, batch * seq_len / seconds, model_flops / seconds / peak


class _LMLoss:
    """The next-token loss `train_step` asks the task for (random bytes: speed only)."""

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        flat = logits.flatten(0, 1).float()
        return torch.nn.functional.cross_entropy(flat, batch.targets.flatten())


def attention_seconds(variant: str, n: int, device: torch.device, reps: int) -> float | None:
    """Median seconds of one forward+backward of the variant's module at length n (None: OOM)."""
    cls = ATTENTION.get(variant)
    params = cls.Params(**SPANS.get(variant, {}))
    try:
        module = cls(512, 8, n, params).to(device)
        x = torch.randn(1, n, 512, device=device, requires_grad=True)

        def one() -> None:
            with autocast(device):
                y = module(x, causal=True)
            y.float().square().mean().backward()

        return timed(one, device, reps)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_speed", description=__doc__)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device")
        return 2
    if args.quick:  # the same code on tiny sizes
        budgets, seq_len, batch, sizes, reps, steps, mm = [2e8], 512, 2, [512, 1024], 2, 2, 512
    else:
        budgets, seq_len, batch = [5e8, 2e9, 8e9], 2048, 8
        sizes, reps, steps, mm = [4096, 16384, 65536], 5, 10, 8192
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(device, mm, reps)
    print(f"device {name}: peak {peak / 1e12:.1f} TFLOP/s (matmul {mm}^3, hardware FLOPs)")
    out: dict = {"device": name, "peak_flops": peak, "train": [], "attention": []}
    print(f"\n{'budget':>8} {'variant':8} {'config':>10} {'tokens/s':>12} {'MFU':>7}")
    for budget in budgets:
        for variant in ("full", "window", "linear"):
            cfg, rate, mfu = train_mfu(variant, budget, seq_len, batch, device, steps, peak)
            shape = f"{cfg.depth}x{cfg.d_model}"
            print(f"{budget / 1e9:7.2f}G {variant:8} {shape:>10} {rate:12,.0f} {mfu:7.1%}")
            out["train"].append(
                {
                    "budget": budget,
                    "variant": variant,
                    "config": cfg.to_dict(),
                    "tokens_per_s": rate,
                    "mfu": mfu,
                }
            )
    print(f"\n{'n':>6} {'variant':8} {'fwd+bwd s':>10} {'x faster than full':>19}")
    for n in sizes:
        full = attention_seconds("full", n, device, reps)
        for variant in ("full", "window", "sparse", "linear"):
            sec = full if variant == "full" else attention_seconds(variant, n, device, reps)
            ratio = "" if sec is None or full is None else f"{full / sec:.1f}"
            shown = "OOM" if sec is None else f"{sec:.4f}"
            print(f"{n:>6} {variant:8} {shown:>10} {ratio:>19}")
            out["attention"].append({"n": n, "variant": variant, "seconds": sec})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
