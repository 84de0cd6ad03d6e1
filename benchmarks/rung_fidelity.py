"""Do the search's rung losses predict the final loss? One recipe setting against another.

    python -m benchmarks.rung_fidelity \
        --outcome docs/measurements/outcome/text-20MFLOPs-outcome.json \
        --first-steps 64 --batch 8 --warmup 0.25,1 [--storage sqlite:///s.db] [--lr 1e-3]

Takes the configs that `benchmarks.outcome` trained for its final tokens (its `--json` file:
configs and final validation losses) and trains each unique one again through the search's
rungs (`trainers.rungs.RungTrainer`, no pruning, eta 3, 3 rungs, every config on every rung)
once per WSD warm-up fraction of the first rung (`Recipe.wsd_warmup_frac`). It prints, per
setting and rung, Kendall tau between the rung's loss and the final loss, the config that rung
would pick with its final loss, and every config's rung losses. The task and recipe come from
the outcome's study when `--storage` holds it, else the built-in text task at 128 tokens.
`--jobs` processes at once, one torch thread each. Differences between settings are one seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import optuna
from scipy.stats import kendalltau

from benchmarks.outcome import INTERRUPTED, describe
from search.cli import Parser, run_main
from search.interrupts import run_interruptible
from search.retrain import run_jobs, train_rungs_job
from search.settings import RunSettings
from search.study import settings_from_study
from spaces import ArchConfig
from trainers.rungs import RungSchedule


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.rung_fidelity", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--outcome", required=True, help="a benchmarks.outcome --json file")
    a("--first-steps", type=int, default=64, help="optimizer steps of rung 0 (default 64)")
    a("--batch", type=int, default=8, help="sequences per step (default 8)")
    a("--warmup", default="0.25,1", help="warm-up fractions of rung 0 to compare (default 0.25,1)")
    a("--lr", type=float, help="Recipe.base_lr for every setting (default: the recipe's)")
    a("--storage", help="database holding the outcome's study (for its task and recipe)")
    a("--jobs", type=int, default=2, help="training processes at once (default 2)")
    return p


def settings_for(study_name: str, storage: str | None) -> RunSettings:
    if storage is None:
        return RunSettings(budget=1, task="text", seq_len=128)
    return settings_from_study(optuna.load_study(study_name=study_name, storage=storage))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with open(args.outcome, encoding="utf-8") as f:
        outcome = json.load(f)
    unique: dict[str, dict] = {}
    for r in outcome["results"]:
        if r.get("loss") is not None:
            unique.setdefault(json.dumps(r["config"], sort_keys=True), r)
    rows = list(unique.values())
    final = [r["loss"] for r in rows]
    names = [describe(ArchConfig.from_dict(r["config"])) for r in rows]
    base = settings_for(outcome["study"], args.storage)
    schedule = RungSchedule(
        first_steps=args.first_steps,
        batch_size=args.batch,
        seq_len=ArchConfig.from_dict(rows[0]["config"]).seq_len,
    )
    best = min(range(len(rows)), key=final.__getitem__)
    print(
        f"{outcome['study']}: {len(rows)} configs; final loss after {outcome['tokens']:,} tokens; "
        f"best {names[best]} {final[best]:.4f}; rungs of {args.first_steps} x 3^k steps of "
        f"{args.batch} x {schedule.seq_len} tokens",
        flush=True,
    )
    for frac in (float(x) for x in args.warmup.split(",")):
        recipe = dataclasses.replace(base.recipe, wsd_warmup_frac=frac)
        if args.lr is not None:
            recipe = dataclasses.replace(recipe, base_lr=args.lr)
        settings = dataclasses.replace(base, recipe=recipe)
        started = time.perf_counter()
        jobs = [(r["config"], settings, schedule, 1) for r in rows]
        got = [
            padded(res["rung_losses"], schedule.rungs)
            for res in run_jobs(train_rungs_job, jobs, args.jobs)
        ]
        print(
            f"\nwarm-up {frac:g} x rung 0 ({max(1, round(frac * args.first_steps))} steps), peak "
            f"lr {recipe.base_lr:g} at width 256, {time.perf_counter() - started:.0f} s"
        )
        report(names, final, got)
    return 0


def padded(losses: list[float], rungs: int) -> list[float | None]:
    """A rung's loss, or None for the rungs a failed run did not reach."""
    return [*losses, *[None] * (rungs - len(losses))]


def report(names: list[str], final: list[float], got: list[list[float | None]]) -> None:
    for k in range(len(got[0])):
        scored = [i for i in range(len(got)) if got[i][k] is not None]
        losses = [got[i][k] for i in scored]
        tau = kendalltau(losses, [final[i] for i in scored]).statistic
        pick = min(scored, key=lambda i: got[i][k])  # type: ignore[arg-type, return-value]
        print(
            f"  rung {k}: tau(rung loss, final loss) {tau:.3f}; picks {names[pick]} "
            f"(final {final[pick]:.4f}, rank {sorted(final).index(final[pick]) + 1} of "
            f"{len(final)})"
        )
    for name, losses, f in zip(names, got, final):
        cells = " ".join("-" if x is None else f"{x:.4f}" for x in losses)
        print(f"    {name:36s} {cells}   final {f:.4f}", flush=True)


if __name__ == "__main__":
    run_main(lambda: run_interruptible(main, INTERRUPTED))
