"""The multi-fidelity evaluator: equal training data per rung, continued (never restarted).

A candidate trains on a schedule of *rungs*: cumulative token counts r0, eta r0, eta^2 r0, ...
(`RungSchedule`). Every candidate on a rung has seen exactly the same tokens (the same batches,
in the same order: batch `s` is a deterministic function of the task seed and `s`), so a bigger
model simply costs more compute, exactly as it will when the user trains it. After each rung the
caller (successive halving, in `search.objective`) decides whether the candidate continues; a
promoted candidate picks up where it stopped.

Learning rate: warmup-stable-decay (WSD; Hu et al. 2024, MiniCPM, arXiv:2404.06395), an
*anytime* schedule. Linear warm-up over the first `wsd_warmup_frac` of rung 0 (by default all of
it, so rung 0 is scored from a decay that starts at 80% of the peak), then a constant peak.
Each rung's evaluated model ends with a short linear decay to zero over the last `decay_frac` of
that rung's tokens; for every rung but the last, the decay runs on a *branch*: the stable-phase
state is kept, the branch decays and is evaluated, and training continues from the kept state.
So the model scored on rung k is exactly what a user gets from a plain WSD run of r_k tokens, and
a promoted candidate's stable path never repeats a step. Tokens on the discarded branches are
counted apart (`tokens_processed`), never hidden.

Validation ranks by loss (continuous; accuracy ties at chance), and the task metric is recorded
too. After each rung the stable state is written to `checkpoint` (if given), so a killed worker's
trial resumes from its last finished rung instead of restarting. Divergence (a non-finite loss)
and running out of memory end the run with a status, never an exception.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from spaces import ArchConfig, build_model
from spaces.atomic import atomic_write
from spaces.flops import training_flops_per_sequence
from spaces.memory import ModelTooLarge, check_fits
from trainers.proxy import Recipe, evaluate
from trainers.step import (
    READ_EVERY,
    Diverged,
    is_oom,
    make_optimizer,
    oom_reason,
    should_read,
    train_step,
)
from trainers.tasks import Task

CHECKPOINT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class RungSchedule:
    """Cumulative training tokens at the end of each rung, all in whole optimizer steps."""

    first_steps: int  # optimizer steps of rung 0
    batch_size: int  # sequences per step, the same for every candidate of a study
    seq_len: int
    eta: int = 3  # each rung is eta x the previous one
    rungs: int = 3  # number of rungs; the top one is eta^(rungs-1) x the first

    def __post_init__(self) -> None:
        for name in ("first_steps", "batch_size", "seq_len", "rungs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"rung schedule: {name} must be >= 1, got {getattr(self, name)}")
        if self.eta < 2:
            raise ValueError(f"rung schedule: eta must be >= 2, got {self.eta} (e.g. eta=3)")

    @property
    def batch_tokens(self) -> int:
        return self.batch_size * self.seq_len

    def steps(self, rung: int) -> int:
        """Cumulative optimizer steps at the end of `rung`."""
        return self.first_steps * self.eta**rung

    def tokens(self, rung: int) -> int:
        """Cumulative training tokens at the end of `rung` (the same for every candidate)."""
        return self.steps(rung) * self.batch_tokens

    @property
    def top(self) -> int:
        return self.rungs - 1

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class RungResult:
    """One rung's evaluation, passed to the `on_rung` callback."""

    rung: int
    tokens: int  # training tokens behind the evaluated model (equal for every candidate)
    tokens_processed: int  # all tokens trained so far, discarded decay branches included
    loss: float  # validation loss (nats per scored target): what ranks candidates
    metric: float  # the task's metric (accuracy, bits per byte)
    wall_time: float
    tokens_per_s: float


@dataclasses.dataclass
class RungOutcome:
    status: str  # "ok" (all rungs), "stopped" (the callback stopped it), "diverged", "oom"
    rungs: list[RungResult]
    reason: str = ""
    resumed_from: int | None = None  # rung whose checkpoint the run started from
    tokens_processed: int = 0
    train_time: float = 0.0
    flops_per_s: float = 0.0
    tokens_per_s: float = 0.0

    @property
    def last(self) -> RungResult | None:
        return self.rungs[-1] if self.rungs else None


@dataclasses.dataclass(frozen=True)
class Progress:
    """Live progress inside a rung (for progress bars); never used for decisions."""

    rung: int
    tokens: int
    loss: float


def lr_factor(step: int, warmup: int) -> float:
    """Stable phase of WSD: linear warm-up over `warmup` steps, then 1."""
    return min(1.0, (step + 1) / warmup)


def decay_steps(schedule: RungSchedule, rung: int, recipe: Recipe) -> int:
    """Steps of the linear decay that ends rung `rung` (at least 1, at most the rung's length)."""
    return max(1, min(schedule.steps(rung) - 1, round(recipe.decay_frac * schedule.steps(rung))))


