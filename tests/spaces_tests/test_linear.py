"""Linear (kernelized) attention against a naive O(n^2) computation of the same kernel."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spaces.attention.linear import EPS, LinearAttention, LinearParams
from tests.spaces_tests.helpers import MacCounter

TOL = dict(rtol=1e-6, atol=1e-6)
MAPS = ["elu", "favor"]


def make(T, H=2, D=4, seed=0, **params) -> LinearAttention:
    return LinearAttention(H * D, H, T, LinearParams(**params), seed=seed).double()


def inputs(B, H, T, D, seed=0, pad=None):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, D, dtype=torch.float64, generator=g) for _ in range(3))
    mask = torch.ones(B, T, dtype=torch.bool)
    if pad:
        mask[-1, T - pad :] = False
    return q, k, v, mask


def phi(m: LinearAttention, x: torch.Tensor) -> torch.Tensor:
    """The documented feature maps, written out independently of the module."""
    if m.params.feature_map == "elu":
        return torch.where(x > 0, x + 1, torch.exp(x))
    x = x / x.shape[-1] ** 0.25
    w = m.features  # (m, D)
    return torch.exp(x @ w.T - (x**2).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])


def naive(m, q, k, v, mask, causal):
    """A_ij = phi(q_i) . phi(k_j), masked, row-normalised with the same eps."""
    T = q.shape[-2]
    a = phi(m, q) @ phi(m, k).transpose(-1, -2)  # (B, H, T, T)
    visible = mask[:, None, None, :].expand_as(a)
    if causal:
        visible = visible & torch.ones(T, T, dtype=torch.bool).tril()
    a = a * visible
    return (a @ v) / (a.sum(-1, keepdim=True) + EPS)


@pytest.mark.parametrize("feature_map", MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T, chunk", [(13, 4), (16, 4), (5, 8)])
def test_matches_naive_quadratic_kernel(feature_map, causal, T, chunk):
    m = make(T, feature_map=feature_map, n_features=12, chunk=chunk)
    q, k, v, mask = inputs(2, 2, T, 4, pad=min(3, T - 1))
    out = m.attend(q, k, v, mask, causal)
    torch.testing.assert_close(out, naive(m, q, k, v, mask, causal), **TOL)


@pytest.mark.parametrize("feature_map", MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_content_does_not_reach_real_positions(feature_map, causal):
    T = 15
    m = make(T, feature_map=feature_map, chunk=4)
    q, k, v, mask = inputs(2, 2, T, 4, pad=6)
    q2, k2, v2 = (t.clone() for t in (q, k, v))
    for t in (q2, k2, v2):
        t[-1, :, T - 6 :] = 10 * torch.randn_like(t[-1, :, T - 6 :])
    real = mask[:, None].expand(2, 2, T)
    y1, y2 = m.attend(q, k, v, mask, causal), m.attend(q2, k2, v2, mask, causal)
    torch.testing.assert_close(y1[real], y2[real], rtol=0, atol=1e-12)


@pytest.mark.parametrize("feature_map", MAPS)
@pytest.mark.parametrize("t", [0, 6, 13])
def test_causal_no_information_flows_backwards(feature_map, t):
    T = 21
    m = make(T, feature_map=feature_map, chunk=4)
    q, k, v, mask = inputs(2, 2, T, 4, seed=t)
    q2, k2, v2 = (t_.clone() for t_ in (q, k, v))
    for t_ in (q2, k2, v2):
        t_[:, :, t + 1 :] = torch.randn_like(t_[:, :, t + 1 :])
    y1, y2 = m.attend(q, k, v, mask, True), m.attend(q2, k2, v2, mask, True)
    torch.testing.assert_close(y1[:, :, : t + 1], y2[:, :, : t + 1], rtol=0, atol=1e-12)
    assert not torch.allclose(y1[:, :, t + 1 :], y2[:, :, t + 1 :])


def test_favor_estimates_softmax_attention():
    """With many random features, phi(q).phi(k) ~ exp(q.k / sqrt(D)): softmax attention."""
    T, D = 8, 4
    m = make(T, H=1, D=D, feature_map="favor", n_features=4096)
    q, k, v, mask = inputs(1, 1, T, D, seed=3)
    q, k = q * 0.5, k * 0.5
    ref = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D), -1) @ v
    torch.testing.assert_close(m.attend(q, k, v, mask, False), ref, rtol=0, atol=0.05)


def test_features_fixed_by_seed_orthogonal_and_not_persistent():
    torch.manual_seed(0)
    a = LinearAttention(16, 2, 32, LinearParams("favor", n_features=12), seed=4)
    torch.manual_seed(1)
    b = LinearAttention(16, 2, 32, LinearParams("favor", n_features=12), seed=4)
    c = LinearAttention(16, 2, 32, LinearParams("favor", n_features=12), seed=5)
    assert a.features.shape == (12, 8)
    assert torch.equal(a.features, b.features) and not torch.equal(a.features, c.features)
    assert "features" not in a.state_dict()
    block = F.normalize(a.features[:8], dim=-1)  # the first d rows come from one QR
    torch.testing.assert_close(block @ block.T, torch.eye(8), rtol=0, atol=1e-5)
    assert a.double().features.dtype == torch.float64


@pytest.mark.parametrize(
    "params, field",
    [
        (LinearParams(feature_map="relu"), "attention.feature_map"),
        (LinearParams(n_features=0), "attention.n_features"),
        (LinearParams(chunk=0), "attention.chunk"),
        (LinearParams(chunk=2.5), "attention.chunk"),
    ],
)
def test_validate_names_field_and_example(params, field):
    with pytest.raises(ValueError, match=field) as info:
        LinearAttention.validate(params, 64, causal=True)
    assert "e.g." in str(info.value)
    if field == "attention.feature_map":
        assert "elu" in str(info.value) and "favor" in str(info.value)


def test_validate_accepts_defaults():
    LinearAttention.validate(LinearParams(), 64, causal=True)
    LinearAttention.validate(LinearParams("favor", 256, 128), 64, causal=False)


def test_attention_flops_hand_computed():
    # elu, T=10, H=2, D=4 (F = D = 4).
    elu = LinearParams(chunk=4)
    assert LinearAttention.attention_flops(elu, 10, 2, 4, causal=False) == 2 * (
        2 * 10 * 4 * 4 + 10 * 4
    )  # KV, phi(q) KV, phi(q) . z
    intra = 12 * 4 * 4 + 12 * 4 * 4  # padded to 12: (c x c) scores and A @ v, 3 chunks
    inter = 2 * 12 * 4 * 4 + 12 * 4  # chunk KV sums, phi(q) @ state, phi(q) . z
    assert LinearAttention.attention_flops(elu, 10, 2, 4, causal=True) == 2 * (intra + inter)
    # favor, m = 6: plus the projections of q and k onto the 6 features.
    favor = LinearParams("favor", n_features=6)
    assert LinearAttention.attention_flops(favor, 10, 2, 4, causal=False) == 2 * (
        2 * 10 * 4 * 6 + 2 * 10 * 6 * 4 + 10 * 6
    )
    assert LinearAttention.attention_flops(favor, 10, 2, 4, causal=False) == 2040


@pytest.mark.parametrize("feature_map", MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T, chunk", [(10, 4), (16, 8), (5, 8)])
def test_attention_flops_equal_executed_macs(feature_map, causal, T, chunk):
    H, D = 3, 5
    m = make(T, H, D, feature_map=feature_map, n_features=7, chunk=chunk)
    q, k, v, mask = inputs(1, H, T, D)
    with MacCounter() as counter:
        m.attend(q, k, v, mask, causal)
    assert counter.macs == LinearAttention.attention_flops(m.params, T, H, D, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_never_builds_a_seq_by_seq_tensor(causal):
    T = 256
    m = make(T, H=1, feature_map="favor", n_features=8, chunk=16)
    q, k, v, mask = inputs(1, 1, T, 4)
    with MacCounter() as counter:
        m.attend(q, k, v, mask, causal)
    assert counter.largest <= T * 16 < T * T


def test_gradients_finite():
    m = make(20, feature_map="favor", n_features=8, chunk=8)
    x = torch.randn(2, 19, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 19, dtype=torch.bool)
    mask[0, 12:] = False
    for causal in (False, True):
        m(x, mask, causal).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
