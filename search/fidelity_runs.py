"""`search.fidelity`'s long runs: how each retrained trial trains (`LongRuns`: F x the tokens the
search judged it on with search.train's trainer, or F x the proxy compute for studies made
before the rung evaluator) and how one is run, stored on its trial and reused (`long_run`)."""

from __future__ import annotations

import dataclasses
import math

import optuna

from search.budget import format_flops
from search.objective import make_task
from search.optuna_private import trial_id
from search.retrain import train_config
from search.settings import RunSettings
from search.storage import set_finished_trial_user_attr
from spaces import ArchConfig
from trainers.proxy import train
from trainers.rungs import RungSchedule


@dataclasses.dataclass(frozen=True)
class LongRuns:
    """How the long runs train: F x each trial's tokens with search.train's trainer (a study
    with a rung schedule), or F x the proxy compute with trainers.proxy (an older study)."""

    factor: float
    schedule: RungSchedule | None
    settings: RunSettings
    threads: int
    retrain: bool

    @property
    def compute(self) -> int | None:
        if self.schedule is not None:
            return None
        return round(self.settings.proxy_compute * self.factor)

    def tokens(self, t: optuna.trial.FrozenTrial) -> int | None:
        if self.schedule is None:
            return None
        return round(self.factor * int(t.user_attrs["tokens"]))

    def describe(self) -> str:
        if self.schedule is None:
            return (
                f"with {self.factor:g} x the proxy compute = "
                f"{format_flops(round(self.settings.proxy_compute * self.factor))} "
                f"training FLOPs each (equal compute, as this older study was ranked; proxy "
                f"{format_flops(self.settings.proxy_compute)}; fvcore: 1 multiply-add = 1 FLOP)"
            )
        return (
            f"for {self.factor:g} x the tokens the search trained each on (search.train's "
            f"trainer, batch {self.schedule.batch_size} x {self.schedule.seq_len})"
        )

    def stored(self, t: optuna.trial.FrozenTrial) -> bool:
        """Whether `t` already holds this long run."""
        a = t.user_attrs
        if self.retrain or a.get("long_factor") != self.factor or "long_status" not in a:
            return False
        if self.schedule is None:
            return a.get("long_compute") == self.compute
        return a.get("long_tokens") == self.tokens(t)

    def train(self, t: optuna.trial.FrozenTrial) -> dict:
        """{"status", "reason", "loss", "metric", "wall_time"} of one long run."""
        cfg = t.user_attrs["config"]
        if self.schedule is not None:
            tokens = round(self.factor * int(t.user_attrs["tokens"]))
            return train_config(cfg, self.settings, tokens, self.schedule.batch_size, self.threads)
        r = train(
            ArchConfig.from_dict(cfg),
            make_task(self.settings),
            round(self.settings.proxy_compute * self.factor),
            recipe=self.settings.recipe,
            seed=self.settings.seed,
            device=self.settings.device,
            threads=self.threads,
        )
        return {
            "status": r.status,
            "reason": r.reason,
            "loss": r.loss,
            "metric": r.metric,
            "wall_time": r.wall_time,
        }


def long_run(t, role, storage, plan: LongRuns, metric_name) -> dict:
    """One trial's long-run metric: stored from an earlier run of the same length, else trained
    now and stored on the trial; prints one line."""
    a = t.user_attrs
    reuse = plan.stored(t)
    if reuse:
        long_metric, status, wall = a.get("long_metric"), a["long_status"], None
    else:
        try:
            r = plan.train(t)
        except ValueError as exc:  # e.g. ModelTooLarge: this trial fails, the others go on
            r = {"status": "failed", "reason": str(exc), "loss": None, "metric": None}
            r["wall_time"] = 0.0
        status, wall = r["status"], r["wall_time"]
        if r["status"] not in ("ok", "stopped") and r["reason"]:
            status = f"{r['status']}: {r['reason']}"  # the reason is printed, not only stored
        # studies ranked by validation loss (the rung evaluator) compare losses
        long_value = r["loss"] if metric_name == "val_loss" else r["metric"]
        long_metric = long_value if r["status"] == "ok" and long_value is not None else None
        if long_metric is not None and not math.isfinite(long_metric):
            long_metric, status = None, "diverged"
        length = (
            ("long_compute", plan.compute)
            if plan.schedule is None
            else (
                "long_tokens",
                plan.tokens(t),
            )
        )
        for key, value in (
            ("long_metric", long_metric),
            ("long_factor", plan.factor),
            length,
            ("long_status", status),
            ("long_wall_time", wall),
        ):
            set_finished_trial_user_attr(storage, trial_id(t), key, value)
    shown = "failed" if long_metric is None else f"{long_metric:.4f}"
    took = "stored" if reuse else f"{wall:.1f}s"
    print(
        f"  trial {t.number:>4} ({role:>6}, {a.get('variant')}): proxy {t.values[0]:.4f}"
        f" -> long {shown} [{status}, {took}]",
        flush=True,
    )
    return {
        "trial": t.number,
        "chosen": role,
        "variant": a.get("variant"),
        "proxy": t.values[0],
        "long": long_metric,
        "status": status,
    }


__all__ = ["LongRuns", "long_run"]
