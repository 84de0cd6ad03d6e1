"""Fixtures for end-to-end search tests: a tiny preset, a CLI runner, a tiny export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spaces import ArchConfig
from trainers.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]

TINY_PRESET = """
task = "recall"
seq_len = 32
proxy_compute = "0.15GFLOPs"

[task_options]
num_pairs = 4
n_val = 32

[space]
depth = [1, 2]
n_heads = [1, 2]
head_dim = [8, 16]
ffn_mult = [1.0, 2.0]

[recipe]
batch_size = 8
eval_batch_size = 32
batch_tokens = 256
val_tokens = 1024
"""
TINY_BUDGET = "600KFLOPs"

# Subprocess limits are hang guards, never speed checks: each limit a test names is already
# well above its workload on an idle machine (e.g. 240 s for a tiny search that takes ~16 s),
# and is multiplied by this factor, so a busy machine does not turn load into failures (raise
# ATTNSEARCH_TEST_TIMEOUT_FACTOR on a very slow one).
TIMEOUT_FACTOR = float(os.environ.get("ATTNSEARCH_TEST_TIMEOUT_FACTOR", "5"))


def guard(seconds: float) -> float:
    """The hang guard for a limit of `seconds` (times TIMEOUT_FACTOR)."""
    return seconds * TIMEOUT_FACTOR


@pytest.fixture
def tiny_preset(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_PRESET)
    return path


def run_cli(
    module: str, *args: str, cwd: Path | None = None, timeout: float = 240, check: bool = False
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=guard(timeout),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {args} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def search_args(preset: Path, storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return [
        "--budget",
        TINY_BUDGET,
        "--preset",
        str(preset),
        "--storage",
        storage,
        "--study",
        study,
        "--trials",
        str(trials),
        "--rung-tokens",
        "1024",
        "--timeout",
        "0",
        "--workers",
        "1",
        "--quiet",
        *extra,
    ]


@pytest.fixture
def export(tmp_path):
    """An export-shaped file (config + provenance) for a tiny recall task."""
    task = get_task("recall", seq_len=32, num_pairs=4, n_val=32)
    cfg = ArchConfig(**task.interface(), depth=1, d_model=32, n_heads=2, ffn_mult=2.0)
    path = tmp_path / "best.json"
    prov = {
        "task": "recall",
        "task_options": {"num_pairs": 4, "n_val": 32},
        "seed": 0,
        "schedule": {"batch_size": 8},
    }
    path.write_text(json.dumps({"config": cfg.to_dict(), "provenance": prov}))
    return path


def run_scale(capsys, *args: str) -> tuple[int, str, str]:
    """`search.scale` in-process: (exit code, stdout, stderr); argparse's exits included."""
    from search import scale

    try:
        code = scale.main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
