"""Shared helpers for registry-driven tests: a small valid config for any variant."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from spaces import ATTENTION, ArchConfig


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
