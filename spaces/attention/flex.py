"""The masked variants through PyTorch's FlexAttention on CUDA: empty blocks are skipped.

Window (Longformer) and block-sparse attention are mask patterns over the full score grid. On a
CUDA device their `attend` hands the pattern to `torch.nn.attention.flex_attention` as a
`mask_mod` (query i may see key j): `create_block_mask` marks which (128 x 128) tiles hold any
allowed pair, and the compiled kernel skips the empty ones, fused, forward and backward. On the
CPU the blocked einsum kernels stay: FlexAttention has no CPU backward.

FLOP convention (decided: one convention, the CPU kernel's): `count_flops` counts what the CPU
kernel computes, padded blocks included, whatever the device. The CUDA kernel computes every
128 x 128 tile that holds an allowed pair, which is more than that count for narrow patterns
(a 16-token window still costs three 128-key tiles per query tile) and less for wide ones;
the budget a search enforces is the device-independent count. The tile count FlexAttention
computes was not measured. Measured on an H200 (docs/results.md 0e): forward and gradients match
the einsum kernels; at 4K-16K tokens a window or sparse call costs ~3 ms whatever the length (a
fixed per-call cost), so they beat flash attention 8.5x / 6.9x only at 64K.

`ATTNSEARCH_FLEX=0` turns the CUDA path off (the einsum kernels then run on CUDA too).
tests/spaces_tests/test_flex.py checks on the CPU (forward only, where FlexAttention runs
eagerly) that each pattern gives the einsum kernel's output, padding included.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from types import ModuleType

import torch

# allowed(q_idx, kv_idx) -> bool tensor: the variant's pattern (before key padding)
Pattern = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_FLEX: ModuleType | None
try:
    from torch.nn.attention import flex_attention as _FLEX
except ImportError:  # torch < 2.5
    _FLEX = None

MIN_HEAD_DIM = 16  # the compiled kernel's minimum (tl.dot); smaller heads keep the einsum kernel
RECOMPILE_LIMIT = 256  # distinct (batch, heads, length, head dim) shapes one process compiles


def available() -> bool:
    """Whether this torch has FlexAttention and it is not turned off (ATTNSEARCH_FLEX=0)."""
    return os.environ.get("ATTNSEARCH_FLEX", "1") != "0" and _FLEX is not None


def use_flex(q: torch.Tensor) -> bool:
    """The CUDA path: q on a CUDA device, a head dim the compiled kernel takes (>= 16; below
    it inductor raises NYI, seen on an H200 with torch 2.11) and FlexAttention available."""
    return q.is_cuda and q.shape[-1] >= MIN_HEAD_DIM and available()


@functools.cache
def _compiled() -> Callable:
    """flex_attention compiled once per shape. A search worker meets a new shape with nearly
    every candidate; past dynamo's default of 8 recompiles it would silently run FlexAttention
    eagerly (the whole score matrix), so the limit is raised."""
    assert _FLEX is not None
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.6
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    return torch.compile(_FLEX.flex_attention, dynamic=False)


def _kernel(q: torch.Tensor) -> Callable:
    """The compiled kernel on CUDA; the plain function inside an outer torch.compile (which
    compiles it with the model) and on the CPU (eager, forward only)."""
    assert _FLEX is not None
    if q.is_cuda and not torch.compiler.is_compiling():
        return _compiled()
    return _FLEX.flex_attention


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: Callable[[], Pattern],
    key_mask: torch.Tensor | None,
    masks: dict | None = None,
) -> torch.Tensor:
    """q, k, v (B, H, T, D) -> (B, H, T, D), attending where `pattern()` allows and the key is
    real. `pattern` is only called when a block mask is built.

    `masks` caches the block mask of a padding-free call per (length, device), so a training
    loop builds it (and the pattern) once; a call with `key_mask` builds its own (the padding
    varies by batch). Compiled on CUDA, eager elsewhere (forward only on the CPU)."""
    flex = _FLEX
    assert flex is not None, "FlexAttention needs torch >= 2.5"
    B, _, T, _ = q.shape
    if key_mask is None:
        key = (T, str(q.device))
        block = masks.get(key) if masks is not None else None
        if block is None:
            allowed = pattern()
            block = flex.create_block_mask(
                lambda b, h, qi, kv: allowed(qi, kv), None, None, T, T, device=q.device
            )
            if masks is not None:
                masks[key] = block
    else:
        allowed, real = pattern(), key_mask.to(device=q.device, dtype=torch.bool)
        block = flex.create_block_mask(
            lambda b, h, qi, kv: allowed(qi, kv) & real[b, kv], B, None, T, T, device=q.device
        )
    return _kernel(q)(q, k, v, block_mask=block)


__all__ = ["MIN_HEAD_DIM", "Pattern", "attend", "available", "use_flex"]
