"""The Transformer trunk over every variant: heads, masks, sharing, gradients."""

from __future__ import annotations

import pytest
import torch

from spaces import ATTENTION, build_model
from tests.spaces_tests.helpers import tiny_config

VARIANTS = ATTENTION.names()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("norm", ["pre", "post"])
def test_forward_backward_every_parameter(variant, norm):
    cfg = tiny_config(variant, norm=norm)
    torch.manual_seed(0)
    model = build_model(cfg).double()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    mask = torch.ones(2, cfg.seq_len, dtype=torch.bool)
    mask[1, 10:] = False
    out = model(tokens, mask)
    expected = (2, cfg.num_classes) if cfg.num_classes else (2, cfg.seq_len, cfg.vocab_size)
    assert out.shape == expected and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{variant}: zero gradient for {name}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_classifier_ignores_padding_content(variant):
    cfg = (
        tiny_config(variant, causal=False)
        if ATTENTION.get(variant).supports_bidirectional
        else None
    )
    if cfg is None:
        pytest.skip(f"{variant} is causal only")
    model = build_model(cfg).double().eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    mask = torch.ones(2, cfg.seq_len, dtype=torch.bool)
    mask[:, 9:] = False
    other = tokens.clone()
    other[:, 9:] = (tokens[:, 9:] + 1) % cfg.vocab_size
    torch.testing.assert_close(model(tokens, mask), model(other, mask), rtol=0, atol=1e-10)


def test_sharing_reduces_parameters_and_ties_lm_head():
    full = build_model(tiny_config("full", depth=4))
    shared = build_model(tiny_config("full", depth=4, unique_blocks=1))
    halves = build_model(tiny_config("full", depth=4, unique_blocks=2))
    n = lambda m: sum(p.numel() for p in m.parameters())
    block = sum(p.numel() for p in full.blocks[0].parameters())
    assert n(full) - n(shared) == 3 * block
    assert n(full) - n(halves) == 2 * block
    assert shared.head.weight is shared.tok_emb.weight
    assert len(shared.blocks) == 1 and shared.layer_to_block == [0, 0, 0, 0]


def test_too_long_input_is_refused():
    cfg = tiny_config("full")
    with pytest.raises(ValueError, match="seq_len"):
        build_model(cfg)(torch.zeros(1, cfg.seq_len + 1, dtype=torch.long))


def test_residual_output_init_shrinks_with_depth():
    from spaces import ArchConfig, build_model

    torch.manual_seed(0)
    stds = {}
    for depth in (1, 2, 8):
        cfg = ArchConfig(
            vocab_size=64, seq_len=16, causal=True, depth=depth, d_model=256, n_heads=4
        )
        model = build_model(cfg)
        stds[depth] = float(torch.cat([b.ffn.down.weight.flatten() for b in model.blocks]).std())
        assert float(model.blocks[0].ffn.up.weight.std()) == pytest.approx(0.02, rel=0.02)
    assert stds[1] == pytest.approx(0.02 / 2**0.5, rel=0.02)  # 0.02 / sqrt(2 * depth)
    assert stds[2] == pytest.approx(0.01, rel=0.02) and stds[8] == pytest.approx(0.005, rel=0.02)
