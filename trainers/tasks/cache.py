"""A per-process memo of training batches, for tasks whose sampling is slow.

A task's training stream is a deterministic function of (task, seed, step, batch size), and
every candidate of a search, every rung and every final-training job in one process reads the
same stream from step 0. Most tasks draw a batch in about 0.05 ms. ListOps draws about 3,700
random numbers per accepted expression (LRA's rejection sampling, in Python): 5 ms per batch of
8 x 128 tokens on this 2-core CPU, as long as a small model's whole optimizer step. A task that
sets `Task.train_cache_mb` therefore keeps its training batches, compactly (tokens in the
smallest integer type that holds the vocabulary), up to that many MB per process; batches past
the cap are drawn each time. Every lookup returns new tensors, so a caller that edits a batch in
place cannot change what the next caller gets.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Protocol

import torch

Parts = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # a Batch's (tokens, targets, mask)


class Drawn(Protocol):  # trainers.tasks.Batch (not imported: base.py imports this module)
    @property
    def tokens(self) -> torch.Tensor: ...
    @property
    def targets(self) -> torch.Tensor: ...
    @property
    def mask(self) -> torch.Tensor: ...


_MB = 1 << 20


def _compact_dtype(vocab_size: int) -> torch.dtype:
    if vocab_size <= 256:
        return torch.uint8
    if vocab_size <= 1 << 15:
        return torch.int16
    return torch.int64


class BatchCache:
    """(tokens, targets, mask) by key; the first batches in stay, while the stored tensors of
    all keys total at most the `limit_mb` a lookup passes."""

    def __init__(self) -> None:
        self._batches: dict[Hashable, Parts] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def get(
        self, key: Hashable, make: Callable[[], Drawn], vocab_size: int, limit_mb: float
    ) -> Parts:
        """The (tokens, targets, mask) stored under `key` (new tensors, int64 tokens), else
        those of the batch `make()` draws, stored while the cache stays within `limit_mb`."""
        stored = self._batches.get(key)
        if stored is not None:
            self.hits += 1
            tokens, targets, mask = stored
            return tokens.long(), targets.clone(), mask.clone()
        self.misses += 1
        batch = make()
        tokens, targets, mask = made = batch.tokens, batch.targets, batch.mask
        small = tokens.to(_compact_dtype(vocab_size))
        if not torch.equal(small.long(), tokens):  # ids outside the vocabulary: keep int64
            small = tokens.clone()
        parts = (small, targets.clone(), mask.clone())
        size = sum(t.numel() * t.element_size() for t in parts)
        if self.bytes + size <= limit_mb * _MB:
            self._batches[key] = parts
            self.bytes += size
        return made

    def clear(self) -> None:
        self._batches.clear()
        self.bytes = 0
        self.hits = self.misses = 0


TRAIN_BATCHES = BatchCache()  # this process's memo; `Task.train_batch` reads it

__all__ = ["TRAIN_BATCHES", "BatchCache"]
