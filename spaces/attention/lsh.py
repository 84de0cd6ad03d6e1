"""Reformer LSH attention (Kitaev, Kaiser and Levskaya, 2020, "Reformer: The Efficient
Transformer", arXiv:2001.04451).

Shared-QK: keys are the L2-normalised queries (the base builds no key projection). Each of
`n_hashes` rounds hashes token x into bucket argmax([xR; -xR]) with a fixed random rotation R
(D, n_buckets / 2), sorts the tokens by (bucket, position), cuts the sorted sequence into
chunks of c = bucket_size and lets every query score the keys of its own chunk and of the
previous one (and, bidirectional, the next one). The exact rules:

- buckets: n_buckets = seq_len // c (at least 1; rounded up to even when > 1), fixed at
  construction together with the rotations (`seq_len` is the length the module is built for).
  Padding tokens (key_mask False) go to an extra bucket of their own, so no real query sees
  them; the internal padding up to a multiple of c does too. Chunks do not wrap around.
- a key is visible when it is in the query's bucket and in its window; causal additionally
  requires 0 <= s_q - s_k <= c, s the sorted index. Within a bucket tokens are sorted by
  position, so s_k <= s_q means key position <= query position, and the key set of a query is
  exactly its (up to) c most recent same-bucket predecessors -- which depends on no later token.
  Plain Reformer chunking (previous chunk, no distance cap) leaks the future: a later token
  hashed into an earlier bucket shifts the chunk boundaries and so which past keys a query sees.
- self: a query scores itself -1e5 (Reformer), so it is used only when nothing else is visible.
- rounds: every score s_ij gets - log(n_ij), n_ij = the number of rounds in which i and j share
  a bucket (Reformer appendix; reformer-pytorch). Each round r yields out_r and lse_r (the
  logsumexp of its scores) per query; out = sum_r softmax_r(lse_r) * out_r. When every round's
  window holds all same-bucket keys this is exactly softmax attention over the union of the
  keys visible in any round.

Scores are q . k / sqrt(D). Time O(n_hashes * n * (P c + n_buckets / 2) * d), P = 2 (causal) or
3 pieces per window; memory O(n_hashes * n * P c) for the scores and masks, never (n x n).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from spaces.attention.base import ATTENTION, Attention, check_positive_int, neg_inf

MAX_HASHES = 8
SELF_SCORE = -1e5  # Reformer's score for a token attending to itself


@dataclasses.dataclass(frozen=True)
class LSHParams:
    bucket_size: int = 64  # chunk length c; n_buckets = seq_len // c (>= 1, even when > 1)
    n_hashes: int = 1  # hash rounds; more rounds, fewer keys missed, n_hashes x the cost


def _geometry(params: LSHParams, seq_len: int, causal: bool) -> tuple[int, int, int]:
    """(n_chunks, padded length, pieces per window) for a sequence of `seq_len` tokens."""
    c = params.bucket_size
    nc = math.ceil(seq_len / c)
    pieces = 1 if nc == 1 else (2 if causal else 3)
    return nc, nc * c, pieces


def _n_buckets(params: LSHParams, seq_len: int) -> int:
    nb = max(1, seq_len // params.bucket_size)
    return nb + nb % 2 if nb > 1 else 1


def _offsets(pieces: int) -> list[int]:
    """Chunk offsets of a window: own chunk only, previous + own, or previous + own + next."""
    return [0] if pieces == 1 else [-1, 0, 1][:pieces]


def _around(x: torch.Tensor, pieces: int) -> torch.Tensor:
    """(B, H, R, nc, c, ...) -> (B, H, R, nc, P*c, ...): the window's chunks, side by side."""
    nc = x.shape[3]
    offsets = torch.arange(pieces, device=x.device) - min(pieces - 1, 1)  # (P,): _offsets
    idx = torch.arange(nc, device=x.device)[:, None] + offsets  # (nc, P): chunk of each piece
    y = x[:, :, :, idx % nc]  # (B, H, R, nc, P, c, ...); wrapped slots are masked by the caller
    return y.flatten(4, 5)  # (B, H, R, nc, P*c, ...)


