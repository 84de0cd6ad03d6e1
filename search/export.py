"""`python -m search.export --study NAME --out best.json`: hand a config to any pipeline.

Writes the `ArchConfig` plus provenance (study, trial, metric, FLOPs and their convention,
params, task, seed, software versions) as JSON or YAML (by the file suffix). Load it with
`spaces.ArchConfig.from_file(path)` and build it with `spaces.build_model(cfg)`.
With `--top K`, writes K files named `<stem>-1<suffix>`, `<stem>-2<suffix>`, ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import optuna

from search.cli import Parser, run_main
from search.plateau import fallback_note
from search.plateau import pick as plateau_pick
from search.results import NOT_CANDIDATES, feasible_trials
from search.storage import DEFAULT_STORAGE, StorageError, open_existing_storage, safe_url
from spaces import ArchConfig
from spaces.atomic import make_folder, write_text


def document(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The exported document of one trial: {"config": ..., "provenance": ...}."""
    cfg = ArchConfig.from_dict(trial.user_attrs["config"])
    a, s = trial.user_attrs, study.user_attrs
    return {
        "config": cfg.to_dict(),
        "provenance": {
            "study": study.study_name,
            "trial": trial.number,
            "metric_name": s.get("metric"),
            "metric": trial.values[0] if trial.values else a.get("metric"),
            "flops": a.get("flops"),
            "flop_convention": a.get("flop_convention"),
            "params": a.get("params"),
            "task": s.get("task"),
            "task_options": s.get("task_options"),
            "seq_len": s.get("seq_len"),
            "budget": s.get("budget"),
            "proxy_compute": s.get("proxy_compute"),
            "task_metric": s.get("task_metric"),
            "task_metric_value": a.get("metric"),
            "rung": a.get("rung"),
            "tokens": a.get("tokens"),
            "schedule": s.get("schedule"),
            # the recipe the search judged it by (a scaled study keeps its source's in identity);
            # search.train trains with it
            "recipe": s.get("recipe") or (s.get("identity") or {}).get("recipe"),
            "corpus": s.get("corpus"),
            "data": s.get("data") or [],  # the search's --data files; search.train reads them
            "seed": s.get("seed"),
            "versions": s.get("versions"),
        },
    }


def write(doc: dict[str, Any], path: Path) -> None:
    try:
        make_folder(path.parent, "the folder of --out")
    except ValueError as exc:
        raise ValueError(f"cannot write --out {str(path)!r}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        write_text(path, yaml.safe_dump(doc, sort_keys=False))
    elif path.suffix.lower() == ".json":
        write_text(path, json.dumps(doc, indent=2) + "\n")
    else:
        raise ValueError(f"--out {str(path)!r}: use a .json, .yaml or .yml file name")


# trial statuses that never trained to a result (search.objective, search.asha)
UNTRAINED = (*NOT_CANDIDATES, "diverged", "oom", "training")


def export(
    study: optuna.Study, out: Path, trial: int | None = None, top: int | None = None
) -> tuple[list[Path], str | None]:
    """Write the chosen trial(s); returns the written paths, and `search.plateau`'s note when
    the default pick fell back from the search's first (None otherwise)."""
    scaled = study.user_attrs.get("kind") == "scaled"
    note = None
    if trial is not None:
        matches = [t for t in study.get_trials(deepcopy=False) if t.number == trial]
        if not matches or "config" not in matches[0].user_attrs:
            raise ValueError(
                f"--trial {trial}: study {study.study_name!r} has no such trial with a config"
            )
        status = matches[0].user_attrs.get("status")
        if not scaled and status in UNTRAINED:  # a scaled study's targets may be untrained
            a = matches[0].user_attrs
            why = f"duplicate of trial {a['duplicate_of']}" if "duplicate_of" in a else status
            raise ValueError(
                f"--trial {trial} was never trained or failed ({why}"
                + (f": {a['reason']}" if a.get("reason") else "")
                + "); export a trained trial from the run's table, or omit --trial for the best"
            )
        chosen = matches
    else:
        chosen = feasible_trials(study)[: top or 1]
        if chosen and top is None and not scaled:
            choice = plateau_pick(study)  # the summary's pick (search.plateau)
            chosen, note = [choice.trial], fallback_note(choice)
        if not chosen and scaled:
            raise ValueError(
                f"study {study.study_name!r} is a scaled study (from "
                f"{study.user_attrs.get('base_study')!r}); pass --trial N, the row of the target "
                "to export (search.scale printed them)"
            )
        if not chosen:
            raise ValueError(f"study {study.study_name!r} has no completed trial within budget")
    paths = []
    for i, t in enumerate(chosen, start=1):
        path = (
            out
            if top is None or trial is not None
            else out.with_name(f"{out.stem}-{i}{out.suffix}")
        )
        write(document(study, t), path)
        paths.append(path)
    return paths, note


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m search.export", description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, help="study name, e.g. recall-2.00GFLOPs")
    p.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"database URL, default {DEFAULT_STORAGE}"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--trial",
        type=int,
        help="export this trial number (default: the search's pick, as its summary names it: "
        "the best completed trial within the budget, or the seeded hand baseline when the "
        "search's first was still on the task's plateau loss, see search/plateau.py)",
    )
    g.add_argument(
        "--top",
        type=int,
        help="export the K best feasible trials as <out stem>-1, -2, ... (default: the best)",
    )
    p.add_argument("--out", default="best.json", help="output .json or .yaml, default best.json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.top is not None and args.top < 1:
        print(f"error: --top must be >= 1, got {args.top}", file=sys.stderr)
        return 2
    try:
        study = optuna.load_study(
            study_name=args.study, storage=open_existing_storage(args.storage)
        )
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyError:
        print(f"error: no study {args.study!r} in {safe_url(args.storage)}", file=sys.stderr)
        return 2
    try:
        paths, note = export(study, Path(args.out), args.trial, args.top)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write --out {args.out!r}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    if note:
        print(note, file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
