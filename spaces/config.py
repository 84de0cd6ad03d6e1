"""`ArchConfig`: one point of the search space, plain data that builds a model on its own.

A config round-trips exactly through JSON (`to_json` / `from_dict`), carries a schema version,
and refuses unknown keys or impossible combinations with a `ValueError` that names the field,
the allowed values and an example. Everything downstream (FLOP counting, the proxy trainer,
scaling, export) works on this one object.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from spaces.atomic import write_text
from spaces.attention import ATTENTION, NoParams
from spaces.layers import LayerAttention, make_params, parse_layer, resize, variant_class

SCHEMA_VERSION = 2  # 2 added `positions`; a version-1 file has learned positions
READABLE_VERSIONS = (1, 2)
NORMS = ("pre", "post")
POSITIONS = ("rope", "learned")
# Upper bounds on sizes, far above any model trained today (GPT-3: depth 96, d_model 12288;
# Llama 3: vocab 128K), so an untrusted file cannot ask for petabytes. Memory against the
# actual device is checked by `spaces.memory.check_fits` before allocation.
LIMITS = {
    "vocab_size": 2**24,
    "seq_len": 2**20,
    "depth": 2**16,
    "d_model": 2**16,
    "n_heads": 1024,
    "num_classes": 2**20,
}


def parse_config_text(text: str, path: str | Path) -> Any:
    """The JSON (or, for a .yaml/.yml `path`, YAML) document in `text`; ValueError naming `path`
    (and the YAML line) when it does not parse."""
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}" if where is not None else ""
            raise ValueError(
                f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None


@dataclasses.dataclass(frozen=True)
class ArchConfig:
    """A Transformer: task interface, attention variant, shape, sharing and regularisation."""

    # -- task interface: what the data looks like ------------------------------------------
    vocab_size: int  # tokens in the embedding table (and LM head, which is tied to it)
    seq_len: int  # context length the model is built for (position tables, Linformer's n)
    causal: bool  # True: position t sees only <= t (language modelling); False: bidirectional
    num_classes: int = 0  # 0: LM head over the vocabulary; >= 2: mean-pooled classifier
    # -- attention ---------------------------------------------------------------------------
    attention: str = "full"  # variant name, see spaces.attention.ATTENTION.names()
    attention_params: Any = None  # the variant's Params dataclass (a dict is converted)
    # hybrid stacks: one entry per layer, None = the attention above (spaces/layers.py)
    layer_attention: Any = None
    # -- shape ------------------------------------------------------------------------------
    depth: int = 4  # number of Transformer layers
    d_model: int = 128  # residual width
    n_heads: int = 4  # attention heads; d_model must be divisible by n_heads
    ffn_mult: float = 4.0  # FFN hidden width = round(ffn_mult * d_model)
    norm: str = "pre"  # "pre"-LN (stable, default) or "post"-LN (original Transformer)
    # "rope": rotary queries and keys in every layer (default, spaces/rotary.py); "learned": a
    # learned absolute position table added to the token embeddings (GPT-2, BERT)
    positions: str = "rope"
    # ALBERT (Lan et al. 2019, arXiv:1909.11942) cross-layer sharing: 0 = none; k = only k
    # distinct blocks, consecutive layers in groups of depth/k share one (1 = all layers share).
    unique_blocks: int = 0
    dropout: float = 0.0  # residual and embedding dropout
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        variant = self._variant_class()
        object.__setattr__(self, "attention_params", make_params(variant, self.attention_params))
        object.__setattr__(self, "layer_attention", self._parse_layers())
        self._validate(variant)

    # -- derived quantities -----------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def d_ff(self) -> int:
        return max(1, round(self.ffn_mult * self.d_model))

    @property
    def span(self) -> int | None:
        """The variant's reach parameter (window, bucket_size, block, rank, stride) or None."""
        name = self._variant_class().span_param
        return None if name is None else getattr(self.attention_params, name)

    def layer_to_block(self) -> list[int]:
        """Which weight block each layer uses (ALBERT-style contiguous groups)."""
        k = self.unique_blocks or self.depth
        return [i * k // self.depth for i in range(self.depth)]

    def layer_specs(self) -> list[LayerAttention]:
        """Each layer's attention (the base one where `layer_attention` has None)."""
        base = LayerAttention(self.attention, self.attention_params)
        return [base if s is None else s for s in (self.layer_attention or [None] * self.depth)]

    def replace(self, **changes: Any) -> ArchConfig:
        """A copy with some fields changed, validated again. A hybrid stack whose depth
        changes keeps its pattern (`spaces.layers.resize`) unless `layer_attention` is given."""
        if "depth" in changes and "layer_attention" not in changes and self.layer_attention:
            changes["layer_attention"] = resize(self.layer_attention, self.depth, changes["depth"])
        return dataclasses.replace(self, **changes)

    def _parse_layers(self) -> tuple[LayerAttention | None, ...] | None:
        value = self.layer_attention
        if value is None:
            return None
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise ValueError(
                "layer_attention must be a list with one entry per layer (null = the base "
                f"attention), got {type(value).__name__}"
            )
        layers = [parse_layer(entry, i) for i, entry in enumerate(value)]
        if _is_int(self.depth) and len(layers) != self.depth:
            raise ValueError(
                f"layer_attention has {len(layers)} entries but depth is {self.depth}; give "
                "one per layer (null = the base attention)"
            )
        base = LayerAttention(self.attention, self.attention_params)
        layers = [None if spec == base else spec for spec in layers]
        return tuple(layers) if any(spec is not None for spec in layers) else None

    # -- serialisation ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["attention_params"] = dataclasses.asdict(self.attention_params)
        if self.layer_attention is None:
            del d["layer_attention"]  # plain configs keep their schema-1 JSON exactly
        else:
            d["layer_attention"] = [
                None if s is None else dataclasses.asdict(s) for s in self.layer_attention
            ]
        return d

    def identity(self) -> str:
        """What decides the model this config builds, as canonical JSON: configs with equal
        identity build the same model (the same function, FLOPs and weights from one seed) even
        where a field differs that has no effect, e.g. linear attention's `chunk` on a
        bidirectional task (each variant's `identity`), or `unique_blocks` equal to `depth`.
        The search reuses a result instead of training the same model twice by it."""
        d = self.to_dict()
        del d["schema_version"]
        if self.unique_blocks == self.depth:  # one block per layer: no sharing
            d["unique_blocks"] = 0
        d["attention_params"] = self._variant_class().identity(
            self.attention_params, self.seq_len, self.causal
        )
        if self.layer_attention is not None:
            d["layer_attention"] = [
                None
                if s is None
                else [
                    s.attention,
                    variant_class(s.attention).identity(
                        s.attention_params, self.seq_len, self.causal
                    ),
                ]
                for s in self.layer_attention
            ]
        return json.dumps(d, sort_keys=True)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Build from a plain dict; unknown keys and a wrong schema version are errors."""
        if not isinstance(data, dict):
            raise ValueError(f"ArchConfig.from_dict expects a mapping, got {type(data).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown ArchConfig field(s) {unknown}; allowed: {', '.join(known)}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if version not in READABLE_VERSIONS or isinstance(version, bool):
            raise ValueError(
                f"schema_version: this release reads versions {READABLE_VERSIONS}, got {version!r}"
            )
        if version == 1:  # written before `positions` existed: every model had learned ones
            if "positions" in data:
                raise ValueError("positions: not a schema_version 1 field; use schema_version 2")
            data = {**data, "positions": "learned", "schema_version": SCHEMA_VERSION}
        missing = [n for n in ("vocab_size", "seq_len", "causal") if n not in data]
        if missing:
            raise ValueError(f"missing ArchConfig field(s) {missing}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls, path: str | Path) -> ArchConfig:
        """Load a config from .json or .yaml; an exported file's "config" section is used."""
        path = Path(path)
        data = parse_config_text(path.read_text(encoding="utf-8"), path)
        if isinstance(data, dict) and "config" in data and "vocab_size" not in data:
            data = data["config"]  # an export: {"config": ..., "provenance": ...}
        return cls.from_dict(data)

    def to_file(self, path: str | Path) -> None:
        write_text(path, self.to_json() + "\n")  # atomic: temp file, then rename

    # -- validation -------------------------------------------------------------------------
    def _variant_class(self):
        return variant_class(self.attention)

    def _validate(self, variant) -> None:
        _int(self, "vocab_size", 2)
        _int(self, "seq_len", 1)
        if not isinstance(self.causal, bool):
            raise ValueError(f"causal must be true or false, got {self.causal!r}")
        if not _is_int(self.num_classes) or self.num_classes == 1 or self.num_classes < 0:
            raise ValueError(f"num_classes must be 0 (LM head) or >= 2, got {self.num_classes!r}")
        if self.num_classes > LIMITS["num_classes"]:
            raise ValueError(
                f"num_classes must be <= {LIMITS['num_classes']:,}, got {self.num_classes:,}"
            )
        self._validate_shape()
        self._validate_attention(variant)

    def _validate_shape(self) -> None:
        """Depth, width, heads, FFN, norm, sharing and dropout."""
        _int(self, "depth", 1)
        _int(self, "d_model", 1)
        _int(self, "n_heads", 1)
        if self.d_model % self.n_heads:
            divisors = [h for h in range(1, min(self.d_model, 64) + 1) if self.d_model % h == 0]
            raise ValueError(
                f"n_heads: d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"allowed n_heads for this width: {divisors}"
            )
        if isinstance(self.ffn_mult, bool) or not isinstance(self.ffn_mult, (int, float)):
            raise ValueError(f"ffn_mult must be a positive number (e.g. 4), got {self.ffn_mult!r}")
        if not self.ffn_mult > 0 or self.ffn_mult > 64:
            raise ValueError(f"ffn_mult must be in (0, 64] (e.g. 4), got {self.ffn_mult!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.positions not in POSITIONS:
            raise ValueError(
                f"positions must be one of {POSITIONS} (rotary or a learned table), "
                f"got {self.positions!r}"
            )
        if not _is_int(self.unique_blocks) or not 0 <= self.unique_blocks <= self.depth:
            raise ValueError(
                f"unique_blocks must be an integer in [0, depth={self.depth}] "
                f"(0 = no sharing, 1 = ALBERT all-shared), got {self.unique_blocks!r}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")

    def _validate_attention(self, variant) -> None:
        """The attention serves this task (causal or not) with these params, in every layer."""
        causal_ok = [n for n in ATTENTION.names() if ATTENTION.get(n).supports_causal]
        if self.causal and not variant.supports_causal:
            raise ValueError(
                f"attention: {self.attention!r} is bidirectional only and cannot serve a causal "
                f"task; allowed for causal tasks: {', '.join(causal_ok)}"
            )
        if not self.causal and not variant.supports_bidirectional:
            raise ValueError(f"attention: {self.attention!r} supports causal tasks only")
        variant.validate(self.attention_params, self.seq_len, self.causal)
        if self.layer_attention is not None:
            self._validate_layers(causal_ok)

    def _validate_layers(self, causal_ok: list[str]) -> None:
        for i, spec in enumerate(self.layer_attention):
            if spec is None:
                continue
            where, cls = f"layer_attention[{i}]", ATTENTION.get(spec.attention)
            if self.causal and not cls.supports_causal:
                raise ValueError(
                    f"{where}.attention: {spec.attention!r} is bidirectional only and cannot "
                    f"serve a causal task; allowed for causal tasks: {', '.join(causal_ok)}"
                )
            if not self.causal and not cls.supports_bidirectional:
                raise ValueError(
                    f"{where}.attention: {spec.attention!r} supports causal tasks only"
                )
            try:
                cls.validate(spec.attention_params, self.seq_len, self.causal)
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
        owner: dict[int, int] = {}
        specs = self.layer_specs()
        for layer, block in enumerate(self.layer_to_block()):
            first = owner.setdefault(block, layer)
            if specs[layer] != specs[first]:
                raise ValueError(
                    f"unique_blocks: layers {first} and {layer} share block {block} (ALBERT "
                    f"sharing) but use different attention ({specs[first].label()} vs "
                    f"{specs[layer].label()}); shared layers share their attention module, so "
                    "give them the same attention or lower the sharing"
                )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(cfg: ArchConfig, field: str, low: int) -> None:
    value, high = getattr(cfg, field), LIMITS[field]
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"{field} must be an integer in [{low}, {high:,}], got {value!r}")


__all__ = ["LIMITS", "POSITIONS", "SCHEMA_VERSION", "ArchConfig", "NoParams", "parse_config_text"]
