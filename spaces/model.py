"""The Transformer trunk every search point is built on: `build_model(cfg) -> nn.Module`.

Read top to bottom: token embeddings, plus learned absolute position embeddings where the
config asks for them (`positions="learned"`; the default, `"rope"`, rotates each layer's queries
and keys instead, spaces/rotary.py), a stack of blocks (pre-LN by default, post-LN selectable;
ALBERT-style weight sharing), a final norm and either an LM head tied to the embedding or a
mean-pooled classifier.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

from spaces.attention import ATTENTION
from spaces.config import ArchConfig
from spaces.layers import LayerAttention
from spaces.rotary import Rotary


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> GELU -> Linear."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.act = nn.GELU()
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act(self.up(x)))


class Block(nn.Module):
    """Attention + FFN with residuals; `pre_norm` picks pre-LN (x + f(LN x)) or post-LN."""

    def __init__(
        self, cfg: ArchConfig, spec: LayerAttention | None = None, rotary: Rotary | None = None
    ) -> None:
        super().__init__()
        spec = spec or cfg.layer_specs()[0]
        variant = ATTENTION.get(spec.attention)
        self.attn = variant(cfg.d_model, cfg.n_heads, cfg.seq_len, spec.attention_params)
        self.attn.rotary = rotary  # the model's one rotation table, shared by every layer
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.pre_norm = cfg.norm == "pre"
        self.causal = cfg.causal

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.drop(self.attn(self.norm1(x), mask, self.causal))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, mask, self.causal)))
        return self.norm2(x + self.drop(self.ffn(x)))


class Transformer(nn.Module):
    """Embeddings -> blocks (possibly shared) -> norm -> LM head or classifier."""

    def __init__(self, cfg: ArchConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        learned = cfg.positions == "learned"
        self.pos_emb = nn.Embedding(cfg.seq_len, cfg.d_model) if learned else None
        self.drop = nn.Dropout(cfg.dropout)
        n_unique = cfg.unique_blocks or cfg.depth
        self.layer_to_block = cfg.layer_to_block()
        first: dict[int, int] = {}
        specs = cfg.layer_specs()
        for layer, block in enumerate(self.layer_to_block):
            first.setdefault(block, layer)  # a shared block has one attention (validated)
        rotary = Rotary(cfg.head_dim, cfg.seq_len) if cfg.positions == "rope" else None
        self.blocks = nn.ModuleList(Block(cfg, specs[first[b]], rotary) for b in range(n_unique))
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        if cfg.num_classes:
            self.head = nn.Linear(cfg.d_model, cfg.num_classes)
        else:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            self.head.weight = self.tok_emb.weight  # tied (Press & Wolf 2017, arXiv:1608.05859)
        self.apply(_init_weights)
        # GPT-2's depth rule: each residual branch's output projection starts at
        # 0.02 / sqrt(2 * depth), so the residual stream's variance does not grow with depth.
        # Measured against 0.02 / sqrt(depth / 2) (docs/results.md, section 0b): the milder rule
        # trained wide 2-layer models far worse (2x144 text: 2.11 vs 1.71 nats at 1M tokens).
        out_std = 0.02 / math.sqrt(2 * cfg.depth)
        for blk in cast("Iterable[Block]", self.blocks):
            for out in (blk.attn.o_proj, blk.ffn.down):
                nn.init.normal_(out.weight, mean=0.0, std=out_std)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, T) int64, mask (B, T) bool (True = real) -> (B, T, V) or (B, classes)."""
        T = tokens.shape[1]
        if self.cfg.seq_len < T:
            raise ValueError(f"sequence of {T} tokens exceeds seq_len={self.cfg.seq_len}")
        x = self.tok_emb(tokens)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=tokens.device))
        x = self.drop(x)
        for i in self.layer_to_block:
            x = self.blocks[i](x, mask)  # (B, T, C)
        x = self.norm(x)
        if not self.cfg.num_classes:
            return self.head(x)  # (B, T, V)
        if mask is None:
            pooled = x.mean(1)  # (B, C)
        else:
            w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
            pooled = (x * w).sum(1) / w.sum(1).clamp(min=1)  # (B, C)
        return self.head(pooled)  # (B, classes)


def _init_weights(module: nn.Module) -> None:
    """GPT-2 style: N(0, 0.02) for linear and embedding weights, zero biases (the residual
    output projections are then rescaled by depth, see `Transformer.__init__`)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def build_model(cfg: ArchConfig) -> Transformer:
    """Build the model a config describes; the same call in any training pipeline.

    Raises `spaces.memory.ModelTooLarge` (a ValueError), before allocating anything, when the
    weights alone exceed this machine's memory."""
    from spaces.memory import check_fits

    check_fits(cfg)
    return Transformer(cfg)
