"""Sliding-window attention with optional global tokens (Longformer).

Beltagy, Peters and Cohan, 2020, "Longformer: The Long-Document Transformer",
arXiv:2004.05150.

Query i sees the keys j with |i - j| <= w (bidirectional) or i - w <= j <= i (causal).
The kernel is blocked ("banded"): the sequence is cut into blocks of w tokens and each query
block scores the keys of the previous, its own and (bidirectional) the next block, 3w keys
(2w causal), masked by relative distance. The first g positions are global (bidirectional
only): every query block also scores the g global keys (appended as extra columns, their
duplicates inside the band masked), and the g global queries are scored densely against all
keys.

Time O(n * (3w + g) * d + g * n * d); memory O(n * (3w + g)) for the scores and O(n * d)
for the gathered keys and values. No (n x n) tensor is ever built.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from spaces.attention import flex
from spaces.attention.base import ATTENTION, Attention, check_positive_int, neg_inf


@dataclasses.dataclass(frozen=True)
class WindowParams:
    window: int = 128  # one-sided reach w: query i sees keys within distance w (past only, causal)
    global_tokens: int = 0  # first g positions see all keys and are seen by all (bidirectional)


def _pieces(x: torch.Tensor, nb: int, n_pieces: int) -> torch.Tensor:
    """(..., nb + 2, w, X) -> (..., nb, n_pieces * w, X): previous, own, next block per block."""
    return torch.cat([x[..., j : j + nb, :, :] for j in range(n_pieces)], dim=-2)


@ATTENTION.register()  # under its `name`
class WindowAttention(Attention[WindowParams]):
    """Longformer sliding window: O(n * w) instead of O(n^2)."""

    name = "window"
    supports_causal = True
    supports_bidirectional = True
    span_param = "window"
    search_choices = {"window": [16, 32, 64, 128, 256], "global_tokens": [0, 1, 8]}

    def attend(self, q, k, v, key_mask, causal):
        p = self.params
        B, H, T, D = q.shape
        g = p.global_tokens
        if causal and g > 0:
            raise ValueError("attention.global_tokens must be 0 with causal attention")
        if flex.use_flex(q):  # CUDA: the same pattern, empty tiles skipped (attention/flex.py)
            pattern = lambda: self.pattern(causal)  # built only with a new block mask
            return flex.attend(q, k, v, pattern, key_mask, self._flex_masks[causal])
        w = min(p.window, T)  # block size; a reach beyond T is the same as T
        nb = math.ceil(T / w)
        pad = nb * w - T
        n_pieces = 2 if causal else 3  # P: previous, own (and next) block
        band = n_pieces * w  # P*w band keys per query block
        scale = 1.0 / math.sqrt(D)
        neg = neg_inf(q.dtype)

        qb = F.pad(q * scale, (0, 0, 0, pad)).view(B, H, nb, w, D)  # (B, H, nb, w, D)
        kp = F.pad(k, (0, 0, w, pad + w)).view(B, H, nb + 2, w, D)  # (B, H, nb+2, w, D)
        vp = F.pad(v, (0, 0, w, pad + w)).view(B, H, nb + 2, w, D)  # (B, H, nb+2, w, D)
        kband = _pieces(kp, nb, n_pieces)  # (B, H, nb, P*w, D)
        vband = _pieces(vp, nb, n_pieces)  # (B, H, nb, P*w, D)

        # Which band keys are real: in range, not padding, not global (those get own columns).
        real = torch.ones(B, T, dtype=torch.bool, device=q.device)
        if key_mask is not None:
            real = real & key_mask.to(torch.bool)
        band_real = real.clone()
        band_real[:, :g] = False  # global keys are scored once, in the global columns
        band_real = F.pad(band_real, (w, pad + w), value=False).view(B, nb + 2, w, 1)
        band_real = _pieces(band_real, nb, n_pieces).squeeze(-1)  # (B, nb, P*w)

        ar = torch.arange(band, device=q.device)
        rel = ar[None, :] - w - torch.arange(w, device=q.device)[:, None]  # (w, P*w): j - i
        near = (rel <= 0) & (rel >= -p.window) if causal else rel.abs() <= p.window
        allowed = near[None, None] & band_real[:, None, :, None, :]  # (B, 1, nb, w, P*w)

        scores = torch.einsum("bhnqd,bhnkd->bhnqk", qb, kband)  # (B, H, nb, w, P*w)
        scores.masked_fill_(~allowed, neg)  # in place: einsum's backward needs no scores
        if g > 0:
            gs = torch.einsum("bhnqd,bhgd->bhnqg", qb, k[:, :, :g])  # (B, H, nb, w, g)
            gs.masked_fill_(~real[:, None, None, None, :g], neg)
            scores = torch.cat([scores, gs], dim=-1)  # (B, H, nb, w, P*w + g)
        probs = scores.softmax(dim=-1)
        pb, pg = probs[..., :band], probs[..., band:]  # band part, global-column part
        out = torch.einsum("bhnqk,bhnkd->bhnqd", pb, vband)  # (B, H, nb, w, D)
        if g > 0:
            out = out + torch.einsum("bhnqg,bhgd->bhnqd", pg, v[:, :, :g])  # (B, H, nb, w, D)
        out = out.reshape(B, H, nb * w, D)[:, :, :T]  # (B, H, T, D)
        if g == 0:
            return out

        # Global queries: dense rows against every key.
        gsc = torch.einsum("bhqd,bhkd->bhqk", q[:, :, :g] * scale, k)  # (B, H, g, T)
        gsc.masked_fill_(~real[:, None, None, :], neg)
        gout = torch.einsum("bhqk,bhkd->bhqd", gsc.softmax(dim=-1), v)  # (B, H, g, D)
        return torch.cat([gout, out[:, :, g:]], dim=2)  # (B, H, T, D)

    def pattern(self, causal: bool) -> flex.Pattern:
        """Query i sees key j (before padding): |i - j| <= w, or i - w <= j <= i causal; the
        first g positions see and are seen by all (bidirectional)."""
        w, g = self.params.window, self.params.global_tokens

        def allowed(qi: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            if causal:
                return (kv <= qi) & (qi - kv <= w)
            return ((qi - kv).abs() <= w) | (qi < g) | (kv < g)

        return allowed

    @classmethod
    def validate(cls, params: WindowParams, seq_len: int, causal: bool) -> None:
        try:
            check_positive_int(cls.name, "window", params.window, upper=seq_len)
        except ValueError as exc:
            raise ValueError(
                f"{exc}; allowed 1..{seq_len}, e.g. attention.window={min(128, seq_len)}"
            ) from None
        g = params.global_tokens
        if isinstance(g, bool) or not isinstance(g, int) or not 0 <= g < seq_len:
            raise ValueError(
                f"attention.global_tokens for {cls.name!r} must be an integer in "
                f"0..{seq_len - 1} (below the sequence length), got {g!r}; "
                f"e.g. attention.global_tokens=1"
            )
        if causal and g > 0:
            raise ValueError(
                f"attention.global_tokens for {cls.name!r} must be 0 with causal attention "
                f"(global tokens would see the future), got {g}; e.g. attention.global_tokens=0"
            )

    @classmethod
    def attention_flops(
        cls, params: WindowParams, seq_len: int, n_heads: int, head_dim: int, causal: bool
    ) -> int:
        w = min(params.window, seq_len)
        nb = math.ceil(seq_len / w)
        n_pieces = 2 if causal else 3
        g = 0 if causal else params.global_tokens
        band = 2 * nb * w * n_pieces * w * head_dim  # q @ band keys, probs @ band values
        glob = 2 * nb * w * g * head_dim + 2 * g * seq_len * head_dim  # global cols + rows
        return n_heads * (band + glob)
