"""The task interface: what a candidate is trained on and how it is scored.

A task turns ``(seed, step, batch_size)`` into a `Batch` deterministically, owns a fixed
validation set, and knows its loss and metric. The proxy trainer only talks to this interface,
so a new task (built in or a user's ``mypkg.tasks:MyTask``) needs no trainer changes.
See docs/tasks.md for how to write one.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from spaces.registry import Registry
from trainers.tasks.cache import TRAIN_BATCHES

IGNORE_INDEX = -100  # targets equal to this are not scored (F.cross_entropy's default)
METRICS = {"accuracy": "maximize", "bits_per_byte": "minimize"}
_TRAIN_STREAM, _VAL_STREAM = 0, 1  # SeedSequence spawn keys: train and val never share draws


@dataclass(frozen=True)
class Batch:
    """One batch: token ids, targets and a padding mask (padding sits at the end of a row)."""

    tokens: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64 with IGNORE_INDEX for LM tasks, (B,) for classification
    mask: torch.Tensor  # (B, T) bool, True = real token

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.mask.shape != self.tokens.shape:
            raise ValueError(
                f"Batch expects tokens (B, T) and mask of the same shape, got tokens "
                f"{tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)}"
            )

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, rows: slice) -> Batch:
        """A batch of a subset of rows, e.g. ``batch[:8]``."""
        return Batch(self.tokens[rows], self.targets[rows], self.mask[rows])

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on `device`; to CUDA through pinned memory, without blocking the host
        (the copy overlaps the previous step's kernels)."""
        device = torch.device(device)
        parts = (self.tokens, self.targets, self.mask)
        if device.type == "cuda":
            return Batch(*(t.pin_memory().to(device, non_blocking=True) for t in parts))
        return Batch(*(t.to(device) for t in parts))


