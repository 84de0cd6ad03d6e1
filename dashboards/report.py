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
import base64
import dataclasses
import datetime as dt
import html
import math
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib
import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from optuna.trial import TrialState

from dashboards import StorageError, open_existing_storage, safe_url
from search.budget import format_flops
from search.results import top_table, trial_counts
from search.storage import DEFAULT_STORAGE

FLOP_CONVENTION = "fvcore: 1 multiply-add = 1 FLOP"
X_LABEL = "forward FLOPs per sequence (fvcore: 1 multiply-add = 1 FLOP)"
FIGSIZE = (11.0, 6.2)  # inches; >= 8 x 5
DPI = 130  # >= 120
UNKNOWN = "unknown"
MIN_IMPORTANCE_TRIALS = 3  # completed trials needed before importances are attempted
FEW_IMPORTANCE_TRIALS = 50  # below this the report says the importances are rough


@dataclasses.dataclass
class Point:
    """One trial as the report draws it."""

    number: int
    kind: str  # complete, pruned (stopped early), over_budget, failed, running
    variant: str
    flops: float | None
    metric: float | None
    status: str
    reason: str


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def points(study: optuna.Study) -> list[Point]:
    out = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        if t.state == TrialState.COMPLETE:
            kind, metric = "complete", _num(t.values[0]) if t.values else None
        elif t.state == TrialState.PRUNED:
            over = a.get("status") == "over_budget"
            kind = "over_budget" if over else "pruned"
            metric = None if over else _num(a.get("metric"))
            if metric is None and not over and t.intermediate_values:
                metric = _num(t.intermediate_values[max(t.intermediate_values)])
        elif t.state == TrialState.FAIL:
            kind, metric = "failed", None
        else:
            kind, metric = t.state.name.lower(), None
        out.append(
            Point(
                number=t.number,
                kind=kind,
                variant=str(a.get("variant") or UNKNOWN),
                flops=_num(a.get("flops")),
                metric=metric,
                status=str(a.get("status") or ""),
                reason=str(a.get("reason") or ""),
            )
        )
    return out


def pareto_front(pts: Iterable[Point], maximize: bool) -> list[Point]:
    """Non-dominated points (lower FLOPs, better metric), by increasing FLOPs."""
    usable = [p for p in pts if p.flops is not None and p.metric is not None]
    sign = -1.0 if maximize else 1.0
    usable.sort(key=lambda p: (p.flops, sign * p.metric))
    front: list[Point] = []
    for p in usable:
        if not front or sign * p.metric < sign * front[-1].metric:
            front.append(p)
    return front


def best_so_far(pts: Iterable[Point], maximize: bool, budget: float | None) -> list[Point]:
    """(trial number order) the running best among completed trials within the budget."""
    out, best = [], None
    for p in sorted(pts, key=lambda p: p.number):
        if p.kind != "complete" or p.metric is None:
            continue
        if budget is not None and p.flops is not None and p.flops > budget:
            continue
        if best is None or (p.metric > best.metric if maximize else p.metric < best.metric):
            best = p
        out.append(dataclasses.replace(best, number=p.number))
    return out


def variant_colors(extra: Iterable[str] = ()) -> dict[str, Any]:
    """One fixed colour per attention variant: every registered variant (sorted), then any
    other names seen in a study; the same variant gets the same colour in every report."""
    from spaces import ATTENTION

    names = sorted(ATTENTION.names())
    names += sorted({e for e in extra if e not in names and e != UNKNOWN})
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
    colors[UNKNOWN] = (0.55, 0.55, 0.55, 1.0)
    return colors


def compact_flops(value: float, _pos: Any = None) -> str:
    """Tick labels: 300K, 1.5M, 2G."""
    if value <= 0:
        return ""
    for power, prefix in ((12, "T"), (9, "G"), (6, "M"), (3, "K"), (0, "")):
        if value >= 10**power:
            return f"{value / 10**power:.3g}{prefix}"
    return f"{value:.3g}"


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    return fig, ax


def _log_flops_axis(ax) -> None:
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(compact_flops))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(X_LABEL, fontsize=11)


