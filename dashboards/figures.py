"""The report's matplotlib figures, each written as a PNG (11 x 6.2 in at 130 dpi):

* FLOPs vs metric of every trained trial, by attention variant, with budget and Pareto front;
* the best metric so far over the trials;
* parameter importances;
* metric vs FLOPs across the targets of a scaled study.

Every FLOP figure is fvcore's convention: one multiply-add = one FLOP, forward, one sequence.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import matplotlib
import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from dashboards.trials import UNKNOWN, Point, as_float, best_so_far, pareto_front
from search.budget import format_flops
from spaces.atomic import atomic_write
from spaces.flops import FLOP_UNIT

X_LABEL = f"forward FLOPs per sequence ({FLOP_UNIT})"
FIGSIZE = (11.0, 6.2)  # inches; >= 8 x 5
DPI = 130  # >= 120


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
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))
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


def _scatter_by_state(
    ax, pts: list[Point], colors: dict[str, Any], x, size: float, hollow_width: float
) -> None:
    """Completed trials as filled dots, pruned ones as hollow rings, coloured by variant."""
    for kind, face in (("complete", True), ("pruned", False)):
        sel = [p for p in pts if p.kind == kind]
        if sel:
            c = [colors.get(p.variant, colors[UNKNOWN]) for p in sel]
            ax.scatter(
                [x(p) for p in sel],
                [p.metric for p in sel],
                s=size,
                c=c if face else "none",
                edgecolors="white" if face else c,
                linewidths=0.8 if face else hollow_width,
                zorder=3,
            )


def _empty_note(ax, text: str) -> None:
    """A grey line of text in the middle of an empty plot."""
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=14, color="0.4"
    )


def _metric_label(study: optuna.Study) -> tuple[str, bool]:
    s = study.user_attrs
    maximize = s.get("direction", "maximize") == "maximize"
    name = s.get("metric") or "metric"
    return f"{name} ({'higher' if maximize else 'lower'} is better)", maximize


def plot_flops_metric(study: optuna.Study, pts: list[Point], path: Path) -> Path:
    """(a) FLOPs vs metric of every trained trial, by variant; budget line; Pareto front."""
    ylabel, maximize = _metric_label(study)
    budget = as_float(study.user_attrs.get("budget"))
    colors = variant_colors(p.variant for p in pts)
    fig, ax = _figure()
    trained = [p for p in pts if p.flops and p.metric is not None]
    _scatter_by_state(ax, trained, colors, x=lambda p: p.flops, size=70, hollow_width=1.8)
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
    xs = [cast(float, p.flops) for p in trained + over] + ([budget] if budget else [])
    if xs:
        lo, hi = min(xs) / 1.3, max(xs) * 1.3
        ax.set_xlim(lo, hi)
    if budget:
        ax.axvline(budget, color="#d62728", ls="--", lw=2, zorder=1)
        ax.axvspan(budget, hi, color="#d62728", alpha=0.06, zorder=0)
    if not trained:
        _empty_note(ax, "no trained trial yet")
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
    budget = as_float(study.user_attrs.get("budget"))
    colors = variant_colors(p.variant for p in pts)
    fig, ax = _figure()
    done = [p for p in pts if p.kind in ("complete", "pruned") and p.metric is not None]
    _scatter_by_state(ax, done, colors, x=lambda p: p.number, size=55, hollow_width=1.6)
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
        _empty_note(ax, "no completed trial within the budget yet")
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


def _target_label(target: Any) -> str:
    value = as_float(target)
    return f"target {format_flops(value)}" if value else f"target {target}"


def plot_scaling(study: optuna.Study, rows: list[dict[str, Any]], path: Path) -> Path:
    """(d) metric vs FLOPs for each scaling target; the best per target joined by a line."""
    ylabel, maximize = _metric_label(study)
    targets = sorted(
        {r["target"] for r in rows}, key=lambda v: (as_float(v) is None, as_float(v) or 0, v)
    )
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
        if as_float(target):
            ax.axvline(as_float(target), color=color, ls=":", lw=1.5, zorder=1)
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
