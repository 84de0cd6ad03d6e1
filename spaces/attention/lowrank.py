"""Linformer: keys and values projected along the sequence axis to rank k.

Wang et al., 2020, "Linformer: Self-Attention with Linear Complexity", arXiv:2006.04768.
Learned projections E, F (k x n) compress the n keys and values to k summaries, so each query
attends to k rows: time O(n k d), memory O(n k). The projection mixes every position, so the
variant is bidirectional only. Padding keys and values are zeroed before the projection, so the
output at real positions does not depend on what padding holds, and a summary whose row of E
touches no real token is masked out (with E = I and k = n this is exactly full attention).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from spaces.attention.base import ATTENTION, Attention, check_positive_int


@dataclasses.dataclass(frozen=True)
class LowRankParams:
    rank: int = 64  # k: number of compressed key/value rows each query sees
    share_kv: bool = False  # one projection for keys and values (Linformer's "key-value sharing")


@ATTENTION.register()  # under its `name`
class LowRankAttention(Attention[LowRankParams]):
    """Softmax attention over k learned sequence-axis summaries of the keys and values."""

    name = "lowrank"
    supports_causal = False
    span_param = "rank"
    search_choices = {"rank": [16, 32, 64, 128, 256], "share_kv": [False, True]}

    def __init__(
        self, d_model: int, n_heads: int, seq_len: int, params: LowRankParams | None = None
    ) -> None:
        super().__init__(d_model, n_heads, seq_len, params)
        k = self.params.rank
        std = 1.0 / seq_len**0.5  # E x has the scale of a mean over positions
        self.proj_k = nn.Parameter(torch.randn(k, seq_len) * std)  # (k, n)
        self.proj_v = None if self.params.share_kv else nn.Parameter(torch.randn(k, seq_len) * std)

    def attend(self, q, k, v, key_mask, causal):
        T = k.shape[-2]
        e = self.proj_k[:, :T]  # (k, T): shorter inputs use the first T columns
        f = e if self.proj_v is None else self.proj_v[:, :T]  # (k, T)
        attn_mask = None
        if key_mask is not None:
            keep = key_mask[:, None, :, None].to(k.dtype)  # (B, 1, T, 1)
            k, v = k * keep, v * keep
            # A summary row that draws on no real token is masked out, like a padding key.
            used = (e.detach() != 0).to(k.dtype) @ key_mask.to(k.dtype).T  # (k, B)
            attn_mask = (used.T > 0)[:, None, None, :]  # (B, 1, 1, k)
        k_low = torch.matmul(e, k)  # (B, H, k, D)
        v_low = torch.matmul(f, v)  # (B, H, k, D)
        return F.scaled_dot_product_attention(q, k_low, v_low, attn_mask=attn_mask)

    @classmethod
    def validate(cls, params: LowRankParams, seq_len: int, causal: bool) -> None:
        check_positive_int(cls.name, "rank", params.rank, upper=seq_len)
        if not isinstance(params.share_kv, bool):
            raise ValueError(f"attention.share_kv must be true or false, got {params.share_kv!r}")

    @classmethod
    def attention_flops(cls, params: LowRankParams, seq_len, n_heads, head_dim, causal):
        k = params.rank
        projections = 2 * n_heads * k * seq_len * head_dim  # E @ K and F @ V
        attention = 2 * n_heads * seq_len * k * head_dim  # q @ k_low^T and p @ v_low
        return projections + attention

    @classmethod
    def extra_params(cls, params: LowRankParams, d_model, n_heads, seq_len):
        return (1 if params.share_kv else 2) * params.rank * seq_len
