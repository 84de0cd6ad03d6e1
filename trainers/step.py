"""One optimizer step and the optimizer, shared by the rung evaluator and the final trainer.

Both trainers train with exactly the same recipe, so a candidate ranked by the search is trained
by `search.train` the way it was judged: AdamW with the width-scaled learning rate of
`Recipe.lr_for`, gradient clipping, and bf16 autocast on CUDA (fp32 on the CPU). A non-finite
loss raises `Diverged` before the weights are touched, so the last good state stays intact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from spaces import ArchConfig
from trainers.tasks import Batch, Task

if TYPE_CHECKING:  # proxy uses this module's OOM helpers
    from trainers.proxy import Recipe


class Diverged(Exception):
    """A non-finite loss; the message says where."""


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (the CPU trains in fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(
    model: torch.nn.Module, cfg: ArchConfig, recipe: Recipe, lr: float | None = None
) -> tuple[torch.optim.Optimizer, float]:
    """(AdamW, peak learning rate): `lr` if given, else the recipe's width-scaled rule. On CUDA
    the fused AdamW kernel (one launch for all parameters); the CPU keeps the default one."""
    peak = recipe.lr_for(cfg) if lr is None else lr
    params = list(model.parameters())
    fused = {"fused": True} if params and all(p.is_cuda for p in params) else {}
    opt = torch.optim.AdamW(
        params, lr=peak, betas=recipe.betas, weight_decay=recipe.weight_decay, **fused
    )
    return opt, peak


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    task: Task,
    batch: Batch,
    lr: float,
    grad_clip: float,
    step: int,
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
) -> float:
    """One step at learning rate `lr` on `batch` (already on the model's device); the loss.
    `loss_fn(logits, batch)` replaces the task's loss (e.g. `Teacher.loss` for distillation)."""
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast(batch.tokens.device):
        logits = model(batch.tokens, batch.mask)
        loss = (loss_fn or task.loss)(logits, batch)
    if not torch.isfinite(loss):
        raise Diverged(f"non-finite training loss at step {step + 1}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return loss.item()


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is the allocator running out of memory (CPU or GPU)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def oom_reason(step: int, exc: BaseException) -> str:
    return f"out of memory at step {step}: {str(exc).splitlines()[0][:200]}"


__all__ = ["Diverged", "autocast", "is_oom", "make_optimizer", "oom_reason", "train_step"]
