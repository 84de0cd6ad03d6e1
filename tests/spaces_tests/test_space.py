"""The search space: what a trial is asked, what config it yields, and the hybrid pattern
dimension (issue 16)."""

from __future__ import annotations

import optuna
import pytest

from search.compound import Coefficients, fit_to_target, scale_config
from spaces.flops import estimate_flops
from spaces.layers import describe_stack
from spaces.space import SearchSpace

CAUSAL = {"seq_len": 64, "causal": True, "vocab_size": 32}  # window fits: 16, 32, 64
PLAIN_PARAMS = {"attention", "depth", "n_heads", "head_dim", "ffn_mult", "sharing"}


def _trial(**params) -> optuna.trial.FixedTrial:
    return optuna.trial.FixedTrial(params)


def test_a_space_without_patterns_asks_exactly_what_it_asked_before():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    space = SearchSpace(variants=("full", "linear"))
    for _ in range(10):
        trial = study.ask()
        cfg = space.suggest(trial, CAUSAL)
        variant_params = {k for k in trial.params if k.startswith(f"{cfg.attention}.")}
        assert set(trial.params) - variant_params == PLAIN_PARAMS
        assert cfg.layer_attention is None
    assert "patterns" not in space.to_dict()  # old studies' stored spaces still match on resume
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_a_pattern_trial_yields_the_hybrid_it_names_and_never_shares():
    space = SearchSpace(variants=("window",), patterns=("none", "spread", "last"))
    trial = _trial(
        attention="window",
        **{"window.window": 16, "window.global_tokens": 0},
        depth=6,
        n_heads=2,
        head_dim=16,
        ffn_mult=4.0,
        sharing="all",  # ignored for a hybrid: shared layers must share their attention
        pattern="spread",
        **{"global.attention": "full", "global.layers": 2},
    )
    cfg = space.suggest(trial, CAUSAL)
    assert describe_stack(cfg) == "window16 x4 + full x2"
    assert [i for i, s in enumerate(cfg.layer_attention) if s] == [2, 5]
    assert cfg.unique_blocks == 0
    plain = space.suggest(
        _trial(
            attention="window",
            **{"window.window": 16, "window.global_tokens": 0},
            depth=6,
            n_heads=2,
            head_dim=16,
            ffn_mult=4.0,
            sharing="all",
            pattern="none",
        ),
        CAUSAL,
    )
    assert plain.layer_attention is None and plain.unique_blocks == 1
    doc = space.to_dict()
    assert doc["patterns"] == ["none", "spread", "last"] and "global_layers" not in doc
    assert SearchSpace.from_dict(doc) == space


def test_global_layers_get_their_own_params_and_one_layer_leaves_no_room():
    space = SearchSpace(variants=("linear",), patterns=("last",), global_variants=("window",))
    params = dict(attention="linear", n_heads=1, head_dim=16, ffn_mult=1.0, sharing="none")
    glob = {"pattern": "last", "global.attention": "window", "global.window.window": 32}
    glob.update({"global.window.global_tokens": 0})
    params.update({"linear.feature_map": "elu", "linear.n_features": 32, "linear.chunk": 32})
    cfg = space.suggest(_trial(depth=4, **params, **glob, **{"global.layers": 1}), CAUSAL)
    assert describe_stack(cfg) == "linear x3 + window32 x1"
    one = space.suggest(_trial(depth=1, **params, **glob, **{"global.layers": 2}), CAUSAL)
    assert one.layer_attention is None  # at least one base layer stays


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"patterns": ("every_other",)}, "space.patterns: 'every_other'"),
        ({"global_layers": (0,)}, "space.global_layers"),
        ({"global_variants": ("nope",)}, "space.global_variants: unknown variant 'nope'"),
        ({"patterns": "last"}, "space.patterns must be a list"),
    ],
)
def test_bad_pattern_dimensions_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace(**changes)


def test_a_causal_task_refuses_bidirectional_only_global_layers():
    space = SearchSpace(patterns=("last",), global_variants=("lowrank",))
    trial = _trial(
        attention="full", depth=2, n_heads=1, head_dim=16, ffn_mult=1.0, sharing="none",
        pattern="last",
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"space\.global_variants: none of"):
        space.suggest(trial, CAUSAL)


def test_compound_scaling_keeps_the_pattern_ratio():
    space = SearchSpace(variants=("window",), patterns=("spread",))
    base = space.suggest(
        _trial(
            attention="window",
            **{"window.window": 16, "window.global_tokens": 0},
            depth=6,
            n_heads=2,
            head_dim=32,
            ffn_mult=4.0,
            sharing="none",
            pattern="spread",
            **{"global.attention": "full", "global.layers": 1},
        ),
        CAUSAL,
    )
    grown = scale_config(base, Coefficients(2.0, 1.0, 1.0), 1.0)  # twice as deep
    assert grown.depth == 12 and describe_stack(grown) == "window16 x10 + full x2"
    assert grown.layer_attention[11] is not None  # still ends with a global layer
    target = 8 * estimate_flops(base)
    fitted, _ = fit_to_target(base, Coefficients(1.2, 1.1, 1.0), target, estimate_flops)
    assert 0.9 * target <= estimate_flops(fitted) <= target
    labels = [s.attention for s in fitted.layer_specs()]
    assert labels.count("full") == max(1, round(fitted.depth / 6))


def test_a_field_is_not_lost_to_another_fields_default():
    # window's default reach (128) is longer than 64 tokens; its choices 16-64 still fit
    space = SearchSpace()
    assert space.variant_choices("window", 64, True) == {
        "window": [16, 32, 64],
        "global_tokens": [0],
    }
    assert "window" in space.valid_variants(64, True)
    assert space.variant_choices("window", 512, False)["global_tokens"] == [0, 1, 8]


def test_seeded_baselines_include_the_outcome_baselines_and_a_two_layer_one():
    """At 10 MFLOPs and 128 tokens the largest full model with head dim 32 is one layer (1x64,
    2 heads: the hand baseline benchmarks.outcome trains); the seeds hold it and the largest
    with two or more layers (3x32), and head dim 64's single 1x64 once."""
    from spaces.baselines import largest_full

    iface = {"vocab_size": 66, "seq_len": 128, "causal": True, "num_classes": 0}
    seeds = SearchSpace().baselines(iface, 10e6)
    shapes = [(p["depth"], p["n_heads"], p["head_dim"]) for p in seeds]
    assert shapes == [(1, 1, 64), (1, 2, 32), (3, 1, 32)]
    assert all(p["attention"] == "full" and p["ffn_mult"] == 4.0 for p in seeds)
    for head_dim in (64, 32):
        hand = largest_full(iface, 10e6, head_dim=head_dim)
        assert (hand.depth, hand.n_heads, head_dim) in shapes
    # where the largest already has two layers, one seed per head dim
    big = SearchSpace().baselines({**iface, "vocab_size": 256}, 20e6)
    assert [(p["depth"], p["n_heads"], p["head_dim"]) for p in big] == [(2, 1, 64), (2, 2, 32)]
