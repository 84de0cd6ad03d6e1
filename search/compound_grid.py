"""EfficientNet step 1 for compound scaling: the grid of coefficients worth training.

Four grid points whose rounded config measures about 2x the base, grouped by which axis carries
the growth (depth-, width-, span-led, balanced), each fitted to 2x +- `GRID_BAND` of the base's
FLOPs with `search.compound.fit_to_target`, so training compares shapes of about equal cost.
Points are distinct in depth, width or span (an FFN ratio alone does not make a new point) and
in their coefficients, and each fit takes the nearest shape in the band that is new and grows
the point's own axis.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import cast

from search.compound import (
    Coefficients,
    Measure,
    ScalingError,
    fit_to_target,
    scale_config,
)
from spaces import ATTENTION, ArchConfig

ALPHAS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)
BETAS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4)
GAMMAS = (1.0, 1.1, 1.2, 1.3, 1.5, 2.0)
RATIO_TOLERANCE = 0.25  # a grid point's FLOPs at phi = 1 must be 2x base within +-25%
FAMILIES = ("depth", "width", "span", "balanced")
LEAD_SHARE = 0.6  # an axis carrying >= 60% of the log-FLOP growth leads; else balanced
GRID_POINTS = 4  # depth-led, width-led, span-led (or a second balanced one), balanced
GRID_BAND = 0.2  # grid points are fitted to [1.8, 2.2] x the base FLOPs


@dataclasses.dataclass(frozen=True)
class GridPoint:
    family: str  # which axis carries the growth: depth, width, span or balanced
    coeffs: Coefficients
    config: ArchConfig  # the base scaled by phi = 1, rounded
    ratio: float  # measured FLOPs of `config` / base FLOPs


def _axis_ratios(base: ArchConfig, coeffs: Coefficients, measure: Measure, base_flops: int):
    """Measured FLOP growth at phi = 1 from each axis alone: (depth, width, span)."""
    a, b, g = coeffs.as_tuple()
    return tuple(
        measure(scale_config(base, c, 1.0)) / base_flops
        for c in (Coefficients(a, 1.0, 1.0), Coefficients(1.0, b, 1.0), Coefficients(1.0, 1.0, g))
    )


def _shape(cfg: ArchConfig) -> tuple:
    return (cfg.depth, cfg.d_model, cfg.span, cfg.ffn_mult)


def _core(cfg: ArchConfig) -> tuple:
    """What makes grid points distinct: depth, width and span (an FFN ratio alone does not)."""
    return (cfg.depth, cfg.d_model, cfg.span)


def shares(ratios: tuple[float, float, float]) -> tuple[float, float, float]:
    """Each axis's share of the log-FLOP growth (depth, width, span); zeros if nothing grows."""
    logs = [max(0.0, math.log(r)) for r in ratios]
    total = sum(logs)
    return (
        cast("tuple[float, float, float]", tuple(x / total for x in logs))
        if total > 0
        else (0.0, 0.0, 0.0)
    )


def family_of(ratios: tuple[float, float, float]) -> str:
    """depth, width or span when that axis carries >= LEAD_SHARE of the log-FLOP growth."""
    share = shares(ratios)
    return "none" if max(share) == 0 else family_of_share(share)


def family_of_share(share: tuple[float, float, float]) -> str:
    """The axis with >= LEAD_SHARE of the growth, else balanced."""
    lead = max(range(3), key=lambda i: share[i])
    return FAMILIES[lead] if share[lead] >= LEAD_SHARE else "balanced"


def _pool(base: ArchConfig, measure: Measure, tolerance: float, lattice) -> list[tuple]:
    """(coeffs, config at phi = 1, its FLOP ratio to the base, axis shares) for each lattice
    point whose rounded config changes shape and measures 2x the base within `tolerance`."""
    base_flops = measure(base)
    pool = []
    for a, b, g in lattice:
        if a == b == 1.0:
            continue  # depth or width grows (a span alone cannot carry 2x)
        coeffs = Coefficients(a, b, g)
        scaled = scale_config(base, coeffs, 1.0)
        ratio = measure(scaled) / base_flops
        if _shape(scaled) == _shape(base) or abs(ratio - 2.0) > 2.0 * tolerance:
            continue  # a point whose rounded shape did not change does not count
        pool.append(
            (coeffs, scaled, ratio, shares(_axis_ratios(base, coeffs, measure, base_flops)))
        )
    return pool


def _grown(cfg: ArchConfig, base: ArchConfig) -> list[str]:
    """The axes along which `cfg` grew from `base` (a span grows its view; a stride shrinks)."""
    stride = ATTENTION.get(base.attention).span_param == "stride"
    out = []
    if cfg.depth != base.depth:
        out.append("depth")
    if cfg.d_model != base.d_model:
        out.append("width")
    if cfg.span is None or base.span is None:
        return out
    if (cfg.span < base.span) if stride else (cfg.span > base.span):
        out.append("span")
    return out


def _avoider(base: ArchConfig, family: str | None, seen: set[tuple]) -> Callable:
    """Whether a fitted shape is unfit for a `family` point (None: any family): it repeats
    the base or an earlier point, or does not grow the family's axis (two axes: balanced)."""

    def avoid(cfg: ArchConfig) -> bool:
        grown = _grown(cfg, base)
        if family == "balanced":
            fits = len(grown) > 1
        else:
            fits = family is None or family in grown
        return not fits or _core(cfg) == _core(base) or _core(cfg) in seen

    return avoid


