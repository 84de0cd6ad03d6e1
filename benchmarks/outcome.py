"""Does the search's pick train best for real? Judge a finished study the way a user would.

    python -m benchmarks.outcome --study text-2.00GFLOPs [--top 3] [--random 3] [--factor 10]

Trains, for the same number of final tokens (default 10x the study's top rung), with
`search.train`'s trainer (trainers/final.py: what a user runs on an exported config):

* the search's pick and the rest of its top K (ranked as the search ranks: rung reached, then
  validation loss);
* R random other trained candidates of the study;
* hand baselines at the same budget: full attention, FFN 4x, head dim 32 and 64, the largest
  config that fits the budget, and the largest that fits half of it (`spaces.baselines`).

It prints one table (config, FLOPs, fraction of the budget, search rank, final loss and metric,
wall time), Kendall tau between the search's ranking and the final ranking of the search's
candidates, and whether the pick is at least as good as the best baseline. Runs go to
`--jobs` processes with one torch thread each, the longest first (by the tokens/s the search
measured), so that no long run starts last. `--json` writes every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from scipy.stats import kendalltau

from search.budget import format_flops, whole_number_arg
from search.cli import Parser, run_main
from search.interrupts import run_interruptible
from search.objective import make_task
from search.plateau import pick as product_pick
from search.results import ranked_trials
from search.retrain import run_jobs, train_config
from search.storage import DEFAULT_STORAGE, open_existing_storage
from search.study import settings_from_study, stored_schedule
from spaces import ArchConfig
from spaces.baselines import largest_full
from spaces.flops import count_flops
from spaces.layers import describe_stack


def final_train(cfg: ArchConfig, settings, tokens: int, batch_size: int, threads: int) -> dict:
    """What a user does with an exported config: `search.train`'s trainer for `tokens`."""
    res = train_config(cfg.to_dict(), settings, tokens, batch_size, threads)
    ok = res["status"] == "ok"
    return {
        "loss": res["loss"] if ok else float("nan"),
        "metric": res["metric"] if ok else float("nan"),
        "status": "ok" if ok else f"{res['status']}: {res['reason']}",
        "tokens": res["tokens"],
        "wall_s": res["wall_time"],
    }


def _run(job: tuple) -> dict:
    row, settings, tokens, batch_size, threads = job
    warnings.filterwarnings("ignore")
    cfg = ArchConfig.from_dict(row["config"])
    return {**row, **final_train(cfg, settings, tokens, batch_size, threads)}


def load_finished_study(name: str, storage: str):
    """(study, its rung schedule, settings, task) of a finished search.run study; ValueError
    with a one-line message otherwise."""
    try:
        study = optuna.load_study(study_name=name, storage=open_existing_storage(storage))
    except KeyError:
        raise ValueError(f"no study {name!r} in the database") from None
    schedule = stored_schedule(study)
    if schedule is None:
        raise ValueError(f"study {name!r} has no rung schedule")
    settings = settings_from_study(study)
    return study, schedule, settings, make_task(settings)


INTERRUPTED = "interrupted: the training processes were stopped; nothing was written"


def train_rows(rows, settings, tokens: int, batch_size: int, args, done=None) -> list[dict]:
    """Each row's config trained for `tokens` (`args.jobs` processes x `args.threads`
    threads); `done(result)` sees each as it finishes. Rows that name the same model
    (`ArchConfig.identity`: e.g. a hand baseline the search also found) share one run."""
    configs = [ArchConfig.from_dict(r["config"]) for r in rows]

    def train(order: list[int]) -> list[dict]:
        jobs = [(rows[i], settings, tokens, batch_size, args.threads) for i in order]
        costs = expected_seconds([rows[i] for i in order], tokens)
        labels = [describe(configs[i]) for i in order]
        return run_jobs(_run, jobs, args.jobs, done, costs, labels)

    return [{**res, **r} for r, res in zip(rows, once_per_model(configs, train))]


def once_per_model(
    configs: list[ArchConfig], train: Callable[[list[int]], list[dict]]
) -> list[dict]:
    """Each config's result, where `train(order)` trains only the first of the configs that
    name the same model (`ArchConfig.identity`) and returns their results in that order."""
    keys = [c.identity() for c in configs]
    first = {key: i for i, key in reversed(list(enumerate(keys)))}  # key -> its first config
    order = sorted(first.values())
    trained = dict(zip((keys[i] for i in order), train(order)))
    return [trained[key] for key in keys]


