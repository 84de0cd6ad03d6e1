"""Tests of trainers.tasks: labels checked by independent parsers, determinism, conventions."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainers.tasks import IGNORE_INDEX, TASKS, Batch, Task, combine_stats, get_task
from trainers.tasks.listops import VOCAB
from trainers.tasks.recall import RecallTask

NAMES = TASKS.names()
FIELDS = ("tokens", "targets", "mask")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "tasks.md"


class TinyTask(Task):
    """A user task defined outside the package: parity of the number of 2s, bidirectional."""

    name: ClassVar[str] = "tiny"
    causal: ClassVar[bool] = False
    metric: ClassVar[str] = "accuracy"
    direction: ClassVar[str] = "maximize"
    default_seq_len: ClassVar[int] = 8

    def __init__(self, seq_len: int | None = None, seed: int = 0, **options: Any) -> None:
        super().__init__(seq_len, seed, **options)
        self.vocab_size, self.num_classes = 3, 2

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        tokens = torch.from_numpy(rng.integers(1, 3, size=(batch_size, self.seq_len)))
        labels = (tokens == 2).sum(1) % 2
        return Batch(tokens, labels, torch.ones_like(tokens, dtype=torch.bool))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 60 kB of UTF-8 text with multi-byte characters."""
    r = random.Random(0)
    words = ["alpha", "béta", "γάμμα", "日本語", "naïve", "🙂", "the", "of", "and", "recall"]
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(" ".join(r.choice(words) for _ in range(10_000)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def make(corpus: Path):
    """make(name, **kw): a task; text gets the corpus as its data. Default ones are shared."""
    shared: dict[str, Task] = {}

    def _make(name: str, **kw: Any) -> Task:
        if not kw and name in shared:
            return shared[name]
        extra = {"data": [str(corpus)]} if name == "text" else {}
        task = get_task(name, **{**extra, **kw})
        if not kw:
            shared[name] = task
        return task

    return _make


def same(a: Batch, b: Batch) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in FIELDS)


def cat(batches: list[Batch]) -> Batch:
    return Batch(*(torch.cat([getattr(b, f) for b in batches]) for f in FIELDS))


# -- conventions every task keeps -------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_shapes_dtypes_and_mask(make, name: str) -> None:
    task = make(name)
    assert task.interface() == {
        "vocab_size": task.vocab_size, "seq_len": task.default_seq_len,
        "causal": task.causal, "num_classes": task.num_classes,
    }  # fmt: skip
    val = task.val_batches(100)
    assert sum(len(b) for b in val) == task.n_val > 0
    assert all(len(b) == 100 for b in val[:-1]) and 0 < len(val[-1]) <= 100
    for batch in [task.train_batch(3, 5), *val]:
        n, t = batch.tokens.shape
        assert t == task.seq_len and batch.tokens.dtype == torch.int64
        assert batch.mask.dtype == torch.bool and batch.mask.shape == (n, t)
        assert batch.tokens.min() >= 0 and batch.tokens.max() < task.vocab_size
        m = batch.mask.int()
        assert (m[:, 1:] <= m[:, :-1]).all(), "padding only at the end of a row"
        assert m[:, 0].all() and (batch.tokens[~batch.mask] == 0).all()
        y = batch.targets
        assert y.dtype == torch.int64
        if task.num_classes:
            assert y.shape == (n,) and y.min() >= 0 and y.max() < task.num_classes
        else:
            assert y.shape == (n, t)
            scored = y != IGNORE_INDEX
            assert scored.any(1).all() and not (scored & ~batch.mask).any()
            assert y[scored].min() >= 0 and y[scored].max() < task.vocab_size


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_metric(make, name: str) -> None:
    task = make(name, n_val=16)
    batch = task.train_batch(0, 4)
    width = task.num_classes or task.vocab_size
    shape = (4, width) if task.num_classes else (4, task.seq_len, width)
    logits = torch.randn(shape, requires_grad=True)
    loss = task.loss(logits, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    perfect = 20 * torch.nn.functional.one_hot(batch.targets.clamp(min=0), width).float()
    value = combine_stats([task.metric_stats(perfect, b) for b in [batch, batch]])
    uniform = combine_stats([task.metric_stats(torch.zeros(shape), batch)])
    if task.metric == "accuracy":
        assert value == 1.0 and 0 < task.chance() < 1
    else:
        assert value < 1e-3
        assert uniform == pytest.approx(8.0, abs=1e-5) and task.chance() == 8.0
    with pytest.raises(ValueError, match="logits of shape"):
        task.loss(torch.zeros(4, 3, 2), batch)


@pytest.mark.parametrize("name", NAMES)
def test_chance_loss_is_the_loss_of_the_best_constant_guess(make, name: str) -> None:
    task = make(name, n_val=64)
    val = task.build_val()
    width = task.num_classes or task.vocab_size
    scored = val.targets[val.targets != IGNORE_INDEX]
    freq = torch.bincount(scored, minlength=width).double() / scored.numel()
    guess = freq.clamp(min=1e-30).log().float()  # log-frequencies: the best constant logits
    shape = (len(val), width) if task.num_classes else (*val.tokens.shape, width)
    constant = task.loss(guess.expand(shape), val).item()
    assert task.chance_loss() == pytest.approx(constant, rel=1e-4)
    uniform = task.loss(torch.zeros(shape), val).item()
    assert task.chance_loss() <= uniform + 1e-6  # never above uniform guessing, log(width)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_in_seed_and_step(make, name: str) -> None:
    a, b, c = make(name, n_val=32), make(name, n_val=32), make(name, seed=1, n_val=32)
    assert same(a.train_batch(7, 6), b.train_batch(7, 6))
    assert not same(a.train_batch(7, 6), c.train_batch(7, 6))
    assert not same(a.train_batch(7, 6), a.train_batch(8, 6))
    val_a = cat(a.val_batches(10))
    assert same(val_a, cat(b.val_batches(10))) and same(val_a, cat(a.val_batches(7)))
    assert same(val_a, cat(a.val_batches(10)))
    if name == "text":  # held-out windows do not depend on the seed, by design
        assert same(val_a, cat(c.val_batches(10)))
    else:
        assert not same(val_a, cat(c.val_batches(10)))
        assert not same(val_a, a.train_batch(0, len(val_a)))  # a stream apart from training


# -- recall -----------------------------------------------------------------------------------
def check_recall(task: RecallTask, batch: Batch) -> None:
    """Parse each row: the pairs, then every query's label is the value of its key."""
    p = task.num_pairs
    for tokens, targets in zip(batch.tokens.tolist(), batch.targets.tolist()):
        keys, values = tokens[0 : 2 * p : 2], tokens[1 : 2 * p : 2]
        assert len(set(keys)) == p and all(task.KEY0 <= k < task.value0 for k in keys)
        assert all(task.value0 <= v < task.vocab_size for v in values)
        bound = dict(zip(keys, values))
        queries = [i for i, y in enumerate(targets) if y != IGNORE_INDEX]
        assert len(queries) == task.num_queries and min(queries) >= 2 * p + task.gap
        assert sorted(tokens[i] for i in queries) == sorted(keys)  # each key asked once
        for i in queries:
            assert targets[i] == bound[tokens[i]]
        rest = set(range(2 * p, task.seq_len)) - set(queries)
        assert all(tokens[i] == task.FILLER for i in rest)


def test_recall_labels_match_earlier_pairs(make) -> None:
    task = make("recall")
    assert task.vocab_size == 34 and task.chance() == 1 / 16
    check_recall(task, task.train_batch(0, 64))
    check_recall(task, task.val_batches(256)[0])


@settings(max_examples=25, deadline=None)
@given(
    num_pairs=st.integers(1, 12), gap=st.integers(0, 40), extra=st.integers(0, 30),
    seed=st.integers(0, 2**32), step=st.integers(0, 10**6),
)  # fmt: skip
def test_recall_labels_any_options(num_pairs: int, gap: int, extra: int, seed: int, step: int):
    seq_len = 3 * num_pairs + gap + extra
    task = get_task("recall", seq_len=seq_len, num_pairs=num_pairs, gap=gap, num_keys=12, seed=seed)
    check_recall(task, task.train_batch(step, 8))


def test_recall_window_narrower_than_distance_sees_no_value() -> None:
    task = get_task("recall", seq_len=160, num_pairs=8, gap=64)
    batch = task.train_batch(0, 32)
    rows, pos = (batch.targets != IGNORE_INDEX).nonzero(as_tuple=True)
    brute = [q - batch.tokens[r].tolist().index(batch.tokens[r, q]) - 1 for r, q in zip(rows, pos)]
    assert task.query_distances(batch).tolist() == brute  # key at 2i, value at 2i + 1
    assert task.min_query_distance(batch) == min(brute) >= task.gap + 1
    for r, q in zip(rows.tolist(), pos.tolist()):
        narrow = batch.tokens[r, q - task.gap : q + 1]  # width gap + 1 <= d: no value at all
        assert not (narrow >= task.value0).any()


# -- listops ----------------------------------------------------------------------------------
OPS = {
    "[MAX": max, "[MIN": min, "[SM": lambda a: sum(a) % 10,
    "[MED": lambda a: int(np.median(a)),
}  # fmt: skip


def evaluate_listops(ids: list[int]) -> int:
    """Stack evaluation of the token text, independent of the generator."""
    stack: list[list[Any]] = [[]]
    for word in (VOCAB[i] for i in ids):
        if word in OPS:
            stack.append([word])
        elif word == "]":
            op, *args = stack.pop()
            assert len(args) >= 2
            stack[-1].append(OPS[op](args))
        else:
            stack[-1].append(int(word))
    assert len(stack) == 1 and len(stack[0]) == 1, "brackets balance, one expression"
    return stack[0][0]


def test_listops_labels_match_independent_evaluator(make) -> None:
    task = make("listops")
    batches = [*task.val_batches(64), task.train_batch(0, 32)]
    labels = []
    for batch in batches:
        for ids, mask, y in zip(batch.tokens, batch.mask, batch.targets.tolist()):
            real = ids[mask].tolist()
            assert task.min_length <= len(real) <= task.seq_len and 0 not in real
            assert evaluate_listops(real) == y
            labels.append(y)
    assert len(labels) >= 200 and len(set(labels)) >= 8
    assert task.chance() == max(labels[:256].count(k) for k in range(10)) / 256


# -- errors -----------------------------------------------------------------------------------
BAD = [
    ("recall", {"seq_len": 0}, "seq_len"), ("recall", {"seq_len": 2.5}, "seq_len"),
    ("recall", {"num_pairs": 0}, "num_pairs"), ("recall", {"num_keys": -3}, "num_keys"),
    ("recall", {"num_values": True}, "num_values"), ("recall", {"num_pairs": "x"}, "num_pairs"),
    ("recall", {"seq_len": 40, "num_pairs": 16}, "seq_len"), ("recall", {"n_val": 0}, "n_val"),
    ("recall", {"num_pairs": 20, "num_keys": 10}, "num_pairs"),
    ("recall", {"bogus": 1}, "bogus.*num_pairs"), ("recall", {"data": ["x.txt"]}, "--data"),
    ("listops", {"max_args": 1}, "max_args"), ("listops", {"min_length": 300}, "min_length"),
    ("listops", {"max_depth": 2, "max_args": 2}, "max_depth"),
    ("text", {"val_fraction": 1.5}, "val_fraction"), ("text", {"val_fraction": 0}, "fraction"),
    ("text", {"seq_len": 10**6}, r"corpus\.txt.*seq_len"),
]  # fmt: skip


@pytest.mark.parametrize("name, kwargs, pattern", BAD)
def test_bad_options_name_the_option(make, name: str, kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern) as err:
        make(name, **kwargs)
    assert "e.g." in str(err.value)


def test_bad_batch_arguments(make) -> None:
    task = make("recall")
    calls = [(task.train_batch, (0, 0)), (task.train_batch, (-1, 4)), (task.val_batches, (0,))]
    for (call, args), pattern in zip(calls, ["batch_size", "step", "batch_size"]):
        with pytest.raises(ValueError, match=pattern):
            call(*args)


def test_text_defaults_to_the_interpreters_stdlib_sources() -> None:
    from trainers.tasks.text import stdlib_corpus, stdlib_files

    files = stdlib_files()
    assert files == stdlib_files()  # a fixed order
    assert any(p.name == "argparse.py" for p in files)
    assert not any("test" in p.parts[-2:-1] or "site-packages" in p.parts for p in files)
    task = get_task("text")
    assert task.seq_len == 512 and task.corpus.startswith("stdlib:python3.")
    raw = stdlib_corpus()
    assert bytes(task.train_bytes) + bytes(task.val_bytes) == raw
    assert len(task.val_bytes) == math.ceil(0.1 * len(raw))
    with pytest.raises(ValueError, match="--data"):
        get_task("text", data=["/nonexistent/corpus.txt"])


def test_text_data_errors(tmp_path: Path, corpus: Path) -> None:
    with pytest.raises(ValueError, match=r"nope\.txt.*does not exist"):
        get_task("text", data=[str(corpus), str(tmp_path / "nope.txt")])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 200)
    with pytest.raises(ValueError, match=r"latin1\.txt.*not UTF-8"):
        get_task("text", data=[str(bad)])
    short = tmp_path / "short.txt"
    short.write_text("tiny", encoding="utf-8")
    with pytest.raises(ValueError, match=r"short\.txt.*too short"):
        get_task("text", data=[str(short)], seq_len=16)
    task = get_task("text", data=str(corpus), seq_len=32)  # a single path is fine too
    assert task.vocab_size == 256 and 0 < task.n_val <= 256


def test_text_split_is_the_tail(corpus: Path) -> None:
    task = get_task("text", data=[str(corpus)], seq_len=64, val_fraction=0.2)
    raw = corpus.read_bytes()
    cut = len(raw) - math.ceil(0.2 * len(raw))
    assert bytes(task.train_bytes) == raw[:cut] and bytes(task.val_bytes) == raw[cut:]
    batch = task.train_batch(5, 8)
    assert torch.equal(batch.tokens[:, 1:], batch.targets[:, :-1])
    for row in batch.tokens.tolist():
        assert bytes(row) in raw[:cut]
    for b in task.val_batches(64):
        for row, y in zip(b.tokens.tolist(), b.targets.tolist()):
            assert bytes(row + y[-1:]) in raw[cut:]


# -- user tasks and the registry --------------------------------------------------------------
def test_user_task_by_import_path() -> None:
    task = get_task("tests.trainers_tests.test_tasks:TinyTask", seq_len=12, n_val=10)
    assert isinstance(task, TinyTask) and task.interface()["num_classes"] == 2
    assert same(task.train_batch(1, 4), TinyTask(seq_len=12).train_batch(1, 4))
    assert [len(b) for b in task.val_batches(4)] == [4, 4, 2] and task.chance() == 0.5
    with pytest.raises(ValueError, match="cannot import"):
        get_task("tests.trainers_tests.test_tasks:Missing")
    with pytest.raises(ValueError, match="not a Task subclass"):
        get_task("math:pi")


def test_unknown_task_lists_registered_names() -> None:
    with pytest.raises(ValueError, match=re.escape(", ".join(NAMES))):
        get_task("no-such-task")


def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example in docs/tasks.md, saved as mytasks.py, works through its import path."""
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S).group(1)
    (tmp_path / "mytasks.py").write_text(code, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = get_task("mytasks:MajorityTask", seq_len=33)
    batch = task.train_batch(0, 16)
    assert torch.equal(batch.targets, ((batch.tokens == 2).sum(1) > 33 // 2).long())
    assert task.chance() == 0.5 and sum(map(len, task.val_batches(64))) == task.n_val
