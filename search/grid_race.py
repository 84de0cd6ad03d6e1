"""Racing the compound grid's tied leaders (`search.scale`'s step 1).

The grid picks the point with the lowest validation loss after the study's rungs. Points within
TIE_MARGIN of the best (the search's own tie margin, `search.plateau`) are tied, and picking
among them is a coin toss: on text the balanced and width-led points ended at 1.5101 and 1.5108
(docs/results.md, section 0b), and that toss decided every scaled config. So with `--grid-race
N` (default 1) the tied leaders train on for one more rung of the same schedule (eta x the
tokens), each continued from its checkpoint, never restarted, as a promoted candidate is in the
search. While a tie remains they race on, up to N rungs. The pick is the best point at the
longest horizon reached; the other points keep the figure of the horizon they stopped at, and a
leader that diverges on a race rung drops out.

Every grid point trains on the study's schedule with N more rungs (`race_schedule`), stopping
after the study's top rung (the learning rate of a rung does not depend on the rungs after it,
so that figure is what the study's own schedule gives); its stable state stays in a checkpoint
for the race.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from search.plateau import TIE_MARGIN
from search.settings import RunSettings
from spaces import ArchConfig
from spaces.flops import estimate_flops
from trainers.rungs import RungSchedule

# one grid point under one seed, for search.retrain.train_rungs_job:
# (config, settings, schedule, threads, checkpoint, last rung)
GridJob = tuple[dict[str, Any], RunSettings, RungSchedule, int, str | None, int]


def race_schedule(schedule: RungSchedule, race: int) -> RungSchedule:
    """The schedule the grid trains on: the study's, with `race` more rungs for tied leaders."""
    return dataclasses.replace(schedule, rungs=schedule.rungs + race)


@dataclasses.dataclass
class GridRace:
    """The grid's jobs: every point under every seed, each with its own checkpoint file when
    there is a race to continue from it."""

    configs: list[ArchConfig]
    seeds: list[int]
    settings: RunSettings
    schedule: RungSchedule  # the study's rungs, then the race's
    threads: int
    folder: str | None  # the checkpoints (none without a race)

    def jobs(self, points, last: int) -> tuple[list[GridJob], list[float]]:
        """The jobs that train `points` through rung `last`, and their costs (FLOPs: the
        largest points start first)."""
        jobs: list[GridJob] = []
        costs: list[float] = []
        for i in points:
            for s in self.seeds:
                ckpt = f"{self.folder}/{i}-{s}.pt" if self.folder else None
                settings = dataclasses.replace(self.settings, seed=s)
                cfg = self.configs[i]
                jobs.append((cfg.to_dict(), settings, self.schedule, self.threads, ckpt, last))
                costs.append(float(estimate_flops(cfg)))
        return jobs, costs

    def labels(self, points, names: list[str]) -> list[str]:
        """One per job of `points`, in the order of `jobs`: the point's name, shape and seed."""
        return [
            f"{names[i]} {self.configs[i].depth}x{self.configs[i].d_model} seed {s}"
            for i in points
            for s in self.seeds
        ]

    def of(self, got: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
        """The k-th point's results (one per seed) among `got`."""
        n = len(self.seeds)
        return got[k * n : (k + 1) * n]


def merge_seeds(results: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """One grid point's result over its seeds: the mean loss and metric when every seed trained
    (a point that failed under any seed fails, with the first failure's reason), and each
    seed's loss."""
    failed = [r for r in results if r["status"] != "ok" or r["loss"] is None]
    merged = dict(failed[0] if failed else results[0])
    merged["seeds"] = seeds
    merged["losses"] = [r["loss"] for r in results]
    if not failed:
        merged["loss"] = statistics.fmean(r["loss"] for r in results)
        merged["metric"] = statistics.fmean(r["metric"] for r in results)
    else:
        merged["loss"] = merged["metric"] = None
    return merged


def tied_leaders(rows: list[dict[str, Any]]) -> list[int]:
    """Indices of the grid rows tied for the lead, best first: among the scored rows at the
    longest horizon any of them reached, those whose loss is within TIE_MARGIN of the best.
    The first is the grid's pick; none when no row has a loss."""
    scored = [i for i, g in enumerate(rows) if g["loss"] is not None]
    if not scored:
        return []
    horizon = max(rows[i]["tokens"] for i in scored)
    at = sorted((i for i in scored if rows[i]["tokens"] == horizon), key=lambda i: rows[i]["loss"])
    best = rows[at[0]]["loss"]
    return [i for i in at if rows[i]["loss"] - best <= TIE_MARGIN * best]


def record(row: dict[str, Any], merged: dict[str, Any]) -> None:
    """Update a grid row with its result on a longer horizon, keeping every horizon's figures
    in `history` (tokens, mean loss, per-seed losses)."""
    skip = ("tokens_per_s", "resumed_from", "rung_losses")
    row.update({k: v for k, v in merged.items() if k not in skip})
    row.setdefault("history", []).append(
        {"tokens": merged["tokens"], "loss": merged["loss"], "losses": merged["losses"]}
    )


__all__ = [
    "GridJob",
    "GridRace",
    "merge_seeds",
    "race_schedule",
    "record",
    "tied_leaders",
]