def _title(ax, study: optuna.Study, text: str) -> None:
    """Two lines: what the figure shows, then the study name (shortened to fit)."""
    name = study.study_name
    if len(name) > 70:
        name = name[:67] + "..."
    ax.set_title(f"{text}\nstudy {name}", fontsize=12.5)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _variant_handles(colors: dict[str, Any], pts: list[Point]) -> list[Line2D]:
    counts: dict[str, int] = {}
    for p in pts:
        if p.kind in ("complete", "pruned", "over_budget"):
            counts[p.variant] = counts.get(p.variant, 0) + 1
    names = [n for n in colors if n != UNKNOWN or counts.get(UNKNOWN)]
    return [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            ms=9,
            color=colors[n],
            label=f"{n} ({counts.get(n, 0)})",
        )
        for n in names
    ]


def _metric_label(study: optuna.Study) -> tuple[str, bool]:
    s = study.user_attrs
    maximize = s.get("direction", "maximize") == "maximize"
    name = s.get("metric") or "metric"
    return f"{name} ({'higher' if maximize else 'lower'} is better)", maximize


def plot_flops_metric(study: optuna.Study, pts: list[Point], path: Path) -> Path:
    """(a) FLOPs vs metric of every trained trial, by variant; budget line; Pareto front."""
    ylabel, maximize = _metric_label(study)
    budget = _num(study.user_attrs.get("budget"))
    colors = variant_colors(p.variant for p in pts)
    fig, ax = _figure()
    trained = [p for p in pts if p.flops and p.metric is not None]
    for kind, face in (("complete", True), ("pruned", False)):
        sel = [p for p in trained if p.kind == kind]
        if sel:
            c = [colors.get(p.variant, colors[UNKNOWN]) for p in sel]
            ax.scatter(
                [p.flops for p in sel],
                [p.metric for p in sel],
                s=70,
                c=c if face else "none",
                edgecolors="white" if face else c,
                linewidths=0.8 if face else 1.8,
                zorder=3,
            )
    front = pareto_front([p for p in trained if p.kind == "complete"], maximize)
    if front:
        ax.step(
            [p.flops for p in front],
            [p.metric for p in front],
            where="post",
            color="black",
            lw=1.6,
            zorder=2,
        )
        ax.scatter(
            [p.flops for p in front],
            [p.metric for p in front],
            s=190,
            facecolors="none",
            edgecolors="black",
            linewidths=1.4,
            zorder=4,
        )
        for p in front:
            ax.annotate(
                f"#{p.number}",
                (p.flops, p.metric),
                xytext=(7, 7),
                textcoords="offset points",
                fontsize=10,
                zorder=5,
            )
    over = [p for p in pts if p.kind == "over_budget" and p.flops]
    has_x = bool(trained or over or budget)
    if has_x:
        _log_flops_axis(ax)
    else:
        ax.set_xlabel(X_LABEL, fontsize=11)
    if over:
        ax.margins(y=0.12)  # room for the crosses along the bottom
        ax.scatter(
            [p.flops for p in over],
            [0.03] * len(over),
            transform=ax.get_xaxis_transform(),
            marker="x",
            s=60,
            c=[colors.get(p.variant, colors[UNKNOWN]) for p in over],
            linewidths=2,
            zorder=3,
            clip_on=False,
        )
    xs = [p.flops for p in trained + over] + ([budget] if budget else [])
    if xs:
        lo, hi = min(xs) / 1.3, max(xs) * 1.3
        ax.set_xlim(lo, hi)
    if budget:
        ax.axvline(budget, color="#d62728", ls="--", lw=2, zorder=1)
        ax.axvspan(budget, hi, color="#d62728", alpha=0.06, zorder=0)
    if not trained:
        ax.text(
            0.5,
            0.5,
            "no trained trial yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color="0.4",
        )
    ax.set_ylabel(ylabel, fontsize=11)
    _title(
        ax,
        study,
        f"{study.user_attrs.get('metric') or 'metric'} vs forward FLOPs "
        f"({len(trained)} trained trials, {len(over)} over budget)",
    )
    kinds = [
        Line2D([], [], ls="", marker="o", ms=9, color="0.35", label="completed"),
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            ms=9,
            mfc="none",
            mec="0.35",
            mew=1.8,
            label="pruned early (last metric)",
        ),
        Line2D([], [], ls="", marker="x", ms=8, mew=2, c="0.35", label="over budget (untrained)"),
        Line2D([], [], color="black", lw=1.6, marker="o", mfc="none", ms=11, label="Pareto front"),
    ]
    if budget:
        kinds.append(
            Line2D([], [], color="#d62728", ls="--", lw=2, label=f"budget {format_flops(budget)}")
        )
    fig.legend(
        handles=_variant_handles(colors, pts),
        title="attention variant (trials)",
        loc="outside right upper",
        fontsize=10,
        title_fontsize=10,
    )
    fig.legend(handles=kinds, loc="outside right lower", fontsize=10)
    return _save(fig, path)


