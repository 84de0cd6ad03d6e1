"""Hybrid stacks (issue 16): per-layer attention in ArchConfig, exact FLOPs and params for
mixed stacks, ALBERT sharing rules, patterns and their resizing."""

from __future__ import annotations

import json

import pytest
import yaml

from spaces import ArchConfig, build_model
from spaces.flops import analysis, count_flops, count_params, estimate_flops, estimate_params
from spaces.layers import LayerAttention, describe_stack, pattern_layers, resize
from spaces.memory import score_elements

FULL = {"attention": "full"}
BASE = {
    "vocab_size": 64,
    "seq_len": 64,
    "causal": True,
    "attention": "window",
    "attention_params": {"window": 16},
    "depth": 6,
    "d_model": 32,
    "n_heads": 2,
}


def gemma(**changes) -> ArchConfig:
    """window16 x5 + full x1 (the last layer global)."""
    return ArchConfig(**{**BASE, "layer_attention": [None] * 5 + [FULL], **changes})


def test_json_round_trip_is_exact_and_plain_configs_keep_their_schema_1_json(tmp_path):
    cfg = gemma()
    doc = cfg.to_dict()
    assert doc["layer_attention"][:5] == [None] * 5
    assert doc["layer_attention"][5] == {"attention": "full", "attention_params": {}}
    assert ArchConfig.from_dict(json.loads(cfg.to_json())) == cfg
    cfg.to_file(tmp_path / "c.json")
    assert ArchConfig.from_file(tmp_path / "c.json") == cfg
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    assert ArchConfig.from_file(tmp_path / "c.yaml") == cfg
    plain = ArchConfig(**BASE)
    assert "layer_attention" not in plain.to_dict()  # schema-1 files and JSON unchanged
    old = {k: v for k, v in BASE.items()}
    # a schema-1 file predates `positions`: its model had a learned table
    assert ArchConfig.from_dict({**old, "schema_version": 1}) == plain.replace(positions="learned")


def test_entries_equal_to_the_base_are_none_and_an_all_base_stack_is_a_plain_config():
    base_entry = {"attention": "window", "attention_params": {"window": 16}}
    cfg = ArchConfig(**{**BASE, "layer_attention": [base_entry] * 5 + [FULL]})
    assert cfg == gemma() and cfg.layer_attention[0] is None
    same = ArchConfig(**{**BASE, "layer_attention": [base_entry, None] * 3})
    assert same.layer_attention is None and same == ArchConfig(**BASE)
    assert [s.attention for s in gemma().layer_specs()] == ["window"] * 5 + ["full"]


@pytest.mark.parametrize(
    "layers, message",
    [
        ([None] * 5, "layer_attention has 5 entries but depth is 6"),
        ([None] * 3 + [{"attention": "nope"}] + [None] * 2, r"layer_attention\[3\].attention"),
        ([None] * 2 + [{"attention": "lowrank"}] + [None] * 3, r"layer_attention\[2\].attention"),
        (
            [None] * 4 + [{"attention": "window", "attention_params": {"window": 999}}, None],
            r"layer_attention\[4\]: attention.window",
        ),
        ([None] * 5 + [{"attention": "full", "rank": 3}], r"layer_attention\[5\]: unknown"),
        ("full", "layer_attention must be a list"),
    ],
)
def test_validation_names_the_layer_and_the_field(layers, message):
    with pytest.raises(ValueError, match=message):
        ArchConfig(**{**BASE, "layer_attention": layers})


