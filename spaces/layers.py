"""Hybrid stacks: a different attention in some layers (issue 16).

A config names its base attention once (`attention`, `attention_params`); a hybrid config adds
`layer_attention`, one entry per layer: ``None`` (the base) or a `LayerAttention` (a variant and
its params). Gemma's 5:1 local:global stack at depth 6 is

    attention="window", attention_params={"window": 64},
    layer_attention=[None, None, None, None, None, {"attention": "full"}]

Entries equal to the base are stored as ``None``, and a stack with no other entry is a plain
config (``layer_attention`` is then ``None`` and left out of its JSON), so equal models always
compare equal.

ALBERT sharing: layers that share a block share its weights *and* its attention module, so they
must use the same attention; a config whose shared group mixes kernels is refused, naming the
layers. (The q/k/v/o projections would fit any variant, but a variant's own parameters, e.g.
Linformer's E and F, would not.)

A searchable pattern is a family, not 7^depth choices: `pattern_layers(depth, placement, k)`
places k global layers by a placement rule; `resize` keeps a stack's pattern (its ratio and
placement) when depth changes, which compound scaling uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from spaces.attention import ATTENTION

PLACEMENTS = ("spread", "last", "first_last")  # where k global layers go, see pattern_layers


def make_params(variant, params: Any, where: str = "attention_params"):
    """The variant's Params from None, a dict or a Params instance (ValueError naming `where`)."""
    if params is None:
        return variant.Params()
    if isinstance(params, dict):
        fields = [f.name for f in dataclasses.fields(variant.Params)]
        unknown = sorted(set(params) - set(fields))
        if unknown:
            allowed = ", ".join(fields) if fields else "none (this variant has no parameters)"
            raise ValueError(
                f"{where}: unknown field(s) {unknown} for attention {variant.name!r}; "
                f"allowed: {allowed}"
            )
        return variant.Params(**params)
    if not isinstance(params, variant.Params):
        raise ValueError(
            f"{where}: expected {variant.Params.__name__} for attention {variant.name!r}, "
            f"got {type(params).__name__}"
        )
    return params


def variant_class(name: Any, where: str = "attention"):
    if not isinstance(name, str) or name not in ATTENTION:
        raise ValueError(
            f"{where}: unknown variant {name!r}; allowed: {', '.join(ATTENTION.names())} "
            f"(e.g. {where}='window')"
        )
    return ATTENTION.get(name)


@dataclasses.dataclass(frozen=True)
class LayerAttention:
    """One layer's attention: a registered variant and its params."""

    attention: str
    attention_params: Any = None

    def __post_init__(self) -> None:
        variant = variant_class(self.attention)
        object.__setattr__(self, "attention_params", make_params(variant, self.attention_params))

    def label(self) -> str:
        """Compact, e.g. "window64", "full", "lowrank16"."""
        name = ATTENTION.get(self.attention).span_param
        span = "" if name is None else str(getattr(self.attention_params, name))
        return f"{self.attention}{span}"


def parse_layer(entry: Any, index: int) -> LayerAttention | None:
    where = f"layer_attention[{index}]"
    if entry is None or isinstance(entry, LayerAttention):
        return entry
    if not isinstance(entry, dict):
        raise ValueError(
            f"{where}: expected null or a mapping such as {{'attention': 'full'}}, "
            f"got {type(entry).__name__}"
        )
    unknown = sorted(set(entry) - {"attention", "attention_params"})
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {unknown}; allowed: attention, attention_params"
        )
    if "attention" not in entry:
        raise ValueError(f"{where}: missing 'attention' (e.g. {{'attention': 'full'}})")
    variant = variant_class(entry["attention"], f"{where}.attention")
    params = make_params(variant, entry.get("attention_params"), f"{where}.attention_params")
    return LayerAttention(entry["attention"], params)


def pattern_layers(depth: int, placement: str, k: int) -> list[int]:
    """The indices of k global layers in a stack of `depth` (at least one base layer stays):
    "spread" ends with a global layer and spaces them evenly (Gemma's local:global rhythm),
    "last" takes the last k, "first_last" the first and the last (k > 2: evenly between)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    k = max(0, min(k, depth - 1))
    if k == 0:
        return []
    if placement == "last":
        return list(range(depth - k, depth))
    if placement == "spread":
        return sorted({depth - 1 - round(i * depth / k) for i in range(k)})
    if k == 1:
        return [depth - 1]
    return sorted({round(j * (depth - 1) / (k - 1)) for j in range(k)})  # both ends, evenly


def resize(layers: tuple, old_depth: int, new_depth: int) -> tuple | None:
    """The same pattern at another depth: each distinct non-base spec keeps its share of the
    layers (rounded, at least one, one base layer kept) and its placement (evenly spread
    specs stay spread, trailing ones stay trailing)."""
    if not layers or new_depth == old_depth:
        return layers or None
    out: list = [None] * new_depth
    for spec in dict.fromkeys(s for s in layers if s is not None):
        where = [i for i, s in enumerate(layers) if s == spec]
        k = max(1, round(len(where) * new_depth / old_depth))
        if where == list(range(old_depth - len(where), old_depth)):
            placement = "last"
        elif where[0] == 0 and where[-1] == old_depth - 1 and len(where) <= 2:
            placement = "first_last"
        else:
            placement = "spread"
        for i in pattern_layers(new_depth, placement, k):
            if out[i] is None:
                out[i] = spec
    return tuple(out) if any(s is not None for s in out) else None


def describe_stack(cfg) -> str:
    """A stack in one line: "window64", or "window64 x5 + full x1" for a hybrid."""
    base = LayerAttention(cfg.attention, cfg.attention_params).label()
    layers = cfg.layer_attention
    if not layers:
        return base
    counts: dict[str, int] = {base: 0}  # the base first, then the others as they appear
    for spec in layers:
        label = base if spec is None else spec.label()
        counts[label] = counts.get(label, 0) + 1
    return " + ".join(f"{label} x{n}" for label, n in counts.items() if n)


__all__ = [
    "PLACEMENTS",
    "LayerAttention",
    "describe_stack",
    "make_params",
    "parse_layer",
    "pattern_layers",
    "resize",
]
