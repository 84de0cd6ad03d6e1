"""Shared helpers for registry-driven tests: a small valid config for any variant."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from spaces import ATTENTION, ArchConfig
from spaces.attention.base import neg_inf


def small_params(variant: str, seq_len: int, **overrides):
    """The variant's defaults with its span shrunk so that it is non-trivial at `seq_len`."""
    cls = ATTENTION.get(variant)
    params = cls.Params()
    if cls.span_param is not None:
        span = 2 if cls.span_param == "stride" else max(2, seq_len // 4)
        params = dataclasses.replace(params, **{cls.span_param: span})
    return dataclasses.replace(params, **overrides)


def causal_variants() -> list[str]:
    return [n for n in ATTENTION.names() if ATTENTION.get(n).supports_causal]


def tiny_config(variant: str, causal: bool | None = None, **changes) -> ArchConfig:
    cls = ATTENTION.get(variant)
    causal = cls.supports_causal if causal is None else causal
    seq_len = changes.pop("seq_len", 16)
    base = dict(
        vocab_size=11,
        seq_len=seq_len,
        causal=causal,
        num_classes=0 if causal else 3,
        attention=variant,
        attention_params=small_params(variant, seq_len),
        depth=2,
        d_model=16,
        n_heads=2,
        ffn_mult=2.0,
    )
    base.update(changes)
    return ArchConfig(**base)


class MacCounter(TorchFunctionMode):
    """Counts the multiply-adds of every einsum / matmul a block of code executes (fvcore's
    convention, from operand shapes), the largest tensor it creates, and any other op that
    multiplies and adds (variants must route all such work through einsum / matmul)."""

    MATMULS = (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__)
    OTHER_MACS = (torch.bmm, torch.mm, torch.baddbmm, torch.addmm, F.linear, torch.tensordot)

    def __init__(self) -> None:
        super().__init__()
        self.macs, self.largest = 0, 0
        self.other: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.einsum:
            eq, *ops = args
            ops = ops[0] if len(ops) == 1 and isinstance(ops[0], (list, tuple)) else ops
            assert "..." not in eq
            sizes: dict[str, int] = {}
            for term, op in zip(eq.replace(" ", "").split("->")[0].split(","), ops):
                for letter, n in zip(term, op.shape):
                    sizes[letter] = max(sizes.get(letter, 1), n)
            self.macs += math.prod(sizes.values())
        elif func in self.MATMULS:
            self.macs += out.numel() * args[0].shape[-1]
        elif func in self.OTHER_MACS:
            self.other.append(func)
        if isinstance(out, torch.Tensor):
            self.largest = max(self.largest, out.numel())
        return out

    def __exit__(self, *exc):
        result = super().__exit__(*exc)
        assert not self.other, f"multiply-adds outside einsum/matmul: {self.other}"
        return result


# -- shared by the blocked-kernel equivalence tests (float64, dense references) ---------
H, D = 2, 4


def qkv(B: int, T: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(B, H, T, D, generator=g, dtype=torch.float64) for _ in range(3))


def padding_mask(B: int, T: int) -> torch.Tensor:
    """(B, T) bool: row b keeps its first T - 2b tokens (at least one)."""
    lengths = torch.tensor([max(1, T - 2 * b) for b in range(B)])
    return torch.arange(T)[None, :] < lengths[:, None]


def dense_reference(q, k, v, allow, key_mask):
    """Naive O(T^2) softmax attention with an explicit (T, T) mask."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    ok = allow[None, None]
    if key_mask is not None:
        ok = ok & key_mask[:, None, None, :]
    return scores.masked_fill(~ok, neg_inf(q.dtype)).softmax(-1) @ v


def assert_real_rows_close(out, ref, key_mask, tol=1e-9):
    """Compare only queries at real positions (padded queries may be anything finite)."""
    assert torch.isfinite(out).all()
    if key_mask is None:
        torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    else:
        rows = key_mask[:, None, :, None].expand_as(out)
        torch.testing.assert_close(out[rows], ref[rows], atol=tol, rtol=tol)
