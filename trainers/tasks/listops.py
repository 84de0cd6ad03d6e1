"""ListOps: evaluate a nested list expression, as in the Long Range Arena.

From Nangia & Bowman 2018, "ListOps: A Diagnostic Dataset for Latent Tree Learning"
(arXiv:1804.06028), in the long form used by Tay et al. 2021, "Long Range Arena: A Benchmark
for Efficient Transformers" (arXiv:2011.04006). It tests hierarchical, long-range reasoning:
the answer depends on every token and on how the brackets nest, e.g.

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]  ->  5

Operators: MAX, MIN, MED (int(np.median), as in LRA) and SM (sum mod 10). The generator is
LRA's: a node is an operator with probability 0.25 (below `max_depth`) with 2..`max_args`
children, else a digit; trees are drawn until their token count lies in
[min_length, seq_len]. A tree that outgrows seq_len is abandoned as soon as it does, which
yields the same distribution as LRA's rejection but faster. The sequence is classified
bidirectionally into the 10 values; padding (id 0, mask False) fills the end of each row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

from trainers.tasks.base import TASKS, Batch, Task

VOCAB = ["<pad>", *"0123456789", "[MAX", "[MIN", "[MED", "[SM", "]"]  # token id -> text
PAD, DIGIT0, OP0, CLOSE = 0, 1, 11, 15
OPERATOR_P = 0.25  # LRA's VALUE_P: a node below max_depth is an operator with this probability
MAX_TRIES = 200_000  # per example; only absurd option combinations get near it


def _median(values: list[int]) -> int:
    s, n = sorted(values), len(values)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2  # == int(np.median(s))


# in the order of OP0, OP0+1, ...
_APPLY: list[Callable[[list[int]], int]] = [max, min, _median, lambda v: sum(v) % 10]


def decode(ids: Sequence[int] | torch.Tensor) -> str:
    """The expression text of a row of token ids (padding dropped)."""
    return " ".join(VOCAB[int(i)] for i in ids if int(i) != PAD)


@TASKS.register()  # under its `name`
class ListOpsTask(Task):
    """ListOps: 10-way classification of a bracketed expression, bidirectional."""

    name: ClassVar[str] = "listops"
    causal: ClassVar[bool] = False
    metric: ClassVar[str] = "accuracy"
    direction: ClassVar[str] = "maximize"
    default_seq_len: ClassVar[int] = 256
    defaults: ClassVar[dict[str, int | float]] = {"max_depth": 10, "max_args": 10}  # LRA's
    train_cache_mb: ClassVar[float] = 512  # ~0.6 ms to draw an expression; 2 KB per 1,024 tokens

    def setup(self) -> None:
        o = self.options
        self.max_depth, self.max_args = int(o["max_depth"]), int(o["max_args"])
        self.min_length = int(o["min_length"])
        if self.max_args < 2:
            raise ValueError(
                f"task 'listops': option max_args must be >= 2 (an operator takes 2 or more "
                f"arguments), got {self.max_args} (e.g. max_args=10)"
            )
        if self.min_length > self.seq_len:
            raise ValueError(
                f"task 'listops': option min_length={self.min_length} must be <= seq_len="
                f"{self.seq_len} (e.g. min_length={self.seq_len // 2})"
            )
        longest = 1
        for _ in range(self.max_depth - 1):
            longest = 2 + self.max_args * longest
        if longest < self.min_length:
            raise ValueError(
                f"task 'listops': option max_depth={self.max_depth} with max_args="
                f"{self.max_args} builds at most {longest} tokens, below min_length="
                f"{self.min_length} (e.g. max_depth=10, max_args=10)"
            )
        self.vocab_size = len(VOCAB)
        self.num_classes = 10

    def option_defaults(self) -> dict[str, int | float]:
        """LRA's depth and fan-out; trees at least half of seq_len long by default."""
        return {**super().option_defaults(), "min_length": max(1, self.seq_len // 2)}

    def expression(self, r: random.Random) -> tuple[list[int], int]:
        """Token ids and value of one tree with min_length <= length <= seq_len.

        `pending` counts tokens certain to come (one per unbuilt child, one per open ']'), so
        a tree is abandoned as soon as it is bound to pass seq_len, with LRA's random draws.
        """
        limit, max_depth, fan = self.seq_len, self.max_depth, self.max_args - 1
        rand = r.random  # int(rand() * k) is uniform on 0..k-1 and much faster than randrange
        out: list[int] = []
        append = out.append
        pending = 0

        def operator(depth: int) -> int | None:  # an operator node; leaves are inlined
            nonlocal pending
            op, n = int(rand() * 4), 2 + int(rand() * fan)
            append(OP0 + op)
            pending += n + 1
            if len(out) + pending > limit:
                return None
            values = []
            deeper = depth + 1 < max_depth
            for _ in range(n):
                pending -= 1
                if deeper and rand() < OPERATOR_P:
                    v = operator(depth + 1)
                    if v is None:
                        return None
                else:
                    v = int(rand() * 10)
                    append(DIGIT0 + v)
                values.append(v)
            append(CLOSE)
            pending -= 1
            return _APPLY[op](values)

        for _ in range(MAX_TRIES):
            out.clear()
            pending = 0
            if max_depth > 1 and rand() < OPERATOR_P:
                value = operator(1)
            else:
                value = int(rand() * 10)
                append(DIGIT0 + value)
            if value is not None and len(out) >= self.min_length:
                return list(out), value
        raise RuntimeError(
            f"task 'listops': no tree of {self.min_length}..{self.seq_len} tokens in "
            f"{MAX_TRIES} tries; lower min_length or change max_depth/max_args"
        )

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`batch_size` expressions, padded at the end, labelled with their values."""
        r = random.Random(int(rng.integers(2**63)))  # a private, seeded RNG (fast scalars)
        tokens = np.zeros((batch_size, self.seq_len), dtype=np.int64)
        labels = np.zeros(batch_size, dtype=np.int64)
        for i in range(batch_size):
            ids, labels[i] = self.expression(r)
            tokens[i, : len(ids)] = ids
        tokens_t = torch.from_numpy(tokens)
        return Batch(tokens_t, torch.from_numpy(labels), tokens_t != PAD)

    def chance(self) -> float:
        """Accuracy of always answering the most frequent value of the validation set.

        Labels are far from uniform (MAX of many digits is mostly 9), so 1/10 would flatter
        a model that learned only the label prior.
        """
        if self._val is None:
            self._val = self.build_val()
        counts = torch.bincount(self._val.targets, minlength=self.num_classes)
        return float(counts.max()) / len(self._val)
