"""Hand baselines: the plainest model an engineer would train at a FLOP budget.

Full softmax attention, a fixed head dimension (32 or 64), FFN 4x, and the largest shape (most
forward FLOPs, fvcore convention) that fits the budget; ties go to the shallower model. The
search must beat these to be worth running; `search.plan` also uses one to measure throughput.
"""

from __future__ import annotations

from typing import Any

from spaces.config import ArchConfig
from spaces.flops import estimate_flops

MAX_DEPTH = 48
MAX_HEADS = 32


def largest_full(
    interface: dict[str, Any],
    budget: float,
    head_dim: int = 64,
    ffn_mult: float = 4.0,
) -> ArchConfig:
    """The full-attention config with the most forward FLOPs not above `budget`.

    Width is heads x `head_dim` (1..MAX_HEADS heads), depth 1..MAX_DEPTH. ValueError if even
    one layer of one head does not fit.
    """
    best: tuple[int, int, ArchConfig] | None = None
    for heads in range(1, MAX_HEADS + 1):
        for depth in range(1, MAX_DEPTH + 1):
            cfg = ArchConfig(
                vocab_size=interface["vocab_size"],
                seq_len=interface["seq_len"],
                causal=interface["causal"],
                num_classes=interface.get("num_classes", 0),
                attention="full",
                depth=depth,
                d_model=heads * head_dim,
                n_heads=heads,
                ffn_mult=ffn_mult,
            )
            flops = estimate_flops(cfg)
            if flops > budget:
                break  # deeper only costs more
            key = (flops, -depth)
            if best is None or key > best[:2]:
                best = (flops, -depth, cfg)
    if best is None:
        raise ValueError(
            f"no full-attention model with head dim {head_dim} fits {budget:,.0f} FLOPs "
            f"at seq_len {interface['seq_len']}"
        )
    return best[2]


__all__ = ["largest_full"]
