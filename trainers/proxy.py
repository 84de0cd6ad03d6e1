"""The proxy trainer: a short, fair, deterministic training run that judges one config.

Every candidate gets the same *training compute* (FLOPs, fvcore convention, forward x
`TRAIN_FLOPS_FACTOR`), so a smaller model sees more sequences. By default every candidate also
takes the same number of optimizer steps (`Recipe.steps`), and the batch size is what absorbs
the difference: small models train on large batches (which also keeps a 2-core CPU busy instead
of waiting on per-step overhead), large models on small ones; the batch is clamped to [1,
max_batch_size], and the step count then moves instead. The recipe is one for the whole space:
AdamW, linear warm-up then cosine decay to 10%, gradient clipping at 1.0, and a learning rate
that shrinks with width (`lr = base_lr * (256 / d_model) ** lr_width_power`, the power 0.5 by
default, muP-flavoured: wider layers take smaller steps) and with a step smaller than
`lr_batch_tokens` (`Recipe.lr_for`). The validation
metric is reported at `n_evals` even fractions of the compute through a callback that knows
nothing of Optuna or Ray (intermediate points on the first `intermediate_val_fraction` of the
validation set, the final one on all of it); the callback may stop the run. A non-finite loss
ends the run at once as `diverged`; running out of memory ends it as `oom`; neither raises.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from spaces import ArchConfig, build_model
from spaces.flops import training_flops_per_sequence
from trainers.recipe_checks import check_recipe
from trainers.step import clip_gradients, is_oom, make_optimizer, oom_reason
from trainers.tasks import Task

STATUSES = ("ok", "diverged", "stopped", "oom")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The training recipe shared by every candidate (README, 'How candidates are judged')."""

    steps: int = 200  # optimizer steps every candidate takes (batch size absorbs model cost)
    batch_size: int | None = None  # fixed sequences per step instead (steps then vary)
    max_batch_size: int = 256  # clamp of the derived batch size
    base_lr: float = 2e-3  # learning rate at d_model = 256 and lr_batch_tokens tokens per step
    # the step the base rate is for: a smaller step scales the peak by sqrt(step / this).
    # 0: no batch factor, the rule of every study made before this field (`from_stored`)
    lr_batch_tokens: int = 4096
    # the width exponent: the peak scales as (256 / d_model) ** this. 0.5 (square root) is the
    # rule every study so far was judged with; muP's rule for Adam's hidden weights is 1
    lr_width_power: float = 0.5
    warmup_frac: float = 0.1  # fraction of steps with linear warm-up
    final_lr_frac: float = 0.1  # cosine decay ends at this fraction of the peak
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    n_evals: int = 4  # validation points reported, evenly spaced over the compute
    eval_batch_size: int = 64
    intermediate_val_fraction: float = 0.25  # share of the validation set for early points
    # -- the multi-fidelity evaluator (trainers/rungs.py; search's default) ------------------
    # tokens per optimizer step at most, the same for every candidate; search.plan shrinks the
    # batch for short first rungs, and on CPU caps it at search.plan.CPU_STEP_TOKENS (1024)
    batch_tokens: int = 4096
    # warm-up, as a fraction of the first rung's steps. 1: the warm-up spans rung 0. A quarter
    # (16 steps on a 64-step first rung) left early training unstable enough to reorder
    # candidates: docs/results.md 0, "Warm-up and ranking fidelity"
    wsd_warmup_frac: float = 1.0
    decay_frac: float = 0.2  # each rung ends with a linear decay over this share of its steps
    val_tokens: int = 32768  # validation tokens per rung evaluation (a fixed subset)

    def __post_init__(self) -> None:
        """Every field checked (`trainers.recipe_checks`); betas kept as a tuple."""
        check_recipe(dataclasses.asdict(self))
        object.__setattr__(self, "betas", tuple(self.betas))

    def lr_for(self, cfg: ArchConfig, batch_tokens: int) -> float:
        """Peak learning rate of `cfg` trained with `batch_tokens` tokens per optimizer step:
        `base_lr * (256 / d_model) ** lr_width_power * sqrt(min(1, batch_tokens /
        lr_batch_tokens))`, the width exponent 0.5 by default.

        The batch factor is Adam's square-root scaling rule (Malladi et al. 2022,
        arXiv:2205.10287): a step of a quarter the tokens has twice the gradient noise, so it
        takes half the rate. It only ever lowers the rate: above `lr_batch_tokens` (a GPU's
        batch) the base holds. Measured on CPU's 1,024-token steps (docs/results.md 0, "The
        learning rate at the CPU's batch"): half the old rate trained the budget-sized 6x192
        text model to a lower loss after 1.18M tokens (1.571 against 1.729)."""
        batch = 1.0
        if self.lr_batch_tokens > 0:
            batch = math.sqrt(min(1.0, batch_tokens / self.lr_batch_tokens))
        ratio = 256 / cfg.d_model
        # sqrt at the default power, bit for bit the rate every earlier study trained with
        width = math.sqrt(ratio) if self.lr_width_power == 0.5 else ratio**self.lr_width_power
        return self.base_lr * width * batch

    def lr_rule(self, cfg: ArchConfig, batch_tokens: int) -> str:
        """`lr_for`'s rule with this config's numbers, e.g. `0.002 x (256 / 64)^0.5 x sqrt(1024 /
        4096)` (the batch factor only where it lowers the rate), for a banner."""
        text = f"{self.base_lr:g} x (256 / {cfg.d_model})^{self.lr_width_power:g}"
        if self.lr_batch_tokens > 0 and batch_tokens < self.lr_batch_tokens:
            text += f" x sqrt({batch_tokens} / {self.lr_batch_tokens})"
        return text

    def stored(self) -> dict[str, Any]:
        """The recipe as a study stores it: its fields, with `lr_batch_tokens` left out when 0,
        so a study made before the field existed (and stored without it) resumes with
        `lr_batch_tokens = 0` in its preset's [recipe], and not without it; and
        `lr_width_power` left out at 0.5, the rule of every study made before it, so those
        resume unchanged."""
        d = dataclasses.asdict(self)
        if d["lr_batch_tokens"] == 0:
            del d["lr_batch_tokens"]
        if d["lr_width_power"] == 0.5:
            del d["lr_width_power"]
        return d

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Recipe:
        """The recipe a study stored with `stored` (unknown keys ignored): without
        `lr_batch_tokens` it is 0, the unscaled rate that study was judged with; without
        `lr_width_power`, 0.5."""
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        return cls(**{"lr_batch_tokens": 0, **d})


