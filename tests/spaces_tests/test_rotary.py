"""Rotary positions: offsets, not places, decide scores; no learned table; old files load."""

from __future__ import annotations

import json

import pytest
import torch

from spaces import ArchConfig, build_model
from spaces.flops import count_flops, count_params, estimate_params
from spaces.rotary import Rotary

BASE = dict(vocab_size=50, seq_len=32, causal=True, depth=2, d_model=32, n_heads=2)


def test_rotated_scores_depend_only_on_the_offset():
    torch.manual_seed(0)
    rot = Rotary(head_dim=8, seq_len=32)
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> float:
        qs = torch.zeros(1, 1, 32, 8)
        ks = torch.zeros(1, 1, 32, 8)
        qs[0, 0, i], ks[0, 0, j] = q, k
        return float(rot(qs)[0, 0, i] @ rot(ks)[0, 0, j])

    assert score(5, 2) == pytest.approx(score(20, 17), abs=1e-5)  # offset 3 both times
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0: no rotation
    assert score(5, 2) != pytest.approx(score(5, 4), abs=1e-3)


def test_rotation_keeps_norms_and_leaves_an_odd_channel_alone():
    rot = Rotary(head_dim=5, seq_len=16)
    t = torch.randn(2, 3, 16, 5)
    out = rot(t)
    assert torch.allclose(out.norm(dim=-1), t.norm(dim=-1), atol=1e-5)
    assert torch.equal(out[..., 4], t[..., 4])


def test_rope_is_the_default_and_has_no_learned_table():
    rope = build_model(ArchConfig(**BASE))
    learned = build_model(ArchConfig(**BASE, positions="learned"))
    assert rope.pos_emb is None
    names = set(rope.state_dict())
    assert not any("pos_emb" in n or "rotary" in n for n in names)
    assert set(learned.state_dict()) - names == {"pos_emb.weight"}
    drop = BASE["seq_len"] * BASE["d_model"]
    assert (
        count_params(ArchConfig(**BASE, positions="learned")) - count_params(ArchConfig(**BASE))
        == drop
    )
    assert estimate_params(ArchConfig(**BASE)) == count_params(ArchConfig(**BASE))
    # the rotation is elementwise: fvcore counts no multiply-add for it
    assert count_flops(ArchConfig(**BASE)) == count_flops(ArchConfig(**BASE, positions="learned"))


@pytest.mark.parametrize("attention", ["full", "window", "sparse", "lsh", "linear"])
def test_a_causal_rope_model_does_not_see_the_future(attention):
    torch.manual_seed(0)
    params = {"window": {"window": 4}, "sparse": {"block": 8}, "lsh": {"bucket_size": 8}}
    cfg = ArchConfig(**BASE, attention=attention, attention_params=params.get(attention, {}))
    model = build_model(cfg).eval()
    x = torch.randint(0, 50, (1, 32))
    y = x.clone()
    y[0, 20:] = (y[0, 20:] + 1) % 50
    with torch.no_grad():
        assert torch.allclose(model(x)[0, :20], model(y)[0, :20], atol=1e-5)


def test_a_schema_1_file_builds_a_learned_table_and_loads_its_weights(tmp_path):
    old = build_model(ArchConfig(**BASE, positions="learned"))
    doc = {**BASE, "schema_version": 1}  # written before `positions` existed
    (tmp_path / "old.json").write_text(json.dumps(doc))
    cfg = ArchConfig.from_file(tmp_path / "old.json")
    assert cfg.positions == "learned" and cfg.schema_version == 2
    build_model(cfg).load_state_dict(old.state_dict())  # strict: the same weights
    assert json.loads(cfg.to_json())["positions"] == "learned"


@pytest.mark.parametrize("head_dim", [8, 7])
def test_the_rotation_is_the_half_split_formula(head_dim):
    t = torch.randn(2, 3, 16, head_dim)
    h = head_dim // 2
    inv = 10_000.0 ** (-torch.arange(h, dtype=torch.float64) / h)
    ang = (torch.arange(16, dtype=torch.float64)[:, None] * inv).float()
    a, b = t[..., :h], t[..., h : 2 * h]
    want = torch.cat((a * ang.cos() - b * ang.sin(), a * ang.sin() + b * ang.cos()), -1)
    got = Rotary(head_dim, 16)(t)
    assert torch.allclose(got[..., : 2 * h], want, atol=1e-6)
    assert torch.equal(got[..., 2 * h :], t[..., 2 * h :])


def test_the_rotary_benchmark_compares_two_forms_of_the_same_rotation(capsys):
    from benchmarks import rotary

    assert rotary.main(["--seq-len", "32", "--calls", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("max difference 0.0e+00") == 4  # roll and halves: the same numbers
    assert "full 3x64" in out and "sparse(16) 8x64" in out and "rope costs" in out
