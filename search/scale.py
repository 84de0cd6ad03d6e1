"""`python -m search.scale --study NAME --targets 4GFLOPs,8GFLOPs,16GFLOPs`: grow the best config.

EfficientNet-style compound scaling (README, "Compound scaling"). Without `--coefficients`,
a small grid of (alpha, beta, gamma) whose rounded config at phi = 1 measures 2x the base FLOPs
(within --tolerance) is trained with the study's proxy recipe, and the best is kept. Scaled
configs, the grid and (with --train) their proxy results are stored as a study of their own,
`<study>-scaled`, linked to the base study. FLOPs: fvcore, one multiply-add = one FLOP.
"""

from __future__ import annotations

import argparse
import sys

import optuna
import pandas as pd

from search.budget import flops_list_arg, format_flops
from search.objective import make_task
from search.results import best_trial
from search.scaling import (
    RATIO_TOLERANCE,
    TARGET_WINDOW,
    Coefficients,
    coefficient_grid,
    scale_to_targets,
)
from search.settings import settings_from_study
from search.storage import DEFAULT_STORAGE, open_storage
from spaces import ArchConfig
from spaces.flops import FLOP_CONVENTION, count_flops, count_params, estimate_flops
from trainers.proxy import train


def parse_coefficients(text: str) -> Coefficients:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) < 1.0:
        raise argparse.ArgumentTypeError(
            f"invalid --coefficients {text!r}: expected three numbers >= 1 for depth, width and "
            "span, e.g. 1.2,1.1,1.15"
        )
    return Coefficients(*values)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m search.scale", description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="base study, e.g. recall-2.00GFLOPs")
    p.add_argument(
        "--targets",
        required=True,
        type=flops_list_arg,
        help="comma-separated FLOP targets, e.g. 4GFLOPs,8GFLOPs,16GFLOPs",
    )
    p.add_argument(
        "--coefficients",
        type=parse_coefficients,
        help="alpha,beta,gamma to skip the grid search, e.g. 1.2,1.1,1.15",
    )
    p.add_argument("--trial", type=int, help="base trial number (default: best feasible)")
    p.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default {DEFAULT_STORAGE}")
    p.add_argument("--grid-size", type=int, default=3, help="grid points to train, default 3")
    p.add_argument(
        "--tolerance",
        type=float,
        default=RATIO_TOLERANCE,
        help=f"grid points must measure 2x base FLOPs +- this fraction, default {RATIO_TOLERANCE}",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="also proxy-train each scaled config (with the base's tokens: compute "
        "x FLOPs / base FLOPs)",
    )
    p.add_argument("--out-study", help="name of the scaled study (default <study>-scaled)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing scaled study")
    p.add_argument("--device", default=None, help="cpu or cuda (default: the study's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    storage = open_storage(args.storage)
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        print(f"error: no study {args.study!r} in {args.storage}", file=sys.stderr)
        return 2
    try:
        if args.trial is not None:
            base_t = next(
                t
                for t in study.get_trials(deepcopy=False)
                if t.number == args.trial and "config" in t.user_attrs
            )
        else:
            base_t = best_trial(study)
    except (StopIteration, LookupError):
        print(
            f"error: study {args.study!r} has no such trial / no completed trial within budget",
            file=sys.stderr,
        )
        return 2
    out_name = args.out_study or f"{args.study}-scaled"
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if out_name in existing:
        if not args.overwrite:
            print(
                f"error: study {out_name!r} exists; pass --overwrite or --out-study NAME",
                file=sys.stderr,
            )
            return 2
        optuna.delete_study(study_name=out_name, storage=storage)

    base = ArchConfig.from_dict(base_t.user_attrs["config"])
    base_flops = count_flops(base)
    if min(args.targets) <= base_flops:
        print(
            f"error: every target must exceed the base's {format_flops(base_flops)}",
            file=sys.stderr,
        )
        return 2
    settings = settings_from_study(study, args.device)
    task = make_task(settings)
    direction = study.user_attrs.get("direction", "maximize")
    better = max if direction == "maximize" else min

    def proxy(cfg: ArchConfig, compute: float) -> dict:
        r = train(
            cfg, task, compute, recipe=settings.recipe, seed=settings.seed, device=settings.device
        )
        return {
            "metric": r.metric,
            "status": r.status,
            "steps": r.steps,
            "tokens_per_s": r.tokens_per_s,
            "wall_time": r.wall_time,
        }

    print(
        f"base: trial {base_t.number}, {base.attention} depth {base.depth} width "
        f"{base.d_model} span {base.span}: {format_flops(base_flops)} ({FLOP_CONVENTION})"
    )
    grid_rows = []
    if args.coefficients is not None:
        coeffs, source = args.coefficients, "given"
    else:
        grid = coefficient_grid(base, estimate_flops, args.tolerance)[: args.grid_size]
        if not grid:
            print("error: no grid point measures 2x the base; raise --tolerance", file=sys.stderr)
            return 2
        for c, cfg, _ratio in grid:
            res = proxy(cfg, settings.proxy_compute)
            grid_rows.append(
                {
                    "alpha": c.alpha,
                    "beta": c.beta,
                    "gamma": c.gamma,
                    "ratio": round(count_flops(cfg) / base_flops, 3),
                    "config": cfg.to_dict(),
                    **res,
                }
            )
            print(
                f"grid {c.as_tuple()}: {count_flops(cfg) / base_flops:.2f}x base, "
                f"metric {res['metric']}",
                flush=True,
            )
        scored = [g for g in grid_rows if g["metric"] is not None]
        if not scored:
            print("error: every grid point failed to train", file=sys.stderr)
            return 1
        top = better(scored, key=lambda g: g["metric"])
        coeffs, source = Coefficients(top["alpha"], top["beta"], top["gamma"]), "grid"

    scaled = scale_to_targets(base, coeffs, args.targets, estimate_flops)
    out = optuna.create_study(study_name=out_name, storage=storage, direction=direction)
    attrs = {
        "kind": "scaled",
        "base_study": args.study,
        "base_trial": base_t.number,
        "base_flops": base_flops,
        "coefficients": list(coeffs.as_tuple()),
        "coefficient_source": source,
        "tolerance": args.tolerance,
        "grid": grid_rows,
        "targets": sorted(args.targets),
        "flop_convention": FLOP_CONVENTION,
        "metric": study.user_attrs.get("metric"),
        "direction": direction,
        "identity": study.user_attrs.get("identity"),
        "seed": settings.seed,
        "task": settings.task,
        "versions": study.user_attrs.get("versions"),
    }
    for key, value in attrs.items():
        out.set_user_attr(key, value)
    study.set_user_attr("scaling_coefficients", list(coeffs.as_tuple()))
    study.set_user_attr("scaled_study", out_name)

    def add(cfg: ArchConfig, role: str, extra: dict, metric: float | None) -> int:
        flops = count_flops(cfg)
        user_attrs = {
            "role": role,
            "config": cfg.to_dict(),
            "variant": cfg.attention,
            "span": cfg.span,
            "d_model": cfg.d_model,
            "flops": flops,
            "flop_convention": FLOP_CONVENTION,
            "params": count_params(cfg),
            **extra,
        }
        state = (
            optuna.trial.TrialState.COMPLETE
            if metric is not None
            else optuna.trial.TrialState.PRUNED
        )
        t = optuna.trial.create_trial(state=state, value=metric, user_attrs=user_attrs)
        out.add_trial(t)
        return flops

    for g in grid_rows:
        add(
            ArchConfig.from_dict(g["config"]),
            "grid",
            {k: v for k, v in g.items() if k != "config"},
            g["metric"],
        )
    rows = []
    for target, cfg, phi in scaled:
        flops = count_flops(cfg)
        if not TARGET_WINDOW[0] * target <= flops <= target:
            print(
                f"warning: {format_flops(target)}: landed at {flops / target:.3f} x target",
                file=sys.stderr,
            )
        res = {"metric": None, "status": "untrained"}
        if args.train:
            res = proxy(cfg, settings.proxy_compute * flops / base_flops)
        add(cfg, "target", {"target": target, "phi": phi, **res}, res["metric"])
        rows.append(
            {
                "target": format_flops(target),
                "phi": round(phi, 2),
                "depth": cfg.depth,
                "width": cfg.d_model,
                "heads": cfg.n_heads,
                "span": cfg.span,
                "FLOPs": format_flops(flops),
                "x target": round(flops / target, 3),
                "params": f"{count_params(cfg):,}",
                "metric": res["metric"],
            }
        )
    print(
        f"\ncoefficients ({source}): alpha={coeffs.alpha} beta={coeffs.beta} "
        f"gamma={coeffs.gamma}; stored on study {args.study!r}"
    )
    print(f"scaled study {out_name!r} (FLOPs: fvcore, 1 multiply-add = 1 FLOP):")
    print(pd.DataFrame(rows).to_string(index=False))
    print(
        f"\nexport one:  python -m search.export --study {out_name} --trial N --out x.json "
        f"--storage {args.storage}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
