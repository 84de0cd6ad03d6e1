"""Block-sparse attention (BigBird / Sparse Transformer) against dense masked references."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from spaces.attention.base import ATTENTION
from spaces.attention.sparse import SparseAttention, SparseParams, block_layout
from tests.spaces_tests.helpers import (
    D,
    H,
    MacCounter,
    assert_real_rows_close,
    dense_reference,
    padding_mask,
    qkv,
)


def make(T: int, **kw) -> SparseAttention:
    return SparseAttention(H * D, H, T, SparseParams(**kw))


# -- equivalence -------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "T,kw",
    [
        (13, dict(block=4, local_blocks=4, global_blocks=0)),
        (13, dict(block=4, local_blocks=3, global_blocks=1, random_blocks=2)),
        (16, dict(block=4, local_blocks=9, global_blocks=2)),
        (9, dict(block=9, local_blocks=0, global_blocks=0)),
        (7, dict(block=2, local_blocks=0, global_blocks=4)),  # every query block global
    ],
)
def test_every_block_visible_is_full_attention(causal, T, kw):
    B = 3
    q, k, v = qkv(B, T, seed=T)
    key_mask = padding_mask(B, T)
    m = make(T, **kw)
    assert m.dense_mask(T, causal).equal(
        torch.ones(T, T, dtype=torch.bool).tril() if causal else torch.ones(T, T, dtype=torch.bool)
    )
    out = m.attend(q, k, v, key_mask, causal)
    full = torch.ones(T, T, dtype=torch.bool)
    assert_real_rows_close(
        out, dense_reference(q, k, v, full.tril() if causal else full, key_mask), key_mask
    )
    sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(m.attend(q, k, v, None, causal), sdpa, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "T,kw",
    [
        (40, dict(block=4, local_blocks=1, global_blocks=1, random_blocks=2, seed=3)),
        (37, dict(block=3, local_blocks=0, global_blocks=2, random_blocks=1)),
        (30, dict(block=5, local_blocks=1, global_blocks=0, random_blocks=0)),
        (29, dict(block=2, local_blocks=2, global_blocks=0, random_blocks=3, seed=11)),
    ],
)
def test_matches_dense_reference_from_layout(causal, T, kw):
    B = 3
    m = make(T, **kw)
    allow = m.dense_mask(T, causal)
    assert not allow.all() and allow.diagonal().all()  # a non-trivial pattern
    if causal:
        assert not allow.triu(1).any()
    q, k, v = qkv(B, T, seed=T)
    key_mask = padding_mask(B, T)
    out = m.attend(q, k, v, key_mask, causal)
    assert_real_rows_close(out, dense_reference(q, k, v, allow, key_mask), key_mask)


def test_shorter_input_than_construction_length():
    m = make(40, block=4, local_blocks=1, global_blocks=1, random_blocks=2)
    T = 21
    q, k, v = qkv(2, T)
    key_mask = padding_mask(2, T)
    out = m.attend(q, k, v, key_mask, False)
    assert_real_rows_close(
        out, dense_reference(q, k, v, m.dense_mask(T, False), key_mask), key_mask
    )


# -- causality, gradients, masks ----------------------------------------------------------
@pytest.mark.parametrize(
    "kw", [dict(block=4, global_blocks=1, random_blocks=2), dict(block=3, global_blocks=0)]
)
def test_causal_no_backward_flow_from_the_future(kw):
    T, t = 23, 9
    q, k, v = (x.requires_grad_() for x in qkv(2, T))
    out = make(T, **kw).attend(q, k, v, padding_mask(2, T), True)
    out[:, :, : t + 1].sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
        assert (x.grad[:, :, t + 1 :] == 0).all()
        assert x.grad[:, :, : t + 1].abs().sum() > 0


def test_padding_keys_get_zero_weight():
    T = 26
    m = make(T, block=4, global_blocks=1, random_blocks=2)
    q, k, v = qkv(2, T)
    key_mask = padding_mask(2, T)
    out = m.attend(q, k, v, key_mask, False)
    k2, v2 = k.clone(), v.clone()
    pad = ~key_mask[:, None, :, None].expand_as(k)
    k2[pad], v2[pad] = 1e3, -1e3
    rows = key_mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(
        out[rows], m.attend(q, k2, v2, key_mask, False)[rows], atol=0, rtol=0
    )


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_finite_even_with_fully_masked_rows(causal):
    T = 22
    torch.manual_seed(0)
    m = make(T, block=4, global_blocks=1, random_blocks=1).double()
    x = torch.randn(3, T, H * D, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(3, T)
    mask[2] = False
    y = m(x, mask, causal=causal)
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_float32_gives_the_float64_result():
    T = 30
    q, k, v = qkv(2, T)
    attn = make(T, block=8, random_blocks=1)
    reference = attn.attend(q, k, v, padding_mask(2, T), True)
    out = attn.attend(q.float(), k.float(), v.float(), padding_mask(2, T), True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference, atol=1e-5, rtol=0)


# -- the random layout ---------------------------------------------------------------------
def test_random_layout_is_deterministic_and_a_buffer():
    kw = dict(block=4, local_blocks=1, global_blocks=1, random_blocks=2, seed=5)
    a, b = make(64, **kw), make(64, **kw)
    assert a.layout_bidirectional.equal(b.layout_bidirectional)
    assert a.layout_causal.equal(b.layout_causal)
    assert a.layout_bidirectional.equal(block_layout(SparseParams(**kw), 16, False))
    other = make(64, **{**kw, "seed": 6})
    assert not other.layout_bidirectional.equal(a.layout_bidirectional)
    buffers = dict(a.named_buffers())
    assert {"layout_bidirectional", "layout_causal"} <= set(buffers)
    assert "layout_causal" not in a.state_dict()  # non-persistent: rebuilt from the seed
    assert a.double().layout_causal.dtype == torch.long


@pytest.mark.parametrize("causal", [False, True])
def test_random_blocks_are_new_and_causal_ones_in_the_past(causal):
    p = SparseParams(block=4, local_blocks=1, global_blocks=1, random_blocks=2, seed=1)
    nb = 16
    lay = block_layout(p, nb, causal)  # rows are query blocks 1..15
    base = block_layout(SparseParams(block=4, local_blocks=1, global_blocks=1), nb, causal)
    for row, (ids, fixed) in enumerate(zip(lay.tolist(), base.tolist())):
        i = row + 1
        real = [j for j in ids if j < nb]
        fixed = {j for j in fixed if j < nb}
        assert len(real) == len(set(real)) and fixed <= set(real)
        extra = set(real) - fixed
        free = [j for j in range(nb) if j not in fixed and (j < i or not causal)]
        assert len(extra) == min(2, len(free))
        if causal:
            assert all(j <= i for j in real)


# -- contract --------------------------------------------------------------------------------
def test_registered_and_declared():
    assert ATTENTION.get("sparse") is SparseAttention
    fields = set(SparseAttention.Params.__dataclass_fields__)
    assert SparseAttention.span_param in fields
    assert set(SparseAttention.search_choices) <= fields


@pytest.mark.parametrize(
    "kw,field",
    [
        (dict(block=0), "attention.block"),
        (dict(block=65), "attention.block"),
        (dict(block=8, local_blocks=-1), "attention.local_blocks"),
        (dict(block=8, global_blocks=-2), "attention.global_blocks"),
        (dict(block=8, random_blocks=1.5), "attention.random_blocks"),
        (dict(block=8, seed=-1), "attention.seed"),
    ],
)
def test_validate_names_the_field(kw, field):
    with pytest.raises(ValueError, match=re.escape(field)) as err:
        SparseAttention.validate(SparseParams(**kw), 64, False)
    assert "e.g." in str(err.value)
    SparseAttention.validate(SparseParams(block=64, local_blocks=0, global_blocks=0), 64, True)


# -- flops -----------------------------------------------------------------------------------
def test_attention_flops_hand_computed():
    # T=10, b=4 -> nb=3 (2 padded rows); H=2, D=3; local 0, global 1, random 0.
    # Query blocks 1, 2 see own + block 0: K=2 -> 2 blocks * 4 q * 8 k * 3 d * 2 (qk, pv) = 384
    # global rows: 4 queries * 10 keys * 3 d * 2 = 240 -> 624 per head, 2 heads
    p = SparseParams(block=4, local_blocks=0, global_blocks=1, random_blocks=0)
    assert SparseAttention.attention_flops(p, 10, 2, 3, False) == 2 * 624
    assert SparseAttention.attention_flops(p, 10, 2, 3, True) == 2 * 624  # same work, masked
    # local 1, no global: K=3 -> 3 blocks * 4 * 12 * 3 * 2 = 864 per head
    p = SparseParams(block=4, local_blocks=1, global_blocks=0)
    assert SparseAttention.attention_flops(p, 10, 2, 3, False) == 2 * 864
    assert SparseAttention.attention_flops(p, 10, 2, 3, True) == 2 * 576  # K=2 causal


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "T,kw",
    [
        (10, dict(block=4, local_blocks=0, global_blocks=1)),
        (41, dict(block=4, local_blocks=1, global_blocks=1, random_blocks=2)),
        (33, dict(block=5, local_blocks=2, global_blocks=0, random_blocks=1, seed=9)),
        (12, dict(block=3, local_blocks=0, global_blocks=9)),
    ],
)
def test_attention_flops_equals_counted_macs(causal, T, kw):
    B = 2
    q, k, v = qkv(B, T)
    m = make(T, **kw)
    with torch.no_grad(), MacCounter() as counter:
        m.attend(q, k, v, padding_mask(B, T), causal)
    assert counter.other == [], "multiply-adds outside einsum/matmul"
    assert counter.macs == B * SparseAttention.attention_flops(SparseParams(**kw), T, H, D, causal)
