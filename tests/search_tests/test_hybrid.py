"""Hybrid stacks end to end (issue 16): searched, shown compactly, exported and scaled."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from dashboards.page import trials_table
from dashboards.trials import points
from search.plateau import pick as plateau_pick
from spaces import ArchConfig
from spaces.flops import count_flops
from tests.search_tests.conftest import TINY_PRESET, run_cli, search_args

HYBRID_SPACE = """[space]
variants = ["window"]
patterns = ["last"]
global_variants = ["full"]
global_layers = [1]
"""


def test_a_hybrid_search_shows_exports_and_scales_its_stacks(tmp_path):
    preset = tmp_path / "hybrid.toml"
    preset.write_text(
        TINY_PRESET.replace("[space]\n", HYBRID_SPACE).replace("depth = [1, 2]", "depth = [2]")
    )
    storage = f"sqlite:///{tmp_path}/h.db"
    run = run_cli("search.run", *search_args(preset, storage, "h", 3), check=True)
    study = optuna.load_study(study_name="h", storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        cfg = ArchConfig.from_dict(t.user_attrs["config"])
        assert [s.attention for s in cfg.layer_specs()] == ["window", "full"]
        assert t.user_attrs["stack"] == f"window{cfg.span} x1 + full x1"
        assert t.params["pattern"] == "last" and t.params["global.attention"] == "full"
    assert " x1 + full x1" in run.stdout.split("top candidates")[1]
    pts = [p for p in points(study) if p.kind == "complete"]
    assert {p.variant for p in pts} == {"window+full"}  # one colour for the family
    assert done[0].user_attrs["stack"] in trials_table(pts)

    out = tmp_path / "best.json"
    run_cli("search.export", "--study", "h", "--storage", storage, "--out", str(out), check=True)
    best = ArchConfig.from_file(out)
    assert best.layer_attention[1].attention == "full" and best.layer_attention[0] is None
    # the export is the summary's pick (the ranked first, or a projected or plateau fallback)
    picked = plateau_pick(study).trial
    assert best == ArchConfig.from_dict(picked.user_attrs["config"])
    assert count_flops(best) == picked.user_attrs["flops"]

    target = 4 * count_flops(best)
    scale = run_cli(
        "search.scale",
        *("--study", "h", "--storage", storage, "--targets", str(target)),
        *("--coefficients", "1.2,1.1,1.0", "--workers", "1"),
        check=True,
    )
    assert "full x" in scale.stdout
    scaled = optuna.load_study(study_name="h-scaled", storage=storage)
    (grown,) = [t for t in scaled.trials if t.user_attrs.get("role") == "target"]
    cfg = ArchConfig.from_dict(grown.user_attrs["config"])
    assert 0.9 * target <= count_flops(cfg) <= target
    kinds = [s.attention for s in cfg.layer_specs()]
    assert kinds[-1] == "full" and kinds.count("full") == max(1, round(cfg.depth / 2))
    assert grown.user_attrs["stack"] == f"window{cfg.span} x{kinds.count('window')} + full x" + str(
        kinds.count("full")
    )
