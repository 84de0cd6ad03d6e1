"""The final trainer: train one config for N tokens, as a user does after the search.

`FinalTrainer(cfg, task, tokens, ...)` runs the search's recipe (trainers/step.py) on the
task's deterministic batch stream: batch `s` depends only on the task seed and `s`, so a
resumed run sees exactly the batches an uninterrupted one would. Learning rate:
warmup-stable-decay, as the rung evaluator judged the candidate (linear warm-up over
`warmup_frac` of the steps, constant, linear decay to 0 over the last `Recipe.decay_frac`).

With an output folder it writes, every evaluation and at the end, atomically (temp + rename):

* `config.json`: the `ArchConfig` (`ArchConfig.from_file` loads it);
* `model.safetensors`: the weights; `build_model(cfg).load_state_dict(load_file(path))` loads
  them (the tied LM head is stored as its own tensor, so loading is strict);
* `train_state.pt`: weights, optimizer, step, RNG and history, what `resume=True` continues;
* `history.json`: every evaluation (step, tokens, validation loss and metric).

With a `teacher` (trainers/distill.py) the student trains on the distillation loss, and the
teacher's forward FLOPs count toward `flops_per_s` and `train_flops`.

Divergence and running out of memory end the run with a status and a reason, never an
exception; the last checkpoint then still holds the last good state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from spaces import ArchConfig, build_model
from spaces.atomic import atomic_write
from spaces.flops import training_flops_per_sequence
from spaces.memory import check_fits
from trainers.distill import Teacher
from trainers.proxy import Recipe, evaluate
from trainers.step import (
    Diverged,
    check_finite_weights,
    is_oom,
    make_optimizer,
    oom_reason,
    should_read,
    train_step,
)
from trainers.tasks import Task

STATE_VERSION = 1
WARMUP_FRAC = 0.05  # share of the steps with linear warm-up
N_EVALS = 10  # evaluations over a run unless eval_every is given


@dataclasses.dataclass(frozen=True)
class Evaluation:
    step: int
    tokens: int
    loss: float  # validation loss, nats per scored target
    metric: float  # the task's metric (accuracy, bits per byte)
    train_loss: float
    wall_time: float


@dataclasses.dataclass
class FinalResult:
    status: str  # ok, interrupted, diverged, oom
    reason: str
    steps: int
    tokens: int
    loss: float | None  # last validation loss (the full validation set at the end)
    metric: float | None
    history: list[Evaluation]
    wall_time: float
    tokens_per_s: float
    flops_per_s: float  # training FLOP/s: 3 x forward (fvcore) + a teacher's forward
    train_flops: float  # training compute of all steps so far, same convention

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class CheckpointMismatch(ValueError):
    """`resume=True` found a checkpoint another run wrote: `theirs` and `ours` are the two
    `FinalTrainer.identity()` dicts, `fields` the keys where they differ (a CLI maps them to
    its flags)."""

    def __init__(self, out: Path | None, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
        self.out, self.theirs, self.ours = out, theirs, ours
        self.fields = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        super().__init__(
            f"the checkpoint in {out} was written by a different run (differs in: "
            f"{', '.join(self.fields)}); resume with the same config and flags, or use a new --out"
        )


@dataclasses.dataclass(frozen=True)
class Progress:
    """Live progress for a bar: tokens so far, the last training loss, tokens per second."""

    step: int
    tokens: int
    train_loss: float
    tokens_per_s: float


class FinalTrainer:
    """Train `cfg` on `task` for `tokens` training tokens (rounded to whole steps)."""

    def __init__(
        self,
        cfg: ArchConfig,
        task: Task,
        tokens: int,
        *,
        batch_size: int,
        recipe: Recipe | None = None,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = None,
        out: str | Path | None = None,
        eval_every: int | None = None,
        lr: float | None = None,
        warmup_frac: float = WARMUP_FRAC,
        teacher: Teacher | None = None,
        compile_model: bool = False,
    ) -> None:
        if got := task.mismatch(cfg):
            raise ValueError(f"the config does not fit the task: {got}")
        if tokens < 1 or batch_size < 1:
            raise ValueError(f"tokens and batch size must be >= 1, got {tokens} and {batch_size}")
        check_fits(cfg, device, batch_size)  # ModelTooLarge (a ValueError) before allocation
        self.cfg, self.task, self.recipe = cfg, task, recipe or Recipe()
        self.batch_size, self.seed, self.lr = batch_size, seed, lr
        self.compile_model = compile_model  # torch.compile the training steps (not the math)
        self.device = torch.device(device)
        self.out = Path(out) if out else None
        if threads:
            torch.set_num_threads(threads)
        self.batch_tokens = batch_size * task.seq_len
        self.steps = max(1, round(tokens / self.batch_tokens))
        self.warmup = max(1, round(warmup_frac * self.steps))
        self.decay = max(1, min(self.steps - 1, round(self.recipe.decay_frac * self.steps)))
        every = eval_every or max(1, round(self.steps / N_EVALS))
        self.eval_steps = set(range(every, self.steps, every)) | {self.steps}
        n_val = max(1, self.recipe.val_tokens // task.seq_len)
        self.val_fraction = min(1.0, n_val / max(1, task.n_val))
        self.teacher = teacher
        # training compute per step: the student's forward + backward, plus the teacher's forward
        teacher_flops = teacher.flops_per_sequence if teacher is not None else 0
        self.flops_per_step = (training_flops_per_sequence(cfg) + teacher_flops) * batch_size

    @property
    def tokens(self) -> int:
        return self.steps * self.batch_tokens

    @property
    def peak_lr(self) -> float:
        """The peak learning rate: `lr` if given, else the recipe's rule for this width and
        step (`Recipe.lr_for`)."""
        return self.recipe.lr_for(self.cfg, self.batch_tokens) if self.lr is None else self.lr

    def lr_at(self, step: int, peak: float) -> float:
        """WSD: warm-up, constant, linear decay to 0 over the last `decay` steps."""
        if step < self.warmup:
            return peak * (step + 1) / self.warmup
        decay_start = self.steps - self.decay
        if step >= decay_start:
            return peak * (1 - (step - decay_start + 1) / self.decay)
        return peak

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        identity = {
            "version": STATE_VERSION,
            "config": self.cfg.to_dict(),
            "task": type(self.task).__name__,
            "task_interface": self.task.interface(),
            "steps": self.steps,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "lr": self.lr,
            "warmup": self.warmup,
            "recipe": self.recipe.stored(),  # as a study stores it: older checkpoints match
        }
        if self.teacher is not None:
            identity["teacher"] = self.teacher.identity()
        return identity

    # -- files --------------------------------------------------------------------------------
    def state_path(self) -> Path | None:
        return None if self.out is None else self.out / "train_state.pt"

    def has_checkpoint(self) -> bool:
        path = self.state_path()
        return path is not None and path.is_file()

    def _save(self, model, opt, step: int, history: list[Evaluation]) -> None:
        if self.out is None:
            return
        from safetensors.torch import save_file

        self.out.mkdir(parents=True, exist_ok=True)
        weights = {
            k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()
        }
        meta = {"step": str(step), "tokens": str(step * self.batch_tokens), "format": "pt"}
        atomic_write(self.out / "model.safetensors", lambda p: save_file(weights, p, metadata=meta))
        atomic_write(self.out / "config.json", lambda p: self.cfg.to_file(p))
        rows = [dataclasses.asdict(e) for e in history]
        atomic_write(
            self.out / "history.json",
            lambda p: Path(p).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8"),
        )
        state = {
            "identity": self.identity(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "history": rows,
            "rng": torch.get_rng_state(),
        }
        path = self.state_path()
        assert path is not None  # self.out is set
        atomic_write(path, lambda p: torch.save(state, p))

    def _read_state(self, *, mmap: bool = False) -> dict[str, Any]:
        """The checkpoint's state, if this run wrote it: CheckpointMismatch if another did,
        ValueError if it cannot be read. `mmap` leaves the tensors on disk (a cheap check)."""
        path = self.state_path()
        device = torch.device("cpu") if mmap else self.device
        try:
            state = torch.load(cast(Path, path), map_location=device, weights_only=False, mmap=mmap)
        except Exception as exc:
            raise ValueError(f"cannot read the checkpoint {path}: {exc}") from exc
        if not isinstance(state, dict):
            raise ValueError(f"cannot read the checkpoint {path}: not a training state")
        if state.get("identity") != self.identity():
            raise CheckpointMismatch(self.out, state.get("identity") or {}, self.identity())
        return state

    def check_resume(self) -> None:
        """Before `run(resume=True)`, e.g. before a CLI prints its banner: CheckpointMismatch
        if another run wrote the checkpoint in `out`, ValueError if it cannot be read. Reads
        the identity only (the tensors are memory-mapped, not loaded); no checkpoint: nothing."""
        if self.has_checkpoint():
            self._read_state(mmap=True)

    def _check_resumable(self) -> None:
        """A checkpoint to resume is there (before: run(resume=True) without one silently
        started a new run)."""
        if self.out is None:
            raise ValueError("resume=True needs an `out` folder that holds a checkpoint")
        if not self.has_checkpoint():
            raise FileNotFoundError(
                f"resume=True: no checkpoint {self.state_path()} to continue; "
                "run(resume=False) starts a new run"
            )

    def _load(self, model, opt) -> tuple[int, list[Evaluation]]:
        self._check_resumable()
        state = self._read_state()
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        return state["step"], [Evaluation(**e) for e in state["history"]]

    # -- training -----------------------------------------------------------------------------
    def _step(self, model, opt, step: int, peak: float, read: bool) -> torch.Tensor:
        batch = self.task.train_batch(step, self.batch_size).to(self.device)
        return train_step(
            model,
            opt,
            self.task,
            batch,
            self.lr_at(step, peak),
            self.recipe.grad_clip,
            step,
            self.teacher.loss if self.teacher is not None else None,
            read=read,
        )

    def _train_one(self, model, opt, step: int, peak: float, last: float):
        """Train step `step`: (whether its loss was read, the latest read loss, seconds). On
        CUDA the loss is read every READ_EVERY steps and before each evaluation: that read is
        the host sync, so the seconds of the steps queued before it land on it."""
        t0 = time.perf_counter()
        read = should_read(step, self.device) or step + 1 in self.eval_steps
        loss = self._step(model, opt, step, peak, read)
        return read, float(loss) if read else last, time.perf_counter() - t0

    def _evaluate(self, model, step: int, train_loss: float, elapsed: float) -> Evaluation:
        """Validation after `step` (the whole split at the last step); Diverged if non-finite."""
        fraction = 1.0 if step == self.steps else self.val_fraction
        batch = self.recipe.eval_batch_size
        metric, loss = evaluate(model, self.task, self.device, batch, fraction)
        if not (math.isfinite(loss) and math.isfinite(metric)):
            raise Diverged(f"non-finite validation loss at step {step}")
        return Evaluation(step, step * self.batch_tokens, loss, metric, train_loss, elapsed)

    def run(
        self,
        *,
        resume: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
        on_eval: Callable[[Evaluation], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> FinalResult:
        """Train to the end (or until `should_stop()` is true after a step: the state is then
        checkpointed and the status is `interrupted`). `resume=True` continues the checkpoint in
        `out`: FileNotFoundError if there is none (ValueError without `out`), CheckpointMismatch
        if another run wrote it; the default starts afresh."""
        start, train_time = time.perf_counter(), 0.0
        torch.manual_seed(self.seed)
        model = build_model(self.cfg).to(self.device).train()
        opt, peak = make_optimizer(model, self.cfg, self.recipe, self.batch_tokens, self.peak_lr)
        step = 0
        history: list[Evaluation] = []
        if resume:
            step, history = self._load(model, opt)
        first = step
        status, reason, train_loss = "ok", "", float("nan")
        # the steps run through the compiled wrapper; `model` (same parameters) is what is
        # evaluated and saved, so checkpoint keys do not depend on compiling
        runner = torch.compile(model) if self.compile_model else model

        try:
            while step < self.steps:
                read, train_loss, seconds = self._train_one(runner, opt, step, peak, train_loss)
                step += 1
                train_time += seconds
                if on_progress is not None and read:
                    rate = (step - first) * self.batch_tokens / train_time
                    on_progress(Progress(step, step * self.batch_tokens, train_loss, rate))
                if step in self.eval_steps:
                    point = self._evaluate(model, step, train_loss, time.perf_counter() - start)
                    history.append(point)
                    self._save(model, opt, step, history)
                    if on_eval is not None:
                        on_eval(point)
                if should_stop is not None and should_stop() and step < self.steps:
                    check_finite_weights(model, step)  # no unread divergence is saved
                    self._save(model, opt, step, history)
                    status, reason = "interrupted", f"stopped at step {step} of {self.steps}"
                    break
        except Diverged as exc:
            status, reason = "diverged", f"{exc} (lr {peak:.3g})"
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            status, reason = "oom", oom_reason(step, exc)
        return self._result(status, reason, step, step - first, history, start, train_time)

    def _result(self, status, reason, step, done, history, start, train_time) -> FinalResult:
        """The run's result; `done` steps were trained in this call (rates count only those)."""
        last = history[-1] if history else None
        return FinalResult(
            status=status,
            reason=reason,
            steps=step,
            tokens=step * self.batch_tokens,
            loss=last.loss if last else None,
            metric=last.metric if last else None,
            history=history,
            wall_time=time.perf_counter() - start,
            tokens_per_s=done * self.batch_tokens / train_time if train_time else 0.0,
            flops_per_s=done * self.flops_per_step / train_time if train_time else 0.0,
            train_flops=step * self.flops_per_step,
        )


def load_weights(folder: str | Path) -> torch.nn.Module:
    """The trained model in `folder` (config.json + model.safetensors), in eval mode."""
    from safetensors.torch import load_file

    folder = Path(folder)
    model = build_model(ArchConfig.from_file(folder / "config.json"))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval()


__all__ = [
    "CheckpointMismatch",
    "Evaluation",
    "FinalResult",
    "FinalTrainer",
    "Progress",
    "load_weights",
]