def test_albert_shared_layers_must_share_their_attention():
    with pytest.raises(ValueError, match="layers 4 and 5 share block 2"):
        gemma(unique_blocks=3)  # pairs (0,1) (2,3) (4,5): the last pair mixes window and full
    ok = ArchConfig(**{**BASE, "unique_blocks": 3, "layer_attention": [None] * 4 + [FULL] * 2})
    model = build_model(ok)
    assert (
        len(model.blocks) == 3
        and type(model.blocks[2].attn).__name__ != type(model.blocks[0].attn).__name__
    )
    assert count_params(ok) == estimate_params(ok) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "base, global_",
    [
        (("window", {"window": 16}), ("full", {})),
        (("linear", {}), ("full", {})),
        (("sparse", {"block": 16}), ("window", {"window": 32})),
        (("full", {}), ("lsh", {"bucket_size": 16, "n_hashes": 1})),
    ],
)
def test_flops_and_params_of_mixed_stacks_are_exact(base, global_):
    cfg = ArchConfig(
        **{
            **BASE,
            "attention": base[0],
            "attention_params": base[1],
            "layer_attention": [None, {"attention": global_[0], "attention_params": global_[1]}]
            + [None] * 3
            + [{"attention": global_[0], "attention_params": global_[1]}],
        }
    )
    traced = int(analysis(cfg, "cpu").total())  # fvcore on the whole 6-layer model
    assert count_flops(cfg) == traced == estimate_flops(cfg)
    model = build_model(cfg)
    assert count_params(cfg) == estimate_params(cfg) == sum(p.numel() for p in model.parameters())
    kinds = [type(model.blocks[i].attn).__name__ for i in range(6)]
    assert kinds[1] == kinds[5] != kinds[0] == kinds[2]


def test_a_hybrid_model_runs_causally():
    import torch

    model = build_model(gemma()).eval()
    x = torch.randint(0, 64, (2, 64))
    y = x.clone()
    y[:, 40:] = (y[:, 40:] + 1) % 64
    with torch.no_grad():
        a, b = model(x), model(y)
    assert torch.allclose(a[:, :40], b[:, :40], atol=1e-5)  # no future leak through any layer


def test_patterns_place_k_global_layers():
    assert pattern_layers(6, "spread", 1) == [5]
    assert pattern_layers(6, "spread", 2) == [2, 5]
    assert pattern_layers(6, "last", 2) == [4, 5]
    assert pattern_layers(6, "first_last", 2) == [0, 5]
    assert pattern_layers(1, "spread", 1) == []  # one layer: no room for a global layer
    assert pattern_layers(3, "last", 5) == [1, 2]  # at least one base layer stays


def test_resize_keeps_the_ratio_and_the_placement():
    cfg = gemma()  # 1 global in 6, last
    deeper = cfg.replace(depth=12)
    assert [s.attention for s in deeper.layer_specs()].count("full") == 2
    assert deeper.layer_attention[11] is not None  # still ends with the global layer
    shallower = cfg.replace(depth=3)
    assert [s.attention for s in shallower.layer_specs()] == ["window", "window", "full"]
    spread = ArchConfig(**{**BASE, "layer_attention": [None, None, FULL] * 2})
    assert [i for i, s in enumerate(spread.replace(depth=12).layer_attention) if s] == [2, 5, 8, 11]
    assert resize(None, 6, 12) is None


def test_describe_and_memory():
    assert describe_stack(gemma()) == "window16 x5 + full x1"
    assert describe_stack(ArchConfig(**BASE)) == "window16"
    full_scores = 2 * 64 * 64
    assert score_elements(gemma()) == full_scores  # the largest layer: the full one
    assert LayerAttention("full").label() == "full"


def test_the_hand_hybrid_is_the_largest_5_to_1_stack_in_the_budget():
    from benchmarks.hybrid_outcome import global_share
    from spaces.baselines import largest_hybrid

    iface = {"seq_len": 256, "causal": True, "vocab_size": 34}
    cfg = largest_hybrid(iface, 50e6, window=32)
    assert describe_stack(cfg) == "window32 x9 + full x1" and (cfg.depth, cfg.d_model) == (10, 32)
    assert estimate_flops(cfg) <= 50e6 < estimate_flops(largest_hybrid(iface, 1e9, 32))
    deeper = cfg.replace(depth=11, layer_attention=[None] * 10 + [FULL])
    assert estimate_flops(deeper) > 50e6  # one more layer would not fit
    # the global layer's share: one full block over the whole model, by the closed form
    plain = cfg.replace(layer_attention=None)
    full_block = estimate_flops(plain.replace(attention="full", attention_params={}, depth=2))
    full_block -= estimate_flops(plain.replace(attention="full", attention_params={}, depth=1))
    assert global_share(cfg) == full_block / estimate_flops(cfg)
    assert global_share(plain) == 0.0
