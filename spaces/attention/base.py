"""The one attention signature every variant shares, and the q/k/v/o projections.

A variant declares its own parameters as a frozen dataclass, subclasses `Attention` over it
(`class WindowAttention(Attention[WindowParams])`: the type argument becomes `Params` and types
`self.params` and the classmethods' `params`), and implements only
`attend(q, k, v, key_mask, causal)`: the kernel that mixes values. Projections, head
splitting and merging live here, once, as in huggingface/transformers' attention backends.

Shapes: B batch, T sequence length, C = d_model, H heads, D = C // H head dimension.
Masks: `key_mask` is (B, T) bool, True for real tokens; padding sits at the end of a row.
Queries at padded positions may produce anything finite; real positions must not depend on
the content of padded ones.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Generic, TypeVar

import torch
from torch import nn

from spaces.registry import Registry


@dataclasses.dataclass(frozen=True)
class NoParams:
    """For variants without parameters of their own."""


P = TypeVar("P")


class Attention(nn.Module, Generic[P]):
    """Multi-head self-attention over a variant's parameters `P`; subclasses supply the kernel
    in `attend`."""

    name: ClassVar[str]
    Params: ClassVar[type[Any]] = NoParams  # set from the type argument: Attention[WindowParams]
    params: P
    supports_causal: ClassVar[bool] = True
    supports_bidirectional: ClassVar[bool] = True
    shared_qk: ClassVar[bool] = False  # Reformer ties keys to queries: no key projection
    # The parameter that sets how far a token sees (scaling grows it); None: no such knob.
    span_param: ClassVar[str | None] = None
    # Default search choices per parameter; spaces.space filters them by sequence length.
    search_choices: ClassVar[dict[str, list[Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if typing.get_origin(base) is Attention:
                (arg,) = typing.get_args(base)
                if isinstance(arg, type):
                    cls.Params = arg

    def __init__(self, d_model: int, n_heads: int, seq_len: int, params: P | None = None) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.seq_len = seq_len
        self.params = params if params is not None else self.Params()
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = None if self.shared_qk else nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)
        # rotary positions (spaces/rotary.py), set by the model when its config asks for them
        self.rotary: nn.Module | None = None
        # block masks of the CUDA FlexAttention path, per causal flag (spaces/attention/flex.py)
        self._flex_masks: dict[bool, dict] = {False: {}, True: {}}

    # -- the shared call ------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False
    ) -> torch.Tensor:
        """x (B, T, C), mask (B, T) bool or None -> (B, T, C)."""
        if causal and not self.supports_causal:
            raise ValueError(f"attention {self.name!r} does not support causal masking")
        B, T, C = x.shape
        q = self._heads(self.q_proj(x))  # (B, H, T, D)
        k = q if self.k_proj is None else self._heads(self.k_proj(x))  # (B, H, T, D)
        if self.rotary is not None:  # rotate by position before any variant's kernel
            q = self.rotary(q)
            k = q if self.k_proj is None else self.rotary(k)
        v = self._heads(self.v_proj(x))  # (B, H, T, D)
        y = self.attend(q, k, v, mask, causal)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.o_proj(y)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, T, _ = t.shape
        return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        causal: bool,
    ) -> torch.Tensor:
        """The variant's kernel: q, k, v (B, H, T, D) -> (B, H, T, D)."""
        raise NotImplementedError

    # -- what the config layer asks of a variant ------------------------------------------
    @classmethod
    def validate(cls, params: P, seq_len: int, causal: bool) -> None:
        """Raise ValueError naming the field when `params` cannot work at this length."""

    @classmethod
    def attention_flops(
        cls, params: P, seq_len: int, n_heads: int, head_dim: int, causal: bool
    ) -> int:
        """Multiply-adds of `attend` for one sequence (fvcore convention: 1 MAC = 1 FLOP).

        Counts what the kernel computes (padded blocks included), not the ideal."""
        raise NotImplementedError

    @classmethod
    def extra_params(cls, params: P, d_model: int, n_heads: int, seq_len: int) -> int:
        """Learned parameters beyond the q/k/v/o projections (e.g. Linformer's E, F)."""
        return 0

    @classmethod
    def identity(cls, params: P, seq_len: int, causal: bool) -> Any:
        """What decides this attention's computation at this length, as JSON-able data: params
        with equal identity build the same module (the same function, FLOPs and weights from
        one seed). Default: every field. A variant with a field that is inert in some setting
        (linear attention's `chunk` without causal masking) overrides it, so that the search
        does not train one model twice under two names (`ArchConfig.identity`)."""
        return dataclasses.asdict(params)  # type: ignore[call-overload]


ATTENTION: Registry[type[Attention]] = Registry("attention variant")


def check_positive_int(cls_name: str, field: str, value: Any, upper: int | None = None) -> None:
    """Shared validation: `value` is an int in [1, upper]; the error names the field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"attention.{field} for {cls_name!r} must be a positive integer, got {value!r}"
        )
    if upper is not None and value > upper:
        raise ValueError(
            f"attention.{field} for {cls_name!r} must be <= {upper} "
            f"(the sequence length), got {value}"
        )


def neg_inf(dtype: torch.dtype) -> float:
    """Finite stand-in for -inf, so fully masked rows stay NaN-free."""
    return torch.finfo(dtype).min
