"""Multi-query associative recall (MQAR).

From Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models"
(arXiv:2312.04927). It tests *recall*: whether a model can look up, far back in its context,
the value bound to a key. Zoology shows this is where gated convolutions, linear attention
and narrow sliding windows lose to full attention, so it separates attention variants well.

Layout of one sequence of length T (P = num_pairs, Q = num_queries = P):

    k1 v1 k2 v2 ... kP vP | gap filler | query region: filler with the P keys at random spots

Keys in a sequence are distinct, values are random. At a query position the token is a key
seen earlier and the target is its value; every other target is -100 (not scored). Filler is
a real token (mask True), not padding. Unlike Zoology, the value is not repeated after the
query key, so each query takes one position.

Distance: a query at position q must read the value at position 2i+1 of its pair, distance
d = q - (2i+1) >= gap + 1. One sliding-window layer of width w (a position sees itself and
w-1 earlier ones) reaches back w-1 positions; L such layers reach L*(w-1). A query whose
distance exceeds the receptive field can be answered at chance only. `query_distances` and
`min_query_distance` measure this on a batch; the `gap` option sets a floor on it.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from trainers.tasks.base import IGNORE_INDEX, TASKS, Batch, Task


@TASKS.register()  # under its `name`
class RecallTask(Task):
    """MQAR: LM head over 34 tokens by default, accuracy over query positions."""

    name: ClassVar[str] = "recall"
    causal: ClassVar[bool] = True
    metric: ClassVar[str] = "accuracy"
    direction: ClassVar[str] = "maximize"
    # Defaults chosen by measurement on a 2-core CPU (docs/results.md, sections 1-2): short
    # sequences and a small vocabulary let a 2-layer model learn recall within a ~20 s proxy
    # run, while the gap keeps every answer more than 8 positions back, beyond a narrow
    # window's reach. Trained for millions of tokens, every small model saturates at these
    # settings (docs/results.md, section 0); harder recall: num_pairs=8, num_keys=32, ...
    default_seq_len: ClassVar[int] = 64
    defaults: ClassVar[dict[str, int | float]] = {
        "num_pairs": 4,  # key-value pairs per sequence (= queries per sequence)
        "num_keys": 16,  # size of the key vocabulary
        "num_values": 16,  # size of the value vocabulary
        "gap": 8,  # filler positions between the pairs and the query region
    }
    allow_zero: ClassVar[frozenset[str]] = frozenset({"gap"})

    PAD: ClassVar[int] = 0  # never emitted (rows are full), kept so id 0 means padding everywhere
    FILLER: ClassVar[int] = 1  # a real token between queries
    KEY0: ClassVar[int] = 2  # keys are KEY0 .. KEY0+num_keys-1, values follow them

    def setup(self) -> None:
        o = self.options
        self.num_pairs, self.num_keys = int(o["num_pairs"]), int(o["num_keys"])
        self.num_values, self.gap = int(o["num_values"]), int(o["gap"])
        self.num_queries = self.num_pairs
        if self.num_pairs > self.num_keys:
            raise ValueError(
                f"task 'recall': option num_pairs={self.num_pairs} must be <= num_keys="
                f"{self.num_keys} because keys in a sequence are distinct "
                f"(e.g. num_pairs=16, num_keys=64)"
            )
        need = 2 * self.num_pairs + self.gap + self.num_queries
        if need > self.seq_len:
            fits = (self.seq_len - self.gap) // 3
            other = (
                f", or num_pairs={fits} with seq_len={self.seq_len}"
                if fits >= 1
                else f", or a gap below {self.seq_len - 2} (option gap)"
            )
            raise ValueError(
                f"task 'recall': seq_len={self.seq_len} is too short: 2*num_pairs + gap + "
                f"num_queries = {need} positions are needed (e.g. seq_len={need} with "
                f"num_pairs={self.num_pairs}{other})"
            )
        self.value0 = self.KEY0 + self.num_keys
        self.vocab_size = self.value0 + self.num_values
        self.num_classes = 0

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Pairs at the start, each key queried once at a random spot in the query region."""
        n, p, q, t = batch_size, self.num_pairs, self.num_queries, self.seq_len
        rows = np.arange(n)[:, None]
        keys = np.argsort(rng.random((n, self.num_keys)), axis=1)[:, :p] + self.KEY0
        values = rng.integers(0, self.num_values, size=(n, p)) + self.value0
        tokens = np.full((n, t), self.FILLER, dtype=np.int64)
        tokens[:, 0 : 2 * p : 2], tokens[:, 1 : 2 * p : 2] = keys, values
        start = 2 * p + self.gap
        spots = np.argsort(rng.random((n, t - start)), axis=1)[:, :q]
        positions = np.sort(spots, axis=1) + start
        order = np.argsort(rng.random((n, p)), axis=1)[:, :q]  # which pair each query asks
        tokens[rows, positions] = keys[rows, order]
        targets = np.full((n, t), IGNORE_INDEX, dtype=np.int64)
        targets[rows, positions] = values[rows, order]
        return Batch(
            torch.from_numpy(tokens),
            torch.from_numpy(targets),
            torch.ones((n, t), dtype=torch.bool),
        )

    def query_distances(self, batch: Batch) -> torch.Tensor:
        """For every query in `batch`: positions between it and the value it must recall."""
        p = self.num_pairs
        pair_keys = batch.tokens[:, 0 : 2 * p : 2]  # (B, P)
        rows, pos = (batch.targets != IGNORE_INDEX).nonzero(as_tuple=True)
        match = pair_keys[rows] == batch.tokens[rows, pos][:, None]  # (N, P)
        pair = match.int().argmax(dim=1)
        return pos - (2 * pair + 1)

    def min_query_distance(self, batch: Batch) -> int:
        """The smallest query-to-value distance in `batch` (always >= gap + 1)."""
        return int(self.query_distances(batch).min())

    def chance(self) -> float:
        """Guessing a value uniformly: 1 / num_values."""
        return 1.0 / self.num_values