@dataclasses.dataclass(frozen=True)
class Progress:
    """One validation point, passed to the callback."""

    step: int
    steps: int
    fraction: float  # of the training compute spent so far, in (0, 1]
    tokens: int
    metric: float
    loss: float


@dataclasses.dataclass
class ProxyResult:
    status: str  # one of STATUSES
    metric: float | None  # validation metric at the end (None unless a validation ran)
    loss: float | None
    steps: int
    tokens: int
    sequences: int
    batch_size: int
    wall_time: float  # seconds, training and evaluation
    tokens_per_s: float  # training tokens per second of training time
    flops_per_s: float  # achieved training FLOP/s (fvcore convention, x TRAIN_FLOPS_FACTOR)
    reason: str = ""
    history: list[Progress] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["history"] = [dataclasses.asdict(p) for p in self.history]
        return d


Callback = Callable[[Progress], bool | None]  # return True to stop the run


def plan(cfg: ArchConfig, compute: float, recipe: Recipe) -> tuple[int, int]:
    """(steps, batch size) that spend `compute` training FLOPs on this config."""
    per_seq = training_flops_per_sequence(cfg)
    batch = recipe.batch_size
    if batch is None:
        batch = min(recipe.max_batch_size, max(1, round(compute / (recipe.steps * per_seq))))
    return max(1, round(compute / (batch * per_seq))), batch