def expected_seconds(rows: list[dict], tokens: int) -> list[float] | None:
    """Each row's training time at the speed the search measured (`search_tokens_per_s`); rows
    without one are assumed as fast per FLOP as the median of those with one. None when no row
    has a speed (the jobs then start in order)."""
    speeds = [r.get("search_tokens_per_s") for r in rows]
    if not any(speeds):
        return None
    flops = [r.get("flops") or count_flops(ArchConfig.from_dict(r["config"])) for r in rows]
    known = sorted(f * s for f, s in zip(flops, speeds) if s)  # FLOPs x tokens/s
    typical = known[len(known) // 2]
    return [tokens / s if s else tokens * f / typical for f, s in zip(flops, speeds)]


def search_speeds(study: optuna.Study) -> dict[Any, float]:
    """Training tokens/s the search measured, by model (`ArchConfig.identity`), the fastest
    of its trials."""
    speeds: dict[Any, float] = {}
    for t in study.get_trials(deepcopy=False):
        rate, cfg = t.user_attrs.get("tokens_per_s"), t.user_attrs.get("config")
        if rate and cfg:
            key = ArchConfig.from_dict(cfg).identity()
            speeds[key] = max(speeds.get(key, 0.0), float(rate))
    return speeds


def distinct_models(rows: list[dict]) -> int:
    return len({ArchConfig.from_dict(r["config"]).identity() for r in rows})


def describe(cfg: ArchConfig) -> str:
    span = "" if cfg.span is None else f"({cfg.span})"
    attention = f"{cfg.attention}{span}" if cfg.layer_attention is None else describe_stack(cfg)
    share = "" if not cfg.unique_blocks else f" share{cfg.unique_blocks}"
    return f"{attention} {cfg.depth}x{cfg.d_model} h{cfg.n_heads} ffn{cfg.ffn_mult:g}{share}"


def candidates(study: optuna.Study, top: int, n_random: int, seed: int) -> list[dict]:
    """The search's top `top` and `n_random` random other trained candidates, distinct models
    (`ArchConfig.identity`), each with its search rank (1 = the search's first). The pick is
    the search's first, or the seeded hand baseline `search.plateau.pick` falls back to when
    the search's first was still on the task's plateau (its row is added if not there)."""
    ranked, seen = [], set()
    for t in ranked_trials(study):
        key = ArchConfig.from_dict(t.user_attrs["config"]).identity()  # the same model once
        if key not in seen:
            seen.add(key)
            ranked.append(t)
    rows: list[dict[str, Any]] = [
        {"kind": "pick" if i == 0 else "top", "rank": i + 1, "trial": t.number}
        for i, t in enumerate(ranked[:top])
    ]
    rest = list(enumerate(ranked))[top:]
    for i, t in random.Random(seed).sample(rest, min(n_random, len(rest))):
        rows.append({"kind": "random", "rank": i + 1, "trial": t.number})
    chosen = product_pick(study)
    if chosen.fallback and rows:  # the search's first was on the plateau (search.plateau)
        rows[0]["kind"] = "search's first"
        row = next((r for r in rows if r["trial"] == chosen.trial.number), None)
        if row is None:
            rank = 1 + next(i for i, t in enumerate(ranked) if t.number == chosen.trial.number)
            row = {"rank": rank, "trial": chosen.trial.number}
            rows.append(row)
        row["kind"] = "pick"
    by_number = {t.number: t for t in ranked}
    for r in rows:
        r["config"] = by_number[int(r["trial"])].user_attrs["config"]
        r["search_loss"] = by_number[int(r["trial"])].user_attrs["loss"]
        r["search_rung"] = by_number[int(r["trial"])].user_attrs.get("rung")
    return rows


def baselines(interface: dict, budget: int) -> list[dict]:
    rows = []
    for head_dim, fraction in ((32, 1.0), (64, 1.0), (32, 0.5), (64, 0.5)):
        try:
            cfg = largest_full(interface, budget * fraction, head_dim=head_dim)
        except ValueError:
            continue
        rows.append(
            {
                "kind": f"baseline hd{head_dim} {'budget' if fraction == 1 else 'half'}",
                "rank": None,
                "trial": None,
                "config": cfg.to_dict(),
            }
        )
    return rows


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.outcome", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="a finished search.run study")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default {DEFAULT_STORAGE}")
    p.add_argument("--top", type=int, default=3, help="the search's top K (default 3)")
    p.add_argument("--random", type=int, default=3, help="random other candidates (default 3)")
    p.add_argument(
        "--factor", type=float, default=10, help="final tokens = factor x top rung (default 10)"
    )
    p.add_argument("--tokens", type=int, help="final tokens (overrides --factor)")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads each (default 1)")
    p.add_argument("--seed", type=int, default=0, help="which random candidates (default 0)")
    p.add_argument(
        "--train-seed",
        type=whole_number_arg("--train-seed", 0),
        help="seed of the final runs' task data, initialisation and data order, for a replicate "
        "(default: the study's seed)",
    )
    p.add_argument(
        "--val-sequences",
        type=whole_number_arg("--val-sequences", 1),
        help="validate the final runs on this many held-out sequences (the task's n_val "
        "option; default: the study's). A classification task has one label per sequence, so "
        "its default 256 gives accuracy a standard error near 0.03",
    )
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    return p


