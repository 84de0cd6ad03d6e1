"""Shared fixtures of the trainer tests: a small recall task and configs for it."""

from __future__ import annotations

import pytest

from spaces import ArchConfig
from trainers.tasks import get_task


@pytest.fixture(scope="module")
def task():
    return get_task("recall", seq_len=32, num_pairs=4, n_val=32)


def small_config(task, **changes) -> ArchConfig:
    """One layer, width 32, two heads, FFN 2x; `changes` override any field."""
    base = dict(**task.interface(), depth=1, d_model=32, n_heads=2, ffn_mult=2.0)
    base.update(changes)
    return ArchConfig(**base)