def plot_history(study: optuna.Study, pts: list[Point], path: Path) -> Path:
    """(b) each completed trial's metric and the best so far, over the trial number."""
    ylabel, maximize = _metric_label(study)
    budget = _num(study.user_attrs.get("budget"))
    colors = variant_colors(p.variant for p in pts)
    fig, ax = _figure()
    done = [p for p in pts if p.kind in ("complete", "pruned") and p.metric is not None]
    for kind, face in (("complete", True), ("pruned", False)):
        sel = [p for p in done if p.kind == kind]
        if sel:
            c = [colors.get(p.variant, colors[UNKNOWN]) for p in sel]
            ax.scatter(
                [p.number for p in sel],
                [p.metric for p in sel],
                s=55,
                c=c if face else "none",
                edgecolors="white" if face else c,
                linewidths=0.8 if face else 1.6,
                zorder=3,
            )
    best = best_so_far(pts, maximize, budget)
    handles = _variant_handles(colors, pts)
    if best:
        ax.step(
            [p.number for p in best],
            [p.metric for p in best],
            where="post",
            color="black",
            lw=2,
            zorder=2,
        )
        handles = [
            Line2D([], [], color="black", lw=2, label="best within budget so far"),
            *handles,
        ]
    else:
        ax.text(
            0.5,
            0.5,
            "no completed trial within the budget yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=14,
            color="0.4",
        )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial number", fontsize=11)
    ax.set_ylabel(ylabel, fontsize=11)
    _title(
        ax,
        study,
        f"best {study.user_attrs.get('metric') or 'metric'} over trials (hollow: pruned early)",
    )
    fig.legend(handles=handles, loc="outside right upper", fontsize=10)
    return _save(fig, path)