def final_settings(settings, args: argparse.Namespace):
    """The study's settings with the replicate's seed and validation size, if given."""
    if args.train_seed is not None:
        settings = dataclasses.replace(settings, seed=args.train_seed)
    if args.val_sequences is not None:
        options = {**settings.task_options, "n_val": args.val_sequences}
        settings = dataclasses.replace(settings, task_options=options)
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        study, schedule, settings, task = load_finished_study(args.study, args.storage)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = final_settings(settings, args)
    task = make_task(settings)
    budget = settings.budget
    tokens = args.tokens or round(args.factor * schedule.tokens(schedule.top))
    rows = candidates(study, args.top, args.random, args.seed)
    if not rows:
        print(f"error: study {args.study!r} has no trained candidate", file=sys.stderr)
        return 1
    rows += baselines(task.interface(), budget)
    speeds = search_speeds(study)
    for r in rows:
        cfg = ArchConfig.from_dict(r["config"])
        r["flops"] = count_flops(cfg)
        r["search_tokens_per_s"] = speeds.get(cfg.identity())  # orders the jobs, longest first
    print(
        f"study {args.study}: budget {format_flops(budget)} (fvcore: 1 multiply-add = 1 FLOP), "
        f"top rung {schedule.tokens(schedule.top):,} tokens; training {distinct_models(rows)} "
        f"configs for {tokens:,} tokens each (batch {schedule.batch_size} x {schedule.seq_len}), "
        f"{args.jobs} at once x {args.threads} thread(s), seed {settings.seed}, validation "
        f"{task.n_val:,} sequences",
        flush=True,
    )
    started = time.perf_counter()
    results = train_rows(rows, settings, tokens, schedule.batch_size, args)
    report(results, task, budget, tokens, time.perf_counter() - started, args)
    return 0


def report(results: list[dict], task, budget: int, tokens: int, wall: float, args) -> None:
    finals = sorted(
        (r for r in results if r["status"] == "ok"), key=lambda r: r["loss"]
    )  # lower validation loss is better for every task
    final_rank = {id(r): i + 1 for i, r in enumerate(finals)}
    print(
        f"\n{'config':40s} {'kind':18s} {'FLOPs':>12s} {'budget':>7s} {'search':>6s} "
        f"{'final':>5s} {'val loss':>9s} {task.metric:>14s} {'wall s':>7s}"
    )
    for r in sorted(results, key=lambda r: final_rank.get(id(r), 10**6)):
        cfg = ArchConfig.from_dict(r["config"])
        print(
            f"{describe(cfg):40s} {r['kind']:18s} {format_flops(r['flops']):>12s} "
            f"{r['flops'] / budget:7.1%} {r['rank'] or '-':>6} "
            f"{final_rank.get(id(r), '-'):>5} {r['loss']:9.4f} {r['metric']:14.4f} "
            f"{r['wall_s']:7.0f}"
        )
    searched = [r for r in results if r["rank"] is not None and r["status"] == "ok"]
    tau = float("nan")
    if len(searched) >= 3:
        tau = kendalltau([r["rank"] for r in searched], [r["loss"] for r in searched]).statistic
    pick = next((r for r in results if r["kind"] == "pick"), None)
    base = [r for r in results if r["kind"].startswith("baseline") and r["status"] == "ok"]
    best_base = min(base, key=lambda r: r["loss"]) if base else None
    print(
        f"\nKendall tau (search rank vs final loss, {len(searched)} search candidates): "
        f"{tau:.3f}   [target >= 0.7]"
    )
    if pick and best_base:
        better = pick["loss"] <= best_base["loss"]
        print(
            f"pick: val loss {pick['loss']:.4f} ({task.metric} {pick['metric']:.4f}); best "
            f"baseline ({best_base['kind']}): {best_base['loss']:.4f} ({task.metric} "
            f"{best_base['metric']:.4f}) -> the pick is "
            f"{'at least as good' if better else 'WORSE'}"
        )
    print(f"total wall time {wall / 60:.1f} min, {tokens:,} tokens per config")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "study": args.study,
                    "tokens": tokens,
                    "train_seed": args.train_seed,
                    "val_sequences": task.n_val,
                    "tau": tau,
                    "results": results,
                },
                f,
                indent=1,
                default=str,
            )


if __name__ == "__main__":
    run_main(lambda: run_interruptible(main, INTERRUPTED))
