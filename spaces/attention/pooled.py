"""Sub-sampled keys and values: average pooling by stride s along the sequence.

The "memory compressed" / sub-sampling family: Liu et al., 2018, "Generating Wikipedia by
Summarizing Long Sequences" (memory-compressed attention, arXiv:1801.10198); Dai et al., 2020,
Funnel-Transformer (arXiv:2006.03236) pools the sequence the same way. Each query attends to
ceil(n / s) pooled keys: time O(n^2 d / s), memory O(n^2 / s). A pooled key mixes s neighbouring
positions, so the variant is bidirectional only. Pooling is a masked mean: padding never enters
a pooled key, and a window made only of padding is masked out.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from spaces.attention.base import ATTENTION, Attention, check_positive_int


@dataclasses.dataclass(frozen=True)
class PooledParams:
    stride: int = 4  # s: positions averaged into one key/value (s = 1 is full attention)


@ATTENTION.register()  # under its `name`
class PooledAttention(Attention[PooledParams]):
    """Softmax attention over keys and values averaged in windows of `stride` positions."""

    name = "pooled"
    supports_causal = False
    span_param = "stride"  # note: a larger stride sees *less* detail
    search_choices = {"stride": [2, 4, 8, 16]}

    def attend(self, q, k, v, key_mask, causal):
        B, H, T, D = k.shape
        s = self.params.stride
        nb = -(-T // s)  # ceil(T / s) pooled positions
        keep = torch.ones(B, T, dtype=k.dtype, device=k.device)
        if key_mask is not None:
            keep = key_mask.to(k.dtype)
        pad = nb * s - T
        keep = F.pad(keep, (0, pad)).view(B, 1, nb, s, 1)  # (B, 1, nb, s, 1)
        k = F.pad(k, (0, 0, 0, pad)).view(B, H, nb, s, D)  # (B, H, nb, s, D)
        v = F.pad(v, (0, 0, 0, pad)).view(B, H, nb, s, D)  # (B, H, nb, s, D)
        count = keep.sum(3)  # (B, 1, nb, 1) real positions per window
        k_pool = (k * keep).sum(3) / count.clamp(min=1)  # (B, H, nb, D)
        v_pool = (v * keep).sum(3) / count.clamp(min=1)  # (B, H, nb, D)
        attn_mask = (count[:, :, None, :, 0] > 0).expand(B, 1, 1, nb)  # (B, 1, 1, nb)
        return F.scaled_dot_product_attention(q, k_pool, v_pool, attn_mask=attn_mask)

    @classmethod
    def validate(cls, params: PooledParams, seq_len: int, causal: bool) -> None:
        check_positive_int(cls.name, "stride", params.stride, upper=seq_len)

    @classmethod
    def attention_flops(cls, params: PooledParams, seq_len, n_heads, head_dim, causal):
        nb = -(-seq_len // params.stride)
        return 2 * n_heads * seq_len * nb * head_dim  # q @ k_pool^T and p @ v_pool
