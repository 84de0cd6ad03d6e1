"""The objective every backend runs: suggest, price, reject or reuse, train rung by rung, record.

One code path for local worker processes and Ray (which only places the same workers on a
cluster). A candidate:

1. is priced before training (closed form, then fvcore); over budget, it is rejected in
   microseconds and told to the sampler as infeasible (`trial.set_constraint`);
2. is compared with the study's evaluated configs; an identical one is not trained again, its
   result is reused (status "duplicate");
3. trains on the study's rung schedule (`trainers.rungs`): equal tokens per rung for every
   candidate, validation loss reported after each rung, and the pruner (successive halving)
   decides whether it continues; a promoted candidate continues, never restarts. Its stable
   state is checkpointed after every rung, so a killed worker's retry resumes from there, and
   a cut candidate's checkpoint is kept, so that a late promotion (`search.asha`) resumes too.

Everything a user later needs is written on the trial as user attributes, so the dashboard,
export and scaling read only the database. Rejected and duplicate proposals stay in the study as
records but do not count toward `--trials` (`search.results.trained_count`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.asha import PROMOTED, lineage, queue_copy, superseded_by
from search.optuna_private import frozen
from search.results import slots_taken
from search.samplers import promotes_late
from search.settings import RunSettings
from search.time_limit import TIME_LIMITED, past_limit
from spaces.config import ArchConfig
from spaces.flops import (
    FLOP_CONVENTION,
    count_flops,
    count_params,
    estimate_flops,
    estimate_params,
)
from spaces.layers import describe_stack
from trainers.rungs import Progress, RungOutcome, RungResult, RungSchedule, RungTrainer
from trainers.tasks import Task, get_task

CONSTRAINT_ATTR = "constraint"  # (flops - budget) / budget: <= 0 is feasible
PRESCREEN_MARGIN = 0.05  # formula counts above budget x 1.05 are rejected without a trace
PROGRESS_EVERY = 5.0  # seconds between live progress writes to the study
MAX_COMPUTE_STRETCH = 64  # --evaluation compute: a small model trains at most 64x the tokens


def make_task(settings: RunSettings) -> Task:
    kwargs: dict[str, Any] = dict(settings.task_options)
    if settings.seq_len is not None:
        kwargs["seq_len"] = settings.seq_len
    if settings.data:
        kwargs["data"] = list(settings.data)
    return get_task(settings.task, seed=settings.seed, **kwargs)


def rung_step(rung: int, eta: int) -> int:
    """The step a rung is reported at: its length in first-rung units (1, eta, eta^2, ...), so
    `search.asha.AshaPruner` (and Optuna's Hyperband with min_resource=1) cuts at each rung."""
    return eta**rung


def checkpoint_key(trial: optuna.Trial) -> int:
    """The trial number a checkpoint belongs to: the original one for a retried trial."""
    return lineage(frozen(trial))


INTERRUPTED = "interrupted: Ctrl-C or a stopped parent; a WAITING retry resumes from its checkpoint"


def requeue(trial: optuna.Trial) -> None:
    """Return an interrupted trial to the queue: mark it, and add a WAITING copy that any worker
    (this run's re-run, or another worker) picks up next. The copy carries the same
    `failed_trial` system attr as Optuna's heartbeat retry, so it resumes from the original's
    rung checkpoint; an interruption is the user's doing, so it does not spend a crash retry."""
    record = frozen(trial)
    trial.set_user_attr("status", "interrupted")
    trial.set_user_attr("reason", INTERRUPTED)
    history = list(record.system_attrs.get("retry_history", []))
    queue_copy(trial.study, record, {"retry_history": history})


class Objective:
    """Callable objective; picklable, so worker processes and Ray tasks can run it."""

    def __init__(
        self,
        settings: RunSettings,
        schedule: RungSchedule,
        threads: int | None = None,
        checkpoint_dir: str | Path | None = None,
        on_progress: Callable[[optuna.Trial, Progress], None] | None = None,
    ) -> None:
        self.settings = settings
        self.schedule = schedule
        self.threads = threads
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.on_progress = on_progress
        # the run's --trials, set by search.driver.optimize: a new candidate past it is surplus
        self.trials: int | None = None
        # the run's --timeout as a time.time() instant, set by search.driver.optimize: a
        # promotion whose rung would end past it is not started (search.time_limit)
        self.deadline: float | None = None
        self._task: Task | None = None
        self._identities: dict[int, str | None] = {}  # trial number -> ArchConfig.identity

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = make_task(self.settings)
        return self._task

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_task": None, "on_progress": None}

    # -- 1. price ----------------------------------------------------------------------------
    def suggest(self, trial: optuna.Trial):
        """Sample a config and record what it costs; raise TrialPruned if over budget."""
        s = self.settings
        cfg = s.space.suggest(trial, self.task.interface())
        # Pre-screen with the closed-form count (exact for our kernels, microseconds); only
        # configs near or under the budget pay for an fvcore trace.
        flops, source = estimate_flops(cfg), "formula"
        if flops <= s.budget * (1 + PRESCREEN_MARGIN):
            flops, source = count_flops(cfg), "fvcore"
        attrs = {
            "config": cfg.to_dict(),
            "variant": cfg.attention,
            "span": cfg.span,
            "d_model": cfg.d_model,
            "flops": flops,
            "budget_fraction": flops / s.budget,
            "flop_convention": FLOP_CONVENTION,
            "flops_counted_by": source,
            "params": count_params(cfg) if source == "fvcore" else estimate_params(cfg),
            CONSTRAINT_ATTR: (flops - s.budget) / s.budget,
        }
        if cfg.layer_attention is not None:
            attrs["stack"] = describe_stack(cfg)  # a hybrid: "window64 x5 + full x1"
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        # Optuna's constraint API: samplers (TPE, NSGA-II, GP) treat > 0 as infeasible.
        if "flops_over_budget" not in trial.constraints:  # a retry carries its original's
            trial.set_constraint("flops_over_budget", (flops - s.budget) / s.budget)
        if flops > s.budget:
            reason = f"over budget: {flops:,} > {s.budget:,} FLOPs; not trained"
            trial.set_user_attr("status", "over_budget")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        return cfg, flops

    # -- 2. reuse ----------------------------------------------------------------------------
    def find_duplicate(
        self, trial: optuna.Trial, cfg: ArchConfig
    ) -> optuna.trial.FrozenTrial | None:
        """A trained trial of the study that built the same model (`ArchConfig.identity`:
        equal configs, or configs that differ only in fields without effect)."""
        config, identity = cfg.to_dict(), None
        own = checkpoint_key(trial)  # a late promotion continues its own original
        for t in trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        ):
            stored = t.user_attrs.get("config")
            if (
                t.number == trial.number
                or lineage(t) == own
                or t.user_attrs.get("status") not in ("ok", "stopped")
                or not isinstance(stored, dict)
                or stored.get("attention") != config["attention"]
            ):
                continue
            if stored == config:
                return t
            identity = identity or cfg.identity()
            if self._identity(t.number, stored) == identity:
                return t
        return None

    def _identity(self, number: int, stored: dict) -> str | None:
        """A stored trial's `ArchConfig.identity`, computed once per process (None when this
        version cannot read the config: then it is not this one)."""
        if number not in self._identities:
            try:
                self._identities[number] = ArchConfig.from_dict(stored).identity()
            except ValueError:
                self._identities[number] = None
        return self._identities[number]

    def reuse(self, trial: optuna.Trial, original: optuna.trial.FrozenTrial):
        """Record `original`'s result on this trial instead of training the same config again."""
        skip = {"status", "reason", "progress"}
        for key, value in original.user_attrs.items():
            if key not in skip:
                trial.set_user_attr(key, value)
        trial.set_user_attr("status", "duplicate")
        trial.set_user_attr("duplicate_of", original.number)
        reason = f"same config as trial {original.number}; its result is reused, not retrained"
        trial.set_user_attr("reason", reason)
        if self.settings.objectives == "single":
            for step, value in sorted(original.intermediate_values.items()):
                trial.report(value, step)
        if original.state == TrialState.PRUNED:
            raise optuna.TrialPruned(reason)
        return original.values[0] if len(original.values) == 1 else tuple(original.values)

    def check_superseded(self, trial: optuna.Trial) -> None:
        """Raise TrialPruned for the second copy of a late promotion that two workers queued at
        the same moment (`search.asha.superseded_by`): the first one trains it."""
        trials = trial.study.get_trials(deepcopy=False)
        frozen = next(t for t in trials if t.number == trial.number)
        if PROMOTED not in frozen.system_attrs:
            return
        first = superseded_by(trials, frozen)
        if first is not None:
            reason = f"the same late promotion as trial {first.number}; not trained twice"
            trial.set_user_attr("status", "superseded")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)

    def check_surplus(self, trial: optuna.Trial) -> None:
        """Raise TrialPruned for a new candidate the run has no room for: `self.trials`
        candidates are trained already, or are, counting the new ones that started before this
        one. (At the run's end two workers can both see one queued late promotion; the one that
        does not get it has Optuna's ask create a new trial instead.) The earliest trials keep
        the slots, so two workers never both step back. A retry or late promotion continues a
        candidate that counts, and is never surplus."""
        if self.trials is None:
            return
        trials = trial.study.get_trials(deepcopy=False)
        me = next(t for t in trials if t.number == trial.number)
        if lineage(me) != me.number:
            return
        if len(slots_taken(trials, before=me.number)) >= self.trials:
            reason = f"the run's {self.trials} candidates are trained or training; not trained"
            trial.set_user_attr("status", "surplus")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)

    # -- 3. train ----------------------------------------------------------------------------
    def schedule_for(self, flops: int) -> RungSchedule:
        """The study's schedule; under --evaluation compute, stretched so that every candidate
        spends the training FLOPs a budget-sized one would (capped at MAX_COMPUTE_STRETCH)."""
        if self.settings.evaluation != "compute":
            return self.schedule
        stretch = min(MAX_COMPUTE_STRETCH, self.settings.budget / max(1, flops))
        first = max(1, round(self.schedule.first_steps * stretch))
        return dataclasses.replace(self.schedule, first_steps=first)

    def __call__(self, trial: optuna.Trial):
        try:
            return self._evaluate(trial)
        except KeyboardInterrupt:  # wherever it lands: the trial goes back to the queue
            requeue(trial)
            raise

    def _evaluate(self, trial: optuna.Trial):
        s = self.settings
        cfg, flops = self.suggest(trial)
        self.check_superseded(trial)
        original = self.find_duplicate(trial, cfg)
        if original is not None:
            return self.reuse(trial, original)
        self.check_surplus(trial)
        trial.set_user_attr("status", "training")
        schedule = self.schedule_for(flops)
        single = s.objectives == "single"
        checkpoint = self._checkpoint_path(trial)
        on_rung = self._on_rung(trial, schedule)
        last_write = [0.0]

        def progress(p: Progress) -> None:
            if self.on_progress is not None:
                self.on_progress(trial, p)
            now = time.monotonic()
            if now - last_write[0] >= PROGRESS_EVERY:
                last_write[0] = now
                trial.set_user_attr("progress", dataclasses.asdict(p))

        trainer = RungTrainer(
            cfg,
            self.task,
            schedule,
            recipe=s.recipe,
            seed=s.seed,
            device=s.device,
            threads=self.threads,
            checkpoint=checkpoint,
        )
        late: list[str] = []  # why the time limit stopped it, if it did

        def before_rung(r: RungResult) -> str | None:
            reason = past_limit(self.deadline, schedule, s.recipe, r)
            if reason is not None:
                late.append(reason)
                trial.set_user_attr(TIME_LIMITED, reason)
            return reason

        outcome = trainer.run(on_rung, progress, before_rung)
        last = outcome.last
        _record(trial, outcome)
        cut = outcome.status == "stopped" and not late  # by the halving: may be promoted later
        if checkpoint is not None and not (cut and promotes_late(s)):
            checkpoint.unlink(missing_ok=True)  # finished, or stopped by the time limit
        if outcome.status == "stopped":
            raise optuna.TrialPruned(outcome.reason)
        if outcome.status != "ok" or last is None:
            # diverged / out of memory: the trial FAILs (a NaN value never completes a trial)
            raise TrialFailed(f"{outcome.status}: {outcome.reason}")
        return last.loss if single else (last.loss, float(flops))

    def _on_rung(self, trial: optuna.Trial, schedule: RungSchedule) -> Callable[[RungResult], bool]:
        """The trainer's callback after each rung (a replayed one too): record it, report it
        to the pruner, and say whether the halving cuts it there."""
        single = self.settings.objectives == "single"
        rungs: list[dict] = []

        def on_rung(r: RungResult) -> bool:
            rungs.append(dataclasses.asdict(r))
            trial.set_user_attr("rungs", rungs)
            trial.set_user_attr("rung", r.rung)
            if not single:
                return False
            trial.report(r.loss, step=rung_step(r.rung, schedule.eta))
            return r.rung < schedule.top and trial.should_prune()

        return on_rung

    def _checkpoint_path(self, trial: optuna.Trial) -> Path | None:
        """Where this trial's rung checkpoint lives (a retry finds its original's)."""
        if self.checkpoint_dir is None:
            return None
        name = f"trial-{checkpoint_key(trial)}.pt"
        return self.checkpoint_dir / _safe(trial.study.study_name) / name


