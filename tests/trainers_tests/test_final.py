"""The final trainer: exact resume, loadable safetensors, WSD schedule, divergence reported."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from spaces import ArchConfig, build_model
from tests.trainers_tests.conftest import small_config
from trainers.final import CheckpointMismatch, FinalTrainer, load_weights
from trainers.proxy import Recipe

RECIPE = Recipe(val_tokens=256, eval_batch_size=16)


def trainer(task, out=None, tokens=32 * 8 * 12, **kw):
    cfg = kw.pop("cfg", None) or small_config(task)
    return FinalTrainer(cfg, task, tokens, batch_size=8, recipe=RECIPE, out=out, **kw)


def test_runs_whole_steps_and_evaluates_on_schedule(task):
    t = trainer(task, eval_every=4)
    assert (t.steps, t.tokens) == (12, 12 * 8 * 32)
    res = t.run()
    assert res.status == "ok" and res.steps == 12
    assert [e.step for e in res.history] == [4, 8, 12]
    assert res.loss == res.history[-1].loss and res.loss < 3.5  # below chance (ln 32 = 3.47)


def test_lr_is_warmup_stable_decay(task):
    t = trainer(task, tokens=32 * 8 * 100)  # 100 steps: warm-up 5, decay 20
    peak = 1.0
    assert [t.lr_at(s, peak) for s in (0, 4)] == [0.2, 1.0]
    assert t.lr_at(50, peak) == 1.0 and t.lr_at(79, peak) == 1.0
    assert t.lr_at(80, peak) == pytest.approx(0.95) and t.lr_at(99, peak) == 0.0


def test_resume_continues_exactly(task, tmp_path):
    straight = trainer(task, tmp_path / "a", eval_every=3).run()
    calls = {"n": 0}

    def stop_after_five():
        calls["n"] += 1
        return calls["n"] == 5

    first = trainer(task, tmp_path / "b", eval_every=3).run(should_stop=stop_after_five)
    assert first.status == "interrupted" and first.steps == 5
    assert json.loads((tmp_path / "b" / "history.json").read_text())[0]["step"] == 3
    resumed = trainer(task, tmp_path / "b", eval_every=3).run(resume=True)
    assert resumed.status == "ok" and resumed.steps == straight.steps
    assert [e.loss for e in resumed.history] == [e.loss for e in straight.history]
    a, b = (
        load_file(tmp_path / "a" / "model.safetensors"),
        load_file(tmp_path / "b" / "model.safetensors"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_loads_with_build_model(task, tmp_path):
    res = trainer(task, tmp_path).run()
    cfg = ArchConfig.from_file(tmp_path / "config.json")
    model = build_model(cfg)
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))  # strict
    assert model.head.weight is model.tok_emb.weight  # still tied after loading
    batch = task.val_batches(4)[0]
    same = load_weights(tmp_path)
    with torch.no_grad():
        assert torch.equal(model.eval()(batch.tokens, batch.mask), same(batch.tokens, batch.mask))
    assert res.tokens == 12 * 8 * 32


def test_resume_refuses_a_different_run(task, tmp_path):
    trainer(task, tmp_path).run()
    other = trainer(task, tmp_path, cfg=small_config(task, d_model=16))
    with pytest.raises(ValueError, match=r"different run.*config"):
        other.run(resume=True)


def test_a_checkpoint_from_before_the_width_power_resumes_and_another_power_is_refused(
    task, tmp_path
):
    """The identity holds the recipe as a study stores it, so a checkpoint written before
    `lr_width_power` existed (a recipe without the key) still matches; before (the whole
    dataclass), adding a field would have refused every earlier --resume."""
    run = trainer(task, tmp_path)
    run.run(should_stop=lambda: True)
    state_path = tmp_path / "train_state.pt"
    state = torch.load(state_path, weights_only=False)
    assert "lr_width_power" not in state["identity"]["recipe"]  # the default is not stored
    state["identity"]["recipe"] = {
        k: v for k, v in dataclasses.asdict(RECIPE).items() if k != "lr_width_power"
    }
    torch.save(state, state_path)  # as the previous release wrote it
    trainer(task, tmp_path).check_resume()
    linear = dataclasses.replace(RECIPE, lr_width_power=1.0)
    other = FinalTrainer(
        small_config(task), task, 32 * 8 * 12, batch_size=8, recipe=linear, out=tmp_path
    )
    with pytest.raises(CheckpointMismatch) as info:
        other.check_resume()
    assert info.value.fields == ["recipe"]


def test_resume_without_a_checkpoint_raises_instead_of_starting_afresh(task, tmp_path):
    # before: run(resume=True) with nothing to continue silently trained a new run
    with pytest.raises(FileNotFoundError, match=r"resume=True: no checkpoint .*train_state\.pt"):
        trainer(task, tmp_path / "none").run(resume=True)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="resume=True needs an `out` folder"):
        trainer(task, None).run(resume=True)


def test_check_resume_reads_the_identity_before_any_training(task, tmp_path):
    trainer(task, tmp_path / "run").run(should_stop=lambda: True)
    trainer(task, tmp_path / "run").check_resume()  # the same run: nothing to say
    trainer(task, tmp_path / "none").check_resume()  # no checkpoint: nothing to check
    other = trainer(task, tmp_path / "run", cfg=small_config(task, d_model=16))
    with pytest.raises(CheckpointMismatch) as info:
        other.check_resume()
    assert info.value.fields == ["config"]
    (tmp_path / "run" / "train_state.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read the checkpoint"):
        trainer(task, tmp_path / "run").check_resume()


def test_divergence_is_a_status_with_its_reason(task, tmp_path):
    res = trainer(task, tmp_path, lr=1e30).run()
    assert res.status == "diverged"
    assert "non-finite" in res.reason and "lr 1e+30" in res.reason


def test_config_must_fit_the_task(task):
    with pytest.raises(ValueError, match="vocab_size=7"):
        trainer(task, cfg=small_config(task, vocab_size=7))


def test_a_compiled_run_trains_the_same_and_saves_plain_keys(task, tmp_path, monkeypatch):
    """--compile: the steps go through torch.compile's wrapper (here its eager backend, the same
    math without minutes of compiling on the CPU); results and checkpoint keys are unchanged."""
    real = torch.compile
    compiled = []

    def eager_compile(model, **kw):
        compiled.append(model)
        return real(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    plain = trainer(task, tmp_path / "plain", eval_every=6).run()
    fast = trainer(task, tmp_path / "fast", eval_every=6, compile_model=True).run()
    assert len(compiled) == 1 and fast.status == plain.status == "ok"
    assert [e.loss for e in fast.history] == pytest.approx([e.loss for e in plain.history])
    keys = set(load_file(str(tmp_path / "fast" / "model.safetensors")))
    assert keys == set(load_file(str(tmp_path / "plain" / "model.safetensors")))
    assert not any(k.startswith("_orig_mod") for k in keys)


def test_compile_is_on_with_cuda_by_default_and_off_on_the_cpu(task, tmp_path):
    from search.train import build, parser

    cfg = tmp_path / "c.json"
    small_config(task).to_file(cfg)
    args = ["--tokens", "4096", "--task", "recall", "--option", "num_pairs=4"]
    for extra, on in (([], False), (["--compile", "on"], True), (["--compile", "off"], False)):
        ns = parser().parse_args([str(cfg), *args, "--out", str(tmp_path / str(on)), *extra])
        assert build(ns)[0].compile_model is on


def test_compile_defaults_on_with_cuda(task, tmp_path, monkeypatch):
    import search.train

    cfg = tmp_path / "c.json"
    small_config(task).to_file(cfg)
    seen: list[bool] = []

    class Recorder:  # stands in for FinalTrainer: no CUDA needed to see what build asks for
        def __init__(self, *args, compile_model: bool, **kwargs):
            seen.append(compile_model)

        def has_checkpoint(self) -> bool:
            return False

    monkeypatch.setattr(search.train, "FinalTrainer", Recorder)
    args = ["--tokens", "4096", "--task", "recall", "--option", "num_pairs=4", "--device", "cuda"]
    for extra in ([], ["--compile", "off"], ["--compile", "on"]):
        ns = search.train.parser().parse_args([str(cfg), *args, *extra])
        search.train.build(ns)
    assert seen == [True, False, True]