def evaluate(
    model: torch.nn.Module, task: Task, device: torch.device, batch_size: int, fraction: float = 1.0
):
    """(metric, loss) over the task's fixed validation set (or its first `fraction`)."""
    model.eval()
    num, count, loss_sum, n = 0.0, 0, 0.0, 0
    batches = task.val_batches(batch_size)
    batches = batches[: max(1, round(len(batches) * fraction))]
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            logits = model(batch.tokens, batch.mask)
            a, c = task.metric_stats(logits, batch)
            num, count = num + a, count + c
            loss_sum, n = loss_sum + float(task.loss(logits, batch)), n + 1
    model.train()
    return num / max(count, 1), loss_sum / max(n, 1)


def train(
    cfg: ArchConfig,
    task: Task,
    compute: float,
    *,
    recipe: Recipe = Recipe(),
    seed: int = 0,
    device: str = "cpu",
    threads: int | None = None,
    callback: Callback | None = None,
) -> ProxyResult:
    """Train `cfg` on `task` for `compute` training FLOPs; never raises for divergence or OOM."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    steps, batch_size = plan(cfg, compute, recipe)
    evals = sorted({max(1, round(steps * (i + 1) / recipe.n_evals)) for i in range(recipe.n_evals)})
    tokens_per_step = batch_size * cfg.seq_len
    flops_per_step = training_flops_per_sequence(cfg) * batch_size
    start = time.perf_counter()
    train_time = 0.0
    history: list[Progress] = []
    step, metric, loss_value = 0, None, None

    def result(status: str, reason: str = "") -> ProxyResult:
        return ProxyResult(
            status=status,
            metric=metric,
            loss=loss_value,
            steps=step,
            tokens=step * tokens_per_step,
            sequences=step * batch_size,
            batch_size=batch_size,
            wall_time=time.perf_counter() - start,
            tokens_per_s=step * tokens_per_step / train_time if train_time else 0.0,
            flops_per_s=step * flops_per_step / train_time if train_time else 0.0,
            reason=reason,
            history=history,
        )

    try:
        torch.manual_seed(seed)
        model = build_model(cfg).to(dev).train()
        opt, _ = make_optimizer(model, cfg, recipe, tokens_per_step)
        warmup = max(1, round(recipe.warmup_frac * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: _lr_factor(s, steps, warmup, recipe.final_lr_frac)
        )
        for step in range(1, steps + 1):
            t0 = time.perf_counter()
            batch = task.train_batch(step - 1, batch_size).to(dev)
            loss = task.loss(model(batch.tokens, batch.mask), batch)
            if not torch.isfinite(loss):
                loss_value = float("nan")
                metric = None
                return result("diverged", f"non-finite training loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            clip_gradients(model, recipe.grad_clip)
            opt.step()
            sched.step()
            train_time += time.perf_counter() - t0
            if step in evals:
                fraction = 1.0 if step == steps else recipe.intermediate_val_fraction
                metric, loss_value = evaluate(model, task, dev, recipe.eval_batch_size, fraction)
                if not (math.isfinite(metric) and math.isfinite(loss_value)):
                    metric, loss_value = None, float("nan")
                    return result("diverged", f"non-finite validation loss at step {step}")
                point = Progress(
                    step, steps, step / steps, step * tokens_per_step, metric, loss_value
                )
                history.append(point)
                if callback is not None and callback(point):
                    return result("stopped", f"stopped by callback at step {step}/{steps}")
        return result("ok")
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not is_oom(exc):
            raise
        return result("oom", oom_reason(step, exc))


def _lr_factor(step: int, steps: int, warmup: int, final: float) -> float:
    """Linear warm-up to 1, then cosine decay to `final`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


__all__ = [
    "STATUSES",
    "Progress",
    "ProxyResult",
    "Recipe",
    "plan",
    "train",
]
