"""What rotary positions cost, side by side in one process.

    python -m benchmarks.rotary [--seq-len 512] [--calls 300] [--threads 1]

Two measurements, each alternated twice so that a busy machine hits both sides alike:

* the rotation alone, forward and backward, on (2, H, T, D) tensors: `spaces.rotary.Rotary`
  (`t * cos + roll(t) * sin`) against rotating the two halves apart (`halves`, the first
  version), with the largest difference between their outputs (0: the same numbers);
* a training step (forward, backward, AdamW) of two text models at batch 2 with learned and
  with rotary positions: full 3x64 and block-sparse(16) 8x64, the 200 MFLOPs pair of
  docs/results.md, section 0, "Rotary positions".
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

from search.budget import whole_number_arg
from search.cli import Parser, run_main
from spaces import ArchConfig, build_model
from spaces.rotary import Rotary


def halves(rot: Rotary, t: torch.Tensor) -> torch.Tensor:
    """The rotation as first written: each half rotated apart, then joined."""
    T, h = t.shape[-2], rot.pairs
    cos, sin = rot.cos[:T, :h], rot.sin[:T, h : 2 * h]
    a, b, rest = t[..., :h], t[..., h : 2 * h], t[..., 2 * h :]
    return torch.cat((a * cos - b * sin, a * sin + b * cos, rest), dim=-1)


def per_call_us(fn, calls: int, *args) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - start) / calls * 1e6


def backward(fn, t: torch.Tensor) -> None:
    fn(t).sum().backward()


def rotation(seq_len: int, calls: int) -> None:
    print(f"rotation, forward + backward, (2, H, {seq_len}, D), microseconds per call")
    for heads, dim in ((1, 64), (4, 16), (2, 32), (2, 5)):
        rot = Rotary(dim, seq_len)
        t = torch.randn(2, heads, seq_len, dim, requires_grad=True)
        diff = (rot(t) - halves(rot, t)).abs().max().item()
        times: dict[str, list[float]] = {"roll": [], "halves": []}
        for _ in range(2):
            times["roll"].append(per_call_us(backward, calls, rot, t))
            times["halves"].append(per_call_us(backward, calls, functools.partial(halves, rot), t))
        roll, half = min(times["roll"]), min(times["halves"])
        print(
            f"  H {heads} D {dim:3d}: roll {roll:6.0f}  halves {half:6.0f}  "
            f"ratio {roll / half:.2f}  max difference {diff:.1e}"
        )


def step_time(cfg: ArchConfig, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))

    def step() -> None:
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    return per_call_us(step, steps) / 1e3


def steps(seq_len: int, calls: int) -> None:
    n = max(3, calls // 30)
    print(f"training step, batch 2 x {seq_len}, milliseconds per step ({n} steps)")
    shapes: dict[str, dict[str, Any]] = {
        "full 3x64": dict(attention="full", depth=3, d_model=64, n_heads=1, ffn_mult=4.0),
        "sparse(16) 8x64": dict(
            attention="sparse",
            attention_params={"block": 16},
            depth=8,
            d_model=64,
            n_heads=1,
            ffn_mult=1.0,
        ),
    }
    for name, shape in shapes.items():
        cfgs = {
            p: ArchConfig(vocab_size=256, seq_len=seq_len, causal=True, positions=p, **shape)
            for p in ("learned", "rope")
        }
        times: dict[str, list[float]] = {"learned": [], "rope": []}
        for _ in range(2):
            for p, cfg in cfgs.items():
                times[p].append(step_time(cfg, n))
        learned, rope = min(times["learned"]), min(times["rope"])
        print(
            f"  {name:16s}: learned {learned:6.1f}  rope {rope:6.1f}  "
            f"rope costs {100 * (rope / learned - 1):+.1f}%"
        )


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m benchmarks.rotary", description=__doc__.split("\n\n")[0])
    p.add_argument("--seq-len", type=whole_number_arg("--seq-len", 16), default=512)
    p.add_argument("--calls", type=whole_number_arg("--calls", 1), default=300)
    p.add_argument("--threads", type=whole_number_arg("--threads", 1), default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rotation(args.seq_len, args.calls)
    steps(args.seq_len, args.calls)
    return 0


if __name__ == "__main__":
    run_main(main)
