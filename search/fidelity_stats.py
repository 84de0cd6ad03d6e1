"""Agreement between a proxy ranking and a long-run ranking of the same trials.

Pure statistics behind `python -m search.fidelity`: Kendall tau and Spearman rho
(`scipy.stats`), top-k overlap and the long-run rank of the proxy's pick (`fidelity_stats`),
and the plain-language reading of tau (`verdict`, thresholds `TRUSTWORTHY` and `ROUGH_GUIDE`):

    tau >= 0.6          trustworthy: the proxy ranks candidates as a longer run would
    0.3 <= tau < 0.6    rough guide: the top few are worth a longer look; consider longer
                        rungs
    tau < 0.3           not trustworthy: give the search longer rungs before believing it
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats

TRUSTWORTHY = 0.6  # tau at or above: the proxy ranking can be trusted
ROUGH_GUIDE = 0.3  # tau at or above (and below TRUSTWORTHY): a rough guide only


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _top(values: Sequence[float], k: int, direction: str) -> set[int]:
    """Indices of the k best values; ties broken by position (the earlier index wins)."""
    sign = -1.0 if direction == "maximize" else 1.0
    order = sorted(range(len(values)), key=lambda i: (sign * values[i], i))
    return set(order[:k])


def fidelity_stats(
    proxy: Sequence[float], long: Sequence[float], direction: str, k: int
) -> dict[str, Any]:
    """Agreement between proxy and long-run metrics of the same trials (paired by position).

    Returns n, k, direction, kendall_tau, kendall_p, spearman_rho, spearman_p (None where
    undefined, e.g. every metric tied), top_k_overlap (|top-k by proxy & top-k by long| / k,
    "top" by `direction`, ties broken by position) and proxy_pick_long_rank (1-based rank,
    under the long run, of the trial the proxy ranks first; ties again by position).
    """
    proxy, long = [float(x) for x in proxy], [float(x) for x in long]
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if len(proxy) != len(long):
        raise ValueError(f"proxy and long differ in length: {len(proxy)} vs {len(long)}")
    n = len(proxy)
    if n < 2:
        raise ValueError(f"need at least 2 paired metrics, got {n}")
    if not all(math.isfinite(x) for x in proxy + long):
        raise ValueError("metrics must be finite numbers")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    tau = stats.kendalltau(proxy, long)
    rho = stats.spearmanr(proxy, long)
    top_proxy, top_long = _top(proxy, k, direction), _top(long, k, direction)
    pick = min(_top(proxy, 1, direction))
    sign = -1.0 if direction == "maximize" else 1.0
    long_order = sorted(range(n), key=lambda i: (sign * long[i], i))
    return {
        "n": n,
        "k": k,
        "direction": direction,
        "kendall_tau": _finite(tau.statistic),
        "kendall_p": _finite(tau.pvalue),
        "spearman_rho": _finite(rho.statistic),
        "spearman_p": _finite(rho.pvalue),
        "top_k_overlap": len(top_proxy & top_long) / k,
        "proxy_pick_long_rank": long_order.index(pick) + 1,
    }


def verdict(tau: float | None) -> str:
    """Plain-language reading of Kendall tau (thresholds: module docstring)."""
    if tau is None or not math.isfinite(tau):
        return (
            "undefined: the metrics are all tied, so no ranking can be compared; "
            "retrain more trials (--random) or raise --factor"
        )
    if tau >= TRUSTWORTHY:
        return (
            f"trustworthy (tau {tau:.2f} >= {TRUSTWORTHY}): the proxy ranks candidates "
            "much as the longer run does"
        )
    if tau >= ROUGH_GUIDE:
        return (
            f"rough guide ({ROUGH_GUIDE} <= tau {tau:.2f} < {TRUSTWORTHY}): the proxy's top few "
            "are worth a longer look, but its exact order is not; consider longer rungs "
            "(--timeout, --rung-tokens)"
        )
    says = "says little about" if tau >= 0 else "runs against"
    return (
        f"not trustworthy (tau {tau:.2f} < {ROUGH_GUIDE}): the proxy ranking {says} the ranking "
        "after longer training; give the search longer rungs (--timeout, --rung-tokens) "
        "before believing it"
    )


def default_k(top: int, n: int) -> int:
    """k of the top-k overlap: min(--top, n // 2), at least 1."""
    return max(1, min(top, n // 2))