def _tried(pool: list[tuple], family: str) -> list[Coefficients]:
    """The pool's coefficients in the order `family` tries them: the largest share of the
    growth on its axis first, or for balanced (at least two axes with over 15% each) the most
    even split first; ties go to the point closest to 2x."""
    key: Callable[..., tuple]
    if family == "balanced":
        key = lambda p: (round(max(p[3]), 2), abs(p[2] - 2.0), p[0].as_tuple())
        fits = [p for p in pool if sum(x > 0.15 for x in p[3]) >= 2]
    else:
        axis = FAMILIES.index(family)
        key = lambda p, i=axis: (-round(p[3][i], 2), abs(p[2] - 2.0), p[0].as_tuple())
        fits = pool
    return [p[0] for p in sorted(fits, key=key)]


def grid_points(
    base: ArchConfig,
    measure: Measure,
    tolerance: float = RATIO_TOLERANCE,
    band: float = GRID_BAND,
    alphas=ALPHAS,
    betas=BETAS,
    gammas=GAMMAS,
) -> list[GridPoint]:
    """EfficientNet step 1: four distinct grid points whose rounded config at phi = 1 measures
    2x the base within `tolerance` and differs from it; the families differ in which axis
    carries most of the growth (a single-axis point such as alpha = 1 is a grid point too). The
    depth-, width- and span-led points give that axis the largest share of the growth (the
    axis must change; a span may be too cheap to carry most of it, then it carries as much as
    it can); the balanced point splits
    the growth most evenly. Ties go to the point closest to 2x. Each point's config is then
    fitted to 2x the base +- 0.2x (`fit_to_target`), so the points cost about the same. A
    variant without a span gets a second balanced point instead."""
    base_flops = measure(base)
    span_name = ATTENTION.get(base.attention).span_param
    has_span = span_name is not None
    if not has_span:
        gammas = (1.0,)
    pool = _pool(base, measure, tolerance, itertools.product(alphas, betas, gammas))
    wanted = (
        ["depth", "width", "span", "balanced"]
        if has_span
        else ["depth", "width", "balanced", "balanced"]
    )

    low = (2 - band) * base_flops

    def fitted(coeffs: Coefficients, family: str | None = None) -> ArchConfig | None:
        """The point's config fitted to 2x the base +- GRID_BAND, so training ranks shapes of
        about equal cost: the nearest shape in the band that is new (not the base's, not an
        earlier point's) and grows the family's axis (two axes for balanced). None if none."""
        avoid = _avoider(base, family, seen)
        try:
            cfg, _ = fit_to_target(  # no shortfall: anywhere in the band, as it always was
                base, coeffs, (2 + band) * base_flops, measure, low=low, avoid=avoid, shortfall=0
            )
        except ScalingError:
            return None
        return cfg  # fit_to_target never returns an avoided config

    out: list[GridPoint] = []
    seen: set[tuple] = set()
    for family in wanted:
        used = {p.coeffs for p in out}  # one point per coefficients: a second balanced point
        for coeffs in _tried(pool, family):  # on the first's would scale every target alike
            cfg = fitted(coeffs, family) if coeffs not in used else None
            if cfg is not None:
                seen.add(_core(cfg))
                out.append(GridPoint(family, coeffs, cfg, measure(cfg) / base_flops))
                break
    # a coarse lattice (a shallow or narrow base) may leave a family empty: fill up to four
    # with the remaining distinct points closest to 2x, named by the axes their shape grew
    for coeffs, _, _, _ in sorted(pool, key=lambda p: (abs(p[2] - 2.0), p[0].as_tuple())):
        taken = coeffs in {p.coeffs for p in out}  # one point per coefficients
        cfg = fitted(coeffs) if len(out) < len(wanted) and not taken else None
        if cfg is not None:
            seen.add(_core(cfg))
            grown = _grown(cfg, base)
            family = grown[0] if len(grown) == 1 else "balanced"
            out.append(GridPoint(family, coeffs, cfg, measure(cfg) / base_flops))
    return out


def _families_wanted(base: ArchConfig) -> set[str]:
    """depth, width, balanced, and span for a variant with one."""
    has_span = ATTENTION.get(base.attention).span_param is not None
    return {"depth", "width", "balanced"} | ({"span"} if has_span else set())


def _coverage(points: list[GridPoint], base: ArchConfig) -> tuple[int, int]:
    """(wanted families the points have, points): how complete a grid is."""
    return len(_families_wanted(base) & {p.family for p in points}), len(points)


def grid(base: ArchConfig, measure: Measure, tolerance: float = RATIO_TOLERANCE):
    """(points, widening): `grid_points`, with the bands around 2x widened (x1.5, x2, x3)
    until there are four points covering the wanted families (depth, width, span or a second
    balanced one, balanced); a shallow or narrow base's lattice is coarse. If no widening
    covers them all, the most complete grid (the narrowest band among equals)."""
    best: tuple[tuple[int, int], list[GridPoint], float] | None = None
    for widen in (1, 1.5, 2, 3):
        points = grid_points(base, measure, tolerance * widen, GRID_BAND * widen)
        score = _coverage(points, base)
        if score == (len(_families_wanted(base)), GRID_POINTS):
            return points, widen
        if best is None or score > best[0]:
            best = (score, points, widen)
    assert best is not None
    return best[1], best[2]
