"""Equivalences with full attention where theory says so (float64, 1e-6 or tighter)."""

from __future__ import annotations

import torch

from spaces import ATTENTION
from spaces.attention.lowrank import LowRankParams
from spaces.attention.pooled import PooledParams

T, C, H = 12, 16, 4


def _pair(variant, params):
    torch.manual_seed(0)
    attn = ATTENTION.get(variant)(C, H, T, params).double()
    full = ATTENTION.get("full")(C, H, T).double()
    full.load_state_dict(attn.state_dict(), strict=False)
    return attn, full


def test_lowrank_with_identity_projections_equals_full():
    attn, full = _pair("lowrank", LowRankParams(rank=T))
    with torch.no_grad():
        attn.proj_k.copy_(torch.eye(T))
        attn.proj_v.copy_(torch.eye(T))
    x = torch.randn(3, T, C, dtype=torch.float64)
    torch.testing.assert_close(attn(x), full(x), rtol=0, atol=1e-12)
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[0, 7:] = False
    torch.testing.assert_close(attn(x, mask)[mask], full(x, mask)[mask], rtol=0, atol=1e-12)


def test_pooled_with_stride_one_equals_full():
    attn, full = _pair("pooled", PooledParams(stride=1))
    x = torch.randn(3, T, C, dtype=torch.float64)
    torch.testing.assert_close(attn(x), full(x), rtol=0, atol=1e-12)
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[1, 4:] = False
    torch.testing.assert_close(attn(x, mask)[mask], full(x, mask)[mask], rtol=0, atol=1e-12)


def test_pooled_averages_keys_in_windows():
    """stride s: each query sees ceil(T/s) keys, the masked means of s positions."""
    torch.manual_seed(1)
    attn = ATTENTION.get("pooled")(C, H, T, PooledParams(stride=5)).double()
    q = torch.randn(1, H, T, C // H, dtype=torch.float64)
    k, v = torch.randn_like(q), torch.randn_like(q)
    mask = torch.ones(1, T, dtype=torch.bool)
    mask[0, 11:] = False  # windows [0:5], [5:10], [10:11] (the last one has 1 real position)
    kp = torch.stack([k[:, :, 0:5].mean(2), k[:, :, 5:10].mean(2), k[:, :, 10:11].mean(2)], 2)
    vp = torch.stack([v[:, :, 0:5].mean(2), v[:, :, 5:10].mean(2), v[:, :, 10:11].mean(2)], 2)
    ref = torch.softmax(q @ kp.transpose(-1, -2) / (C // H) ** 0.5, -1) @ vp
    torch.testing.assert_close(attn.attend(q, k, v, mask, False), ref, rtol=0, atol=1e-12)
