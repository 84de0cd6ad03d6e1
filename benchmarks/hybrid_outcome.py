"""Does a hybrid stack win? The best of each attention family, trained for real.

    python -m benchmarks.hybrid_outcome --study hybrid-recall [--tokens 2000000] [--jobs 2]

From one finished search over a space with patterns (e.g. studies/hybrid-recall.toml), takes the
best trained candidate (ranked as the search ranks: rung reached, then validation loss) of each
family: the best hybrid stack, the best pure model of each variant (e.g. pure window, pure
full), plus two hand baselines: full attention and Gemma's 5:1 window:full stack (head dim 32,
FFN 4x, the largest that fits the budget; the window is the widest the study's space offers),
and an ablation, "no-global": the searched hybrid's shape with every layer the base attention.
Each is trained for the same final tokens with `search.train`'s trainer, and one table prints
its FLOPs, the FLOP share of its global layers (whole blocks: attention, projections and FFN of
the layers that are not the base attention) and its final loss and metric. `--json` writes
every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import optuna

from benchmarks.outcome import INTERRUPTED, describe, load_finished_study, train_rows
from search.budget import format_flops, parse_flops
from search.cli import Parser, run_main
from search.interrupts import run_interruptible
from search.results import ranked_trials
from search.storage import DEFAULT_STORAGE
from spaces import ArchConfig
from spaces.baselines import largest_full, largest_hybrid
from spaces.flops import count_flops, estimate_flops


def family(cfg: ArchConfig) -> str:
    return "hybrid" if cfg.layer_attention is not None else f"pure {cfg.attention}"


def global_share(cfg: ArchConfig) -> float:
    """Forward FLOPs of the layers whose attention is not the base's, over the model's."""
    if cfg.layer_attention is None:
        return 0.0
    out = 0
    for spec in cfg.layer_attention:
        if spec is None:
            continue
        one = cfg.replace(
            depth=1,
            unique_blocks=0,
            layer_attention=None,
            attention=spec.attention,
            attention_params=spec.attention_params,
        )
        out += estimate_flops(one.replace(depth=2)) - estimate_flops(one)  # one such block
    return out / estimate_flops(cfg)


def best_per_family(study: optuna.Study) -> list[dict]:
    rows: dict[str, dict] = {}
    for rank, t in enumerate(ranked_trials(study), start=1):
        cfg = ArchConfig.from_dict(t.user_attrs["config"])
        kind = family(cfg)
        if kind not in rows:
            rows[kind] = {
                "kind": kind,
                "rank": rank,
                "trial": t.number,
                "config": cfg.to_dict(),
                "search_loss": t.user_attrs["loss"],
                "search_rung": t.user_attrs.get("rung"),
            }
    return sorted(rows.values(), key=lambda r: r["rank"])


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m benchmarks.hybrid_outcome", description=__doc__.split("\n\n")[0])
    p.add_argument("--study", required=True, help="a finished search.run study with patterns")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default {DEFAULT_STORAGE}")
    p.add_argument("--tokens", default="2M", help="final tokens for every model (default 2M)")
    p.add_argument("--jobs", type=int, default=2, help="training processes at once (default 2)")
    p.add_argument("--threads", type=int, default=1, help="torch threads each (default 1)")
    p.add_argument(
        "--hand-window", type=int, help="the 5:1 hand stack's window (default: the space's widest)"
    )
    p.add_argument("--json", metavar="PATH", help="write every figure here")
    return p


def compare(by_kind: dict[str, dict], metric: str) -> None:
    """One line per other model: the searched hybrid better or worse, by how much."""
    h = by_kind.get("hybrid")
    if h is None:
        return
    for other in sorted(k for k in by_kind if k != "hybrid"):
        o = by_kind[other]
        verdict = "better" if h["loss"] < o["loss"] else "worse"
        print(
            f"searched hybrid vs {other}: val loss {h['loss']:.4f} vs {o['loss']:.4f} "
            f"({verdict} by {abs(o['loss'] - h['loss']):.4f}), {metric} "
            f"{h['metric']:.4f} vs {o['metric']:.4f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        tokens = int(parse_flops(args.tokens))
        study, schedule, settings, task = load_finished_study(args.study, args.storage)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = best_per_family(study)
    if not rows:
        print(f"error: study {args.study!r} has no trained candidate", file=sys.stderr)
        return 1
    iface = task.interface()
    windows = settings.space.variant_choices("window", iface["seq_len"], iface["causal"])
    hands = {"hand full": largest_full(iface, settings.budget, head_dim=32)}
    if windows:
        window = args.hand_window or max(windows["window"])
        hands["hand 5:1"] = largest_hybrid(iface, settings.budget, window)
    searched = next((r for r in rows if r["kind"] == "hybrid"), None)
    if searched:  # ablation: the same shape with its global layers turned into base layers
        hands["no-global"] = ArchConfig.from_dict(searched["config"]).replace(layer_attention=None)
    for kind, cfg in hands.items():
        rows.append({"kind": kind, "rank": None, "trial": None, "config": cfg.to_dict()})
    for r in rows:
        cfg = ArchConfig.from_dict(r["config"])
        r["flops"], r["global_share"] = count_flops(cfg), global_share(cfg)
    print(
        f"study {args.study}: budget {format_flops(settings.budget)}, seq_len "
        f"{schedule.seq_len}; {len(rows)} models x {tokens:,} tokens (batch "
        f"{schedule.batch_size}), {args.jobs} at once x {args.threads} thread(s)",
        flush=True,
    )
    started = time.perf_counter()
    results = train_rows(rows, settings, tokens, schedule.batch_size, args)
    print(
        f"\n{'family':10s} {'config':44s} {'FLOPs':>11s} {'budget':>7s} {'global':>7s} "
        f"{'search':>6s} {'val loss':>9s} {task.metric:>10s} {'wall s':>7s}"
    )
    for r in sorted(results, key=lambda r: r["loss"]):
        print(
            f"{r['kind']:10s} {describe(ArchConfig.from_dict(r['config'])):44s} "
            f"{format_flops(r['flops']):>11s} {r['flops'] / settings.budget:7.1%} "
            f"{r['global_share']:7.1%} {r['rank'] or '-':>6} {r['loss']:9.4f} "
            f"{r['metric']:10.4f} {r['wall_s']:7.0f}"
        )
    compare({r["kind"]: r for r in results}, task.metric)
    print(f"total wall time {(time.perf_counter() - started) / 60:.1f} min")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"study": args.study, "tokens": tokens, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    run_main(lambda: run_interruptible(main, INTERRUPTED))