class _MaskedSoftmax(torch.autograd.Function):
    """Softmax over the last dim where `hidden` is False, plus its logsumexp, in place.

    Every row has a visible entry (the query itself), so the sum is >= 1. Shifted scores are
    clamped at -80 before exp (a weight below e^-80 of the row's largest becomes e^-80 of it):
    exp results below the normal float range are ~30x slower on CPUs (denormal assists).
    Backward of (probs, lse): ds = p * (dp - sum(dp * p) + dlse)."""

    @staticmethod
    def forward(ctx, scores, hidden, is_self, self_score):
        p = scores.masked_fill(hidden, neg_inf(scores.dtype))  # masked scores stay finite
        p.masked_fill_(is_self, self_score)
        top = p.amax(dim=-1, keepdim=True)  # (..., 1): the largest visible score
        p.sub_(top).clamp_min_(-80.0).exp_().masked_fill_(hidden, 0.0)
        total = p.sum(dim=-1, keepdim=True)  # (..., 1), >= 1
        p.div_(total)
        ctx.save_for_backward(p)
        return p, (top + total.log()).squeeze(-1)

    @staticmethod
    def backward(ctx, dp, dlse):
        (p,) = ctx.saved_tensors
        g = dp * p
        return g.addcmul_(p, (g.sum(dim=-1) - dlse)[..., None], value=-1), None, None, None


def _masked_softmax(scores, hidden, is_self, self_score):
    """(probs, lse) of `_MaskedSoftmax`; under torch.jit tracing (fvcore's FLOP counter cannot
    see inside a Python autograd Function) the same arithmetic in plain ops, slower."""
    if not torch.jit.is_tracing():
        return _MaskedSoftmax.apply(scores, hidden, is_self, self_score)
    s = scores.masked_fill(hidden, neg_inf(scores.dtype)).masked_fill(is_self, self_score)
    top = s.amax(dim=-1, keepdim=True).detach()  # (..., 1)
    e = (s - top).clamp_min(-80.0).exp().masked_fill(hidden, 0.0)
    total = e.sum(dim=-1, keepdim=True)  # (..., 1)
    return e / total, (top + total.log()).squeeze(-1)


