"""Byte-level language modelling on the user's own UTF-8 text files.

The metric is bits per byte (bpb), as in byte-level LM work such as enwik8/text8 character
modelling (Al-Rfou et al. 2019, "Character-Level Language Modeling with Deeper
Self-Attention", arXiv:1808.04444) and Tay et al. 2021's LRA byte-level text task. It tests
what a candidate is finally for: predicting real text, with no tokenizer in the way, so the
vocabulary is the 256 byte values and the head stays small.

Without `data`, the corpus is the running interpreter's standard-library sources (`*.py`
under `sysconfig`'s stdlib path, test suites and site-packages left out, at most
`STDLIB_MAX_BYTES`): real code and prose that every machine has and nobody here wrote, so
the default search needs no download. The files are ordered by a fixed shuffle of their
sorted paths, so the validation tail is a mix of modules rather than the last letters of the
alphabet. The corpus differs a little between Python versions; studies record which.

Split: the files are read in the given order and concatenated; the last `val_fraction` of
the bytes (default 10%) is validation, the rest training. Training draws windows of seq_len+1
bytes at random offsets (tokens = window[:-1], targets = window[1:]); validation is up to
`n_val` non-overlapping windows spaced evenly over the held-out bytes, the same for every
seed so that runs with different seeds are scored on the same text.
"""

from __future__ import annotations

import math
import random
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from trainers.tasks.base import TASKS, Batch, Task


def read_utf8(paths: Sequence[str | Path]) -> bytes:
    """The files' bytes concatenated; ValueError naming the file that is missing or not UTF-8."""
    chunks = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            why = "is a directory" if path.is_dir() else "does not exist"
            raise ValueError(
                f"task 'text': data file {str(p)!r} {why}; --data takes one or more UTF-8 "
                f"text files (e.g. --data corpus.txt)"
            )
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"task 'text': data file {str(p)!r} is not UTF-8 text (invalid byte at offset "
                f"{exc.start}); convert it first, e.g. iconv -f LATIN1 -t UTF-8 in > out"
            ) from exc
        chunks.append(raw)
    return b"".join(chunks)


STDLIB_MAX_BYTES = 16_000_000
BIGRAM_SMOOTHING = 0.1  # pseudo-count per (byte, next byte) pair in `TextTask.plateau_loss`
STDLIB_SKIP = ("test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__")


def stdlib_files() -> list[Path]:
    """The interpreter's standard-library sources, in a fixed shuffled order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not any(part in STDLIB_SKIP for part in p.relative_to(root).parts[:-1])
    )
    random.Random(0).shuffle(files)
    return files


def stdlib_corpus(max_bytes: int = STDLIB_MAX_BYTES) -> bytes:
    """UTF-8 bytes of the standard-library sources (files that do not decode are skipped)."""
    chunks, size = [], 0
    for path in stdlib_files():
        try:
            raw = path.read_bytes()
            raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        chunks.append(raw)
        size += len(raw)
        if size >= max_bytes:
            break
    if not chunks:
        raise ValueError(
            "task 'text': no --data given and no standard-library sources were found under "
            f"{sysconfig.get_paths()['stdlib']!r}; pass --data PATH [PATH ...]"
        )
    return b"".join(chunks)[:max_bytes]


def corpus_name(data) -> str:
    """How a study records the corpus: the files, or the stdlib of this Python version."""
    return "stdlib:python" + ".".join(map(str, sys.version_info[:2])) if not data else "files"


@TASKS.register()  # under its `name`
class TextTask(Task):
    """Byte-level LM: vocab 256, causal, bits per byte on the held-out tail (default corpus:
    the interpreter's standard library)."""

    name: ClassVar[str] = "text"
    causal: ClassVar[bool] = True
    metric: ClassVar[str] = "bits_per_byte"
    direction: ClassVar[str] = "minimize"
    default_seq_len: ClassVar[int] = 512
    defaults: ClassVar[dict[str, int | float]] = {"val_fraction": 0.1}
    uses_data: ClassVar[bool] = True

    def setup(self) -> None:
        data = self.data
        frac = float(self.options["val_fraction"])
        if not 0 < frac < 1:
            raise ValueError(
                f"task 'text': option val_fraction must be in (0, 1), got {frac} "
                f"(e.g. val_fraction=0.1)"
            )
        raw = np.frombuffer(read_utf8(data) if data else stdlib_corpus(), dtype=np.uint8)
        self.corpus = corpus_name(data)
        n_val_bytes = math.ceil(len(raw) * frac)
        self.train_bytes, self.val_bytes = (
            raw[: len(raw) - n_val_bytes],
            raw[len(raw) - n_val_bytes :],
        )
        window = self.seq_len + 1
        if min(len(self.train_bytes), len(self.val_bytes)) < window:
            sizes = ", ".join(f"{p!r} ({Path(p).stat().st_size} bytes)" for p in data or [])
            sizes = sizes or f"(the embedded corpus, {len(raw)} bytes)"
            need = math.ceil(window / min(frac, 1 - frac)) + 1
            fits = min(len(self.train_bytes), len(self.val_bytes)) - 1
            hint = f"seq_len={fits}" if fits >= 1 else f"a file of {need} bytes or more"
            raise ValueError(
                f"task 'text': data {sizes} is too short for seq_len={self.seq_len}: training "
                f"and validation ({frac:.0%}) each need seq_len+1={window} bytes, so about "
                f"{need} bytes in all; use a smaller seq_len or more text (e.g. {hint})"
            )
        self.n_val = min(self.n_val, (len(self.val_bytes) - 1) // self.seq_len)
        self.vocab_size = 256
        self.num_classes = 0

    def _windows(self, source: np.ndarray, starts: np.ndarray) -> Batch:
        w = source[starts[:, None] + np.arange(self.seq_len + 1)].astype(np.int64)
        w_t = torch.from_numpy(w)
        return Batch(w_t[:, :-1], w_t[:, 1:], torch.ones(w_t[:, :-1].shape, dtype=torch.bool))

    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """Windows of the training bytes at uniformly random offsets."""
        starts = rng.integers(0, len(self.train_bytes) - self.seq_len, size=batch_size)
        return self._windows(self.train_bytes, starts)

    def build_val(self) -> Batch:
        """Up to n_val non-overlapping windows, evenly spaced over the validation bytes."""
        chunks = (len(self.val_bytes) - 1) // self.seq_len
        picks = np.unique(np.linspace(0, chunks - 1, num=self.n_val).round())
        return self._windows(self.val_bytes, picks.astype(np.int64) * self.seq_len)

    def chance(self) -> float:
        """Uniform guessing over 256 byte values: 8 bits per byte."""
        return 8.0

    def plateau_loss(self) -> float:
        """The bigram loss: next-byte probabilities given the previous byte, counted on the
        training bytes (add-`BIGRAM_SMOOTHING` smoothing), scored on the validation windows'
        (byte, next byte) pairs. Byte-level models sit near it for a long stretch before
        longer context pays (on the standard library at 512 tokens, 2.45 nats: every 2 GFLOPs
        candidate was within 5% of it after 0.5M tokens, docs/results.md section 0)."""
        train = self.train_bytes.astype(np.int64)
        pairs = np.bincount(train[:-1] * 256 + train[1:], minlength=256 * 256)
        counts = pairs.reshape(256, 256) + BIGRAM_SMOOTHING
        logp = np.log(counts / counts.sum(axis=1, keepdims=True))
        if self._val is None:
            self._val = self.build_val()
        prev, nxt = self._val.tokens.flatten().numpy(), self._val.targets.flatten().numpy()
        return float(-logp[prev, nxt].mean())
