"""How long `count_flops` takes (cold and cached), and a table of reference counts.

    python -m benchmarks.flops

FLOPs: fvcore convention, one multiply-add = one FLOP, forward pass, one sequence.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from search.budget import format_flops
from search.cli import run_main
from spaces import ArchConfig
from spaces.flops import count_flops, count_params, estimate_flops

# A config of about 2 GFLOPs (full attention, depth 4, width 384, seq_len 256, vocab 130).
TWO_GFLOP: dict[str, Any] = dict(
    vocab_size=130, seq_len=256, causal=True, depth=4, d_model=384, n_heads=6
)

REFERENCES = [
    ("full", {}),
    ("window", {"window": 64}),
    ("lsh", {"bucket_size": 64}),
    ("sparse", {"block": 32}),
    ("linear", {}),
    ("lowrank", {"rank": 64}),
    ("pooled", {"stride": 4}),
]


def main() -> None:
    cfg = ArchConfig(**TWO_GFLOP)
    count_flops(ArchConfig(vocab_size=10, seq_len=8, causal=True, depth=1, d_model=8, n_heads=1))
    start = time.perf_counter()
    flops = count_flops(cfg)
    cold = time.perf_counter() - start
    hits = []
    for _ in range(1000):
        start = time.perf_counter()
        count_flops(ArchConfig(**TWO_GFLOP))  # equal by value: served from the cache
        hits.append(time.perf_counter() - start)
    start = time.perf_counter()
    estimate = estimate_flops(cfg)
    formula = time.perf_counter() - start
    print(
        f"config: full attention, depth {cfg.depth}, width {cfg.d_model}, "
        f"seq_len {cfg.seq_len}: {format_flops(flops)} "
        f"(fvcore: 1 multiply-add = 1 FLOP); formula {format_flops(estimate)}"
    )
    print(f"count_flops, first call (one fvcore trace):  {cold * 1000:.0f} ms")
    print(f"count_flops, cache hit (median of 1000):     {statistics.median(hits) * 1e6:.1f} us")
    print(f"estimate_flops (closed form):                {formula * 1e6:.1f} us")

    print(
        "\nreference configs: depth 4, width 256, 4 heads, FFN 4x, seq_len 1024, vocab 256, "
        "causal LM (lowrank/pooled: bidirectional, 10 classes)"
    )
    print(f"{'variant':>8} {'params':>8} {'FLOPs':>14} {'attention kernel share':>24}")
    for variant, params in REFERENCES:
        from spaces import ATTENTION

        causal = ATTENTION.get(variant).supports_causal
        c = ArchConfig(
            vocab_size=256,
            seq_len=1024,
            causal=causal,
            num_classes=0 if causal else 10,
            attention=variant,
            attention_params=params,
            depth=4,
            d_model=256,
            n_heads=4,
        )
        n = count_flops(c)
        kernel = 4 * ATTENTION.get(variant).attention_flops(c.attention_params, 1024, 4, 64, causal)
        print(
            f"{variant:>8} {count_params(c) / 1e6:7.2f}M {format_flops(n):>14} {kernel / n:23.1%}"
        )


if __name__ == "__main__":
    run_main(main)
