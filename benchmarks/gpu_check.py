"""One-shot CUDA check: every variant forward+backward on CUDA matches CPU, a proxy run trains
on CUDA, and exported configs are proxy-trained there on equal tokens (used for the scaling
check of issue #6). Usage: python -m benchmarks.gpu_check [EXPORTED.json ...] [--tokens-of BASE]

FLOPs: fvcore convention, one multiply-add = one FLOP.
"""

from __future__ import annotations

import json
import time

import torch

from search.cli import Parser, run_main
from spaces import ATTENTION, ArchConfig
from spaces.flops import count_flops, training_flops_per_sequence
from trainers.proxy import Recipe, train
from trainers.tasks import get_task


def variants_match() -> None:
    for name in ATTENTION.names():
        cls = ATTENTION.get(name)
        torch.manual_seed(0)
        n = 1024
        span = {"window": 128, "bucket_size": 128, "block": 128, "rank": 128, "stride": 8}
        params = cls.Params(**{k: v for k, v in span.items() if k == cls.span_param})
        cpu = cls(256, 4, n, params)
        gpu = cls(256, 4, n, params).cuda()
        gpu.load_state_dict(cpu.state_dict())
        x = torch.randn(2, n, 256)
        causal = cls.supports_causal
        y_cpu = cpu(x, causal=causal)
        start = time.perf_counter()
        y_gpu = gpu(x.cuda(), causal=causal)
        y_gpu.sum().backward()
        torch.cuda.synchronize()
        err = (y_gpu.cpu() - y_cpu).abs().max().item()
        print(
            f"{name:>8}: max |cuda - cpu| = {err:.2e}, fwd+bwd {time.perf_counter() - start:.3f}s"
        )
        assert err < 1e-3, name


def main() -> None:
    p = Parser()
    p.add_argument("configs", nargs="*")
    p.add_argument("--base", help="exported base config: others get its number of tokens")
    p.add_argument("--base-compute", type=float, default=100e9)
    p.add_argument("--task-options", default="{}")
    args = p.parse_args()
    print(torch.cuda.get_device_name(0), torch.__version__)
    variants_match()
    task = get_task("recall", **json.loads(args.task_options))
    if args.base:
        base = ArchConfig.from_file(args.base)
        rows = []
        for path in [args.base, *args.configs]:
            cfg = ArchConfig.from_file(path)
            compute = args.base_compute * count_flops(cfg) / count_flops(base)
            r = train(cfg, task, compute, recipe=Recipe(), device="cuda")
            rows.append(
                (path, count_flops(cfg), r.metric, r.status, r.steps, r.batch_size, r.wall_time)
            )
            print(
                f"{path}: {count_flops(cfg) / 1e9:.3f} GFLOPs, compute {compute / 1e12:.2f} "
                f"TFLOPs, metric {r.metric}, {r.status}, {r.steps} steps x {r.batch_size}, "
                f"{r.wall_time:.1f}s",
                flush=True,
            )
    else:
        cfg = ArchConfig(**task.interface(), depth=2, d_model=128, n_heads=4)
        r = train(cfg, task, 50 * training_flops_per_sequence(cfg) * 16, device="cuda")
        print("cuda proxy run:", r.status, r.metric, r.steps)


if __name__ == "__main__":
    run_main(main)
