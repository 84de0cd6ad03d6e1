"""Achieved training FLOP/s of the proxy trainer, as a fraction of this machine's dense matmul
throughput measured in the same run.

    python -m benchmarks.trainer [--steps 6] [--threads 2]

Both numbers use fvcore's convention (one multiply-add = one FLOP): the matmul peak is
multiply-adds per second of a large float32 matmul; the trainer's figure is
3 x count_flops(cfg) x sequences per second of training (forward + backward), as the proxy
trainer reports it. Configs: about 2 GFLOPs on the default task's interface.
"""

from __future__ import annotations

import time

import torch

from search.budget import format_flops
from search.cli import Parser, run_main
from spaces import ArchConfig
from spaces.flops import count_flops
from trainers.proxy import Recipe, train
from trainers.tasks import get_task


def matmul_macs_per_s(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return n**3 / best


def two_gflop_config(interface: dict, **kw) -> ArchConfig:
    """The deepest width-384 config of this kind whose count stays <= 2 GFLOPs."""
    best = None
    for depth in range(1, 33):
        cfg = ArchConfig(**interface, depth=depth, d_model=384, n_heads=6, **kw)
        if count_flops(cfg) > 2e9:
            break
        best = cfg
    assert best is not None, "no width-384 config fits 2 GFLOPs"
    return best


def main(argv: list[str] | None = None) -> None:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6, help="training steps per config")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    task = get_task("recall")
    recipe = Recipe(batch_size=16, n_evals=1, eval_batch_size=64)
    peak = matmul_macs_per_s()
    print(
        f"dense matmul (2048^3, float32, {args.threads} threads): "
        f"{format_flops(peak)}/s (multiply-adds per second)"
    )
    configs = {
        "full": two_gflop_config(task.interface()),
        "window": two_gflop_config(
            task.interface(), attention="window", attention_params={"window": 32}
        ),
    }
    for name, cfg in configs.items():
        assert recipe.batch_size is not None
        per_step = 3 * count_flops(cfg) * recipe.batch_size
        result = train(cfg, task, per_step * args.steps, recipe=recipe, threads=args.threads)
        print(
            f"{name:>7}: depth {cfg.depth}, width {cfg.d_model}, {format_flops(count_flops(cfg))}"
            f" per sequence; {result.steps} steps; training {format_flops(result.flops_per_s)}/s"
            f" = {result.flops_per_s / peak:.0%} of matmul peak; {result.tokens_per_s:.0f} tok/s"
        )
    print(f"(peak re-measured after training: {format_flops(matmul_macs_per_s())}/s)")


if __name__ == "__main__":
    run_main(main)
