"""Issue 17's GPU figures in one short run, measured side by side on one host.

    python -m benchmarks.gpu_speed --device cuda --json gpu.json     # about 3 minutes on one GPU
    python -m benchmarks.gpu_speed --device cpu --quick               # a smoke run of the script

1. Peak: a large bf16 matmul (hardware FLOPs: a multiply-add counts 2), the MFU denominator.
2. Training MFU of budget-sized models (0.5, 2 and 8 GFLOPs; full, window 256, linear attention,
   head dim 64, FFN 4x, the largest that fits, text at 2048 tokens, `--batch` sequences a step):
   steady-state steps of the shared training step (bf16 autocast, fused AdamW on CUDA). Model
   FLOPs per step = 3 x count_flops x batch (fvcore MACs) x 2 (hardware FLOPs); MFU = that /
   step time / peak. Two columns: the loss read (a host sync) on every step, and on the
   trainers' cadence (every READ_EVERY steps), so the cost of the sync is measured.
3. Attention forward+backward at n = 4K, 16K and 64K (batch 1, 8 heads of 64, bf16, causal):
   each variant's module against full attention (SDPA: flash where the GPU has it); a size that
   runs out of memory is reported as such.
4. torch.compile of the whole model at 2 GFLOPs (each variant): compile seconds (the first
   step) against the compiled step's speed, to decide whether compiling pays for a trial.

The default search on `--device cuda` is measured with the CLI itself (benchmarks/gpu_session.sh
runs everything in one device session): `python -m search.run --budget 2GFLOPs --device cuda
--timeout 600` prints its plan (top-rung tokens) and its trained candidates. Figures measured on
an H200: docs/results.md, section 0e. Targets (issue 17): MFU >= 40%; window, sparse and linear
>= 8x faster than full at 16K. Nothing here asserts them: the figures are printed.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from search.cli import Parser, run_main
from spaces import ATTENTION, build_model
from spaces.baselines import largest_any_head_dim
from spaces.flops import TRAIN_FLOPS_FACTOR, count_flops
from trainers.proxy import Recipe
from trainers.step import READ_EVERY, autocast, is_oom, make_optimizer, should_read, train_step
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


def train_mfu(cfg, batch: int, device, steps: int, peak, *, read_every_step: bool, compile_=False):
    """(tokens/s, MFU, seconds of the first step) of steady-state training steps of `cfg`."""
    model = build_model(cfg).to(device).train()
    opt, _ = make_optimizer(model, cfg, Recipe(), batch * cfg.seq_len)
    run = torch.compile(model) if compile_ else model
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 256, (batch, cfg.seq_len + 1), generator=gen)
    data = Batch(tokens[:, :-1], tokens[:, 1:], torch.ones(batch, cfg.seq_len, dtype=torch.bool))
    data = data.to(device)
    task = _LMLoss()

    def step(i: int) -> None:
        read = read_every_step or should_read(i, device)
        train_step(run, opt, task, data, 1e-4, 1.0, i, read=read)  # type: ignore[arg-type]

    t0 = time.perf_counter()
    step(0)  # warm-up: compiles (flex kernels; the whole model with compile_)
    sync(device)
    first = time.perf_counter() - t0
    n = max(steps, READ_EVERY) // READ_EVERY * READ_EVERY  # whole read groups
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        step(i)
    sync(device)
    seconds = (time.perf_counter() - t0) / n
    model_flops = 2 * TRAIN_FLOPS_FACTOR * count_flops(cfg) * batch
    return batch * cfg.seq_len / seconds, model_flops / seconds / peak, first


class _LMLoss:
    """The next-token loss `train_step` asks the task for (random bytes: speed only)."""

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        flat = logits.flatten(0, 1).float()
        return torch.nn.functional.cross_entropy(flat, batch.targets.flatten())


def _attention_call(variant: str, n: int, device: torch.device):
    """One forward+backward of the variant's module (512 wide, 8 heads of 64, batch 1, bf16
    autocast on CUDA, causal) at length n, as a function of no arguments."""
    cls = ATTENTION.get(variant)
    module = cls(512, 8, n, cls.Params(**SPANS.get(variant, {}))).to(device)
    x = torch.randn(1, n, 512, device=device, requires_grad=True)

    def one() -> None:
        with autocast(device):
            y = module(x, causal=True)
        y.float().square().mean().backward()

    return one


def attention_seconds(variant: str, n: int, device: torch.device, reps: int) -> float | None:
    """Median seconds of one forward+backward of the variant's module at length n (None: OOM)."""
    try:
        return timed(_attention_call(variant, n, device), device, reps)
    except (RuntimeError, MemoryError) as exc:
        if not is_oom(exc):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None


