"""Hand baselines: the plainest model an engineer would train at a FLOP budget.

Full softmax attention, a fixed head dimension (32 or 64), FFN 4x, and the largest shape (most
forward FLOPs, fvcore convention) that fits the budget; ties go to the shallower model. The
search must beat these to be worth running; `search.plan` also uses one to measure throughput.
"""

from __future__ import annotations

from typing import Any

from spaces.config import ArchConfig
from spaces.flops import estimate_flops
from spaces.layers import pattern_layers

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
    return _largest(interface, budget, head_dim, ffn_mult, "full", {}, lambda depth: None, 1)


def largest_of(
    interface: dict[str, Any],
    budget: float,
    attention: str,
    params: dict[str, Any] | None = None,
    head_dim: int = 64,
    ffn_mult: float = 4.0,
) -> ArchConfig:
    """The same rule for any variant: the most forward FLOPs of `attention` (with `params`)
    not above `budget` (e.g. budget-sized window or linear models for a throughput benchmark)."""
    return _largest(
        interface, budget, head_dim, ffn_mult, attention, params or {}, lambda depth: None, 1
    )


def largest_any_head_dim(
    interface: dict[str, Any],
    budget: float,
    attention: str = "full",
    params: dict[str, Any] | None = None,
    head_dims: tuple[int, ...] = (64, 32, 16, 8),
) -> ArchConfig:
    """`largest_of` with the first head dim in `head_dims` that fits at all: small budgets at
    long sequences fit no head of 64 (e.g. full attention at 0.5 GFLOPs and 2048 tokens)."""
    for head_dim in head_dims[:-1]:
        try:
            return largest_of(interface, budget, attention, params, head_dim=head_dim)
        except ValueError:
            continue
    return largest_of(interface, budget, attention, params, head_dim=head_dims[-1])


def largest_hybrid(
    interface: dict[str, Any],
    budget: float,
    window: int,
    head_dim: int = 32,
    ffn_mult: float = 4.0,
    local_per_global: int = 5,
) -> ArchConfig:
    """Gemma's local:global stack as a hand baseline: sliding-window layers of `window` with one
    full-attention layer after every `local_per_global` (spread placement, ending with a global
    layer, at least one), the largest (at least 2 layers) that fits `budget`."""

    def layers(depth: int) -> list:
        k = max(1, depth // (local_per_global + 1))
        where = set(pattern_layers(depth, "spread", k))
        return [{"attention": "full"} if i in where else None for i in range(depth)]

    params = {"window": window}
    return _largest(interface, budget, head_dim, ffn_mult, "window", params, layers, 2)


def _largest(interface, budget, head_dim, ffn_mult, attention, params, layers, min_depth):
    best: tuple[int, int, ArchConfig] | None = None
    for heads in range(1, MAX_HEADS + 1):
        for depth in range(min_depth, MAX_DEPTH + 1):
            cfg = ArchConfig(
                vocab_size=interface["vocab_size"],
                seq_len=interface["seq_len"],
                causal=interface["causal"],
                num_classes=interface.get("num_classes", 0),
                attention=attention,
                attention_params=params,
                depth=depth,
                d_model=heads * head_dim,
                n_heads=heads,
                ffn_mult=ffn_mult,
                layer_attention=layers(depth),
            )
            flops = estimate_flops(cfg)
            if flops > budget:
                break  # deeper only costs more
            key = (flops, -depth)
            if best is None or key > best[:2]:
                best = (flops, -depth, cfg)
    if best is None:
        raise ValueError(
            f"no {attention} model with head dim {head_dim} fits {budget:,.0f} FLOPs "
            f"at seq_len {interface['seq_len']}"
        )
    return best[2]


__all__ = ["largest_any_head_dim", "largest_full", "largest_hybrid", "largest_of"]
