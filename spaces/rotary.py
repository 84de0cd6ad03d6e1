"""Rotary position embeddings (RoPE; Su et al. 2021, arXiv:2104.09864), the default positions.

Each head's query and key vectors are rotated by an angle that grows with their position, so
the score of a query-key pair depends on their offset, not on where they sit. It is applied in
`Attention.forward` before any variant's kernel, so every variant gets it the same way (Reformer
hashes the rotated shared query-keys, Linformer and pooled keys project or pool rotated keys,
linear attention maps rotated vectors through its feature map).

Why the default (measured, docs/results.md section "Rotary positions"): with learned absolute
positions a full-attention model has to learn locality from data, and learns slowly, so a
short search horizon favoured variants with a built-in window. With RoPE a byte-level full 3x64
model reached 1.64 nats after 2M tokens, where learned positions left it at 2.32.

The rotation is elementwise (no multiply-add is counted by fvcore, and no learned weight), so a
config's FLOPs do not change; its parameters drop by the learned table, seq_len x d_model.
"""

from __future__ import annotations

import torch
from torch import nn

ROPE_BASE = 10_000.0  # the angle base of RoFormer, GPT-NeoX and Llama


class Rotary(nn.Module):
    """Rotates (B, H, T, D) tensors by position: pairs (i, i + D/2) of each vector turn by
    t / ROPE_BASE^(2i/D) (GPT-NeoX's half split). An odd last channel is left as it is.

    As `t * cos + swap(t) * sin`, with the signs in `sin` and `swap` a roll by D/2 (a cat for
    odd D): the same numbers as rotating the two halves apart, in 0.68-0.78x the time for
    even head dims (forward and backward, CPU, one thread; `python -m benchmarks.rotary`)."""

    cos: torch.Tensor
    sin: torch.Tensor

    def __init__(self, head_dim: int, seq_len: int) -> None:
        super().__init__()
        h = self.pairs = head_dim // 2
        inv = ROPE_BASE ** (-torch.arange(h, dtype=torch.float64) / max(h, 1))
        angles = torch.arange(seq_len, dtype=torch.float64)[:, None] * inv[None]  # (T, D/2)
        odd = head_dim - 2 * h  # an odd last channel: cos 1, sin 0
        one = torch.ones(seq_len, odd, dtype=torch.float64)
        cos = torch.cat((angles.cos(), angles.cos(), one), -1)  # (T, D)
        sin = torch.cat((-angles.sin(), angles.sin(), 0 * one), -1)  # (T, D)
        # not in the state dict: a function of the shape, rebuilt with the model
        self.register_buffer("cos", cos.float(), persistent=False)
        self.register_buffer("sin", sin.float(), persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        T, h = t.shape[-2], self.pairs
        cos, sin = self.cos[:T].to(t.dtype), self.sin[:T].to(t.dtype)  # (T, D)
        if t.shape[-1] == 2 * h:
            swapped = t.roll(h, dims=-1)  # (b, a) for halves (a, b)
        else:
            swapped = torch.cat((t[..., h : 2 * h], t[..., :h], t[..., 2 * h :]), dim=-1)
        return t * cos + swapped * sin