def importances(study: optuna.Study) -> tuple[dict[str, float] | None, str]:
    """(importances or None, a sentence for the report)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed trials; "
            f"this study has {len(done)}. Run more trials (resume with the same --study)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # PED-ANOVA: Optuna's own, no scikit-learn, and it covers the conditional
            # parameters of each variant; deterministic.
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            imp = optuna.importance.get_param_importances(
                study, evaluator=evaluator, target=lambda t: t.values[0]
            )
    except Exception as exc:
        return None, f"Parameter importances could not be computed ({type(exc).__name__}: {exc})."
    imp = {k: float(v) for k, v in imp.items() if math.isfinite(v)}
    if not imp:
        return None, (
            "Parameter importances are empty: no parameter varies among the completed trials."
        )
    note = (
        f"PED-ANOVA importances (Optuna) over {len(done)} completed trials: how much each "
        "parameter's distribution differs between the top 10% of trials and all of them "
        "(a variant's own parameters count where that variant was sampled); they sum to 1."
    )
    if len(done) < FEW_IMPORTANCE_TRIALS:
        note += (
            f" With fewer than {FEW_IMPORTANCE_TRIALS} completed trials the top 10% holds "
            "only a few trials: read them as rough."
        )
    return imp, note


def plot_importances(study: optuna.Study, imp: dict[str, float], path: Path) -> Path:
    """(c) horizontal bars, largest on top."""
    fig, ax = _figure()
    items = sorted(imp.items(), key=lambda kv: kv[1])
    ax.barh([k for k, _ in items], [v for _, v in items], color="#1f77b4")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=10)
    ax.set_xlim(0, max(v for _, v in items) * 1.15 or 1)
    ax.grid(True, axis="y", alpha=0)
    ax.set_xlabel("importance (PED-ANOVA, top 10% of trials vs all; sums to 1)", fontsize=11)
    _title(ax, study, f"parameter importances for {study.user_attrs.get('metric') or 'the metric'}")
    ax.tick_params(axis="y", labelsize=11)
    return _save(fig, path)


def scaling_rows(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        flops, metric = _num(a.get("flops")), _num(a.get("metric"))
        if "target" in a and flops and metric is not None and t.state != TrialState.FAIL:
            rows.append(
                {"trial": t.number, "target": a["target"], "flops": flops, "metric": metric}
            )
    return rows


def _target_label(target: Any) -> str:
    value = _num(target)
    return f"target {format_flops(value)}" if value else f"target {target}"


def plot_scaling(study: optuna.Study, rows: list[dict[str, Any]], path: Path) -> Path:
    """(d) metric vs FLOPs for each scaling target; the best per target joined by a line."""
    ylabel, maximize = _metric_label(study)
    targets = sorted({r["target"] for r in rows}, key=lambda v: (_num(v) is None, _num(v) or 0, v))
    cmap = matplotlib.colormaps["viridis"]
    fig, ax = _figure()
    bests = []
    for i, target in enumerate(targets):
        color = cmap(0.1 + 0.8 * i / max(1, len(targets) - 1))
        sel = sorted((r for r in rows if r["target"] == target), key=lambda r: r["flops"])
        ax.scatter(
            [r["flops"] for r in sel],
            [r["metric"] for r in sel],
            s=60,
            color=color,
            label=_target_label(target),
            zorder=3,
        )
        if _num(target):
            ax.axvline(_num(target), color=color, ls=":", lw=1.5, zorder=1)
        pick = max if maximize else min
        bests.append(pick(sel, key=lambda r: r["metric"]))
    bests.sort(key=lambda r: r["flops"])
    ax.plot(
        [r["flops"] for r in bests],
        [r["metric"] for r in bests],
        color="black",
        lw=1.8,
        marker="*",
        ms=15,
        mfc="gold",
        label="best per target",
        zorder=4,
    )
    _log_flops_axis(ax)
    ax.set_ylabel(ylabel, fontsize=11)
    _title(
        ax,
        study,
        f"{study.user_attrs.get('metric') or 'metric'} vs FLOPs across {len(targets)} scaling "
        "targets (dotted: target)",
    )
    fig.legend(loc="outside right upper", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
max-width:1200px;margin:2em auto;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.93em}
th,td{border:1px solid #ccc;padding:.28em .6em;text-align:left}
th{background:#f2f4f7}tbody tr:nth-child(even){background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e3e3e3}
figcaption{color:#444;font-size:.93em;margin-top:.3em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
code,pre{background:#f4f4f4;border-radius:3px}pre{padding:.6em .8em;overflow-x:auto}
.conv{font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _img(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
        f'<figcaption>{caption} (<a href="{_e(path.name)}">{_e(path.name)}</a>)</figcaption>'
        "</figure>"
    )


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _trials_table(pts: list[Point]) -> str:
    head = "<tr><th>trial</th><th>state</th><th>variant</th><th>FLOPs</th><th>metric</th>" + (
        "<th>status / reason</th></tr>"
    )
    body = []
    for p in pts:
        flops = format_flops(p.flops) if p.flops is not None else ""
        metric = f"{p.metric:.4f}" if p.metric is not None else ""
        why = p.status + (f": {p.reason}" if p.reason and p.status != "ok" else "")
        body.append(
            f'<tr><td class="num">{p.number}</td><td>{_e(p.kind.replace("_", " "))}</td>'
            f'<td>{_e(p.variant)}</td><td class="num">{_e(flops)}</td>'
            f'<td class="num">{metric}</td><td>{_e(why[:160])}</td></tr>'
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _summary_rows(study: optuna.Study, pts: list[Point]) -> list[tuple[str, str]]:
    s = study.user_attrs
    options = ", ".join(f"{k}={v}" for k, v in (s.get("task_options") or {}).items())
    task = _e(s.get("task", "?")) + (f" (seq_len {_e(s['seq_len'])})" if s.get("seq_len") else "")
    if options:
        task += f"; options: {_e(options)}"
    budget, proxy = _num(s.get("budget")), _num(s.get("proxy_compute"))
    counts = trial_counts(study)
    rows = [
        ("task", task),
        ("budget", _e(f"{format_flops(budget)} forward per sequence") if budget else "not set"),
        ("FLOP convention", f'<span class="conv">{_e(FLOP_CONVENTION)}</span>, forward, one seq.'),
        ("metric", _e(f"{s.get('metric', '?')} ({s.get('direction', 'maximize')})")),
        (
            "proxy compute",
            _e(f"{format_flops(proxy)} of training per trial (same for every candidate)")
            if proxy
            else "not set",
        ),
        ("objectives", _e(s.get("objectives", "single"))),
        (
            "sampler / pruner / seed",
            _e(f"{s.get('sampler', '?')} / {s.get('pruner', '?')} / {s.get('seed', '?')}"),
        ),
        ("trials", _e(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))),
    ]
    if s.get("kind"):
        rows.insert(0, ("kind", _e(s["kind"])))
    versions = s.get("versions")
    if isinstance(versions, dict):
        rows.append(("versions", _e(", ".join(f"{k} {v}" for k, v in versions.items()))))
    return rows


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
        f"<h1>attnsearch report: {_e(name)}</h1>",
        f"<p>Every FLOP figure is fvcore's convention, <span class=conv>{_e(FLOP_CONVENTION)}"
        "</span> (multiply by 2 for hardware FLOPs), forward pass, one sequence; a training "
        "step costs about 3 forward passes.</p>",
        _kv_table(_summary_rows(study, pts)),
        "<h2>FLOPs vs metric</h2>",
        _img(
            plot_flops_metric(study, pts, out / "flops_vs_metric.png"),
            f"{metric} vs forward FLOPs per sequence by attention variant",
            f"Every trained trial: filled = completed, hollow = pruned early (last reported "
            f"{_e(metric)}), crosses at the bottom = over the budget (not trained). Colour: "
            "attention variant. Black step line and rings: Pareto front among completed trials "
            "(no other trial has fewer FLOPs and a better metric), labelled with trial numbers. "
            f"Dashed red line: the budget. x: {_e(X_LABEL)}, log scale.",
        ),
        "<h2>Best value over trials</h2>",
        _img(
            plot_history(study, pts, out / "history.png"),
            f"best {metric} over trial number",
            f"Each completed trial's {_e(metric)} by trial number (colour: variant) and the "
            "best completed trial within the budget so far (black).",
        ),
        "<h2>Parameter importances</h2>",
    ]
    imp, imp_note = importances(study)
    if imp:
        parts.append(
            _img(
                plot_importances(study, imp, out / "importances.png"),
                "parameter importances",
                _e(imp_note),
            )
        )
    else:
        (out / "importances.png").unlink(missing_ok=True)
        parts.append(f'<p class="note">{_e(imp_note)}</p>')

    parts.append("<h2>Scaling across targets</h2>")
    rows = scaling_rows(study)
    if study.user_attrs.get("kind") == "scaled" and rows:
        parts.append(
            _img(
                plot_scaling(study, rows, out / "scaling.png"),
                f"{metric} vs FLOPs across scaling targets",
                f"{_e(metric)} vs forward FLOPs ({_e(FLOP_CONVENTION)}) of each trial, one colour "
                "per scaling target (dotted line at the target), stars: the best per target.",
            )
        )
    else:
        (out / "scaling.png").unlink(missing_ok=True)
        why = (
            "this scaled study has no trial with target, flops and metric yet"
            if study.user_attrs.get("kind") == "scaled"
            else 'this is not a scaled study (study attribute kind = "scaled")'
        )
        parts.append(f'<p class="note">No scaling figure: {_e(why)}.</p>')

    table = top_table(study, top)
    parts.append(f"<h2>Top {top} configs within the budget</h2>")
    if table.empty:
        parts.append('<p class="note">No completed trial within the budget yet.</p>')
    else:
        parts.append(
            f"<p>Best first; FLOPs: {_e(FLOP_CONVENTION)}, forward, one sequence; "
            f"metric: {_e(metric)}.</p>" + table.to_html(index=False, escape=True, border=0)
        )
    parts += [
        "<h2>Export</h2>",
        "<pre>"
        + _e(
            f"python -m search.export --study {name} --out best.json{storage_flag}\n"
            f"python -m search.export --study {name} --trial N --out trial-N.json{storage_flag}"
        )
        + "</pre>",
        "<p>Load with <code>spaces.ArchConfig.from_file(path)</code>, build with "
        "<code>spaces.build_model(cfg)</code>.</p>",
        f"<h2>All trials ({len(pts)})</h2>",
        _trials_table(pts),
        f"<p><small>Generated by <code>python -m dashboards.report</code> on "
        f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.</small></p>",
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>attnsearch report: {_e(name)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
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
    p.add_argument("--top", type=int, default=10, help="rows of the top-configs table, default 10")
    args = p.parse_args(argv)
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
    index = write_report(study, out, args.top, args.storage)
    print(f"wrote {index} (open it in a browser; figures also as PNG files in {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
