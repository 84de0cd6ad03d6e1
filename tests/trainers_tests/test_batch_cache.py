"""The per-process memo of training batches (trainers/tasks/cache.py): a cached batch is exactly
the drawn one, callers cannot corrupt it, the key holds everything the stream depends on, and
the cap holds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from trainers.tasks import Batch, get_task
from trainers.tasks.base import _TRAIN_STREAM, rng_for
from trainers.tasks.cache import TRAIN_BATCHES, BatchCache
from trainers.tasks.listops import ListOpsTask


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    TRAIN_BATCHES.clear()
    yield
    TRAIN_BATCHES.clear()


def drawn(task, step: int, batch_size: int) -> Batch:
    """The batch as `sample` draws it, with no cache involved."""
    return task.sample(rng_for(task.seed, _TRAIN_STREAM, step), batch_size)


def same(a: Batch, b: Batch) -> bool:
    return all(
        torch.equal(getattr(a, f), getattr(b, f)) and getattr(a, f).dtype == getattr(b, f).dtype
        for f in ("tokens", "targets", "mask")
    )


def test_a_cached_listops_batch_is_the_drawn_batch_stored_in_2_bytes_a_token() -> None:
    task = get_task("listops", seq_len=64, n_val=8)
    first, again = task.train_batch(5, 4), task.train_batch(5, 4)
    assert same(first, drawn(task, 5, 4)) and same(again, drawn(task, 5, 4))
    assert first.tokens.dtype == torch.int64
    assert (TRAIN_BATCHES.misses, TRAIN_BATCHES.hits) == (1, 1)
    # uint8 tokens (4 x 64) + bool mask (4 x 64) + int64 labels (4)
    assert TRAIN_BATCHES.bytes == 4 * 64 + 4 * 64 + 4 * 8


def test_editing_a_returned_batch_leaves_the_cache_alone() -> None:
    task = get_task("listops", seq_len=64, n_val=8)
    for _ in range(2):  # the miss's batch, then a hit's
        batch = task.train_batch(2, 3)
        batch.tokens.zero_(), batch.targets.zero_(), batch.mask.zero_()
    assert same(task.train_batch(2, 3), drawn(task, 2, 3))


@pytest.mark.parametrize(
    "other",
    [
        dict(seq_len=64, n_val=8, seed=1),
        dict(seq_len=64, n_val=8, max_args=5),
        dict(seq_len=96, n_val=8),
    ],
    ids=["seed", "option", "seq_len"],
)
def test_everything_the_stream_depends_on_is_in_the_key(other: dict) -> None:
    base = get_task("listops", seq_len=64, n_val=8)
    base.train_batch(1, 4)
    changed = get_task("listops", **other)
    assert same(changed.train_batch(1, 4), drawn(changed, 1, 4))
    assert same(base.train_batch(1, 3), drawn(base, 1, 3))  # batch size too
    assert same(base.train_batch(2, 4), drawn(base, 2, 4))  # and the step
    assert TRAIN_BATCHES.hits == 0


def test_the_cache_keeps_the_first_batches_within_its_cap(monkeypatch) -> None:
    per_batch = 4 * 64 + 4 * 64 + 4 * 8
    monkeypatch.setattr(ListOpsTask, "train_cache_mb", 2.5 * per_batch / 2**20)
    task = get_task("listops", seq_len=64, n_val=8)
    for _ in range(2):
        batches = [task.train_batch(step, 4) for step in range(4)]
    assert TRAIN_BATCHES.bytes == 2 * per_batch
    assert (TRAIN_BATCHES.hits, TRAIN_BATCHES.misses) == (2, 6)  # steps 2 and 3 drawn twice
    assert all(same(b, drawn(task, s, 4)) for s, b in enumerate(batches))


def test_a_task_without_a_cap_draws_every_batch(monkeypatch) -> None:
    task = get_task("recall", seq_len=32, num_pairs=4, n_val=8)
    calls = []
    sample = type(task).sample
    monkeypatch.setattr(type(task), "sample", lambda self, *a: calls.append(a) or sample(self, *a))
    assert same(task.train_batch(0, 2), task.train_batch(0, 2))
    assert len(calls) == 2 and TRAIN_BATCHES.bytes == 0 and TRAIN_BATCHES.misses == 0


def test_ids_beyond_the_vocabulary_are_kept_whole() -> None:
    cache = BatchCache()
    tokens = torch.tensor([[1, 300, 2]])
    batch = Batch(tokens, torch.tensor([0]), torch.ones(1, 3, dtype=torch.bool))
    cache.get("k", lambda: batch, vocab_size=4, limit_mb=1)
    got = cache.get("k", lambda: pytest.fail("drawn again"), vocab_size=4, limit_mb=1)
    assert torch.equal(got[0], tokens) and cache.hits == 1