def profile_attention(variant: str, n: int, device: torch.device, reps: int = 3) -> str:
    """torch.profiler table of `reps` forward+backward calls of the variant's module at length
    n (after one warm-up), sorted by self CPU time: where a fixed per-call cost goes (issue 17:
    window and sparse cost ~3 ms at 4K and at 16K alike on an H200)."""
    from torch.profiler import ProfilerActivity, profile

    one = _attention_call(variant, n, device)
    one()
    sync(device)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        for _ in range(reps):
            one()
        sync(device)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20)


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        prog="python -m benchmarks.gpu_speed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    p.add_argument("--batch", type=int, help="sequences per training step (default 16; quick 2)")
    p.add_argument("--json", metavar="PATH", help="write every figure here (after each part)")
    p.add_argument(
        "--budgets",
        help="comma-separated model budgets of the train part, FLOPs (default 5e8,2e9,8e9)",
    )
    p.add_argument(
        "--parts",
        default="train,attention,compile",
        help="comma-separated parts to run: train, attention, compile, profile (a "
        "torch.profiler table of window attention at 16K; not in the default)",
    )
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= {"train", "attention", "compile", "profile"}:
        p.error(f"--parts takes train, attention, compile and profile, not {args.parts!r}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device")
        return 2
    if args.quick:  # the same code on tiny sizes
        budgets, seq_len, batch, sizes, reps, steps, mm = [2e8], 512, 2, [512, 1024], 2, 8, 512
        compile_budget = 2e8
    else:
        budgets, seq_len, batch = [5e8, 2e9, 8e9], 2048, 16
        sizes, reps, steps, mm, compile_budget = [4096, 16384, 65536], 5, 24, 8192, 2e9
    batch = args.batch or batch
    if args.budgets:
        budgets = [float(b) for b in args.budgets.split(",")]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(device, mm, reps)
    print(
        f"device {name}, torch {torch.__version__}: peak {peak / 1e12:.1f} TFLOP/s "
        f"(matmul {mm}^3, hardware FLOPs)",
        flush=True,
    )
    out: dict = {
        "device": name,
        "torch": torch.__version__,
        "peak_flops": peak,
        "batch": batch,
        "seq_len": seq_len,
        "train": [],
        "attention": [],
        "compile": [],
    }
    save = lambda: _save(args.json, out)
    save()
    if "train" in parts:
        _train_table(out, budgets, seq_len, batch, device, steps, peak)
        save()
    if "attention" in parts:
        _attention_table(out, sizes, device, reps)
        save()
    if "compile" in parts:
        _compile_table(out, compile_budget, seq_len, batch, device, steps, peak)
        save()
    if "profile" in parts:
        n = sizes[-1] if args.quick else 16384
        print(f"\nprofile: window attention, n = {n}, 3 forward+backward calls", flush=True)
        print(profile_attention("window", n, device), flush=True)
    return 0


def _save(path: str | None, out: dict) -> None:
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


def _config(variant: str, budget: float, seq_len: int):
    """The largest model of `variant` that fits: head dim 64, else 32 or 16 on small budgets
    (no full-attention model with heads of 64 fits 0.5 GFLOPs at 2048 tokens)."""
    iface = {"vocab_size": 256, "seq_len": seq_len, "causal": True}
    return largest_any_head_dim(iface, budget, variant, SPANS[variant], head_dims=(64, 32, 16))


def _train_table(out, budgets, seq_len, batch, device, steps, peak) -> None:
    print(
        f"\n{'budget':>8} {'variant':8} {'config':>10} {'tokens/s':>12} {'MFU':>7} "
        f"{'read/step tok/s':>16} {'MFU':>7}",
        flush=True,
    )
    for budget in budgets:
        for variant in ("full", "window", "linear"):
            cfg = _config(variant, budget, seq_len)
            rate, mfu, _ = train_mfu(cfg, batch, device, steps, peak, read_every_step=False)
            rate1, mfu1, _ = train_mfu(cfg, batch, device, steps, peak, read_every_step=True)
            shape = f"{cfg.depth}x{cfg.d_model}/{cfg.n_heads}"
            print(
                f"{budget / 1e9:7.2f}G {variant:8} {shape:>10} {rate:12,.0f} {mfu:7.1%} "
                f"{rate1:16,.0f} {mfu1:7.1%}",
                flush=True,
            )
            out["train"].append(
                {
                    "budget": budget,
                    "variant": variant,
                    "config": cfg.to_dict(),
                    "tokens_per_s": rate,
                    "mfu": mfu,
                    "tokens_per_s_read_every_step": rate1,
                    "mfu_read_every_step": mfu1,
                }
            )


def _attention_table(out, sizes, device, reps) -> None:
    print(f"\n{'n':>6} {'variant':8} {'fwd+bwd s':>10} {'x faster than full':>19}", flush=True)
    for n in sizes:
        full = attention_seconds("full", n, device, reps)
        for variant in ("full", "window", "sparse", "linear"):
            sec = full if variant == "full" else attention_seconds(variant, n, device, reps)
            ratio = "" if sec is None or full is None else f"{full / sec:.1f}"
            shown = "OOM" if sec is None else f"{sec:.4f}"
            print(f"{n:>6} {variant:8} {shown:>10} {ratio:>19}", flush=True)
            out["attention"].append({"n": n, "variant": variant, "seconds": sec})


def _compile_table(out, budget, seq_len, batch, device, steps, peak) -> None:
    print(
        f"\ntorch.compile at {budget / 1e9:.2f}G: {'variant':8} {'compile s':>10} "
        f"{'eager tok/s':>12} {'compiled tok/s':>15} {'MFU':>7} {'break-even s':>13}",
        flush=True,
    )
    for variant in ("full", "window", "linear"):
        cfg = _config(variant, budget, seq_len)
        eager, _, _ = train_mfu(cfg, batch, device, steps, peak, read_every_step=False)
        rate, mfu, first = train_mfu(
            cfg, batch, device, steps, peak, read_every_step=False, compile_=True
        )
        # compiling pays once the time saved per token covers the compile time
        saved = 1 / eager - 1 / rate
        even = first / (saved * eager) if saved > 0 else float("inf")
        print(
            f"{'':24} {variant:8} {first:10.1f} {eager:12,.0f} {rate:15,.0f} {mfu:7.1%} "
            f"{even:13.0f}",
            flush=True,
        )
        out["compile"].append(
            {
                "budget": budget,
                "variant": variant,
                "compile_s": first,
                "eager_tokens_per_s": eager,
                "compiled_tokens_per_s": rate,
                "mfu": mfu,
                "break_even_eager_s": even,
            }
        )


if __name__ == "__main__":
    run_main(main)
