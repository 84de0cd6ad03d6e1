"""Reformer LSH attention against dense references built from the same bucket ids."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from spaces.attention.base import neg_inf
from spaces.attention.lsh import LSHAttention, LSHParams
from tests.spaces_tests.helpers import MacCounter

TOL = dict(rtol=1e-6, atol=1e-6)


def make(T, H=2, D=4, seed=0, **params) -> LSHAttention:
    return LSHAttention(H * D, H, T, LSHParams(**params), seed=seed).double()


def inputs(B, H, T, D, seed=0, pad=None):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, dtype=torch.float64, generator=g)
    v = torch.randn(B, H, T, D, dtype=torch.float64, generator=g)
    mask = torch.ones(B, T, dtype=torch.bool)
    if pad:
        mask[-1, T - pad :] = False
    return q, v, mask


def dense(q, v, visible):
    """Shared-QK softmax with Reformer's self rule on an explicit (.., T, T) mask."""
    T, D = q.shape[-2], q.shape[-1]
    s = q @ F.normalize(q, dim=-1).transpose(-1, -2) / math.sqrt(D)  # (.., T, T)
    s = s.masked_fill(torch.eye(T, dtype=torch.bool), -1e5).masked_fill(~visible, neg_inf(q.dtype))
    return s.softmax(-1) @ v


def chunked_reference(m, q, v, mask, causal):
    """The documented rules, densely: buckets, sort, chunks, windows, -log(shared), lse mix."""
    T, D = q.shape[-2:]
    c = m.params.bucket_size
    b = m.buckets(q).masked_fill(~mask[:, None, None, :], m.n_buckets)  # (B, H, R, T)
    rank = (b * T + torch.arange(T)).argsort(-1).argsort(-1)  # sorted index of each token
    chunk = rank // c
    same = b[..., :, None] == b[..., None, :]  # (B, H, R, T, T)
    dc = chunk[..., None, :] - chunk[..., :, None]  # key chunk - query chunk
    ds = rank[..., :, None] - rank[..., None, :]  # query - key sorted index
    win = ((ds >= 0) & (ds <= c) & (dc >= -1) & (dc <= 0)) if causal else dc.abs() <= 1
    shared = same.sum(2, keepdim=True).clamp_min(1)  # (B, H, 1, T, T)
    s = q[:, :, None] @ F.normalize(q, dim=-1)[:, :, None].transpose(-1, -2) / math.sqrt(D)
    s = s - shared.log()
    s = s.masked_fill(torch.eye(T, dtype=torch.bool), -1e5)
    s = s.masked_fill(~(same & win), neg_inf(q.dtype))
    lse = s.logsumexp(-1)  # (B, H, R, T)
    out = s.softmax(-1) @ v[:, :, None]  # (B, H, R, T, D)
    return (out * lse.softmax(2)[..., None]).sum(2)


@pytest.mark.parametrize("causal", [False, True])
def test_single_bucket_equals_shared_qk_full_attention(causal):
    B, H, T, D = 2, 2, 13, 4
    m = make(T, bucket_size=16)
    assert m.n_buckets == 1
    q, v, mask = inputs(B, H, T, D, pad=4)
    visible = mask[:, None, None, :].expand(B, H, T, T)
    if causal:
        visible = visible & torch.ones(T, T, dtype=torch.bool).tril()
    ref = dense(q, v, visible)
    torch.testing.assert_close(
        m.attend(q, q, v, mask, causal)[mask[:, None].expand(B, H, T)],
        ref[mask[:, None].expand(B, H, T)],
        **TOL,
    )


