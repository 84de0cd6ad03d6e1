"""Does the recipe hold across scale? Train configs scaled 10x-1000x and watch for divergence.

    python -m benchmarks.stability [--factors 10,100,1000] [--tokens 65536]

A small base (full attention, 1 layer x 32, byte-level text at 128 tokens) is scaled with
compound (1.3, 1.2, 1), width-only and depth-only coefficients to each factor x its FLOPs
(`search.compound`; depth-only up to 100x), and every config trains with `search.train`'s
trainer and the one recipe (width- and batch-scaled learning rate, depth-scaled init, WSD) for
the same tokens. Printed per config:
shape, FLOPs, params, peak learning rate, training loss at the start and the end, validation
loss, status. Pass: every run ends `ok` with a validation loss below the first training loss.
FLOPs: fvcore, one multiply-add = one FLOP, forward, one sequence.
"""

from __future__ import annotations

import time

from benchmarks.outcome import describe
from search.budget import count_arg, format_flops
from search.cli import Parser, run_main
from search.compound import Coefficients, scale_to_targets
from spaces import ArchConfig
from spaces.flops import count_flops, count_params, estimate_flops
from trainers.final import FinalTrainer
from trainers.proxy import Recipe
from trainers.tasks import get_task

MAX_DEPTH_ONLY = 100  # depth-only at 1000x is a 1000-layer model: too slow to train here
COEFFICIENTS = {
    "compound": Coefficients(1.3, 1.2, 1.0),
    "width-only": Coefficients(1.0, 1.25, 1.0),
    "depth-only": Coefficients(1.3, 1.0, 1.0),
}


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m benchmarks.stability", description=__doc__)
    p.add_argument("--factors", default="10,100,1000", help="default 10,100,1000")
    p.add_argument("--tokens", type=count_arg, default=32768, help="tokens each (default 32768)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    task = get_task("text", seq_len=128, seed=0)
    base = ArchConfig(**task.interface(), depth=1, d_model=32, n_heads=1)
    factors = [float(x) for x in args.factors.split(",")]
    base_flops = count_flops(base)
    rows = [("base", 1.0, base)]
    for kind, c in COEFFICIENTS.items():
        mine = [f for f in factors if kind != "depth-only" or f <= MAX_DEPTH_ONLY]
        fitted = scale_to_targets(base, c, [f * base_flops for f in mine], estimate_flops)
        rows += [(kind, f, cfg) for f, (_, cfg, _) in zip(mine, fitted)]
    print(
        f"base {describe(base)}: {format_flops(base_flops)}; {args.tokens:,} tokens each, "
        f"batch {args.batch} x 128, recipe {Recipe().base_lr} * sqrt(256 / d_model) "
        f"* sqrt(min(1, {args.batch * 128} / {Recipe().lr_batch_tokens}))",
        flush=True,
    )
    print(
        f"{'scaling':11s} {'x base':>6s} {'config':30s} {'FLOPs':>12s} {'params':>11s} "
        f"{'peak lr':>8s} {'loss@1':>7s} {'loss end':>8s} {'val loss':>8s} {'s':>5s} status"
    )
    passed = 0
    for kind, f, cfg in rows:
        first: dict[str, float] = {}
        trainer = FinalTrainer(cfg, task, args.tokens, batch_size=args.batch, threads=args.threads)
        t0 = time.perf_counter()

        def keep_first(pr, first=first) -> None:
            first.setdefault("loss", pr.train_loss)

        res = trainer.run(on_progress=keep_first)
        last = res.history[-1].train_loss if res.history else float("nan")
        val = res.loss if res.loss is not None else float("nan")
        ok = res.status == "ok" and val < first.get("loss", float("inf"))
        passed += ok
        print(
            f"{kind:11s} {f:6g} {describe(cfg):30s} {format_flops(count_flops(cfg)):>12s} "
            f"{count_params(cfg):11,} {trainer.peak_lr:8.2e} {first.get('loss', 0):7.3f} "
            f"{last:8.3f} {val:8.3f} {time.perf_counter() - t0:5.0f} "
            f"{res.status}{'' if ok else ' FAIL ' + res.reason}",
            flush=True,
        )
    print(f"\n{passed} of {len(rows)} runs trained without diverging and learned")
    return 0 if passed == len(rows) else 1


if __name__ == "__main__":
    run_main(main)
