"""Does the default task + proxy separate architectures? Train a few configs side by side.

    python -m benchmarks.discrimination [--compute 30GFLOPs] [--seeds 0 1]

On the default task (`recall`: answers sit more than `gap` = 8 positions behind their query)
at the default proxy compute, compares a full-attention model with the same model restricted to
a window narrower than the key-to-query distance (it cannot see the answer), and a few others.
Chance is 1 / num_values. FLOPs: fvcore, one multiply-add = one FLOP.
"""

from __future__ import annotations

import statistics
from typing import Any

from search.budget import flops_arg, format_flops
from search.cli import Parser, run_main
from search.settings import DEFAULT_PROXY_COMPUTE
from spaces import ArchConfig
from spaces.flops import count_flops
from trainers.proxy import train
from trainers.tasks import get_task

CONFIGS: dict[str, dict[str, Any]] = {
    "full, depth 2, width 64": dict(depth=2, d_model=64, n_heads=4),
    "window 4 (< distance), depth 2, width 64": dict(
        depth=2, d_model=64, n_heads=4, attention="window", attention_params={"window": 4}
    ),
    "window 32, depth 2, width 64": dict(
        depth=2, d_model=64, n_heads=4, attention="window", attention_params={"window": 32}
    ),
    "linear, depth 2, width 64": dict(depth=2, d_model=64, n_heads=4, attention="linear"),
}


def main(argv: list[str] | None = None) -> None:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--compute", type=flops_arg, default=DEFAULT_PROXY_COMPUTE)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args(argv)
    print(
        f"task recall (defaults), proxy compute {format_flops(args.compute)} of training per "
        f"run, seeds {args.seeds}"
    )
    for name, kw in CONFIGS.items():
        metrics, walls = [], []
        for seed in args.seeds:
            task = get_task("recall", seed=seed)
            cfg = ArchConfig(**task.interface(), **kw)
            r = train(cfg, task, args.compute, seed=seed)
            metrics.append(r.metric if r.metric is not None else float("nan"))
            walls.append(r.wall_time)
        print(
            f"{name:>42}: accuracy {statistics.median(metrics):.3f} (seeds: "
            f"{', '.join(f'{m:.3f}' for m in metrics)}), chance {task.chance():.3f}, "
            f"{format_flops(count_flops(cfg))}, {statistics.median(walls):.0f} s per run"
        )


if __name__ == "__main__":
    run_main(main)
