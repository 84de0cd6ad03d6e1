"""The objective every backend runs: suggest, count FLOPs, reject over budget, train, record.

One code path for Optuna workers and Ray Tune trials. Everything a user later needs is written
on the trial as user attributes, so the dashboard, export and scaling read only the database.
"""

from __future__ import annotations

import math
from typing import Any

import optuna

from search.settings import RunSettings
from spaces.flops import (
    FLOP_CONVENTION,
    count_flops,
    count_params,
    estimate_flops,
    estimate_params,
)
from trainers.proxy import Progress, train
from trainers.tasks import Task, get_task

CONSTRAINT_ATTR = "constraint"  # (flops - budget) / budget: <= 0 is feasible
PRESCREEN_MARGIN = 0.05  # formula counts above budget x 1.05 are rejected without a trace


def make_task(settings: RunSettings) -> Task:
    kwargs: dict[str, Any] = dict(settings.task_options)
    if settings.seq_len is not None:
        kwargs["seq_len"] = settings.seq_len
    if settings.data:
        kwargs["data"] = list(settings.data)
    return get_task(settings.task, seed=settings.seed, **kwargs)


class Objective:
    """Callable objective; picklable, so worker processes and Ray actors can run it."""

    def __init__(self, settings: RunSettings, threads: int | None = None) -> None:
        self.settings = settings
        self.threads = threads
        self._task: Task | None = None

    @property
    def task(self) -> Task:
        if self._task is None:
            self._task = make_task(self.settings)
        return self._task

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "threads": self.threads, "_task": None}

    def suggest(self, trial: optuna.Trial):
        """Sample a config and record what it costs; raise TrialPruned if over budget."""
        s = self.settings
        cfg = s.space.suggest(trial, self.task.interface())
        # Pre-screen with the closed-form count (exact for our kernels, microseconds); only
        # configs near or under the budget pay for an fvcore trace.
        flops, source = estimate_flops(cfg), "formula"
        if flops <= s.budget * (1 + PRESCREEN_MARGIN):
            flops, source = count_flops(cfg), "fvcore"
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("variant", cfg.attention)
        trial.set_user_attr("span", cfg.span)
        trial.set_user_attr("d_model", cfg.d_model)
        trial.set_user_attr("flops", flops)
        trial.set_user_attr("flop_convention", FLOP_CONVENTION)
        trial.set_user_attr("flops_counted_by", source)
        trial.set_user_attr(
            "params", count_params(cfg) if source == "fvcore" else estimate_params(cfg)
        )
        trial.set_user_attr(CONSTRAINT_ATTR, (flops - s.budget) / s.budget)
        # Optuna's constraint API: samplers (TPE, NSGA-II, GP) treat > 0 as infeasible.
        trial.set_constraint("flops_over_budget", (flops - s.budget) / s.budget)
        if flops > s.budget:
            reason = f"over budget: {flops:,} > {s.budget:,} FLOPs; not trained"
            trial.set_user_attr("status", "over_budget")
            trial.set_user_attr("reason", reason)
            raise optuna.TrialPruned(reason)
        return cfg, flops

    def __call__(self, trial: optuna.Trial):
        s = self.settings
        cfg, flops = self.suggest(trial)
        single = s.objectives == "single"

        def report(point: Progress) -> bool:
            trial.set_user_attr("last_progress", point.fraction)
            if not single:
                return False
            # Report by evaluation index (1..n_evals), not optimizer step: candidates take
            # different step counts, and pruners compare trials at equal steps.
            trial.report(point.metric, step=max(1, round(point.fraction * s.recipe.n_evals)))
            return trial.should_prune()

        result = train(
            cfg,
            self.task,
            s.proxy_compute,
            recipe=s.recipe,
            seed=s.seed,
            device=s.device,
            threads=self.threads,
            callback=report,
        )
        for key in (
            "metric",
            "loss",
            "steps",
            "tokens",
            "tokens_per_s",
            "flops_per_s",
            "wall_time",
        ):
            value = getattr(result, key)
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            trial.set_user_attr(key, value)
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("reason", result.reason)
        if result.status == "stopped":
            raise optuna.TrialPruned(result.reason)
        if result.status != "ok" or result.metric is None:
            # diverged / out of memory: the trial FAILs (a NaN value never completes a trial)
            raise TrialFailed(f"{result.status}: {result.reason}")
        return result.metric if single else (result.metric, float(flops))


class TrialFailed(Exception):
    """A trial that trained but produced no usable metric (diverged, out of memory)."""
