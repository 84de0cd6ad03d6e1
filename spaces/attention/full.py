"""Full softmax attention (Vaswani et al., 2017, "Attention Is All You Need", arXiv:1706.03762).

Every query attends to every key through PyTorch's fused
`scaled_dot_product_attention`. Time O(n^2 d), memory O(n^2) for the math kernel
(O(n) for the flash / memory-efficient kernels where PyTorch picks them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from spaces.attention.base import ATTENTION, Attention, NoParams


@ATTENTION.register()  # under its `name`
class FullAttention(Attention[NoParams]):
    """Softmax over all keys; the reference every other variant approximates."""

    name = "full"

    def attend(self, q, k, v, key_mask, causal):
        attn_mask = None
        if key_mask is not None:
            attn_mask = key_mask[:, None, None, :]  # (B, 1, 1, T): keys a query may see
            if causal:
                T = q.shape[-2]
                tril = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
                attn_mask = attn_mask & tril  # (B, 1, T, T)
            causal = False  # folded into attn_mask: SDPA refuses both together
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)

    @classmethod
    def attention_flops(cls, params: NoParams, seq_len: int, n_heads: int, head_dim: int, causal):
        # q @ k^T and p @ v over the whole n x n grid: what the dense kernel computes.
        return 2 * n_heads * seq_len * seq_len * head_dim
