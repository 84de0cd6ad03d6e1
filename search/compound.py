"""EfficientNet-style compound scaling, as small pure functions (no I/O, no training).

Tan & Le 2019 (arXiv:1905.11946): grow depth, width and resolution together, d = alpha^phi,
w = beta^phi, r = gamma^phi. For our Transformers the third axis is the attention *span*
(window, bucket size, block, rank; for `pooled` the stride shrinks by gamma^phi). Transformer
FLOPs do not follow the CNN formula (embeddings and the LM head do not grow with depth, spans
saturate at the sequence length), so nothing here assumes how FLOPs grow: every decision is made
on *measured* FLOPs (`measure(cfg)`, the exact closed form that fvcore's count is tested against).

* EfficientNet's step 1, the grid of coefficients, lives in `search/compound_grid.py`.
* `fit_to_target`: the config for one FLOP target. Phi is bracketed by doubling until the
  measured FLOPs pass the target, then bisected; a search over the shapes near that rounded
  config picks, within [0.90, 1.00] x target, the one closest to the coefficients' ideal shape,
  counting the budget it leaves unused (`SHORTFALL_WEIGHT`). `ScalingError` names the nearest
  reachable FLOPs when none exists.

Rounding is Transformer-sane: depth to the nearest integer (at least 1); width as heads x head
dim, head dim a multiple of 8 in [32, 128] (about 64; a model under 32 wide has one head),
heads at least the base's where they fit, so heads always divide the width; span a multiple of
8 within what the variant allows at this sequence length. ALBERT-shared bases keep their
layers-per-block ratio.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any, cast

from search.budget import format_flops
from spaces import ATTENTION, ArchConfig
from spaces.config import LIMITS
from spaces.layers import resize

Measure = Callable[[ArchConfig], int]
WIDTH_MULTIPLE = 8  # per-head width is a multiple of this
HEAD_DIM = 64  # the per-head width scaling aims for
MIN_HEAD_DIM, MAX_HEAD_DIM = 32, 128
SPAN_MULTIPLE = 8
TARGET_WINDOW = (0.90, 1.00)  # a scaled config lands in [0.90, 1.00] x target
FFN_STEPS = (1.0, 0.875, 1.125, 0.75, 1.25, 0.625, 1.5, 0.5)  # FFN ratios the fit may use
MAX_PHI = 1024.0  # bracketing gives up here: the coefficients cannot reach the target
FFN_WEIGHT = 1.0  # a changed FFN ratio counts its |log ratio| once, as depth and width do
# the budget a shape leaves unused, log(target / FLOPs), counts twice what a shape axis does:
# at a fixed size, loss depends only mildly on shape (Kaplan et al. 2020, arXiv:2001.08361,
# section 3.1), while compute buys loss directly. With it the text study's 4x target takes 4x96
# FFN 4.5x (0.970 x target) over 4x96 (0.911), and that trained 0.008 nats better on the mean
# of three seeds (docs/results.md 0b; the weight was set after that measurement: 1.86-9 give
# the same fits there, 2 is the smallest round one). 0 (the grid's band): the rounded path
# config whenever it lands, the rule before.
SHORTFALL_WEIGHT = 2.0
TIE = 0.001  # scores this close tie (a tenth of a percent of the budget; other heads can change
# a variant's FLOPs by less): then the path's config and the usual heads win


class ScalingError(ValueError):
    """A target the coefficients cannot meet; `nearest` is the closest reachable FLOP count."""

    def __init__(self, message: str, nearest: int | None = None) -> None:
        super().__init__(message)
        self.nearest = nearest


@dataclasses.dataclass(frozen=True)
class Coefficients:
    alpha: float  # depth multiplier per unit of phi
    beta: float  # width multiplier
    gamma: float  # span multiplier (1.0 for variants without one)

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.alpha, self.beta, self.gamma)


def round_depth(depth: float) -> int:
    """Layers: the nearest integer, at least 1."""
    return max(1, math.floor(depth + 0.5))


def round_width(width: float, min_heads: int = 1) -> tuple[int, int]:
    """(d_model, n_heads): heads of 32-128 (multiples of 8, about 64), at least `min_heads`
    where they fit; a width under 32 is one head, a multiple of 8."""
    if width < MIN_HEAD_DIM:
        return max(WIDTH_MULTIPLE, round(width / WIDTH_MULTIPLE) * WIDTH_MULTIPLE), 1
    heads = max(1, round(width / HEAD_DIM), min(min_heads, int(width // MIN_HEAD_DIM)))
    heads = max(heads, math.ceil(width / MAX_HEAD_DIM - 1e-9))
    per_head = round(width / heads / WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    per_head = min(MAX_HEAD_DIM, max(MIN_HEAD_DIM, per_head))
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


def _with(cfg: ArchConfig, base: ArchConfig, depth: int, d_model: int, heads: int, span, ffn=None):
    changes: dict[str, Any] = {"depth": depth, "d_model": d_model, "n_heads": heads}
    if base.unique_blocks:  # keep the sharing pattern: about the same layers per block
        shared = round(depth * base.unique_blocks / base.depth)
        changes["unique_blocks"] = min(depth, max(1, shared))
    name = ATTENTION.get(base.attention).span_param
    if name is not None and span is not None:
        changes["attention_params"] = dataclasses.replace(cfg.attention_params, **{name: span})
    if ffn is not None:
        changes["ffn_mult"] = ffn
    if base.layer_attention:  # a hybrid keeps its pattern: the base's ratio and placement
        changes["layer_attention"] = resize(base.layer_attention, base.depth, depth)
    return cfg.replace(**changes)


def ideal_shape(base: ArchConfig, coeffs: Coefficients, phi: float) -> tuple[float, float, float]:
    """(depth, width, span) before rounding."""
    span = base.span or 1
    sign = -1 if ATTENTION.get(base.attention).span_param == "stride" else 1
    return (
        base.depth * _power(coeffs.alpha, phi),
        base.d_model * _power(coeffs.beta, phi),
        span * _power(coeffs.gamma, sign * phi),
    )


def _power(c: float, phi: float) -> float:
    """c ** phi, capped far beyond any real model instead of overflowing."""
    return math.exp(max(-700.0, min(700.0, phi * math.log(c))))


def scale_config(
    base: ArchConfig, coeffs: Coefficients, phi: float, floor: ArchConfig | None = None
) -> ArchConfig:
    """The base grown by `phi` units; `floor` keeps depth, width and span at least those of a
    config scaled to a smaller target, so they never shrink as the target grows."""
    d, w, s = ideal_shape(base, coeffs, phi)
    depth = round_depth(min(d, LIMITS["depth"]))  # ArchConfig's size limits cap the growth
    d_model, heads = round_width(min(w, LIMITS["d_model"]), base.n_heads)
    if floor is not None:
        depth = max(depth, floor.depth)
        if d_model < floor.d_model:
            d_model, heads = floor.d_model, floor.n_heads
    span = None
    name = ATTENTION.get(base.attention).span_param
    if name is not None:
        span = round_span(base, s)
        if floor is not None and name != "stride":
            span = max(cast(int, span), cast(int, floor.span))
    return _with(base, base, depth, d_model, heads, span)


def phi_for(target: float, base_flops: float) -> float:
    """Units of phi that take the base to `target` if FLOPs double per unit (a first guess)."""
    return math.log2(target / base_flops)


def fit_to_target(
    base: ArchConfig,
    coeffs: Coefficients,
    target: float,
    measure: Measure,
    floor: ArchConfig | None = None,
    low: float | None = None,
    avoid: Callable[[ArchConfig], bool] | None = None,
    shortfall: float = SHORTFALL_WEIGHT,
) -> tuple[ArchConfig, float]:
    """(config, phi) whose measured FLOPs land in [0.90, 1.00] x target (or [low, target]):
    the shape near the coefficients' path that is closest to their ideal one, the unused
    budget counted with weight `shortfall`; on a tie, the path's own rounded config, then the
    usual heads for the width. ScalingError if no config near the path lands. A config for
    which `avoid` is true is never returned (the grid uses it to keep its points distinct):
    the nearest other shape in the band is."""
    lo, hi = _bracket(base, coeffs, target, measure, floor)
    best = scale_config(base, coeffs, lo, floor)
    low = TARGET_WINDOW[0] * target if low is None else low
    allowed = (lambda cfg: True) if avoid is None else (lambda cfg: not avoid(cfg))
    if measure(best) >= low and allowed(best) and shortfall == 0:
        return best, lo
    ideal = ideal_shape(base, coeffs, lo)
    over = scale_config(base, coeffs, hi, floor)  # the first rounded config above the target
    inside, below, above = _nearby(
        base, (best, over), floor, ideal, (low, target), measure, allowed, shortfall
    )
    if inside:
        return inside, lo
    if measure(best) < low or (not below and above is None):  # (every shape avoided)
        below = max(below, measure(best))
    nearest = below if above is None or target - below <= above - target else above
    raise ScalingError(
        f"no config near coefficients {coeffs.as_tuple()} lands in [{low:,.0f}, "
        f"{target:,.0f}] FLOPs; the nearest reachable is {nearest:,} FLOPs "
        f"({format_flops(nearest)})",
        nearest=nearest,
    )


def _nearby(base, starts, floor, ideal, window, measure, allowed, shortfall=0.0):
    """(the allowed shape in `window` nearest the ideal one or None, the largest FLOPs below
    the window, the smallest above it) over the shapes around `starts` (the first, the path's
    rounded config, included), FFN ratios included: the distance to the ideal shape
    (`_distance`) plus `shortfall` x log(top of the window / FLOPs) decides; ties go to the
    first start, then to the usual heads for the width (`round_width`). (Trying FFN ratios
    only when no other shape landed made a depth-led fit drop its second layer: recall's 2x64
    base at 2x landed on 1x96 with one head, 0.69 + 0.41 away, rather than on 2x64 with FFN
    4.5; docs/results.md 0b.)"""
    low, high = window
    best: list = []  # the lowest (rank, shape) in the window so far, when there is one
    outside: list[int] = []  # FLOPs of the shapes that missed the window

    def consider(cand: ArchConfig) -> None:
        f = measure(cand)
        if not low <= f <= high:
            outside.append(f)
        elif allowed(cand):
            entry = (*_rank(cand, f, ideal, base, high, shortfall, starts[0]), cand)
            if not best or entry < best[0]:
                best[:] = [entry]

    def hopeless(width: int, span, ffn: float) -> bool:
        """Depth aside, the shape is already further from the ideal than the best found (the
        depth term and the unused budget only add): not worth building and measuring."""
        return bool(best) and _part(width, span, ffn, ideal, base) > best[0][0] + TIE

    consider(starts[0])
    for k in sorted(FFN_STEPS, key=lambda k: abs(math.log(k))):
        if best and best[0][0] <= FFN_WEIGHT * abs(math.log(k)):
            break  # this FFN ratio alone costs more than the best shape found: none can win
        for cfg in dict.fromkeys(starts):  # in order, once each
            for cand in _neighbours(cfg, base, floor, (k,), window, measure, hopeless):
                consider(cand)
    below = max((f for f in outside if f < low), default=0)
    above = min((f for f in outside if f > high), default=None)
    return (best[0][-1] if best else None), below, above


def _rank(cand, f, ideal, base, high, shortfall, path) -> tuple:
    """The sort key of a shape in the window: its score (`_distance` plus `shortfall` x the
    unused budget's log ratio), rounded so that scores within TIE tie; then the path's own
    config, the usual heads for the width (`round_width`), more FLOPs, and the JSON (a total
    order)."""
    score = _distance(cand, ideal, base) + shortfall * math.log(high / f)
    usual = round_width(cand.d_model, base.n_heads)[1] == cand.n_heads
    return (round(score / TIE) * TIE, cand != path, not usual, -f, cand.to_json())


def _part(width: int, span, ffn: float, ideal: tuple[float, float, float], base) -> float:
    """`_distance` without its depth term: a lower bound on the score of every depth."""
    _, w, s = ideal
    out = abs(math.log(width / w)) + FFN_WEIGHT * abs(math.log(ffn / base.ffn_mult))
    return out + (abs(math.log(span / s)) if span is not None else 0.0)


def _bracket(
    base: ArchConfig,
    coeffs: Coefficients,
    target: float,
    measure: Measure,
    floor: ArchConfig | None,
) -> tuple[float, float]:
    """(lo, hi): phi values whose rounded configs measure <= target and > target, found by
    measurement (doubling, then 40 bisection steps), not by assuming how FLOPs grow."""
    start = scale_config(base, coeffs, 0.0, floor)
    if measure(start) > target:
        raise ScalingError(
            f"target {target:,.0f} FLOPs is below the base ({measure(start):,} FLOPs)",
            nearest=measure(start),
        )
    lo, hi = 0.0, 1.0
    while measure(scale_config(base, coeffs, hi, floor)) <= target:
        lo, hi = hi, 2 * hi
        if hi > MAX_PHI:
            top = measure(scale_config(base, coeffs, lo, floor))
            raise ScalingError(
                f"coefficients {coeffs.as_tuple()} stop growing below the target "
                f"{target:,.0f} FLOPs (a span reaches the sequence length, or a size hits "
                f"spaces.config.LIMITS); the nearest reachable is {top:,} FLOPs "
                f"({format_flops(top)})",
                nearest=top,
            )
    for _ in range(40):  # bisection: the largest rounded config not above the target
        mid = (lo + hi) / 2
        if measure(scale_config(base, coeffs, mid, floor)) <= target:
            lo = mid
        else:
            hi = mid
    return lo, hi


def _distance(cfg: ArchConfig, ideal: tuple[float, float, float], base: ArchConfig) -> float:
    """How far a shape is from the coefficients' ideal one: the sum of |log ratio| per axis,
    and FFN_WEIGHT x |log ratio| for a changed FFN ratio. (It counted double until the text
    study's 2x target: that took 2x96, dropping the half layer the balanced coefficients asked
    for, over 3x80 with FFN 3.5x, which trained better under six seeds of six; docs/results.md
    0b.)"""
    depth = abs(math.log(cfg.depth / ideal[0]))
    return depth + _part(cfg.d_model, cfg.span, cfg.ffn_mult, ideal, base)


def _neighbours(cfg, base, floor, ffn_steps, window, measure, hopeless=None):
    """Shapes around `cfg`: heads +-1, every head dim in range, a few spans and FFN ratios
    (0.5x-1.5x, the finest knob a model without a span has); for each, the depths that land
    in `window` (FLOPs grow linearly with depth, so two counts give them), and the depths just
    outside it. Never below the floor or the base, never deeper than 4x `cfg` (+4). A (width,
    span, FFN ratio) for which `hopeless` is true is skipped."""
    min_depth = max(base.depth, floor.depth if floor else 1)
    max_depth = 4 * cfg.depth + 4
    min_width = max(floor.d_model if floor else 0, min(base.d_model, cfg.d_model))
    ffns = [base.ffn_mult * k for k in ffn_steps]
    low, high = window
    spans = _spans(cfg, floor)
    for heads, width in _head_shapes(cfg, min_width, min(cfg.n_heads, base.n_heads)):
        for span, ffn in itertools.product(spans, ffns):
            if hopeless is not None and hopeless(width, span, ffn):
                continue
            try:
                one = _with(cfg, base, min_depth, width, heads, span, ffn)
                two = _with(cfg, base, min_depth + 1, width, heads, span, ffn)
            except ValueError:
                continue
            f1, per_layer = measure(one), measure(two) - measure(one)
            if per_layer <= 0:
                continue
            first = min_depth + max(0, math.ceil((low - f1) / per_layer))
            last = min_depth + max(0, math.floor((high - f1) / per_layer))
            for depth in range(max(min_depth, first - 1), min(max_depth, last + 1) + 1):
                try:
                    yield _with(cfg, base, depth, width, heads, span, ffn)
                except ValueError:
                    continue


def _spans(cfg: ArchConfig, floor: ArchConfig | None) -> list:
    """`cfg`'s span, then a few rounded spans around it (never below the floor's)."""
    cls = ATTENTION.get(cfg.attention)
    spans: list = [cfg.span]
    if cls.span_param is not None and cfg.span is not None:
        unit = 1 if cls.span_param == "stride" else SPAN_MULTIPLE
        near = {round_span(cfg, cfg.span + k * unit) for k in (-2, -1, 1, 2, 4)}
        least = floor.span if floor is not None else None
        if least is not None and cls.span_param != "stride":
            near = {s for s in near if s is not None and s >= least}
        spans += sorted(near - {cfg.span})
    return spans


def _head_shapes(cfg: ArchConfig, min_width: int, min_heads: int = 1):
    """(heads, width) around `cfg`: heads +-1 (never below `min_heads`: the fit keeps the
    base's heads) and every head dim in range (multiples of 8, 32-128; 8-64 for very narrow
    models), widths in [min_width, 1.5 x width + 128]."""
    dims = range(MIN_HEAD_DIM, MAX_HEAD_DIM + 1, WIDTH_MULTIPLE)
    if cfg.d_model < 2 * MIN_HEAD_DIM:
        dims = range(WIDTH_MULTIPLE, 2 * MIN_HEAD_DIM + 1, WIDTH_MULTIPLE)
    for heads in sorted({max(1, min_heads, cfg.n_heads - 1), cfg.n_heads, cfg.n_heads + 1}):
        for per_head in dims:
            width = heads * per_head
            if width < min_width or width > 1.5 * cfg.d_model + MAX_HEAD_DIM:
                continue
            if width >= MIN_HEAD_DIM and heads > 1 and per_head < MIN_HEAD_DIM:
                continue
            yield heads, width


def scale_to_targets(
    base: ArchConfig, coeffs: Coefficients, targets: list[float], measure: Measure
) -> list[tuple[float, ArchConfig, float]]:
    """(target, config, phi) for each target in increasing order; depth, width and span never
    shrink as the target grows."""
    out, floor = [], None
    for target in sorted(targets):
        cfg, phi = fit_to_target(base, coeffs, target, measure, floor)
        out.append((target, cfg, phi))
        floor = cfg
    return out
