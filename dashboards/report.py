"""`python -m dashboards.report --study NAME --out DIR`: a self-contained HTML report of a study.

Writes DIR/index.html (figures embedded as base64 PNG, no network needed, the file alone can be
mailed) and the same figures as PNG files next to it:

* flops_vs_metric.png: every trained trial, FLOPs vs metric, coloured by attention variant, with
  the budget line and the Pareto front (lower FLOPs, better metric);
* history.png: the best metric so far over the trials;
* importances.png: parameter importances (PED-ANOVA), given enough completed trials;
* scaling.png: metric vs FLOPs across targets, for scaled studies (study attr kind = "scaled").

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward, one sequence.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path

import optuna

from dashboards.figures import (
    X_LABEL,
    plot_flops_metric,
    plot_history,
    plot_importances,
    plot_scaling,
)
from dashboards.page import (
    embed_png,
    esc,
    kv_table,
    render_page,
    summary_rows,
    trials_table,
)
from dashboards.trials import (
    importances,
    points,
    scaling_rows,
)
from search.budget import whole_number_arg
from search.cli import Parser, run_main
from search.results import top_table
from search.storage import DEFAULT_STORAGE, StorageError, open_existing_storage, safe_url
from spaces.atomic import make_folder, write_text
from spaces.flops import FLOP_UNIT

__all__ = ["main", "parser", "write_report"]


def _figure_or_note(
    path: Path, plot: Callable[[Path], Path] | None, alt: str, caption: str, note: str
) -> str:
    """The figure plot(path) draws, embedded; or, with no plot, the note (HTML) and no stale
    PNG left at path from an earlier report."""
    if plot is not None:
        return embed_png(plot(path), alt, caption)
    path.unlink(missing_ok=True)
    return f'<p class="note">{note}</p>'


def write_report(
    study: optuna.Study, out_dir: str | Path, top: int = 10, storage_url: str | None = None
) -> Path:
    """Write out_dir/index.html and the PNG figures; returns the index.html path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pts = points(study)
    metric = study.user_attrs.get("metric") or "metric"
    name = study.study_name
    storage_flag = f" --storage {safe_url(storage_url)}" if storage_url else ""
    parts = [
        f"<h1>attnsearch report: {esc(name)}</h1>",
        f"<p>Every FLOP figure is fvcore's convention, <span class=conv>{esc(FLOP_UNIT)}"
        "</span> (multiply by 2 for hardware FLOPs), forward pass, one sequence; a training "
        "step costs about 3 forward passes.</p>",
        kv_table(summary_rows(study, pts)),
        "<h2>FLOPs vs metric</h2>",
        embed_png(
            plot_flops_metric(study, pts, out / "flops_vs_metric.png"),
            f"{metric} vs forward FLOPs per sequence by attention variant",
            f"Every trained trial: filled = completed, hollow = pruned early (last reported "
            f"{esc(metric)}), crosses at the bottom = over the budget (not trained). Colour: "
            "attention variant. Black step line and rings: Pareto front among completed trials "
            "(no other trial has fewer FLOPs and a better metric), labelled with trial numbers. "
            f"Dashed red line: the budget. x: {esc(X_LABEL)}, log scale.",
        ),
        "<h2>Best value over trials</h2>",
        embed_png(
            plot_history(study, pts, out / "history.png"),
            f"best {metric} over trial number",
            f"Each completed trial's {esc(metric)} by trial number (colour: variant) and the "
            "best completed trial within the budget so far (black).",
        ),
        "<h2>Parameter importances</h2>",
    ]
    imp, imp_note = importances(study)
    parts.append(
        _figure_or_note(
            out / "importances.png",
            (lambda path: plot_importances(study, imp, path)) if imp else None,
            "parameter importances",
            esc(imp_note),
            esc(imp_note),
        )
    )

    parts.append("<h2>Scaling across targets</h2>")
    rows = scaling_rows(study)
    scaled = study.user_attrs.get("kind") == "scaled"
    why = (
        "this scaled study has no trial with target, flops and metric yet"
        if scaled
        else 'this is not a scaled study (study attribute kind = "scaled")'
    )
    parts.append(
        _figure_or_note(
            out / "scaling.png",
            (lambda path: plot_scaling(study, rows, path)) if scaled and rows else None,
            f"{metric} vs FLOPs across scaling targets",
            f"{esc(metric)} vs forward FLOPs ({esc(FLOP_UNIT)}) of each trial, one colour "
            "per scaling target (dotted line at the target), stars: the best per target.",
            f"No scaling figure: {esc(why)}.",
        )
    )

    table = top_table(study, top)
    parts.append(f"<h2>Top {top} configs within the budget</h2>")
    if table.empty:
        parts.append('<p class="note">No completed trial within the budget yet.</p>')
    else:
        parts.append(
            f"<p>Best first; FLOPs: {esc(FLOP_UNIT)}, forward, one sequence; "
            f"metric: {esc(metric)}.</p>" + table.to_html(index=False, escape=True, border=0)
        )
    parts += [
        "<h2>Export</h2>",
        "<pre>"
        + esc(
            f"python -m search.export --study {name} --out best.json{storage_flag}\n"
            f"python -m search.export --study {name} --trial N --out trial-N.json{storage_flag}"
        )
        + "</pre>",
        "<p>Load with <code>spaces.ArchConfig.from_file(path)</code>, build with "
        "<code>spaces.build_model(cfg)</code>.</p>",
        f"<h2>All trials ({len(pts)})</h2>",
        trials_table(pts),
        f"<p><small>Generated by <code>python -m dashboards.report</code> on "
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.</small></p>",
    ]
    page = render_page(f"attnsearch report: {name}", parts)
    index = out / "index.html"
    write_text(index, page)
    return index


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m dashboards.report",
        description=__doc__.split("\n")[0],
        epilog="example: python -m dashboards.report --study recall-2.00GFLOPs --out report/\n"
        "FLOPs: fvcore convention, one multiply-add = one FLOP, forward, one sequence.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", required=True, help="study name, e.g. recall-2.00GFLOPs")
    p.add_argument("--out", required=True, help="output directory, e.g. report/")
    p.add_argument(
        "--storage", default=DEFAULT_STORAGE, help=f"study database URL, default {DEFAULT_STORAGE}"
    )
    p.add_argument(
        "--top",
        type=whole_number_arg("--top", 1),
        default=10,
        help="rows of the top-configs table, default 10",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        storage = open_existing_storage(args.storage)
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        study = optuna.load_study(study_name=args.study, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
        there = ", ".join(repr(n) for n in names) if names else "none"
        print(
            f"error: no study {args.study!r} in {safe_url(args.storage)}; studies there: {there}",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"error: --out {args.out!r} is a file; give a directory", file=sys.stderr)
        return 2
    try:
        make_folder(out, "--out")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    index = write_report(study, out, args.top, args.storage)
    print(f"wrote {index} (open it in a browser; figures also as PNG files in {out})")
    return 0


if __name__ == "__main__":
    run_main(main)
