"""Size limits and the memory check (issue 14): absurd configs are refused by validation or by
a closed-form lower bound before anything is allocated."""

from __future__ import annotations

import json

import pytest

import spaces.model
from spaces import ArchConfig, build_model
from spaces.config import LIMITS
from spaces.flops import count_params
from spaces.memory import (
    ModelTooLarge,
    check_fits,
    device_memory,
    score_elements,
    training_bytes,
    weight_bytes,
)

BASE = {"vocab_size": 256, "seq_len": 64, "causal": True, "depth": 2, "d_model": 32, "n_heads": 2}


@pytest.mark.parametrize(
    "field,value",
    [("depth", 10**6), ("d_model", 10**7), ("seq_len", 10**9), ("vocab_size", 10**10)],
)
def test_absurd_sizes_in_a_config_file_are_refused_by_validation(tmp_path, field, value):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**BASE, field: value}))
    with pytest.raises(ValueError, match=f"{field} must be an integer in \\[.*{LIMITS[field]:,}"):
        ArchConfig.from_file(path)


def test_a_config_within_the_limits_but_beyond_memory_is_refused_before_allocation(monkeypatch):
    def never(*a, **k):
        raise AssertionError("the model was constructed")

    monkeypatch.setattr(spaces.model, "Transformer", never)
    cfg = ArchConfig(**{**BASE, "depth": 1000, "d_model": 65536, "n_heads": 512})
    with pytest.raises(ModelTooLarge, match=r"model too large: its fp32 weights alone requires"):
        build_model(cfg)


def test_weight_bytes_are_exactly_the_built_models_fp32_parameters():
    for attention, causal in (("full", True), ("lowrank", False), ("window", True)):
        params = {"window": 16} if attention == "window" else None
        cfg = ArchConfig(
            **{**BASE, "attention": attention, "causal": causal}, attention_params=params
        )
        assert weight_bytes(cfg) == 4 * count_params(cfg)
        assert weight_bytes(cfg) == 4 * sum(p.numel() for p in build_model(cfg).parameters())


def test_training_bytes_closed_form():
    cfg = ArchConfig(**BASE)
    p, b, n, d, h, depth = count_params(cfg), 8, 64, 32, 2, 2
    assert score_elements(cfg) == h * n * n  # the full n x n grid per head
    assert training_bytes(cfg, b) == 16 * p + 4 * (b * n * d * depth + b * h * n * n)
    window = ArchConfig(**{**BASE, "attention": "window"}, attention_params={"window": 16})
    assert score_elements(window) < score_elements(cfg)  # a window materialises less


def test_check_fits_against_the_device_memory(monkeypatch):
    cfg = ArchConfig(**BASE)
    assert device_memory("cpu") > 2**28  # read from the OS
    need = training_bytes(cfg, 8)
    monkeypatch.setattr("spaces.memory.device_memory", lambda device="cpu": need)
    check_fits(cfg, "cpu", 8)  # exactly fits
    monkeypatch.setattr("spaces.memory.device_memory", lambda device="cpu": need - 1)
    with pytest.raises(ModelTooLarge, match=r"training at batch 8 requires at least .* GiB"):
        check_fits(cfg, "cpu", 8)
    check_fits(cfg, "cpu")  # the weights alone still fit
    monkeypatch.setattr("spaces.memory.device_memory", lambda device="cpu": None)
    check_fits(cfg, "cpu", 10**9)  # unknown memory: no refusal
