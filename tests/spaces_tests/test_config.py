"""ArchConfig: exact JSON round trip, and errors that name the field."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spaces import ATTENTION, ArchConfig


@st.composite
def valid_configs(draw) -> ArchConfig:
    variant = draw(st.sampled_from(ATTENTION.names()))
    cls = ATTENTION.get(variant)
    causal = draw(
        st.sampled_from(
            [
                c
                for c, ok in ((True, cls.supports_causal), (False, cls.supports_bidirectional))
                if ok
            ]
        )
    )
    seq_len = draw(st.sampled_from([64, 128, 256, 1000]))
    params = {}
    for field, choices in cls.search_choices.items():
        params[field] = draw(st.sampled_from(choices))
    n_heads = draw(st.integers(1, 8))
    depth = draw(st.integers(1, 12))
    cfg_kwargs = dict(
        vocab_size=draw(st.integers(2, 5000)),
        seq_len=seq_len,
        causal=causal,
        num_classes=0 if causal else draw(st.sampled_from([0, 2, 10])),
        attention=variant,
        depth=depth,
        d_model=n_heads * draw(st.sampled_from([8, 16, 32, 64])),
        n_heads=n_heads,
        ffn_mult=draw(st.sampled_from([1, 2.0, 2.5, 4.0, 1 / 3])),
        norm=draw(st.sampled_from(["pre", "post"])),
        positions=draw(st.sampled_from(["rope", "learned"])),
        unique_blocks=draw(st.integers(0, depth)),
        dropout=draw(st.floats(0, 0.5)),
    )
    try:
        return ArchConfig(attention_params=params, **cfg_kwargs)
    except ValueError:  # a choice invalid at this length (e.g. rank > seq_len): use defaults
        span = cls.span_param
        params = {span: min(cls.search_choices[span])} if span in cls.search_choices else {}
        return ArchConfig(attention_params=params, **cfg_kwargs)


@settings(max_examples=200, deadline=None)
@given(valid_configs())
def test_json_round_trip_is_exact(cfg):
    text = cfg.to_json()
    again = ArchConfig.from_json(text)
    assert again == cfg
    assert again.to_json() == text
    assert json.loads(text)["schema_version"] == 2


def test_file_round_trip_json_yaml_and_export_document(tmp_path):
    import yaml

    cfg = ArchConfig(
        vocab_size=100,
        seq_len=128,
        causal=True,
        attention="window",
        attention_params={"window": 32},
    )
    cfg.to_file(tmp_path / "c.json")
    assert ArchConfig.from_file(tmp_path / "c.json") == cfg
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    assert ArchConfig.from_file(tmp_path / "c.yaml") == cfg
    doc = {"config": cfg.to_dict(), "provenance": {"study": "s"}}
    (tmp_path / "e.json").write_text(json.dumps(doc))
    assert ArchConfig.from_file(tmp_path / "e.json") == cfg


BASE = dict(vocab_size=100, seq_len=128, causal=False, num_classes=2)


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(d_model=130, n_heads=4), "n_heads"),
        (dict(attention="window", attention_params={"bucket_size": 8}), "attention_params"),
        (dict(attention="full", attention_params={"window": 8}), "attention_params"),
        (dict(attention="nope"), "attention"),
        (dict(causal=True, num_classes=0, attention="lowrank"), "attention"),
        (dict(causal=True, num_classes=0, attention="pooled"), "attention"),
        (dict(attention="window", attention_params={"window": 129}), "attention.window"),
        (dict(attention="window", attention_params={"window": 0}), "attention.window"),
        (dict(attention="lowrank", attention_params={"rank": 500}), "attention.rank"),
        (dict(depth=0), "depth"),
        (dict(depth=2.0), "depth"),
        (dict(vocab_size=True), "vocab_size"),
        (dict(num_classes=1), "num_classes"),
        (dict(ffn_mult=0), "ffn_mult"),
        (dict(norm="sandwich"), "norm"),
        (dict(positions="alibi"), "positions"),
        (dict(unique_blocks=9, depth=4), "unique_blocks"),
        (dict(dropout=1.0), "dropout"),
        (dict(causal="yes"), "causal"),
    ],
)
def test_invalid_configs_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ArchConfig(**{**BASE, **changes})


def test_unknown_key_and_schema_version_are_refused():
    good = ArchConfig(**BASE).to_dict()
    with pytest.raises(ValueError, match=r"unknown ArchConfig field.*'widht'"):
        ArchConfig.from_dict({**good, "widht": 3})
    with pytest.raises(ValueError, match="schema_version"):
        ArchConfig.from_dict({**good, "schema_version": 99})
    with pytest.raises(ValueError, match="positions: not a schema_version 1 field"):
        ArchConfig.from_dict({**good, "schema_version": 1})
    with pytest.raises(ValueError, match="missing"):
        ArchConfig.from_dict({"vocab_size": 3})


def test_error_lists_allowed_values():
    with pytest.raises(ValueError) as err:
        ArchConfig(**{**BASE, "causal": True, "num_classes": 0, "attention": "lowrank"})
    assert "full" in str(err.value) and "window" in str(err.value)


def test_frozen_and_hashable():
    cfg = ArchConfig(**BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.depth = 3
    assert hash(cfg) == hash(ArchConfig.from_json(cfg.to_json()))


def test_sharing_groups():
    cfg = ArchConfig(**BASE, depth=6, unique_blocks=2)
    assert cfg.layer_to_block() == [0, 0, 0, 1, 1, 1]
    assert ArchConfig(**BASE, depth=3, unique_blocks=0).layer_to_block() == [0, 1, 2]
    assert ArchConfig(**BASE, depth=3, unique_blocks=1).layer_to_block() == [0, 0, 0]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("c.yaml", "a: [1, 2", "not valid YAML at line 1"),
        ("c.json", '{"depth": ', "not valid JSON"),
    ],
)
def test_unparsable_config_files_raise_value_error(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        ArchConfig.from_file(tmp_path / name)
