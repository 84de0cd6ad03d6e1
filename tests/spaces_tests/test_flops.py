"""count_flops: fvcore on the real module, with handles we trust, checked against formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from fvcore.nn import FlopCountAnalysis
from torch import nn

from spaces import ATTENTION, ArchConfig, flops
from spaces.flops import (
    ELEMENTWISE_OPS,
    HANDLES,
    TRAIN_FLOPS_FACTOR,
    count_flops,
    count_params,
    estimate_flops,
    estimate_params,
    flop_breakdown,
    sequences_for_compute,
    training_flops_per_sequence,
    unsupported_ops,
)
from tests.spaces_tests.helpers import small_params

VARIANTS = ATTENTION.names()


def _grid(variant: str) -> list[ArchConfig]:
    cls = ATTENTION.get(variant)
    configs = []
    for seq_len, depth, d_model, heads in [(64, 1, 32, 2), (100, 2, 48, 3), (256, 3, 64, 4)]:
        for causal in (True, False):
            if (causal and not cls.supports_causal) or (
                not causal and not cls.supports_bidirectional
            ):
                continue
            for shrink in (2, 8):
                params = small_params(variant, seq_len)
                if cls.span_param and cls.span_param != "stride":
                    params = type(params)(**{**params.__dict__, cls.span_param: seq_len // shrink})
                configs.append(
                    ArchConfig(
                        vocab_size=37,
                        seq_len=seq_len,
                        causal=causal,
                        num_classes=0 if causal else 5,
                        attention=variant,
                        attention_params=params,
                        depth=depth,
                        d_model=d_model,
                        n_heads=heads,
                        ffn_mult=2.0,
                    )
                )
    return configs


@pytest.mark.parametrize("variant", VARIANTS)
def test_counted_flops_match_the_formula_over_a_grid(variant):
    for cfg in _grid(variant):
        counted, formula = count_flops(cfg), estimate_flops(cfg)
        assert counted == formula, (cfg.to_json(None), counted, formula)


@pytest.mark.parametrize("variant", VARIANTS)
def test_params_formula_matches_the_built_model(variant):
    for cfg in _grid(variant):
        for shared in (0, 1):
            c = cfg.replace(unique_blocks=shared)
            assert estimate_params(c) == count_params(c), c.to_json(None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_arithmetic_op_is_left_uncounted(variant):
    for cfg in _grid(variant)[:2]:
        leftover = set(unsupported_ops(cfg)) - ELEMENTWISE_OPS
        assert not leftover, f"{variant}: fvcore counted these as zero: {leftover}"


def test_tiny_full_attention_model_exact_count():
    cfg = ArchConfig(
        vocab_size=10, seq_len=4, causal=True, depth=1, d_model=8, n_heads=2, ffn_mult=2.0
    )
    T, d, f, V = 4, 8, 16, 10
    projections = 4 * T * d * d  # q, k, v, o: 1024
    attention = 2 * T * T * d  # q @ k^T and p @ v over all heads: 256
    ffn = 2 * T * d * f  # 1024
    norms = 3 * 5 * T * d  # two block LayerNorms + the final one, 5 per element: 480
    head = T * d * V  # tied LM head: 320
    assert count_flops(cfg) == projections + attention + ffn + norms + head == 3104
    # embeddings 80 + attention 4 * (64 + 8) + FFN (128+16) + (128+8) + 3 norms (rotary
    # positions have no weights; a learned table adds seq_len x d_model = 32)
    assert count_params(cfg) == 80 + 288 + 280 + 48 == 696
    assert count_params(cfg.replace(positions="learned")) == 696 + 32


def test_tiny_window_model_exact_count():
    cfg = ArchConfig(
        vocab_size=10,
        seq_len=8,
        causal=False,
        num_classes=3,
        attention="window",
        attention_params={"window": 2},
        depth=1,
        d_model=8,
        n_heads=2,
        ffn_mult=1.0,
    )
    T, d = 8, 8
    linear_parts = 4 * T * d * d + 2 * T * d * d + 3 * 5 * T * d + d * 3  # proj, FFN, norms, head
    kernel = ATTENTION.get("window").attention_flops(cfg.attention_params, T, 2, 4, False)
    assert count_flops(cfg) == linear_parts + kernel
    assert flop_breakdown(cfg)["attention_kernel"] == kernel


def test_sdpa_einsum_and_broadcast_matmul_handles_are_exact():
    class Ops(nn.Module):
        def forward(self, q, k, e):
            a = F.scaled_dot_product_attention(q, k, k, is_causal=True)  # 2*3*5*7*(4+4)
            b = torch.einsum("bhqd,bhkd->bhqk", q, k)  # 2*3*5*7*4
            c = torch.matmul(e, k)  # (6,7) @ (2,3,7,4): 2*3*6*7*4
            return a.sum() + b.sum() + c.sum()

    q, k, e = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4), torch.randn(6, 7)
    fca = FlopCountAnalysis(Ops(), (q, k, e)).set_op_handle(**HANDLES)
    fca.unsupported_ops_warnings(False)
    assert fca.total() == 2 * 3 * 5 * 7 * 8 + 2 * 3 * 5 * 7 * 4 + 2 * 3 * 6 * 7 * 4


def _kernel(variant: str, seq_len: int, span: int | None, causal: bool) -> int:
    cls = ATTENTION.get(variant)
    params = cls.Params()
    if cls.span_param and span is not None:
        params = type(params)(**{**params.__dict__, cls.span_param: span})
    cfg = ArchConfig(
        vocab_size=16,
        seq_len=seq_len,
        causal=causal,
        attention=variant,
        num_classes=0 if causal else 2,
        attention_params=params,
        depth=1,
        d_model=64,
        n_heads=2,
        ffn_mult=1.0,
    )
    return flop_breakdown(cfg)["attention_kernel"]


def test_counts_order_as_theory_says_at_4096():
    base = dict(vocab_size=16, seq_len=4096, causal=True, depth=1, d_model=64, n_heads=2)
    n, d, w = 4096, 64, 256
    full = count_flops(ArchConfig(**base))
    window = count_flops(ArchConfig(**base, attention="window", attention_params={"window": w}))
    # everything but the kernel is the same; full: Q K^T and A V over n x n (SDPA is counted
    # whole, causal or not); window: each chunk of w queries against 2w keys (the chunk and the
    # one before it)
    assert full - window == 2 * n * d * n - 2 * n * d * 2 * w


@pytest.mark.parametrize(
    "variant, span, causal",
    [
        ("full", None, True),
        ("window", 128, True),
        ("lsh", 128, True),
        ("sparse", 128, True),
        ("linear", None, True),
        ("lowrank", 128, False),
        ("pooled", 4, False),
    ],
)
def test_attention_part_scales_as_theory_says(variant, span, causal):
    small, large = _kernel(variant, 1024, span, causal), _kernel(variant, 4096, span, causal)
    ratio = large / small
    if variant in ("full", "pooled"):  # quadratic (pooled: n * n/s)
        assert ratio == 16.0
    elif variant in ("window", "linear", "lowrank"):  # linear in n, exactly
        assert ratio == 4.0
    else:  # linear in n plus terms that grow slower: LSH's sort and hashing, sparse's blocks
        assert 3.5 <= ratio <= 4.5, ratio


def test_cache_returns_the_same_count_without_a_second_trace():
    cfg = ArchConfig(
        vocab_size=50,
        seq_len=128,
        causal=True,
        depth=2,
        d_model=64,
        n_heads=2,
        attention="window",
        attention_params={"window": 16},
    )
    first = count_flops(cfg)
    hits = flops._count_canonical.cache_info().hits
    again = count_flops(ArchConfig.from_json(cfg.to_json()))
    assert again == first
    assert flops._count_canonical.cache_info().hits >= hits + 1  # an equal config: no new trace


def test_training_compute_helpers():
    cfg = ArchConfig(
        vocab_size=10, seq_len=4, causal=True, depth=1, d_model=8, n_heads=2, ffn_mult=2.0
    )
    assert TRAIN_FLOPS_FACTOR == 3
    assert training_flops_per_sequence(cfg) == 3 * 3104
    assert sequences_for_compute(cfg, 10 * 3 * 3104 + 5) == 10
    assert sequences_for_compute(cfg, 1) == 1


def test_params_ignore_sharing_duplicates():
    base = dict(vocab_size=10, seq_len=8, causal=True, depth=4, d_model=16, n_heads=2)
    assert count_params(ArchConfig(**base, unique_blocks=1)) < count_params(ArchConfig(**base))
    assert count_flops(ArchConfig(**base, unique_blocks=1)) == count_flops(ArchConfig(**base))