@ATTENTION.register()  # under its `name`
class LSHAttention(Attention[LSHParams]):
    """Reformer: attend within hash buckets of shared query/key vectors, O(n c) per round."""

    name = "lsh"
    supports_causal = True
    supports_bidirectional = True
    shared_qk = True
    span_param = "bucket_size"
    search_choices = {"bucket_size": [32, 64, 128, 256], "n_hashes": [1, 2, 4]}

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        seq_len: int,
        params: LSHParams | None = None,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(d_model, n_heads, seq_len, params)
        self.n_buckets = _n_buckets(self.params, seq_len)
        gen = torch.Generator().manual_seed(seed)
        shape = (self.head_dim, self.params.n_hashes, self.n_buckets // 2)
        # Non-persistent: fixed by the seed, not learned, but moved by .to(device / dtype).
        self.register_buffer("rotations", torch.randn(shape, generator=gen), persistent=False)

    def buckets(self, q: torch.Tensor) -> torch.Tensor:
        """Hash buckets of q (B, H, T, D) per round: (B, H, n_hashes, T), values < n_buckets."""
        B, H, T, _ = q.shape
        if self.n_buckets == 1:
            return torch.zeros(B, H, self.params.n_hashes, T, dtype=torch.long, device=q.device)
        with torch.no_grad():
            rot = torch.einsum("bhtd,drk->bhrtk", q, self.rotations.to(q.dtype))  # (B,H,R,T,nb/2)
            return torch.cat([rot, -rot], dim=-1).argmax(dim=-1)  # (B, H, R, T)

    def attend(self, q, k, v, key_mask, causal):
        # k is q (shared_qk); keys are the normalised queries.
        B, H, T, D = q.shape
        c, R = self.params.bucket_size, self.params.n_hashes
        nc, Tp, P = _geometry(self.params, T, causal)
        dev = q.device

        bk = self.buckets(q)  # (B, H, R, T)
        if key_mask is not None:  # padding gets a bucket of its own
            bk = bk.masked_fill(~key_mask.to(torch.bool)[:, None, None, :], self.n_buckets)
        bk = F.pad(bk, (0, Tp - T), value=self.n_buckets)  # (B, H, R, Tp)
        pos = torch.arange(Tp, device=dev)
        order = (bk * Tp + pos).argsort(dim=-1)  # (B, H, R, Tp): sorted index -> position

        def sort(x: torch.Tensor) -> torch.Tensor:  # (B, H, Tp, D) -> (B, H, R, nc, c, D)
            idx = order[..., None].expand(-1, -1, -1, -1, D)  # (B, H, R, Tp, D)
            src = x[:, :, None].expand(-1, -1, R, -1, -1)  # (B, H, R, Tp, D)
            return src.gather(3, idx).view(B, H, R, nc, c, D)

        qs = sort(F.pad(q / math.sqrt(D), (0, 0, 0, Tp - T)))  # (B, H, R, nc, c, D)
        ks = _around(sort(F.pad(F.normalize(q, dim=-1), (0, 0, 0, Tp - T))), P)  # (B,H,R,nc,P*c,D)
        vs = _around(sort(F.pad(v, (0, 0, 0, Tp - T))), P)  # (B, H, R, nc, P*c, D)

        # Sorted-index distance query - key (the same in every chunk), and which window slots
        # hold a real chunk (windows do not wrap around).
        key_idx = torch.cat([pos[:c] + s * c for s in _offsets(P)])  # (P*c,) from chunk start
        dist = pos[:c, None] - key_idx  # (c, P*c)
        key_idx = pos[::c, None] + key_idx  # (nc, P*c): sorted index of every window slot
        ok = ((key_idx >= 0) & (key_idx < Tp))[:, None, :]  # (nc, 1, P*c)
        if causal:
            ok = ok & (dist >= 0) & (dist <= c)  # (nc, c, P*c)
        is_self = dist == 0  # (c, P*c)

        def in_order(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Per-position ids (B, H, R, Tp) in each round's sorted order: query and key views."""
            x = ids.gather(-1, order).view(B, H, R, nc, c)  # (B, H, R, nc, c)
            return x[..., :, None], _around(x, P)[..., None, :]  # (.., c, 1), (.., 1, P*c)

        qb, kb = in_order(bk)
        # (B, H, R, nc, c, P*c): the key is in another bucket or outside the query's window.
        hidden = torch.logical_or(qb != kb, ~ok)
        scores = torch.einsum("bhrnid,bhrnjd->bhrnij", qs, ks)  # (B, H, R, nc, c, P*c)
        if R > 1:  # duplicate correction: - log(rounds in which query and key share a bucket)
            shared = torch.zeros(scores.shape, dtype=scores.dtype, device=dev)
            for r in range(R):
                qb, kb = in_order(bk[:, :, r : r + 1].expand(-1, -1, R, -1))
                shared += qb == kb
            scores = scores - shared.clamp_min(1).log()
        self_score = max(SELF_SCORE, neg_inf(q.dtype) / 2)  # stays finite in float16
        probs, lse = _masked_softmax(scores, hidden, is_self, self_score)
        out = torch.einsum("bhrnij,bhrnjd->bhrnid", probs, vs)  # (B, H, R, nc, c, D)

        # Unsort each round back to positions, then mix rounds by their share of the mass.
        inv = torch.empty_like(order).scatter_(-1, order, pos.expand_as(order))  # (B, H, R, Tp)
        out = out.reshape(B, H, R, Tp, D).gather(3, inv[..., None].expand(-1, -1, -1, -1, D))
        lse = lse.reshape(B, H, R, Tp).gather(3, inv)  # (B, H, R, Tp)
        weights = lse[..., :T].softmax(dim=2)  # (B, H, R, T)
        return torch.einsum("bhrtd,bhrt->bhtd", out[:, :, :, :T], weights)  # (B, H, T, D)

    @classmethod
    def validate(cls, params: LSHParams, seq_len: int, causal: bool) -> None:
        try:
            check_positive_int(cls.name, "bucket_size", params.bucket_size, upper=seq_len)
        except ValueError as exc:
            raise ValueError(
                f"{exc}; allowed 1..{seq_len}, e.g. attention.bucket_size=64"
            ) from None
        try:
            check_positive_int(cls.name, "n_hashes", params.n_hashes)
            if params.n_hashes > MAX_HASHES:
                raise ValueError(
                    f"attention.n_hashes for {cls.name!r} must be <= {MAX_HASHES}, "
                    f"got {params.n_hashes}"
                )
        except ValueError as exc:
            raise ValueError(f"{exc}; allowed 1..{MAX_HASHES}, e.g. attention.n_hashes=2") from None

    @classmethod
    def attention_flops(
        cls, params: LSHParams, seq_len: int, n_heads: int, head_dim: int, causal: bool
    ) -> int:
        T, D, R, c = seq_len, head_dim, params.n_hashes, params.bucket_size
        _, Tp, P = _geometry(params, T, causal)
        nb = _n_buckets(params, T)
        hashing = T * D * R * (nb // 2) if nb > 1 else 0  # q @ rotations
        window = 2 * R * Tp * P * c * D  # q . k and probs @ v over every window slot
        combine = R * T * D  # sum over rounds of weight * out
        return n_heads * (hashing + window + combine)
