"""The report's HTML: style sheet, escaping, embedded figures, tables and the page shell."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import optuna

from dashboards.trials import Point, as_float
from search.budget import format_flops
from search.results import trial_counts
from spaces.flops import FLOP_UNIT

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


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def embed_png(path: Path, alt: str, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}">'
        f'<figcaption>{caption} (<a href="{esc(path.name)}">{esc(path.name)}</a>)</figcaption>'
        "</figure>"
    )


def kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def trials_table(pts: list[Point]) -> str:
    head = "<tr><th>trial</th><th>state</th><th>variant</th><th>FLOPs</th><th>metric</th>" + (
        "<th>status / reason</th></tr>"
    )
    body = []
    for p in pts:
        flops = format_flops(p.flops) if p.flops is not None else ""
        metric = f"{p.metric:.4f}" if p.metric is not None else ""
        why = p.status + (f": {p.reason}" if p.reason and p.status != "ok" else "")
        body.append(
            f'<tr><td class="num">{p.number}</td><td>{esc(p.kind.replace("_", " "))}</td>'
            f'<td>{esc(p.stack or p.variant)}</td><td class="num">{esc(flops)}</td>'
            f'<td class="num">{metric}</td><td>{esc(why[:160])}</td></tr>'
        )
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def summary_rows(study: optuna.Study, pts: list[Point]) -> list[tuple[str, str]]:
    s = study.user_attrs
    options = ", ".join(f"{k}={v}" for k, v in (s.get("task_options") or {}).items())
    task = esc(s.get("task", "?")) + (f" (seq_len {esc(s['seq_len'])})" if s.get("seq_len") else "")
    if options:
        task += f"; options: {esc(options)}"
    budget, proxy = as_float(s.get("budget")), as_float(s.get("proxy_compute"))
    counts = trial_counts(study)
    rows = [
        ("task", task),
        ("budget", esc(f"{format_flops(budget)} forward per sequence") if budget else "not set"),
        ("FLOP convention", f'<span class="conv">{esc(FLOP_UNIT)}</span>, forward, one seq.'),
        ("metric", esc(f"{s.get('metric', '?')} ({s.get('direction', 'maximize')})")),
        (
            "proxy compute",
            esc(f"{format_flops(proxy)} of training per trial (same for every candidate)")
            if proxy
            else "not set",
        ),
        ("objectives", esc(s.get("objectives", "single"))),
        (
            "sampler / pruner / seed",
            esc(f"{s.get('sampler', '?')} / {s.get('pruner', '?')} / {s.get('seed', '?')}"),
        ),
        ("trials", esc(", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))),
    ]
    if s.get("kind"):
        rows.insert(0, ("kind", esc(s["kind"])))
    versions = s.get("versions")
    if isinstance(versions, dict):
        rows.append(("versions", esc(", ".join(f"{k} {v}" for k, v in versions.items()))))
    return rows


def render_page(title: str, parts: list[str]) -> str:
    """The whole HTML document: title (escaped here) and the body parts, one a line."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
