"""Registry-driven tests: every attention variant gets these by existing."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch

from spaces import ATTENTION, Attention
from tests.spaces_tests.helpers import causal_variants, small_params

VARIANTS = ATTENTION.names()
T, C, H = 16, 16, 2


def make(variant: str, dtype=torch.float64, seq_len: int = T):
    torch.manual_seed(0)
    cls = ATTENTION.get(variant)
    return cls(C, H, seq_len, small_params(variant, seq_len)).to(dtype)


def modes(variant: str) -> list[bool]:
    cls = ATTENTION.get(variant)
    return [m for m, ok in ((False, cls.supports_bidirectional), (True, cls.supports_causal)) if ok]


def test_all_seven_variants_registered():
    assert set(VARIANTS) >= {"full", "window", "lsh", "sparse", "lowrank", "pooled", "linear"}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_finite(variant, dtype):
    attn = make(variant, dtype)
    x = torch.randn(3, T, C, dtype=dtype)
    for causal in modes(variant):
        y = attn(x, causal=causal)
        assert y.shape == (3, T, C) and y.dtype == dtype
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_shorter_sequence_than_built_for(variant):
    """A sequence 3 shorter than built for gives what the full length gives with the last 3
    positions padded and masked off."""
    attn = make(variant, seq_len=T)
    x = torch.randn(2, T - 3, C, dtype=torch.float64)
    padded = torch.cat([x, torch.randn(2, 3, C, dtype=torch.float64)], dim=1)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[:, T - 3 :] = False
    for causal in modes(variant):
        y = attn(x, causal=causal)
        assert y.shape == (2, T - 3, C)
        reference = attn(padded, mask, causal)[:, : T - 3]
        torch.testing.assert_close(y, reference, atol=1e-12, rtol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradients_reach_every_parameter(variant):
    attn = make(variant)
    x = torch.randn(2, T, C, dtype=torch.float64, requires_grad=True)
    for causal in modes(variant):
        attn.zero_grad()
        attn(x, causal=causal).square().sum().backward()
        for name, p in attn.named_parameters():
            assert p.grad is not None, f"{variant}: no gradient for {name}"
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_mask_is_honoured(variant):
    """Outputs at real positions do not depend on what padded positions hold."""
    attn = make(variant)
    x = torch.randn(2, T, C, dtype=torch.float64)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, 11:] = False
    mask[1, 5:] = False
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), C, dtype=torch.float64) * 10
    for causal in modes(variant):
        y1, y2 = attn(x, mask, causal), attn(x2, mask, causal)
        assert torch.isfinite(y1).all() and torch.isfinite(y2).all()
        torch.testing.assert_close(y1[mask], y2[mask], rtol=0, atol=1e-9)


@pytest.mark.parametrize("variant", causal_variants())
@pytest.mark.parametrize("t", [0, 5, 12])
def test_no_information_flows_backwards(variant, t):
    """Changing tokens after position t leaves the outputs at positions <= t unchanged."""
    attn = make(variant)
    g = torch.Generator().manual_seed(t)
    x = torch.randn(2, T, C, dtype=torch.float64, generator=g)
    x2 = x.clone()
    x2[:, t + 1 :] = torch.randn(2, T - t - 1, C, dtype=torch.float64, generator=g)
    y1, y2 = attn(x, causal=True), attn(x2, causal=True)
    torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], rtol=0, atol=1e-10)
    assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :])  # the change did reach the future


@pytest.mark.parametrize("variant", [v for v in VARIANTS if not ATTENTION.get(v).supports_causal])
def test_bidirectional_only_variant_refuses_causal(variant):
    attn = make(variant)
    with pytest.raises(ValueError, match="causal"):
        attn(torch.randn(1, T, C, dtype=torch.float64), causal=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_declares_its_contract(variant):
    cls = ATTENTION.get(variant)
    assert cls.__doc__ and cls.__module__.startswith("spaces.attention.")
    module_doc = __import__(cls.__module__, fromlist=["_"]).__doc__
    assert "arXiv" in module_doc, f"{variant}: cite the paper in the module docstring"
    (base,) = [b for b in cls.__orig_bases__ if typing.get_origin(b) is Attention]
    assert typing.get_args(base) == (cls.Params,)  # Attention[XParams] sets Params, once
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
    assert isinstance(cls(16, 2, 64).params, cls.Params)
    fields = {f for f in cls.Params.__dataclass_fields__}
    assert cls.span_param is None or cls.span_param in fields
    assert set(cls.search_choices) <= fields
    flops = cls.attention_flops(small_params(variant, 64), 64, 4, 16, cls.supports_causal)
    assert isinstance(flops, int) and flops > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("variant", VARIANTS)
def test_runs_unchanged_on_cuda(variant):
    attn = make(variant, torch.float32).cuda()
    x = torch.randn(2, T, C, device="cuda")
    cpu = make(variant, torch.float32)
    for causal in modes(variant):
        torch.testing.assert_close(
            attn(x, causal=causal).cpu(), cpu(x.cpu(), causal=causal), rtol=1e-4, atol=1e-4
        )
