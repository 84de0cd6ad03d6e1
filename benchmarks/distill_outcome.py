"""Does distillation beat training on data alone? The evidence of docs/results.md (distillation).

    python -m benchmarks.distill_outcome --student pick.json --teacher-config big.json \
        --tokens 1M --out /tmp/distill

Trains, each with `python -m search.train` (the user's command, one thread):

1. the teacher (`--teacher-config`, e.g. the pick scaled to 8x its FLOPs) for `--teacher-tokens`;
2. the student (the search's pick) distilled from it for `--tokens`;
3. the student on data alone for the same tokens;
4. the student on data alone for the distilled run's training compute (its 3 forwards per
   sequence plus the teacher's forward), i.e. more tokens;
5. with `--teacher-cost`, also for that compute plus the teacher's own training.

and prints them side by side: validation loss, the task metric, tokens, training compute.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from search.budget import count_arg, format_flops
from search.cli import Parser, run_main
from search.train import main as train_main
from spaces import ArchConfig
from spaces.flops import count_flops


def run(name: str, argv: list[str], out: Path) -> dict:
    folder = out / name
    if (folder / "result.json").is_file():
        print(f"[{name}] reusing {folder}/result.json", flush=True)
    else:
        t0 = time.perf_counter()
        print(f"[{name}] python -m search.train {' '.join(argv)} --out {folder}", flush=True)
        code = train_main([*argv, "--out", str(folder), "--quiet", "--threads", "1"])
        print(f"[{name}] exit {code} after {(time.perf_counter() - t0) / 60:.1f} min", flush=True)
        if code != 0:
            sys.exit(f"error: the {name} run failed (exit {code})")
    return json.loads((folder / "result.json").read_text())


def main(argv: list[str] | None = None) -> int:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--student", required=True, help="the search's pick (an export file)")
    p.add_argument("--teacher-config", required=True, help="the teacher's config file")
    p.add_argument("--tokens", type=count_arg, required=True, help="student tokens, e.g. 1M")
    p.add_argument("--teacher-tokens", type=count_arg, help="default: --tokens")
    p.add_argument("--kd-weight", default="0.5")
    p.add_argument("--temperature", default="2")
    p.add_argument("--teacher-cost", action="store_true", help="also run step 5 (long)")
    p.add_argument("--out", required=True, help="folder for the runs (kept for reuse)")
    args = p.parse_args(argv)
    out = Path(args.out)
    student, teacher_cfg = Path(args.student), Path(args.teacher_config)
    student_cfg = ArchConfig.from_file(student)
    s_flops = count_flops(student_cfg)
    t_flops = count_flops(ArchConfig.from_file(teacher_cfg))
    t_tokens = args.teacher_tokens or args.tokens
    prov = json.loads(student.read_text()).get("provenance", {})
    task_args = ["--task", prov.get("task", "text")] if prov else []
    if prov.get("data"):  # the student's search data: --task alone would drop it
        task_args += ["--data", *prov["data"]]
    batch = (prov.get("schedule") or {}).get("batch_size")
    if batch:  # the teacher trains on the student's batches
        task_args += ["--batch-tokens", str(batch * student_cfg.seq_len)]
    rows = {}
    rows["teacher"] = run("teacher", [str(teacher_cfg), *task_args, "--tokens", str(t_tokens)], out)
    kd = ["--kd-weight", args.kd_weight, "--temperature", args.temperature]
    rows["distilled"] = run(
        "distilled",
        [str(student), "--tokens", str(args.tokens), "--teacher", str(out / "teacher"), *kd],
        out,
    )
    rows["alone, equal tokens"] = run("alone", [str(student), "--tokens", str(args.tokens)], out)
    distilled_compute = rows["distilled"]["train_flops"]
    per_token = 3 * s_flops / student_cfg.seq_len
    equal = round(distilled_compute / per_token)
    rows["alone, equal compute"] = run(
        "alone-equal-compute", [str(student), "--tokens", str(equal)], out
    )
    if args.teacher_cost:
        total = distilled_compute + rows["teacher"]["train_flops"]
        rows["alone, equal compute + teacher training"] = run(
            "alone-equal-total", [str(student), "--tokens", str(round(total / per_token))], out
        )
    print()
    print(
        f"student {format_flops(s_flops)}, teacher {format_flops(t_flops)} "
        f"({t_flops / s_flops:.2f}x) per sequence; kd-weight {args.kd_weight}, "
        f"temperature {args.temperature}"
    )
    metric = rows["teacher"]["metric_name"]
    print(f"{'run':<42} {'tokens':>11} {'compute':>12} {'val loss':>9} {metric:>14}")
    for name, r in rows.items():
        print(
            f"{name:<42} {r['tokens']:>11,} {format_flops(r['train_flops']):>12} "
            f"{r['loss']:>9.4f} {r['metric']:>14.4f}"
        )
    d = rows["distilled"]["loss"]
    for name in [n for n in rows if n.startswith("alone")]:
        a = rows[name]["loss"]
        verdict = "distillation wins" if d < a else "distillation loses"
        print(f"distilled {d:.4f} vs {name} {a:.4f}: {verdict} by {abs(a - d):.4f} nats")
    return 0


if __name__ == "__main__":
    run_main(main)
