"""Memory a config needs, checked before anything is allocated.

An untrusted config file (or a typo such as `--seq-len 100000000`) must be refused in
microseconds, not found out by the allocator or the kernel's OOM killer. These are **lower
bounds**: a config they refuse can never run on the device; one they pass may still run out of
memory, which the trainers then report as status `oom`.

- `weight_bytes`: fp32 parameters (what `build_model` allocates).
- `training_bytes`: parameters, gradients and AdamW's two moments (16 bytes per parameter),
  plus the activations backward must keep: the residual stream of every layer and one
  layer's attention scores (`attention_flops / (2 x head_dim)` elements per sequence: the
  score grid each kernel materialises; exact for score-based variants).
"""

from __future__ import annotations

import os

from spaces.attention import ATTENTION
from spaces.config import ArchConfig

FP32 = 4
TRAIN_BYTES_PER_PARAM = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq


class ModelTooLarge(ValueError):
    """The config cannot fit in the device's memory (a lower bound already exceeds it)."""


def _params(cfg: ArchConfig) -> int:
    from spaces.flops import estimate_params  # flops imports the model; keep this module light

    return estimate_params(cfg)


def weight_bytes(cfg: ArchConfig) -> int:
    return FP32 * _params(cfg)


def score_elements(cfg: ArchConfig) -> int:
    """Attention score entries of one layer for one sequence (all heads; the largest layer of
    a hybrid stack)."""
    return max(
        ATTENTION.get(s.attention).attention_flops(
            s.attention_params, cfg.seq_len, cfg.n_heads, cfg.head_dim, cfg.causal
        )
        // (2 * cfg.head_dim)
        for s in cfg.layer_specs()
    )


def training_bytes(cfg: ArchConfig, batch_size: int) -> int:
    residuals = batch_size * cfg.seq_len * cfg.d_model * cfg.depth
    scores = batch_size * score_elements(cfg)
    return TRAIN_BYTES_PER_PARAM * _params(cfg) + FP32 * (residuals + scores)


def device_memory(device: str = "cpu") -> int | None:
    """Total memory of the device in bytes (None where it cannot be read)."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(device.split(":", 1)[1]) if ":" in device else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX
        return None


def gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(cfg: ArchConfig, device: str = "cpu", batch_size: int | None = None) -> None:
    """Raise ModelTooLarge when the weights (batch_size None) or training at `batch_size`
    certainly exceed the device's memory."""
    total = device_memory(device)
    if total is None:
        return
    if batch_size is None:
        need, what = weight_bytes(cfg), "its fp32 weights alone"
    else:
        need, what = training_bytes(cfg, batch_size), f"training at batch {batch_size}"
    if need > total:
        raise ModelTooLarge(
            f"model too large: {what} requires at least {gib(need)} ({_params(cfg):,} parameters, "
            f"depth {cfg.depth}, d_model {cfg.d_model}, seq_len {cfg.seq_len}), but {device} has "
            f"{gib(total)}; shrink the config or use a device with more memory"
        )


__all__ = [
    "ModelTooLarge",
    "check_fits",
    "device_memory",
    "score_elements",
    "training_bytes",
    "weight_bytes",
]
