"""How fast candidates train: the plan's throughput measurements.

The plan (search.plan) times a budget-sized full-attention model to size the batch and the
rungs, but that model is the widest shape that fits, the fastest per FLOP on a CPU, and the
search trains other shapes. At small budgets a step's cost barely follows its FLOPs
(per-layer and per-step overheads dominate: on this 2-core machine, 1 thread, batch 8 x 128,
a ListOps model of 8.5 MFLOPs took 8.4 ms a step and one of 1.9 MFLOPs, two layers, 5.3 ms),
so "an average candidate costs half the budget's time" ran 2-3x fast: the stored text, recall
and ListOps studies trained their candidates at 49K, 96K and 74K tokens/s where the plan assumed
91K, 126K and 192K. `candidate_seconds_per_token` therefore times a seeded random sample of the
space's feasible configs, the same draw the sampler's first, random trials make, one step each
after a warm-up step, and the plan uses their mean seconds per token.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import torch

from spaces import ArchConfig, build_model
from spaces.flops import TRAIN_FLOPS_FACTOR, estimate_flops
from trainers.proxy import Recipe
from trainers.step import make_optimizer, train_step
from trainers.tasks import Task

SAMPLE_SIZE = 8  # configs timed for the average candidate
SAMPLE_TRIES = 2000  # random draws before giving up on finding SAMPLE_SIZE feasible ones


class _RandomChoices:
    """Stands in for an Optuna trial: SearchSpace.suggest asks only categorical questions, and
    each is answered uniformly at random, as Optuna's RandomSampler (and TPE's startup) does."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        return self._rng.choice(list(choices))


def feasible_sample(
    space: Any, interface: dict[str, Any], budget: float, n: int = SAMPLE_SIZE, seed: int = 0
) -> list[ArchConfig]:
    """Up to `n` configs drawn uniformly from `space` (a spaces.SearchSpace) whose forward
    FLOPs are within `budget`; fewer when the space rarely fits (none: the caller falls back)."""
    rng = random.Random(seed)
    sample: list[ArchConfig] = []
    for _ in range(SAMPLE_TRIES):
        cfg = space.suggest(_RandomChoices(rng), interface)
        if estimate_flops(cfg) <= budget:
            sample.append(cfg)
            if len(sample) == n:
                break
    return sample


def measure_flops_per_s(
    cfg: ArchConfig, task: Task, batch_size: int, threads: int, device: str, steps: int = 2
) -> float:
    """Training FLOP/s of `cfg` (fvcore convention x 3), timed over `steps` steps after one, with
    the trainers' own step and optimizer (bf16 autocast and fused AdamW on CUDA)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = build_model(cfg).to(device).train()
        # fused AdamW on CUDA; the rate is fixed (a timing only)
        opt, _ = make_optimizer(model, cfg, Recipe(), batch_size * task.seq_len, lr=1e-4)
        batch = task.train_batch(0, batch_size).to(device)
        elapsed = 0.0
        for i in range(steps + 1):  # the trainers' own step: bf16 autocast on CUDA
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train_step(model, opt, task, batch, 1e-4, 1.0, i, read=False)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                elapsed += time.perf_counter() - t0
        return steps * batch_size * TRAIN_FLOPS_FACTOR * estimate_flops(cfg) / max(elapsed, 1e-9)
    finally:
        torch.set_num_threads(previous)


def seconds_per_token(flops_per_s: float, cfg: ArchConfig) -> float:
    """Training seconds per token of `cfg` at a measured training FLOP/s."""
    return TRAIN_FLOPS_FACTOR * estimate_flops(cfg) / cfg.seq_len / flops_per_s


def candidate_seconds_per_token(
    sample: Sequence[ArchConfig], task: Task, batch_size: int, threads: int, device: str
) -> float:
    """Mean training seconds per token over `sample` (one timed step each, after a warm-up)."""
    per_token = [
        seconds_per_token(measure_flops_per_s(cfg, task, batch_size, threads, device, 1), cfg)
        for cfg in sample
    ]
    return sum(per_token) / len(per_token)


__all__ = [
    "SAMPLE_SIZE",
    "candidate_seconds_per_token",
    "feasible_sample",
    "measure_flops_per_s",
    "seconds_per_token",
]