def rng_for(seed: int, *stream: int) -> np.random.Generator:
    """A numpy Generator for one stream of `seed`; distinct streams are independent."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=stream))


def _positive_int(owner: str, key: str, value: Any, example: Any, zero_ok: bool = False) -> int:
    """`value` as an int > 0 (or >= 0), else a ValueError naming `key` with an example.

    `key` may carry a prefix ("option num_pairs"); the example uses the bare name.
    """
    lower = "a non-negative" if zero_ok else "a positive"
    try:
        if isinstance(value, (bool, float)):
            raise TypeError
        out = int(value)
    except (TypeError, ValueError):
        out = None
    if out is None or out < (0 if zero_ok else 1):
        raise ValueError(
            f"{owner}: {key} must be {lower} integer, got {value!r} "
            f"(e.g. {key.split()[-1]}={example})"
        )
    return out


class Task(ABC):
    """Base class of every task; subclasses set the class variables and implement `sample`."""

    name: ClassVar[str]
    causal: ClassVar[bool]  # True: causal LM head; False: bidirectional
    metric: ClassVar[str]  # "accuracy" or "bits_per_byte"
    direction: ClassVar[str]  # "maximize" or "minimize"
    default_seq_len: ClassVar[int]
    defaults: ClassVar[dict[str, int | float]] = {}  # task options and their default values
    allow_zero: ClassVar[frozenset[str]] = frozenset()  # int options that may be 0
    uses_data: ClassVar[bool] = False  # True if the task reads user files (`data`)
    default_n_val: ClassVar[int] = 256
    # > 0: keep up to this many MB of training batches per process (trainers/tasks/cache.py),
    # for tasks whose `sample` is slow; every candidate and rung re-reads the stream from step 0
    train_cache_mb: ClassVar[float] = 0

    vocab_size: int
    num_classes: int  # 0 = LM head over the vocabulary; > 0 = classification

    def __init__(
        self,
        seq_len: int | None = None,
        seed: int = 0,
        data: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        self._check_class()
        owner = f"task {self.name!r}"
        if isinstance(data, (str, os.PathLike)):
            data = [str(data)]
        seq_len = self.default_seq_len if seq_len is None else seq_len
        self.seq_len = _positive_int(owner, "seq_len", seq_len, self.default_seq_len)
        self.seed = _positive_int(owner, "seed", seed, 0, zero_ok=True)
        if data and not self.uses_data:
            raise ValueError(
                f"{owner} generates its own data and takes no --data (got {list(data)!r}); "
                f"drop --data, or use a task that reads files, e.g. --task text"
            )
        self.data = data
        self.options = self._parse_options(options)
        self.n_val = int(self.options["n_val"])
        self._val: Batch | None = None
        self._val_split: dict[int, list[Batch]] = {}
        self.setup()

    def setup(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Task-specific set-up after the options are parsed (`self.options`, `self.seq_len`,
        `self.seed`, `self.data`): set `vocab_size` and `num_classes`, check option
        combinations. Override this rather than `__init__`."""

    # -- options -----------------------------------------------------------------------------
    def option_defaults(self) -> dict[str, int | float]:
        """Every option with its default; override when a default depends on `seq_len`."""
        return {"n_val": self.default_n_val, **self.defaults}

    def _parse_options(self, options: dict[str, Any]) -> dict[str, int | float]:
        owner = f"task {self.name!r}"
        known = self.option_defaults()
        out = dict(known)
        for key, value in options.items():
            if key not in known:
                first = next(iter(self.defaults or known))
                raise ValueError(
                    f"{owner} has no option {key!r}; expected one of "
                    f"{', '.join(sorted(known))} (e.g. {first}={known[first]})"
                )
            default = known[key]
            if isinstance(default, float):
                try:
                    if isinstance(value, bool):
                        raise TypeError
                    out[key] = float(value)
                except (TypeError, ValueError):
                    out[key] = float("nan")
                if not out[key] > 0:
                    raise ValueError(
                        f"{owner}: option {key} must be a positive number, got {value!r} "
                        f"(e.g. {key}={default})"
                    )
            else:
                out[key] = _positive_int(
                    owner, f"option {key}", value, default, zero_ok=key in self.allow_zero
                )
        return out

    def _check_class(self) -> None:
        cls = type(self).__name__
        for attr in ("name", "causal", "metric", "direction", "default_seq_len"):
            if not hasattr(self, attr):
                raise TypeError(f"task class {cls} must set the class variable {attr!r}")
        if METRICS.get(self.metric) != self.direction:
            raise TypeError(
                f"task class {cls}: metric/direction must be one of {METRICS}, "
                f"got {self.metric!r}/{self.direction!r}"
            )

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: np.random.Generator, batch_size: int) -> Batch:
        """`batch_size` fresh examples drawn with `rng` (the only source of randomness)."""

    def build_val(self) -> Batch:
        """The whole validation set as one Batch of `n_val` rows (called once, then cached)."""
        return self.sample(rng_for(self.seed, _VAL_STREAM), self.n_val)

    def train_batch(self, step: int, batch_size: int) -> Batch:
        """The training batch for `step`: a deterministic function of (seed, step, batch_size)."""
        owner = f"task {self.name!r}"
        step = _positive_int(owner, "step", step, 0, zero_ok=True)
        batch_size = _positive_int(owner, "batch_size", batch_size, 32)

        def draw() -> Batch:
            return self.sample(rng_for(self.seed, _TRAIN_STREAM, step), batch_size)

        if not self.train_cache_mb:
            return draw()
        key = (type(self), repr(self), tuple(self.data or ()), step, batch_size)
        return Batch(*TRAIN_BATCHES.get(key, draw, self.vocab_size, self.train_cache_mb))

    def val_batches(self, batch_size: int) -> list[Batch]:
        """The fixed validation set in batches of `batch_size` (the last may be smaller)."""
        batch_size = _positive_int(f"task {self.name!r}", "batch_size", batch_size, 64)
        if self._val is None:
            self._val = self.build_val()
        if batch_size not in self._val_split:
            n = len(self._val)
            self._val_split[batch_size] = [
                self._val[i : i + batch_size] for i in range(0, n, batch_size)
            ]
        return list(self._val_split[batch_size])

    # -- scoring -----------------------------------------------------------------------------
    def interface(self) -> dict[str, Any]:
        """What the model must match: vocabulary, length, attention direction, head."""
        return {
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "causal": self.causal,
            "num_classes": self.num_classes,
        }

    def mismatch(self, cfg: Any) -> str:
        """The interface fields where `cfg` differs from this task, e.g.
        "vocab_size=64 (task: 32)"; "" when the config fits."""
        interface = self.interface()
        return ", ".join(
            f"{k}={getattr(cfg, k)} (task: {v})"
            for k, v in interface.items()
            if getattr(cfg, k) != v
        )

    def _flat(self, logits: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        width = self.num_classes or self.vocab_size
        want = (len(batch), width) if self.num_classes else (*batch.tokens.shape, width)
        if tuple(logits.shape) != want:
            raise ValueError(
                f"task {self.name!r} expects logits of shape {want}, got {tuple(logits.shape)}"
            )
        return logits.float().reshape(-1, width), batch.targets.reshape(-1)

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over scored targets (the training objective)."""
        flat, targets = self._flat(logits, batch)
        return F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX)

    def distill_loss(
        self, logits: torch.Tensor, teacher_logits: torch.Tensor, batch: Batch, temperature: float
    ) -> torch.Tensor:
        """Hinton et al. (2015) knowledge distillation, the loss DistilBERT trains with:
        KL(teacher || student) of the temperature-softened distributions, times T^2, averaged
        over the scored targets (per token for LM tasks, per example for classification)."""
        flat, targets = self._flat(logits, batch)
        teacher, _ = self._flat(teacher_logits, batch)
        valid = targets != IGNORE_INDEX
        student_logp = F.log_softmax(flat[valid] / temperature, dim=-1)
        teacher_logp = F.log_softmax(teacher[valid] / temperature, dim=-1)
        kl = F.kl_div(student_logp, teacher_logp, log_target=True, reduction="batchmean")
        return kl * temperature**2

    @torch.no_grad()
    def metric_stats(self, logits: torch.Tensor, batch: Batch) -> tuple[float, int]:
        """(numerator, count) so that sums over batches give the exact metric (num / count)."""
        flat, targets = self._flat(logits, batch)
        valid = targets != IGNORE_INDEX
        count = int(valid.sum())
        if self.metric == "accuracy":
            return float(((flat.argmax(-1) == targets) & valid).sum()), count
        ce = F.cross_entropy(flat, targets, ignore_index=IGNORE_INDEX, reduction="none")
        return float(ce.double().sum()) / math.log(2), count

    def chance(self) -> float:
        """The metric a model that knows nothing scores (uniform guessing)."""
        if self.metric == "accuracy":
            return 1.0 / (self.num_classes or self.vocab_size)
        return math.log2(self.vocab_size)

    def chance_loss(self) -> float:
        """Validation loss (nats) of the best constant guess: the entropy of the validation
        targets' distribution. A model whose loss is still near it has learned no more than
        the label (or byte) frequencies, so rankings among such models are noise."""
        if self._val is None:
            self._val = self.build_val()
        targets = self._val.targets.flatten()
        targets = targets[targets != IGNORE_INDEX]
        p = torch.bincount(targets).double()
        p = p[p > 0] / p.sum()
        return float(-(p * p.log()).sum())

    def plateau_loss(self) -> float | None:
        """Validation loss (nats) of the best predictor from the previous token alone, for a
        task where models reach it long before they learn more (a language model's bigram
        statistics); None where no such plateau is known (the chance loss is then the only
        one). `search.plateau` reads a top-rung ranking within reach of it as noise."""
        return None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{type(self).__name__}(seq_len={self.seq_len}, seed={self.seed}, {opts})"


def combine_stats(stats: Iterable[tuple[float, int]]) -> float:
    """The metric from per-batch `metric_stats` pairs: sum of numerators / sum of counts."""
    num, count = 0.0, 0
    for a, c in stats:
        num, count = num + a, count + c
    return num / count if count else float("nan")


TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str, **kwargs: Any) -> Task:
    """An instance of the task registered as `name` (or imported from ``pkg.mod:Class``)."""
    cls = TASKS.get(name)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ValueError(
            f"{name!r} is {cls!r}, not a Task subclass; a user task must subclass "
            f"trainers.tasks.Task (see docs/tasks.md), e.g. 'mypkg.tasks:MyTask'"
        )
    return cls(**kwargs)
