"""`identity`: configs that build the same model compare equal, and only those.

For every variant, over every combination of its search choices at 64 tokens, causal and not:
params with equal identity give the same outputs from the same seed (to float rounding: a
sparse pattern may be computed densely under one name and gathered under another) and the same
FLOPs, and params with different identity differ in outputs or FLOPs."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from spaces import ArchConfig
from spaces.attention import ATTENTION

T, D_MODEL, HEADS = 64, 16, 2  # the pattern tests also run at 128 tokens


def _settings():
    for name in ATTENTION.names():
        cls = ATTENTION.get(name)
        for causal in (False, True):
            if cls.supports_causal if causal else cls.supports_bidirectional:
                yield name, causal


def _valid_params(cls, causal, seq_len=T):
    keys = list(cls.search_choices)
    for combo in itertools.product(*(cls.search_choices[k] for k in keys)):
        params = dataclasses.replace(cls.Params(), **dict(zip(keys, combo)))
        try:
            cls.validate(params, seq_len, causal)
        except ValueError:
            continue
        yield params


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _output(cls, params, causal, x):
    torch.manual_seed(0)
    module = cls(D_MODEL, HEADS, x.shape[1], params)
    with torch.no_grad():
        return module(x, None, causal)


@pytest.mark.parametrize(("name", "causal"), list(_settings()))
@pytest.mark.parametrize("seq_len", [T, 2 * T])
def test_equal_identity_means_the_same_model(name, causal, seq_len):
    cls = ATTENTION.get(name)
    x = torch.randn(2, seq_len, D_MODEL, generator=torch.Generator().manual_seed(1))
    groups: dict[str, list] = {}
    for params in _valid_params(cls, causal, seq_len):
        key = repr(cls.identity(params, seq_len, causal))
        groups.setdefault(key, []).append(params)
    reps = []
    for members in groups.values():
        first = members[0]
        out = _output(cls, first, causal, x)
        flops = cls.attention_flops(first, seq_len, HEADS, D_MODEL // HEADS, causal)
        for other in members[1:]:  # the same model under another name
            assert _same(_output(cls, other, causal, x), out), (first, other)
            assert cls.attention_flops(other, seq_len, HEADS, D_MODEL // HEADS, causal) == flops
        reps.append((first, out, flops))
    for (a, out_a, flops_a), (b, out_b, flops_b) in itertools.combinations(reps, 2):
        assert flops_a != flops_b or not _same(out_a, out_b), (a, b)  # distinct models


def test_the_inert_fields_that_identity_folds():
    linear, sparse = ATTENTION.get("linear"), ATTENTION.get("sparse")
    favor = linear.Params(feature_map="favor", n_features=32, chunk=32)
    assert linear.identity(favor, T, False) == linear.identity(
        dataclasses.replace(favor, chunk=128), T, False
    )  # chunking is the causal computation's
    assert linear.identity(favor, T, True) != linear.identity(
        dataclasses.replace(favor, chunk=128), T, True
    )  # causal: the same function, but not the same FLOPs
    elu = linear.Params(feature_map="elu", n_features=32)
    assert linear.identity(elu, T, True) == linear.identity(
        dataclasses.replace(elu, n_features=256), T, True
    )  # elu(x) + 1 has D features, whatever n_features says
    # 64 tokens in blocks of 32: two blocks, so 1, 2 or 3 local blocks each see both
    wide = sparse.Params(block=32, local_blocks=1, global_blocks=0)
    assert sparse.identity(wide, T, False) == sparse.identity(
        dataclasses.replace(wide, local_blocks=3), T, False
    )
    n_groups = len({repr(sparse.identity(p, T, False)) for p in _valid_params(sparse, False)})
    assert n_groups < len(list(_valid_params(sparse, False)))


def _cfg(**changes) -> ArchConfig:
    base = {"vocab_size": 16, "seq_len": T, "causal": False, "num_classes": 10}
    return ArchConfig.from_dict({**base, "depth": 2, "d_model": 16, "n_heads": 1, **changes})


def test_config_identity():
    linear = {"attention": "linear", "attention_params": {"feature_map": "favor", "chunk": 32}}
    a = _cfg(**linear)
    b = _cfg(**{**linear, "attention_params": {"feature_map": "favor", "chunk": 128}})
    assert a != b and a.identity() == b.identity()
    assert a.identity() != _cfg(**linear, d_model=32).identity()
    assert _cfg(unique_blocks=2).identity() == _cfg(unique_blocks=0).identity()  # 2 of 2 layers
    assert _cfg(unique_blocks=1).identity() != _cfg(unique_blocks=0).identity()  # ALBERT
    # a hybrid stack's layers are compared by their own identity
    layer = {"attention": "linear", "attention_params": {"chunk": 32}}
    other = {"attention": "linear", "attention_params": {"chunk": 128}}
    assert (
        _cfg(layer_attention=[None, layer]).identity()
        == _cfg(layer_attention=[None, other]).identity()
    )
    assert _cfg(layer_attention=[None, layer]).identity() != _cfg().identity()
