"""EfficientNet-style compound scaling, as small pure functions (no I/O, no training).

Tan & Le 2019 (arXiv:1905.11946): grow depth, width and resolution together,
d = alpha^phi, w = beta^phi, r = gamma^phi with alpha * beta^2 * gamma^2 ~ 2, so FLOPs roughly
double per unit of phi. For our Transformers the third axis is the attention *span* (window,
bucket size, block, rank; for `pooled` the stride shrinks by gamma^phi), and FLOPs do not follow
the CNN formula, so coefficients are chosen by *measured* FLOPs (`measure(cfg)`), not assumed.
Rounding respects the architecture: integer depth (rounded up, as EfficientNet does), width a
multiple of 8 per head with heads dividing it (heads widen to 64 before more are added), span a
multiple of 8 within what the variant allows at this sequence length.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable

from spaces import ATTENTION, ArchConfig

Measure = Callable[[ArchConfig], int]
ALPHAS = (1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0)
BETAS = (1.0, 1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4)
GAMMAS = (1.0, 1.1, 1.15, 1.2, 1.3, 1.5)
WIDTH_MULTIPLE = 8  # per-head width is a multiple of this
HEAD_DIM = 64  # per-head width that scaling grows heads to before adding more heads
SPAN_MULTIPLE = 8
RATIO_TOLERANCE = 0.1  # a grid point's FLOPs at phi = 1 must be 2x base within +-10%
TARGET_WINDOW = (0.90, 1.00)  # a scaled config lands in [0.90, 1.00] x target


@dataclasses.dataclass(frozen=True)
class Coefficients:
    alpha: float  # depth multiplier per unit of phi
    beta: float  # width multiplier
    gamma: float  # span multiplier (1.0 for variants without one)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.alpha, self.beta, self.gamma)


def round_depth(depth: float) -> int:
    """Layers: rounded up like EfficientNet's `round_repeats`, at least 1."""
    return max(1, math.ceil(depth - 1e-9))


def round_width(width: float, head_dim: int, min_heads: int = 1) -> tuple[int, int]:
    """(d_model, n_heads): about `head_dim` per head (at least `min_heads` heads), per-head
    width a multiple of 8, so heads always divide the width."""
    heads = max(min_heads, round(width / head_dim))
    per_head = max(WIDTH_MULTIPLE, round(width / heads / WIDTH_MULTIPLE) * WIDTH_MULTIPLE)
    return heads * per_head, heads


def round_span(cfg: ArchConfig, span: float) -> int | None:
    """The variant's span rounded to a multiple of 8, clamped to what it allows; None if none."""
    cls = ATTENTION.get(cfg.attention)
    name = cls.span_param
    if name is None:
        return None
    if name == "stride":
        value = max(1, round(span))
    else:
        value = max(SPAN_MULTIPLE, round(span / SPAN_MULTIPLE) * SPAN_MULTIPLE)
    value = min(value, cfg.seq_len)
    for candidate in range(value, 0, -1):  # the largest valid value not above `value`
        params = dataclasses.replace(cfg.attention_params, **{name: candidate})
        try:
            cls.validate(params, cfg.seq_len, cfg.causal)
            return candidate
        except ValueError:
            continue
    return getattr(cfg.attention_params, name)


def scale_config(
    base: ArchConfig, coeffs: Coefficients, phi: float, floor: ArchConfig | None = None
) -> ArchConfig:
    """The base grown by `phi` units; `floor` keeps depth and width at least those of a config
    scaled to a smaller target, so they never shrink as the target grows."""
    depth = round_depth(base.depth * coeffs.alpha**phi)
    # Heads keep their count while their width grows to 64 (a usual head size), then multiply.
    d_model, heads = round_width(
        base.d_model * coeffs.beta**phi, max(base.head_dim, HEAD_DIM), base.n_heads
    )
    if floor is not None:
        depth = max(depth, floor.depth)
        if d_model < floor.d_model:
            d_model, heads = floor.d_model, floor.n_heads
    changes = {"depth": depth, "d_model": d_model, "n_heads": heads}
    if base.unique_blocks:  # keep the sharing pattern: same number of layers per block
        changes["unique_blocks"] = max(1, round(depth * base.unique_blocks / base.depth))
    cls = ATTENTION.get(base.attention)
    if cls.span_param is not None:
        span = getattr(base.attention_params, cls.span_param)
        grown = span / coeffs.gamma**phi if cls.span_param == "stride" else span * coeffs.gamma**phi
        value = round_span(base, grown)
        if floor is not None and cls.span_param != "stride":
            value = max(value, getattr(floor.attention_params, cls.span_param))
        changes["attention_params"] = dataclasses.replace(
            base.attention_params, **{cls.span_param: value}
        )
    return base.replace(**changes)


