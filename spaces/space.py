"""The search space: a declarative description that turns an Optuna-style trial into a config.

`SearchSpace` lists candidate values per dimension; `suggest(trial, interface)` asks the trial
for one value per dimension and returns an `ArchConfig`. The trial is duck-typed (it needs only
`suggest_categorical`), so this module does not import Optuna.

No trial is wasted on an invalid combination: width is derived as heads x head_dim (so it is
always divisible), variants that cannot serve the task (a bidirectional-only variant on a
causal task) are left out, and each variant's parameter choices are filtered by the sequence
length. Variant parameters are named `<variant>.<field>`, so they exist only in trials of that
variant. A study preset narrows or replaces any list (see `studies/`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

from spaces.attention import ATTENTION
from spaces.config import POSITIONS, ArchConfig
from spaces.flops import estimate_flops
from spaces.layers import PLACEMENTS, pattern_layers

# ALBERT-style sharing choices -> number of distinct blocks for a given depth (0: no sharing)
SHARING = {
    "none": lambda depth: 0,
    "all": lambda depth: 1 if depth > 1 else 0,  # one layer has nothing to share
    "pairs": lambda depth: -(-depth // 2) if depth > 1 else 0,  # consecutive pairs share
}


# the hybrid dimensions and their defaults (no patterns: every layer has the trial's attention)
HYBRID_DEFAULTS = {"patterns": ("none",), "global_variants": ("full",), "global_layers": (1, 2)}


def _one_of(field: str, values: Sequence[Any], allowed: list) -> None:
    for v in values:
        if v not in allowed:
            raise ValueError(f"{field}: {v!r} is not one of {allowed}")


def _known_variants(field: str, names: Sequence[str]) -> None:
    for v in names:
        if v not in ATTENTION:
            raise ValueError(
                f"{field}: unknown variant {v!r}; allowed: {', '.join(ATTENTION.names())}"
            )


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Candidate values for each dimension of the architecture."""

    variants: tuple[str, ...] = ()  # empty: every registered variant valid for the task
    depth: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    n_heads: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    head_dim: tuple[int, ...] = (16, 32, 64, 128)
    ffn_mult: tuple[float, ...] = (1.0, 2.0, 4.0)
    sharing: tuple[str, ...] = ("none", "all")  # ALBERT cross-layer sharing, see SHARING
    # per-variant overrides of the variant's own `search_choices`, e.g. {"window": {"window": [32]}}
    params: dict[str, dict[str, list[Any]]] = dataclasses.field(default_factory=dict)
    # hybrid stacks (spaces/layers.py): "none" = every layer uses the trial's attention; a
    # placement ("spread", "last", "first_last") swaps k of its layers for a global variant
    patterns: tuple[str, ...] = ("none",)
    global_variants: tuple[str, ...] = ("full",)  # the global layers' attention
    global_layers: tuple[int, ...] = (1, 2)  # k, capped at depth - 1
    # how every candidate encodes positions (ArchConfig.positions): one value, not searched
    positions: str = "rope"

    def __post_init__(self) -> None:
        for name in (*HYBRID_DEFAULTS, "variants", "depth", "n_heads", "head_dim", "ffn_mult"):
            self._listed(name, allow_empty=name == "variants")
        self._listed("sharing", allow_empty=False)
        _one_of("space.patterns", self.patterns, ["none", *PLACEMENTS])
        _one_of("space.sharing", self.sharing, sorted(SHARING))
        _one_of("space.positions", [self.positions], list(POSITIONS))
        _known_variants("space.global_variants", self.global_variants)
        _known_variants("space.variants", self.variants)
        for k in self.global_layers:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"space.global_layers: expected integers >= 1, got {k!r}")
        for variant, fields in self.params.items():
            if variant not in ATTENTION:
                raise ValueError(f"space.params: unknown variant {variant!r}")
            allowed = [f.name for f in dataclasses.fields(ATTENTION.get(variant).Params)]
            for field in fields:
                if field not in allowed:
                    raise ValueError(
                        f"space.params.{variant}: unknown field {field!r}; allowed: {allowed}"
                    )

    def _listed(self, name: str, allow_empty: bool) -> None:
        """Store field `name` as a tuple; ValueError unless it is a (non-empty) list."""
        value = getattr(self, name)
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise ValueError(f"space.{name} must be a list of values, got {value!r}")
        object.__setattr__(self, name, tuple(value))
        if not allow_empty and not getattr(self, name):
            raise ValueError(f"space.{name} must list at least one value")

    # -- what the space holds for a task ----------------------------------------------------
    def variant_choices(self, variant: str, seq_len: int, causal: bool) -> dict[str, list] | None:
        """Valid choices per parameter at this length (None if the variant cannot fit): the
        values that appear in at least one valid combination, so a field is not lost to another
        field's default (window 128 hid every window choice at seq_len 64)."""
        cls = ATTENTION.get(variant)
        choices = {**cls.search_choices, **self.params.get(variant, {})}
        keys = list(choices)
        good: dict[str, list] = {k: [] for k in keys}
        for combo in itertools.product(*(choices[k] for k in keys)):
            params = dataclasses.replace(cls.Params(), **dict(zip(keys, combo)))
            try:
                cls.validate(params, seq_len, causal)
            except ValueError:
                continue
            for key, value in zip(keys, combo):
                if value not in good[key]:
                    good[key].append(value)
        if keys and not good[keys[0]]:
            return None
        return {k: [v for v in choices[k] if v in good[k]] for k in keys}

    def valid_variants(
        self, seq_len: int, causal: bool, names: Sequence[str] | None = None
    ) -> list[str]:
        field = "variants" if names is None else "global_variants"
        names = list(self.variants if names is None else names) or ATTENTION.names()
        out = []
        for n in names:
            cls = ATTENTION.get(n)
            if not (cls.supports_causal if causal else cls.supports_bidirectional):
                continue
            if self.variant_choices(n, seq_len, causal) is not None:
                out.append(n)
        if not out:
            raise ValueError(
                f"space.{field}: none of {names} can serve a "
                f"{'causal' if causal else 'bidirectional'} task at seq_len={seq_len}"
            )
        return out

    # -- sampling ---------------------------------------------------------------------------
    def suggest(self, trial: Any, interface: dict[str, Any]) -> ArchConfig:
        """One config from the trial's choices; every combination is valid by construction."""
        seq_len, causal = interface["seq_len"], interface["causal"]
        variant, params = self._suggest_attention(trial, "", None, seq_len, causal)
        depth = trial.suggest_categorical("depth", list(self.depth))
        n_heads = trial.suggest_categorical("n_heads", list(self.n_heads))
        head_dim = trial.suggest_categorical("head_dim", list(self.head_dim))
        ffn_mult = trial.suggest_categorical("ffn_mult", list(self.ffn_mult))
        sharing = trial.suggest_categorical("sharing", list(self.sharing))
        layers = self._suggest_pattern(trial, seq_len, causal, depth)
        return self._build(
            interface, variant, params, depth, n_heads, head_dim, ffn_mult, sharing, layers
        )

    def _suggest_attention(
        self, trial: Any, prefix: str, names: Sequence[str] | None, seq_len: int, causal: bool
    ) -> tuple[str, dict[str, Any]]:
        """A variant (parameter `<prefix>attention`) and its params (`<prefix><variant>.<f>`);
        names None: the space's variants."""
        variant = trial.suggest_categorical(
            f"{prefix}attention", self.valid_variants(seq_len, causal, names)
        )
        choices = self.variant_choices(variant, seq_len, causal)
        assert choices is not None  # valid_variants keeps only variants that fit
        params = {
            field: trial.suggest_categorical(f"{prefix}{variant}.{field}", values)
            for field, values in choices.items()
        }
        return variant, params

    def _suggest_pattern(self, trial: Any, seq_len: int, causal: bool, depth: int):
        """The hybrid pattern's per-layer attention, or None. A pattern family, not 7^depth
        choices: a placement, the global layers' variant and params, and how many (k). A space
        without patterns asks the trial nothing, so its studies' parameters stay as before."""
        if self.patterns == ("none",):
            return None
        pattern = trial.suggest_categorical("pattern", list(self.patterns))
        if pattern == "none":
            return None
        variant, params = self._suggest_attention(
            trial, "global.", self.global_variants, seq_len, causal
        )
        k = trial.suggest_categorical("global.layers", list(self.global_layers))
        spec = {"attention": variant, "attention_params": params}
        where = set(pattern_layers(depth, pattern, k))
        return [spec if i in where else None for i in range(depth)]

    def _build(
        self, interface, variant, params, depth, n_heads, head_dim, ffn_mult, sharing, layers=None
    ):
        # params must be validated jointly: a combination can be invalid although each value is
        # not (e.g. window's global_tokens with causal). Variants keep such fields out of search.
        # A hybrid stack is never shared: shared layers must share their attention.
        unique = 0 if layers else SHARING[sharing](depth)
        return ArchConfig(
            vocab_size=interface["vocab_size"],
            seq_len=interface["seq_len"],
            causal=interface["causal"],
            num_classes=interface.get("num_classes", 0),
            attention=variant,
            attention_params=params,
            depth=depth,
            d_model=n_heads * head_dim,
            n_heads=n_heads,
            ffn_mult=float(ffn_mult),
            unique_blocks=unique,
            layer_attention=layers,
            positions=self.positions,
        )

    def baselines(self, interface: dict[str, Any], budget: float) -> list[dict[str, Any]]:
        """Trial parameters of the plainest strong models in the space: full attention, head
        dim 64 and 32, FFN 4x (or the widest offered), no sharing. For each head dim, the
        largest shape (most forward FLOPs by the closed form) within `budget`, which is the
        hand baseline `spaces.baselines` and `benchmarks.outcome` use, and, when that one has a
        single layer, also the largest with at least two layers (a one-layer Transformer cannot
        form induction heads). The search starts from these, so its answer is never a model the
        obvious hand choice would beat on the search's own evaluation."""
        seq_len, causal = interface["seq_len"], interface["causal"]
        if "full" not in self.valid_variants(seq_len, causal):
            return []
        ffn = 4.0 if 4.0 in self.ffn_mult else max(self.ffn_mult)
        sharing = "none" if "none" in self.sharing else self.sharing[0]
        out: list[dict[str, Any]] = []
        for head_dim in (64, 32):
            if head_dim not in self.head_dim:
                continue
            shapes = []
            for depth in self.depth:
                for heads in self.n_heads:
                    cfg = self._build(interface, "full", {}, depth, heads, head_dim, ffn, sharing)
                    flops = estimate_flops(cfg)
                    if flops <= budget:
                        shapes.append((flops, -depth, depth, heads))
            if not shapes:
                continue
            # the largest; then the largest with at least two layers (the same one if it has)
            for rank in (lambda x: x[:2], lambda x: (min(x[2], 2), *x[:2])):
                _, _, depth, heads = max(shapes, key=rank)
                params = {
                    "attention": "full",
                    "depth": depth,
                    "n_heads": heads,
                    "head_dim": head_dim,
                    "ffn_mult": ffn,
                    "sharing": sharing,
                }
                if params not in out:
                    out.append(params)
        return out

    def corners(self, interface: dict[str, Any]) -> list[ArchConfig]:
        """The cheapest config of each variant/parameter combination (smallest shape)."""
        seq_len, causal = interface["seq_len"], interface["causal"]
        out = []
        for variant in self.valid_variants(seq_len, causal):
            choices = self.variant_choices(variant, seq_len, causal)
            assert choices is not None  # valid_variants keeps only variants that fit
            keys = list(choices)
            for combo in itertools.product(*(choices[k] for k in keys)):
                out.append(
                    self._build(
                        interface,
                        variant,
                        dict(zip(keys, combo)),
                        min(self.depth),
                        min(self.n_heads),
                        min(self.head_dim),
                        min(self.ffn_mult),
                        "none",
                    )
                )
        return out

    # -- presets and storage ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Fields as lists; the hybrid fields only when they differ from their defaults, so a
        space without patterns is stored (and compared on resume) exactly as before. Learned
        positions, what every study had before `positions` existed, are left out too: such a
        study resumes with `positions = "learned"` in its preset, and not without it."""
        d = dataclasses.asdict(self)
        for name, default in HYBRID_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        if d["positions"] == "learned":
            del d["positions"]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SearchSpace:
        """The space a study stored with `to_dict` (which leaves learned positions out)."""
        return cls.from_dict({"positions": stored_positions(data), **data})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown space field(s) {unknown}; allowed: {', '.join(known)}")
        return cls(**data)


def stored_positions(data: Any) -> str:
    """The positions of a space stored with `SearchSpace.to_dict`: absent means learned (every
    study made before the field, and learned ones since)."""
    return data.get("positions", "learned") if isinstance(data, dict) else "learned"
