"""Sliding-window attention (Longformer) against a dense masked reference."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from spaces.attention.base import ATTENTION
from spaces.attention.window import WindowAttention, WindowParams
from tests.spaces_tests.helpers import (
    D,
    H,
    MacCounter,
    assert_real_rows_close,
    dense_reference,
    padding_mask,
    qkv,
)


def window_allow(T: int, w: int, g: int, causal: bool) -> torch.Tensor:
    """(T, T) bool, built explicitly: query i may see key j."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    allow = ((j <= i) & (j >= i - w)) if causal else (i - j).abs() <= w
    return allow | (i < g) | (j < g)


def make(T: int, window: int, g: int = 0) -> WindowAttention:
    return WindowAttention(H * D, H, T, WindowParams(window=window, global_tokens=g))


def count_macs(module, B, T, causal, key_mask=None) -> int:
    q, k, v = qkv(B, T)
    with torch.no_grad(), MacCounter() as counter:
        module.attend(q, k, v, key_mask, causal)
    assert counter.other == [], "multiply-adds outside einsum/matmul"
    return counter.macs


# -- equivalence -------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("T,window", [(7, 7), (13, 13), (10, 25), (1, 1)])
def test_window_at_least_T_is_full_attention(causal, masked, T, window):
    B = 3
    q, k, v = qkv(B, T)
    key_mask = padding_mask(B, T) if masked else None
    out = make(T, window).attend(q, k, v, key_mask, causal)
    full = torch.ones(T, T, dtype=torch.bool)
    if causal:
        full = full.tril()
    assert_real_rows_close(out, dense_reference(q, k, v, full, key_mask), key_mask)
    if not masked:
        sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.testing.assert_close(out, sdpa, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize(
    "T,window,g,causal",
    [
        (16, 4, 0, False),
        (17, 4, 0, True),
        (23, 5, 0, False),
        (23, 5, 0, True),
        (9, 1, 0, True),
        (31, 3, 2, False),
        (12, 4, 5, False),
        (20, 6, 1, False),
        (11, 2, 10, False),
    ],
)
def test_matches_dense_masked_reference(T, window, g, causal):
    B = 3
    q, k, v = qkv(B, T, seed=T + window)
    key_mask = padding_mask(B, T)
    out = make(T, window, g).attend(q, k, v, key_mask, causal)
    ref = dense_reference(q, k, v, window_allow(T, window, g, causal), key_mask)
    assert_real_rows_close(out, ref, key_mask)


@settings(max_examples=25, deadline=None)
@given(
    T=st.integers(1, 40),
    window=st.integers(1, 40),
    g=st.integers(0, 5),
    causal=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_property_matches_dense_reference(T, window, g, causal, seed):
    window, g = min(window, T), 0 if causal else min(g, T - 1)
    q, k, v = qkv(2, T, seed=seed)
    key_mask = padding_mask(2, T)
    out = make(T, window, g).attend(q, k, v, key_mask, causal)
    ref = dense_reference(q, k, v, window_allow(T, window, g, causal), key_mask)
    assert_real_rows_close(out, ref, key_mask)


def test_causal_future_tokens_do_not_change_the_past():
    T, t = 19, 8
    torch.manual_seed(0)
    m = make(T, 3).double()
    x = torch.randn(2, T, H * D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn(2, T - t - 1, H * D, dtype=torch.float64)
    y, y2 = m(x, causal=True), m(x2, causal=True)
    torch.testing.assert_close(y[:, : t + 1], y2[:, : t + 1], atol=0, rtol=0)
    assert not torch.allclose(y[:, t + 1 :], y2[:, t + 1 :])


def test_padding_keys_get_zero_weight():
    """Changing the content of padded positions leaves real positions unchanged."""
    T = 14
    q, k, v = qkv(2, T)
    key_mask = padding_mask(2, T)
    m = make(T, 3, 2)
    out = m.attend(q, k, v, key_mask, False)
    k2, v2 = k.clone(), v.clone()
    pad = ~key_mask[:, None, :, None].expand_as(k)
    k2[pad], v2[pad] = 1e3, -1e3
    out2 = m.attend(q, k2, v2, key_mask, False)
    rows = key_mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[rows], out2[rows], atol=0, rtol=0)


@pytest.mark.parametrize("causal,g", [(False, 0), (False, 3), (True, 0)])
def test_gradients_finite_even_with_fully_masked_rows(causal, g):
    T = 21
    torch.manual_seed(1)
    m = make(T, 4, g).double()
    x = torch.randn(3, T, H * D, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(3, T)
    mask[2] = False  # a row with no visible key at all
    y = m(x, mask, causal=causal)
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_other_dtypes(dtype, atol):
    """float32 and bfloat16 give the float64 result to their precision, fully masked rows
    included."""
    T = 33
    q64, k64, v64 = qkv(2, T)
    key_mask = padding_mask(2, T)
    key_mask[1] = False
    attn = make(T, 8, 2)
    reference = attn.attend(q64, k64, v64, key_mask, False)
    out = attn.attend(q64.to(dtype), k64.to(dtype), v64.to(dtype), key_mask, False)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), reference, atol=atol, rtol=0)


# -- contract ----------------------------------------------------------------------------
def test_registered_and_declared():
    assert ATTENTION.get("window") is WindowAttention
    fields = {f.name for f in WindowAttention.Params.__dataclass_fields__.values()}
    assert WindowAttention.span_param in fields
    assert set(WindowAttention.search_choices) <= fields
    assert WindowParams() == WindowParams(window=128, global_tokens=0)


@pytest.mark.parametrize(
    "params,causal,field",
    [
        (WindowParams(window=0), False, "attention.window"),
        (WindowParams(window=65), False, "attention.window"),
        (WindowParams(window=2.5), False, "attention.window"),
        (WindowParams(8, global_tokens=-1), False, "attention.global_tokens"),
        (WindowParams(8, global_tokens=64), False, "attention.global_tokens"),
        (WindowParams(8, global_tokens=2), True, "attention.global_tokens"),
    ],
)
def test_validate_names_the_field(params, causal, field):
    with pytest.raises(ValueError, match=re.escape(field)) as err:
        WindowAttention.validate(params, 64, causal)
    assert "e.g." in str(err.value)


def test_validate_accepts_good_params():
    WindowAttention.validate(WindowParams(window=64, global_tokens=63), 64, False)
    WindowAttention.validate(WindowParams(window=1), 64, True)


def test_causal_attend_rejects_global_tokens():
    q, k, v = qkv(1, 8)
    with pytest.raises(ValueError, match=r"attention\.global_tokens"):
        make(8, 2, 1).attend(q, k, v, None, True)


# -- flops -------------------------------------------------------------------------------
def test_attention_flops_hand_computed():
    # T=10, w=4 -> nb=3 blocks of 4 (2 padded rows), H=2, D=3.
    # bidirectional band: 3 blocks * 4 queries * 12 keys * 3 dims, twice (qk, pv) = 864 / head
    assert WindowAttention.attention_flops(WindowParams(4, 0), 10, 2, 3, False) == 2 * 864
    # causal band: 3 * 4 * 8 keys * 3 * 2 = 576 / head
    assert WindowAttention.attention_flops(WindowParams(4, 0), 10, 2, 3, True) == 2 * 576
    # g=2: + global columns 3*4*2*3*2 = 144 + global rows 2*10*3*2 = 120 -> 1128 / head
    assert WindowAttention.attention_flops(WindowParams(4, 2), 10, 2, 3, False) == 2 * 1128


@pytest.mark.parametrize(
    "T,window,g,causal",
    [(10, 4, 0, False), (10, 4, 2, False), (10, 4, 0, True), (16, 16, 0, False), (37, 5, 3, False)],
)
def test_attention_flops_equals_counted_macs(T, window, g, causal):
    B = 2  # attention_flops is per sequence
    counted = count_macs(make(T, window, g), B, T, causal, padding_mask(B, T))
    assert counted == B * WindowAttention.attention_flops(WindowParams(window, g), T, H, D, causal)


def test_flops_far_below_full_at_long_length():
    full = 2 * 4 * 16384 * 16384 * 64
    assert WindowAttention.attention_flops(WindowParams(128), 16384, 4, 64, False) * 20 < full