def phi_for(target: float, base_flops: float) -> float:
    """Units of phi that take the base to `target` if FLOPs double per unit."""
    return math.log2(target / base_flops)


def coefficient_grid(
    base: ArchConfig,
    measure: Measure,
    tolerance: float = RATIO_TOLERANCE,
    alphas=ALPHAS,
    betas=BETAS,
    gammas=GAMMAS,
):
    """EfficientNet step 1: (coefficients, config at phi=1, measured ratio) for every grid point
    whose rounded config measures 2x the base FLOPs within `tolerance`; one entry per distinct
    config, closest to 2x first."""
    base_flops = measure(base)
    if ATTENTION.get(base.attention).span_param is None:
        gammas = (1.0,)
    seen, out = set(), []
    for a, b, g in itertools.product(alphas, betas, gammas):
        coeffs = Coefficients(a, b, g)
        cfg = scale_config(base, coeffs, 1.0)
        ratio = measure(cfg) / base_flops
        if abs(ratio - 2.0) <= 2.0 * tolerance and cfg not in seen:
            seen.add(cfg)
            out.append((coeffs, cfg, ratio))
    out.sort(key=lambda item: (abs(item[2] - 2.0), item[0].as_tuple()))
    return out


def fit_to_target(
    base: ArchConfig,
    coeffs: Coefficients,
    target: float,
    measure: Measure,
    floor: ArchConfig | None = None,
) -> tuple[ArchConfig, float]:
    """(config, phi) whose measured FLOPs land in [0.90, 1.00] x target when possible.

    1. Bisection on phi for the largest rounded config not above the target.
    2. A small correction when it lands below 0.90 x target: among configs a few rounding steps
       around it (depth -1..+3, heads +-1, per-head width in multiples of 8, span +-), never
       below the floor, take the largest count not above the target.
    The result never exceeds the target; if no config fits at all, ValueError."""
    base_flops = measure(base)
    lo, hi = phi_for(target, base_flops) - 4.0, phi_for(target, base_flops) + 4.0
    if measure(scale_config(base, coeffs, lo, floor)) > target:
        raise ValueError(f"target {target:,.0f} FLOPs is below what the base can shrink to")
    for _ in range(40):
        mid = (lo + hi) / 2
        if measure(scale_config(base, coeffs, mid, floor)) <= target:
            lo = mid
        else:
            hi = mid
    best = scale_config(base, coeffs, lo, floor)
    best_flops = measure(best)
    if best_flops < TARGET_WINDOW[0] * target:
        for cand in _neighbours(best, floor):
            f = measure(cand)
            if best_flops < f <= target:
                best, best_flops = cand, f
    return best, lo


def _neighbours(cfg: ArchConfig, floor: ArchConfig | None):
    """Configs a few rounding steps around `cfg` (never below `floor`), for the correction."""
    cls = ATTENTION.get(cfg.attention)
    spans = [None]
    if cls.span_param is not None:
        span = getattr(cfg.attention_params, cls.span_param)
        steps = (-1, 1) if cls.span_param == "stride" else (1, 2, 4)
        unit = 1 if cls.span_param == "stride" else SPAN_MULTIPLE
        spans += sorted({round_span(cfg, span + k * unit) for k in steps} - {span})
    min_depth = max(1, cfg.depth - 1, floor.depth if floor else 1)
    min_width = floor.d_model if floor else WIDTH_MULTIPLE
    for depth in range(min_depth, cfg.depth + 4):
        for heads in {max(1, cfg.n_heads - 1), cfg.n_heads, cfg.n_heads + 1}:
            for per_head in range(WIDTH_MULTIPLE, 2 * cfg.head_dim + 1, WIDTH_MULTIPLE):
                width = heads * per_head
                if width < min_width or width > 1.5 * cfg.d_model:
                    continue
                for span in spans:
                    changes = {"depth": depth, "d_model": width, "n_heads": heads}
                    if cfg.unique_blocks:
                        changes["unique_blocks"] = min(depth, cfg.unique_blocks)
                    if span is not None:
                        changes["attention_params"] = dataclasses.replace(
                            cfg.attention_params, **{cls.span_param: span}
                        )
                    try:
                        yield cfg.replace(**changes)
                    except ValueError:
                        continue


def scale_to_targets(
    base: ArchConfig, coeffs: Coefficients, targets: list[float], measure: Measure
) -> list[tuple[float, ArchConfig, float]]:
    """(target, config, phi) for each target in increasing order, depth and width monotone."""
    out, floor = [], None
    for target in sorted(targets):
        cfg, phi = fit_to_target(base, coeffs, target, measure, floor)
        out.append((target, cfg, phi))
        floor = cfg
    return out
