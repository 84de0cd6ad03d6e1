"""One optimizer step and the optimizer, shared by the rung evaluator and the final trainer.

Both trainers train with exactly the same recipe, so a candidate ranked by the search is trained
by `search.train` the way it was judged: AdamW with the width- and batch-scaled learning rate of
`Recipe.lr_for`, gradient clipping, and bf16 autocast on CUDA (fp32 on the CPU).

Host syncs: reading the loss (`.item()`, or testing it for finiteness) makes the CPU wait for the
GPU, so the next step's kernels are not queued while this one runs. A step therefore reads its
loss only when asked (`read=True`): always on the CPU, where reading costs nothing, and every
`READ_EVERY` steps on CUDA (`should_read`). A read non-finite loss raises `Diverged` before that
step touches the weights. On CUDA a divergence is caught within `READ_EVERY` steps (a NaN spreads
to every later loss) and always before a checkpoint is written (`check_finite_weights`).
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


READ_EVERY = 8  # CUDA: steps between loss reads (host syncs); the CPU reads every step


class Diverged(Exception):
    """A non-finite loss; the message says where."""


def should_read(step: int, device: torch.device) -> bool:
    """Whether step `step` (0-based) reads its loss: every step on the CPU, every READ_EVERY-th
    on CUDA (the last of each group of READ_EVERY)."""
    return device.type != "cuda" or (step + 1) % READ_EVERY == 0


def check_finite_weights(model: torch.nn.Module, step: int) -> None:
    """Diverged unless every parameter is finite (one host sync: call it before saving)."""
    params = [p.detach() for p in model.parameters()]
    if params and not bool(torch.stack([torch.isfinite(p).all() for p in params]).all()):
        raise Diverged(f"non-finite weights after step {step}")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (the CPU trains in fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_optimizer(
    model: torch.nn.Module,
    cfg: ArchConfig,
    recipe: Recipe,
    batch_tokens: int,
    lr: float | None = None,
) -> tuple[torch.optim.Optimizer, float]:
    """(AdamW, peak learning rate): `lr` if given, else the recipe's rule for this width and
    `batch_tokens` tokens per step (`Recipe.lr_for`). On CUDA
    the fused AdamW kernel (one launch for all parameters). On the CPU the multi-tensor
    (foreach) one: the same numbers bit for bit as the per-tensor loop, 3-16% faster steps for
    the small models a CPU search trains (the fused CPU kernel rounds differently)."""
    peak = recipe.lr_for(cfg, batch_tokens) if lr is None else lr
    params = list(model.parameters())
    kind = _kernel(params)
    opt = torch.optim.AdamW(
        params, lr=peak, betas=recipe.betas, weight_decay=recipe.weight_decay, **kind
    )
    return opt, peak


def _kernel(params: list[torch.nn.Parameter]) -> dict[str, bool]:
    """AdamW's implementation for parameters on one device: fused on CUDA, foreach on the CPU,
    torch's default elsewhere."""
    devices = {p.device.type for p in params}
    if devices == {"cuda"}:
        return {"fused": True}
    return {"foreach": True} if devices == {"cpu"} else {}


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    task: Task,
    batch: Batch,
    lr: float,
    grad_clip: float,
    step: int,
    loss_fn: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
    *,
    read: bool = True,
) -> torch.Tensor:
    """One step at learning rate `lr` on `batch` (already on the model's device); the loss, a
    detached 0-dim tensor on the device. `read` checks it for finiteness first (a host sync;
    `Diverged` before the weights are touched); without it nothing here waits for the GPU.
    `loss_fn(logits, batch)` replaces the task's loss (e.g. `Teacher.loss` for distillation)."""
    for group in opt.param_groups:
        group["lr"] = lr
    with autocast(batch.tokens.device):
        logits = model(batch.tokens, batch.mask)
        loss = (loss_fn or task.loss)(logits, batch)
    if read and not bool(torch.isfinite(loss)):
        raise Diverged(f"non-finite training loss at step {step + 1}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    clip_gradients(model, grad_clip)
    opt.step()
    return loss.detach()


def clip_gradients(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the gradients' total norm to `max_norm`; the norm before clipping. Multi-tensor
    (foreach) on the CPU and CUDA: one norm kernel per dtype, not per tensor, and on the CPU the
    same numbers as torch's per-tensor loop."""
    params = [p for p in model.parameters() if p.grad is not None]
    foreach = {p.device.type for p in params} <= {"cpu", "cuda"} or None
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=foreach)


def is_oom(exc: BaseException) -> bool:
    """Whether `exc` is the allocator running out of memory (CPU or GPU)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def oom_reason(step: int, exc: BaseException) -> str:
    return f"out of memory at step {step}: {str(exc).splitlines()[0][:200]}"


__all__ = [
    "READ_EVERY",
    "Diverged",
    "autocast",
    "check_finite_weights",
    "clip_gradients",
    "is_oom",
    "make_optimizer",
    "oom_reason",
    "should_read",
    "train_step",
]