@pytest.mark.parametrize("n_hashes", [1, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_union_of_rounds_is_softmax_over_union_of_buckets(n_hashes, causal):
    """T=16, c=8, 2 buckets: every window holds all same-bucket keys, so the rounds combine to
    exact softmax over keys sharing a bucket in any round (the -log(count) correction)."""
    B, H, T, D = 2, 2, 16, 4
    m = make(T, bucket_size=8, n_hashes=n_hashes, seed=3)

    def occupancy(q, mask):  # real tokens per (batch, head, round, bucket)
        b = m.buckets(q).masked_fill(~mask[:, None, None, :], 2)
        return F.one_hot(b, 3)[..., :2].sum(-2)  # (B, H, R, 2)

    # The causal cap (c = 8 sorted steps back) reaches every same-bucket predecessor only when
    # no bucket holds more than 9 real tokens: take the first input seed where that holds.
    seed = next(s for s in range(1000) if occupancy(*inputs(B, H, T, D, s, pad=3)[::2]).max() <= 9)
    q, v, mask = inputs(B, H, T, D, seed, pad=3)
    b = m.buckets(q)  # (B, H, R, T)
    assert m.n_buckets == 2 and b.shape == (B, H, n_hashes, T)
    assert occupancy(q, mask).max() <= 9 and occupancy(q, mask).min() >= 1
    same = b[..., :, None] == b[..., None, :]  # (B, H, R, T, T)
    if n_hashes == 2:  # the rounds disagree somewhere, so the correction is exercised
        assert (same.sum(2) == 1).any() and (same.sum(2) == 2).any()
    visible = same.any(2) & mask[:, None, None, :]
    if causal:
        visible = visible & torch.ones(T, T, dtype=torch.bool).tril()
    real = mask[:, None].expand(B, H, T)
    out = m.attend(q, q, v, mask, causal)
    torch.testing.assert_close(out[real], dense(q, v, visible)[real], **TOL)


@pytest.mark.parametrize("n_hashes", [1, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_many_chunks_match_dense_simulation_of_the_rules(n_hashes, causal):
    B, H, T, D = 2, 2, 37, 4  # 4 -> 4 buckets, 5 chunks of 8, internal padding of 3
    m = make(T, bucket_size=8, n_hashes=n_hashes)
    q, v, mask = inputs(B, H, T, D, seed=2, pad=5)
    real = mask[:, None].expand(B, H, T)
    out = m.attend(q, q, v, mask, causal)
    torch.testing.assert_close(out[real], chunked_reference(m, q, v, mask, causal)[real], **TOL)


@pytest.mark.parametrize("t", [0, 9, 30, 50])
def test_causal_no_information_flows_backwards(t):
    B, H, T, D = 2, 2, 64, 4
    m = make(T, bucket_size=8, n_hashes=2)  # 8 buckets, 2 rounds
    q, v, mask = inputs(B, H, T, D, seed=t)
    q2, v2 = q.clone(), v.clone()
    q2[:, :, t + 1 :] = torch.randn_like(q2[:, :, t + 1 :])
    v2[:, :, t + 1 :] = torch.randn_like(v2[:, :, t + 1 :])
    y1, y2 = m.attend(q, q, v, mask, True), m.attend(q2, q2, v2, mask, True)
    torch.testing.assert_close(y1[:, :, : t + 1], y2[:, :, : t + 1], rtol=0, atol=1e-12)
    assert not torch.allclose(y1[:, :, t + 1 :], y2[:, :, t + 1 :])


@pytest.mark.parametrize("causal", [False, True])
def test_gradients_finite(causal):
    m = make(24, bucket_size=4, n_hashes=2)
    x = torch.randn(2, 21, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[1, 15:] = False
    m(x, mask, causal).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_through_the_fused_masked_softmax(causal):
    m = make(10, H=1, D=3, bucket_size=2, n_hashes=2)  # 6 buckets, 5 chunks, 2 rounds
    q, v, mask = inputs(1, 1, 10, 3, seed=4, pad=2)
    q.requires_grad_(True)
    v.requires_grad_(True)
    f = lambda q, v: m.attend(q, q, v, mask, causal)
    assert torch.autograd.gradcheck(f, (q, v), fast_mode=True)


@pytest.mark.parametrize("causal", [False, True])
def test_traced_plain_ops_path_matches_the_fused_softmax(causal):
    """fvcore traces with torch.jit, where the kernel swaps its autograd Function for plain ops."""
    m = make(12, bucket_size=4, n_hashes=2)
    q, v, mask = inputs(1, 2, 12, 4, seed=5, pad=2)
    f = lambda q, v: m.attend(q, q, v, mask, causal)
    with warnings.catch_warnings():  # torch.jit.trace: deprecated, warns on shape arithmetic
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(f, (q, v), check_trace=False)
    assert "PythonOp" not in str(traced.graph)
    grads = []
    for fn in (f, traced):
        qq, vv = q.clone().requires_grad_(True), v.clone().requires_grad_(True)
        out = fn(qq, vv)
        out.square().sum().backward()
        grads.append((out, qq.grad, vv.grad))
    for eager, plain in zip(*grads):
        torch.testing.assert_close(eager, plain, rtol=1e-9, atol=1e-12)


def test_rotations_fixed_by_seed_and_not_persistent():
    torch.manual_seed(0)
    a = LSHAttention(16, 2, 64, LSHParams(bucket_size=8, n_hashes=2), seed=5)
    torch.manual_seed(1)
    b = LSHAttention(16, 2, 64, LSHParams(bucket_size=8, n_hashes=2), seed=5)
    c = LSHAttention(16, 2, 64, LSHParams(bucket_size=8, n_hashes=2), seed=6)
    assert a.rotations.shape == (8, 2, 4)  # (D, n_hashes, n_buckets / 2)
    assert torch.equal(a.rotations, b.rotations) and not torch.equal(a.rotations, c.rotations)
    assert "rotations" not in a.state_dict()
    assert a.double().rotations.dtype == torch.float64
    q = torch.randn(1, 2, 64, 8, dtype=torch.float64)
    assert torch.equal(a.buckets(q), b.double().buckets(q))


def test_bucket_count_rounds_up_to_even():
    assert make(40, bucket_size=8).n_buckets == 6  # 40 // 8 = 5 -> 6
    assert make(15, bucket_size=8).n_buckets == 1  # a single bucket needs no pair
    assert make(7, bucket_size=8).n_buckets == 1


@pytest.mark.parametrize(
    "params, field",
    [
        (LSHParams(bucket_size=0), "attention.bucket_size"),
        (LSHParams(bucket_size=65), "attention.bucket_size"),
        (LSHParams(bucket_size=True), "attention.bucket_size"),
        (LSHParams(n_hashes=0), "attention.n_hashes"),
        (LSHParams(n_hashes=9), "attention.n_hashes"),
        (LSHParams(n_hashes=2.0), "attention.n_hashes"),
    ],
)
def test_validate_names_field_range_and_example(params, field):
    with pytest.raises(ValueError, match=field) as info:
        LSHAttention.validate(params, 64, causal=True)
    assert "allowed" in str(info.value) and "e.g." in str(info.value)


def test_validate_accepts_defaults_and_extremes():
    for params in (LSHParams(), LSHParams(bucket_size=64, n_hashes=8), LSHParams(1, 1)):
        LSHAttention.validate(params, 64, causal=False)


def test_attention_flops_hand_computed():
    # T=10, c=4: 3 chunks, padded 12, n_buckets 2 (one rotation column), 2 rounds, H=3, D=5.
    hashing, combine = 10 * 5 * 2 * 1, 2 * 10 * 5
    causal = hashing + 2 * 2 * 12 * (2 * 4) * 5 + combine  # windows of 2 chunks
    bidir = hashing + 2 * 2 * 12 * (3 * 4) * 5 + combine  # windows of 3 chunks
    p = LSHParams(bucket_size=4, n_hashes=2)
    assert LSHAttention.attention_flops(p, 10, 3, 5, causal=True) == 3 * causal == 6360
    assert LSHAttention.attention_flops(p, 10, 3, 5, causal=False) == 3 * bidir == 9240
    # A single chunk: no hashing, one piece: 2 * 8 * 8 * 5 + 6 * 5.
    assert LSHAttention.attention_flops(LSHParams(8, 1), 6, 1, 5, causal=True) == 670


@pytest.mark.parametrize(
    "T, c, n_hashes", [(10, 4, 2), (32, 8, 1), (37, 8, 3), (6, 8, 1), (12, 8, 2)]
)
@pytest.mark.parametrize("causal", [False, True])
def test_attention_flops_equal_executed_macs(T, c, n_hashes, causal):
    H, D = 3, 5
    m = make(T, H, D, bucket_size=c, n_hashes=n_hashes)
    q, v, mask = inputs(1, H, T, D)
    with MacCounter() as counter:
        m.attend(q, q, v, mask, causal)
    assert counter.macs == LSHAttention.attention_flops(m.params, T, H, D, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_never_builds_a_seq_by_seq_tensor(causal):
    T = 256
    m = make(T, H=1, bucket_size=16, n_hashes=1)
    q, v, mask = inputs(1, 1, T, 4)
    with MacCounter() as counter:
        m.attend(q, q, v, mask, causal)
    assert counter.largest <= T * 3 * 16 < T * T
