"""Workers and torch threads by default: one single-threaded worker per CPU core (a busy 2-core
machine runs 2 torch threads 10-80x slower than 1), and WORKERS_PER_GPU workers per GPU."""

from __future__ import annotations

import os

import torch


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# Workers sharing one GPU by default. Measured on an H200 (docs/results.md 0e): a budget-sized
# candidate (2 GFLOPs, 4096 tokens a step) leaves the GPU mostly idle, so with 4 workers on it the
# same config trained 10% slower per worker (330K against 369K tokens/s) while 4 trained at once.
WORKERS_PER_GPU = 4


def default_parallelism(workers: int | None, threads: int | None, device: str) -> tuple[int, int]:
    """(workers, torch threads per worker). CPU: one thread per worker whatever `workers` is
    (2 torch threads on a busy 2-core machine measured 23x slower than 1, and two `search.train`
    processes side by side with 2 threads each 2.4-25x slower than with 1, by the machine's
    load, while 2 threads alone on a quiet machine gained only 1.2x),
    and a worker per core unless `workers` says otherwise; CUDA: WORKERS_PER_GPU workers per
    visible GPU (worker i on GPU i mod GPUs), the CPU cores shared among them."""
    if device.startswith("cuda"):
        gpus = max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1
        workers = workers or WORKERS_PER_GPU * (gpus if device == "cuda" else 1)
        return workers, threads or max(1, cpu_count() // workers)
    if workers is None:
        workers = max(1, cpu_count() // (threads or 1))
    return workers, threads or 1


__all__ = ["WORKERS_PER_GPU", "cpu_count", "default_parallelism"]
