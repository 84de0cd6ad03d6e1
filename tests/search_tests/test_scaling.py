"""Compound scaling: pure rounding/scaling functions and a tiny end-to-end run."""

from __future__ import annotations

import json

import optuna
import pytest

from search.scaling import (
    Coefficients,
    coefficient_grid,
    phi_for,
    round_depth,
    round_span,
    round_width,
    scale_config,
    scale_to_targets,
)
from spaces import ATTENTION, ArchConfig
from spaces.flops import count_flops, estimate_flops
from tests.search_tests.conftest import run_cli, search_args

BASE_PARAMS = {
    "full": {},
    "window": {"window": 16},
    "lsh": {"bucket_size": 16},
    "sparse": {"block": 16},
    "linear": {},
    "lowrank": {"rank": 16},
    "pooled": {"stride": 4},
}


def base_config(variant: str) -> ArchConfig:
    causal = ATTENTION.get(variant).supports_causal
    return ArchConfig(
        vocab_size=34,
        seq_len=64,
        causal=causal,
        num_classes=0 if causal else 10,
        attention=variant,
        attention_params=BASE_PARAMS.get(variant, {}),
        depth=2,
        d_model=64,
        n_heads=2,
    )


def test_rounding_helpers():
    assert [round_depth(x) for x in (0.3, 1.0, 1.01, 2.4, 3.0)] == [1, 1, 2, 3, 3]
    assert round_width(64, 32) == (64, 2)
    assert round_width(90, 32) == (96, 3)  # 3 heads of 32
    assert round_width(90, 64, min_heads=4) == (96, 4)  # at least 4 heads of 24
    d, h = round_width(150, 64)
    assert d % h == 0 and (d // h) % 8 == 0 and h == 2
    cfg = base_config("window")
    assert round_span(cfg, 21) == 24 and round_span(cfg, 1000) == 64
    assert round_span(base_config("full"), 40) is None
    assert round_span(base_config("pooled"), 2.6) == 3
    assert phi_for(8e9, 1e9) == 3.0


def test_scale_config_grows_each_axis():
    cfg = scale_config(base_config("window"), Coefficients(1.2, 1.1, 1.15), 3.0)
    assert cfg.depth == 4  # ceil(2 * 1.2^3 = 3.46)
    # 64 * 1.1^3 = 85.2: the 2 heads widen towards 64 first: 2 x round(42.6 / 8) * 8 = 80
    assert cfg.d_model == 80 and cfg.n_heads == 2
    assert cfg.span == 24  # 16 * 1.52 = 24.3 -> multiple of 8
    pooled = scale_config(base_config("pooled"), Coefficients(1.0, 1.0, 2.0), 1.0)
    assert pooled.span == 2  # the stride shrinks: the span of view grows


@pytest.mark.parametrize("variant", ATTENTION.names())
def test_targets_land_in_window_with_monotone_shape(variant):
    base = base_config(variant)
    base_flops = count_flops(base)
    grid = coefficient_grid(base, estimate_flops)
    assert grid, "the grid has a point at 2x"
    for _, cfg, _ in grid:
        assert abs(count_flops(cfg) / base_flops - 2) <= 0.2
    for coeffs in (grid[0][0], Coefficients(1.2, 1.1, 1.15)):
        targets = [k * base_flops for k in (2, 4, 8, 16)]
        scaled = scale_to_targets(base, coeffs, targets, estimate_flops)
        depths, widths = [c.depth for _, c, _ in scaled], [c.d_model for _, c, _ in scaled]
        assert depths == sorted(depths) and widths == sorted(widths)
        for target, cfg, _ in scaled:
            measured = count_flops(cfg)  # fvcore on the real module
            assert 0.90 * target <= measured <= target, (variant, coeffs, target, measured)
            assert ArchConfig.from_json(cfg.to_json()) == cfg  # valid


def test_search_then_scale_end_to_end(tmp_path, tiny_preset):
    storage = f"sqlite:///{tmp_path}/s.db"
    run_cli("search.run", *search_args(tiny_preset, storage, "base", 4), check=True)
    proc = run_cli(
        "search.scale",
        "--study",
        "base",
        "--storage",
        storage,
        "--targets",
        "1.5MFLOPs,3MFLOPs",
        "--grid-size",
        "2",
        check=True,
    )
    assert "coefficients (grid)" in proc.stdout
    base = optuna.load_study(study_name="base", storage=storage)
    scaled = optuna.load_study(study_name="base-scaled", storage=storage)
    assert len(base.user_attrs["scaling_coefficients"]) == 3
    assert scaled.user_attrs["kind"] == "scaled" and scaled.user_attrs["base_study"] == "base"
    roles = [t.user_attrs["role"] for t in scaled.trials]
    assert roles.count("grid") == len(scaled.user_attrs["grid"]) >= 1 and roles.count("target") == 2
    for t in scaled.trials:
        if t.user_attrs["role"] == "target":
            assert 0.9 * t.user_attrs["target"] <= t.user_attrs["flops"] <= t.user_attrs["target"]
            out = tmp_path / f"t{t.number}.json"
            run_cli(
                "search.export",
                "--study",
                "base-scaled",
                "--storage",
                storage,
                "--trial",
                str(t.number),
                "--out",
                str(out),
                check=True,
            )
            assert ArchConfig.from_file(out).to_dict() == t.user_attrs["config"]
            assert json.loads(out.read_text())["provenance"]["flops"] == t.user_attrs["flops"]
    again = run_cli("search.scale", "--study", "base", "--storage", storage, "--targets", "3M")
    assert again.returncode == 2 and "--overwrite" in again.stderr
