"""Time and peak memory of one forward+backward of each attention variant, as ratios to `full`.

    python -m benchmarks.attention                 # n = 1024, 4096, 16384 (several minutes)
    python -m benchmarks.attention --sizes 1024 4096 --reps 1

Setup (issue #2): d_model 256, 4 heads, batch 1, float32, window / bucket / block 128 (rank 128,
stride 8, linear's defaults), causal where the variant supports it, else bidirectional; `full`
is measured in the same mode as each variant. Each (variant, n) runs in a fresh subprocess so
that its peak resident memory (ru_maxrss) is its own; "peak" is that maximum minus the RSS just
before the step, i.e. the memory the step itself needed.
"""

from __future__ import annotations

import json
import subprocess
import sys

from search.cli import Parser, run_main

D_MODEL, HEADS, SPAN = 256, 4, 128
PARAMS = {
    "full": {},
    "window": {"window": SPAN},
    "lsh": {"bucket_size": SPAN},
    "sparse": {"block": SPAN},
    "lowrank": {"rank": SPAN},
    "pooled": {"stride": 8},
    "linear": {},
}


def _child(variant: str, n: int, causal: bool, reps: int, threads: int) -> dict:
    import resource
    import time

    import torch

    from spaces import ATTENTION

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cls = ATTENTION.get(variant)
    attn = cls(D_MODEL, HEADS, n, cls.Params(**PARAMS.get(variant, {})))
    x = torch.randn(1, n, D_MODEL, requires_grad=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        attn(x, causal=causal).sum().backward()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time": min(times), "peak_mb": (peak - before) / 1024}


def measure(variant: str, n: int, causal: bool, reps: int, threads: int) -> dict:
    code = (
        f"import json; from benchmarks.attention import _child; "
        f"print(json.dumps(_child({variant!r}, {n}, {causal}, {reps}, {threads})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = Parser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    p.add_argument("--variants", nargs="+", default=list(PARAMS))
    p.add_argument("--reps", type=int, default=2, help="repetitions; the fastest is kept")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    from spaces import ATTENTION

    print(
        f"one forward+backward, d_model {D_MODEL}, {HEADS} heads, span {SPAN}, batch 1, "
        f"float32, {args.threads} threads; ratios to full in the same mode"
    )
    rows, peaks = [], {}
    for n in args.sizes:
        base = {c: measure("full", n, c, args.reps, args.threads) for c in (False, True)}
        for variant in args.variants:
            causal = ATTENTION.get(variant).supports_causal
            m = (
                base[causal]
                if variant == "full"
                else measure(variant, n, causal, args.reps, args.threads)
            )
            ref = base[causal]
            peaks[(variant, n)] = m["peak_mb"]
            rows.append(
                (
                    n,
                    variant,
                    "causal" if causal else "bidir",
                    m["time"],
                    ref["time"] / m["time"],
                    m["peak_mb"],
                    m["peak_mb"] / max(ref["peak_mb"], 1e-9),
                )
            )
            r = rows[-1]
            print(
                f"n={r[0]:>6} {r[1]:>8} {r[2]:>6}  time {r[3]:8.3f}s  speed-up vs full "
                f"{r[4]:6.2f}x  peak {r[5]:8.1f} MB  ({r[6]:5.2f}x full)",
                flush=True,
            )
    if len(args.sizes) >= 2:
        a, b = args.sizes[-2], args.sizes[-1]
        print(f"\npeak memory growth from n={a} to n={b} (linear would be {b / a:.1f}x):")
        for variant in args.variants:
            if (variant, a) in peaks:
                print(
                    f"  {variant:>8}: {peaks[(variant, b)] / max(peaks[(variant, a)], 1e-9):5.2f}x"
                )


if __name__ == "__main__":
    run_main(main)