def warmup_steps(schedule: RungSchedule, recipe: Recipe) -> int:
    return max(1, round(recipe.wsd_warmup_frac * schedule.first_steps))


@dataclasses.dataclass
class _Cursor:
    """Where a run stands: optimizer step, tokens processed, seconds of training."""

    start: float
    step: int = 0
    processed: int = 0
    train_time: float = 0.0
    resumed: int = 0  # tokens processed before this run (from a checkpoint): not timed here

    @property
    def tokens_per_s(self) -> float:
        """Training tokens per second of this run (0 before it has trained any)."""
        trained = self.processed - self.resumed
        return trained / self.train_time if self.train_time else 0.0


class RungTrainer:
    """Train one config rung by rung; see the module docstring for the recipe."""

    def __init__(
        self,
        cfg: ArchConfig,
        task: Task,
        schedule: RungSchedule,
        *,
        recipe: Recipe | None = None,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = None,
        checkpoint: str | Path | None = None,
        val_sequences: int | None = None,
    ) -> None:
        if task.seq_len != schedule.seq_len:
            raise ValueError(
                f"rung schedule is for seq_len {schedule.seq_len}, task has {task.seq_len}"
            )
        recipe = recipe or Recipe()
        self.cfg, self.task, self.schedule, self.recipe = cfg, task, schedule, recipe
        self.seed, self.device = seed, torch.device(device)
        self.checkpoint = Path(checkpoint) if checkpoint else None
        if threads:
            torch.set_num_threads(threads)
        n_val = val_sequences or max(1, recipe.val_tokens // task.seq_len)
        self.val_fraction = min(1.0, n_val / max(1, task.n_val))
        self.flops_per_step = training_flops_per_sequence(cfg) * schedule.batch_size

    # -- state -------------------------------------------------------------------------------
    def _fresh(self):
        check_fits(self.cfg, str(self.device), self.schedule.batch_size)
        torch.manual_seed(self.seed)
        model = build_model(self.cfg).to(self.device).train()
        opt, lr = make_optimizer(model, self.cfg, self.recipe, self.schedule.batch_tokens)
        return model, opt, lr

    def _identity(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "schedule": self.schedule.to_dict(),
            "recipe": self.recipe.stored(),  # as a study stores it: older checkpoints match
            "seed": self.seed,
        }

    def _load(self, model, opt) -> tuple[int, int, list[RungResult]] | None:
        """(stable step, tokens processed, finished rungs) from the checkpoint, if it matches."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return None
        try:
            state = torch.load(self.checkpoint, map_location=self.device, weights_only=False)
        except Exception:
            return None  # unreadable (killed mid-write is prevented by rename; be safe anyway)
        if state.get("identity") != self._identity():
            return None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        return state["step"], state["tokens_processed"], [RungResult(**r) for r in state["rungs"]]

    def _save(self, model, opt, step: int, processed: int, rungs: list[RungResult]) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "identity": self._identity(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "tokens_processed": processed,
            "rungs": [dataclasses.asdict(r) for r in rungs],
        }
        # atomic: a kill or a full disk never leaves half a checkpoint, nor a temp file
        atomic_write(self.checkpoint, lambda tmp: torch.save(state, tmp))

    # -- training ----------------------------------------------------------------------------
    def _step(self, model, opt, step: int, lr: float, read: bool) -> torch.Tensor:
        batch = self.task.train_batch(step, self.schedule.batch_size).to(self.device)
        grad_clip = self.recipe.grad_clip
        return train_step(model, opt, self.task, batch, lr, grad_clip, step, read=read)

    def run(
        self,
        on_rung: Callable[[RungResult], bool] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        before_rung: Callable[[RungResult], str | None] | None = None,
    ) -> RungOutcome:
        """Train through the rungs. `on_rung` sees every rung's result and returns True to stop
        after it (pruned; ignored after the top rung). `before_rung` is asked, with the last
        finished rung's result, before each rung is trained on from it (after a resume: once,
        with the last rung of the checkpoint); a reason stops the run there, status "stopped"
        with that reason (the time limit, search.time_limit)."""
        outcome = RungOutcome(status="ok", rungs=[])
        at = _Cursor(start=time.perf_counter())
        try:
            model, opt, peak = self._fresh()
            if not self._resume(model, opt, outcome, at, on_rung):
                self._train(model, opt, peak, outcome, at, (on_rung, on_progress, before_rung))
            return self._finish(outcome, at)
        except Diverged as exc:
            outcome.status, outcome.reason = "diverged", str(exc)
        except ModelTooLarge as exc:  # refused before allocation
            outcome.status, outcome.reason = "oom", str(exc)
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            outcome.status, outcome.reason = "oom", oom_reason(at.step, exc)
        return self._finish(outcome, at)

    def _train(self, model, opt, peak: float, outcome: RungOutcome, at: _Cursor, calls) -> None:
        """Train the rungs after those in `outcome` until the top, or until a callback of
        `calls` (on_rung, on_progress, before_rung; see `run`) stops the run."""
        on_rung, on_progress, before_rung = calls
        for rung in range(len(outcome.rungs), self.schedule.rungs):
            why = before_rung(outcome.rungs[-1]) if before_rung and outcome.rungs else None
            if why:
                outcome.status, outcome.reason = "stopped", why
                return
            result = self._rung(model, opt, peak, rung, at, on_progress)
            outcome.rungs.append(result)
            if rung != self.schedule.top:
                self._save(model, opt, at.step, at.processed, outcome.rungs)
            if on_progress is not None:
                on_progress(Progress(rung, self.schedule.tokens(rung), result.loss))
            stop = on_rung is not None and on_rung(result)  # called on every rung
            if stop and rung != self.schedule.top:
                outcome.status, outcome.reason = "stopped", f"stopped after rung {rung}"
                return

    def _resume(self, model, opt, outcome: RungOutcome, at: _Cursor, on_rung) -> bool:
        """Load the checkpoint, if any, and replay the rung decisions the caller already made;
        True when one of them stops the run."""
        loaded = self._load(model, opt)
        if loaded is None:
            return False
        at.step, at.processed, outcome.rungs = loaded
        at.resumed = at.processed
        outcome.resumed_from = outcome.rungs[-1].rung if outcome.rungs else None
        for r in outcome.rungs:
            if on_rung is not None and on_rung(r):
                outcome.status, outcome.reason = "stopped", f"stopped after rung {r.rung}"
                return True
        return False

    def _rung(self, model, opt, peak: float, rung: int, at: _Cursor, on_progress) -> RungResult:
        """Train rung `rung`: the stable phase (continuing the previous rung's), then a short
        decay on a branch that is evaluated; below the top rung the model and optimizer return
        to the stable state, so the next rung continues from it."""
        sched, recipe = self.schedule, self.recipe
        warmup = warmup_steps(sched, recipe)
        end, decay = sched.steps(rung), decay_steps(sched, rung, recipe)
        stable_end = end - decay
        t0 = time.perf_counter()
        while at.step < stable_end:
            read = should_read(at.step, self.device)  # every READ_EVERY-th step on CUDA
            loss = self._step(model, opt, at.step, peak * lr_factor(at.step, warmup), read)
            at.step, at.processed = at.step + 1, at.processed + sched.batch_tokens
            if on_progress is not None and at.step % READ_EVERY == 0:
                on_progress(Progress(rung, at.step * sched.batch_tokens, float(loss)))
        kept = None
        if rung != sched.top:  # decay on a branch: keep the stable state to continue from
            kept = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
        base = peak * lr_factor(stable_end, warmup)
        for i in range(decay):
            read = should_read(stable_end + i, self.device)
            self._step(model, opt, stable_end + i, base * (1 - (i + 1) / decay), read)
            at.processed += sched.batch_tokens
        if self.device.type == "cuda":  # the queued steps count in the rung's time
            torch.cuda.synchronize(self.device)
        at.train_time += time.perf_counter() - t0
        loss_nats, metric = self._validate(model)
        if kept is not None:
            model.load_state_dict(kept[0])
            opt.load_state_dict(kept[1])
            at.step = stable_end
        return RungResult(
            rung=rung,
            tokens=sched.tokens(rung),
            tokens_processed=at.processed,
            loss=loss_nats,
            metric=metric,
            wall_time=time.perf_counter() - at.start,
            tokens_per_s=at.tokens_per_s,
        )

    def _validate(self, model) -> tuple[float, float]:
        metric, loss = evaluate(
            model, self.task, self.device, self.recipe.eval_batch_size, self.val_fraction
        )
        if not (math.isfinite(metric) and math.isfinite(loss)):
            raise Diverged("non-finite validation loss")
        return loss, metric

    def _finish(self, outcome: RungOutcome, at: _Cursor) -> RungOutcome:
        processed, train_time = at.processed, at.train_time
        outcome.tokens_processed = processed
        outcome.train_time = train_time
        # the speed of this run's training; a run that trained nothing (resumed, then stopped
        # at once) reports the speed its checkpoint's last rung was trained at
        speed = at.tokens_per_s or (outcome.rungs[-1].tokens_per_s if outcome.rungs else 0.0)
        outcome.tokens_per_s = speed
        outcome.flops_per_s = speed / self.schedule.batch_tokens * self.flops_per_step
        return outcome


__all__ = ["Progress", "RungOutcome", "RungResult", "RungSchedule", "RungTrainer"]