def forget_finished_checkpoints(study: optuna.Study, checkpoint_dir: str | Path) -> int:
    """Delete the rung checkpoints that cut candidates kept for a late promotion, once their
    run has ended and nothing of the candidate runs or waits; the number deleted. (A later
    session that promotes one of them late trains it again from the start, to the same
    results.)"""
    folder = Path(checkpoint_dir) / _safe(study.study_name)
    if not folder.is_dir():
        return 0
    active = {
        lineage(t)
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.RUNNING, TrialState.WAITING)
    }
    gone = 0
    for path in folder.glob("trial-*.pt"):
        number = path.stem.removeprefix("trial-")
        if number.isdigit() and int(number) not in active:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def _record(trial: optuna.Trial, outcome: RungOutcome) -> None:
    """The outcome's figures as trial attributes (non-finite floats stored as None)."""
    last = outcome.last
    attrs = {
        "status": outcome.status,
        "reason": outcome.reason,
        "rung": None if last is None else last.rung,
        "tokens": None if last is None else last.tokens,
        "tokens_processed": outcome.tokens_processed,
        "loss": None if last is None else last.loss,
        "metric": None if last is None else last.metric,
        "tokens_per_s": outcome.tokens_per_s,
        "flops_per_s": outcome.flops_per_s,
        "wall_time": None if last is None else last.wall_time,
        "resumed_from": outcome.resumed_from,
    }
    for key, value in attrs.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        trial.set_user_attr(key, value)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class TrialFailed(Exception):
    """A trial that trained but produced no usable metric (diverged, out of memory)."""
