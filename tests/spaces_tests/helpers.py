"""Shared helpers for registry-driven tests: a small valid config for any variant."""

from __future__ import annotations

import dataclasses

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
