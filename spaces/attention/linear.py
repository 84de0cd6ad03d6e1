"""Kernelized linear attention (Katharopoulos, Vyas, Pappas and Fleuret, 2020, "Transformers are
RNNs: Fast Autoregressive Transformers with Linear Attention", arXiv:2006.16236), with the
Performer's FAVOR+ positive random features as an alternative feature map (Choromanski et al.,
2021, "Rethinking Attention with Performers", arXiv:2009.14794).

The softmax kernel is replaced by a feature map phi:
    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j) + eps),
summed over all keys j (bidirectional) or j <= i (causal); eps = 1e-6 keeps the division
finite when every feature underflows. Feature maps:
- "elu": phi(x) = elu(x) + 1 (F = D features), Katharopoulos et al.
- "favor": x' = x / D^(1/4) (so that phi(q).phi(k) estimates exp(q.k / sqrt(D))), then
  phi(x) = exp(w x' - |x'|^2 / 2) / sqrt(m), w (m, D) fixed seeded orthogonal random features
  with chi-distributed row norms (Performer). No max-subtraction stabiliser: each feature is
  bounded anyway, exp(w.x - |x|^2/2) <= exp(|w|^2/2), and the Performer's key stabiliser (a max
  over all positions) would leak future tokens into causal outputs through eps.
Padding keys (key_mask False) get phi(k) = 0 and so contribute nothing.

Bidirectional: the associative trick, KV = sum_j phi(k_j) v_j^T (F x D) then phi(q_i)^T KV:
time O(n F D), memory O(n (F + D) + F D). Causal, chunked with chunk length c: inside a chunk a
masked (c x c) quadratic part, across chunks an exclusive prefix sum (cumsum) of the per-chunk
KV sums: time O(n (c (F + D) + F D)), memory O(n c + (n / c) F D); never (n x n).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F

from spaces.attention.base import ATTENTION, Attention, check_positive_int

FEATURE_MAPS = ("elu", "favor")
EPS = 1e-6  # added to the denominator phi(q)^T sum_j phi(k_j)


@dataclasses.dataclass(frozen=True)
class LinearParams:
    feature_map: str = "elu"  # "elu": elu(x) + 1; "favor": Performer positive random features
    n_features: int = 64  # m, random features per head ("favor" only; "elu" uses D)
    chunk: int = 64  # chunk length c of the causal computation


def orthogonal_features(m: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """(m, d) Gaussian-like rows, orthogonal within blocks of d, norms of Gaussian vectors."""
    n_blocks = math.ceil(m / d)
    qmat, _ = torch.linalg.qr(torch.randn(n_blocks, d, d, generator=gen))  # orthogonal blocks
    w = qmat.transpose(1, 2).reshape(n_blocks * d, d)[:m]  # (m, d) unit rows
    return w * torch.randn(m, d, generator=gen).norm(dim=1, keepdim=True)  # (m, d)


def _n_features(params: LinearParams, head_dim: int) -> int:
    return params.n_features if params.feature_map == "favor" else head_dim


@ATTENTION.register()  # under its `name`
class LinearAttention(Attention[LinearParams]):
    """Linear attention phi(Q) (phi(K)^T V): O(n) time and memory in the sequence length."""

    name = "linear"
    supports_causal = True
    supports_bidirectional = True
    span_param = None
    search_choices = {
        "feature_map": list(FEATURE_MAPS),
        "n_features": [32, 64, 128, 256],
        "chunk": [32, 64, 128],
    }

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        seq_len: int,
        params: LinearParams | None = None,
        *,
        seed: int = 0,
    ) -> None:
        super().__init__(d_model, n_heads, seq_len, params)
        p, D = self.params, self.head_dim
        w = torch.zeros(0, D)
        if p.feature_map == "favor":
            w = orthogonal_features(p.n_features, D, torch.Generator().manual_seed(seed))
        # Non-persistent: fixed by the seed, not learned, but moved by .to(device / dtype).
        self.register_buffer("features", w, persistent=False)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """phi: (B, H, T, D) -> (B, H, T, F), positive."""
        if self.params.feature_map == "elu":
            return F.elu(x) + 1
        x = x * x.shape[-1] ** -0.25
        proj = torch.einsum("bhtd,fd->bhtf", x, self.features.to(x.dtype))  # (B, H, T, m)
        sq = x.pow(2).sum(dim=-1, keepdim=True) / 2  # (B, H, T, 1)
        return torch.exp(proj - sq) / math.sqrt(self.params.n_features)  # (B, H, T, m)

    def attend(self, q, k, v, key_mask, causal):
        fq, fk = self.feature_map(q), self.feature_map(k)  # (B, H, T, F)
        if key_mask is not None:  # padding keys: phi(k) = 0
            fk = fk.masked_fill(~key_mask.to(torch.bool)[:, None, :, None], 0.0)
        if causal:
            return self._causal(fq, fk, v)
        kv = torch.einsum("bhtf,bhtd->bhfd", fk, v)  # (B, H, F, D)
        z = fk.sum(dim=2)  # (B, H, F)
        num = torch.einsum("bhtf,bhfd->bhtd", fq, kv)  # (B, H, T, D)
        den = torch.einsum("bhtf,bhf->bht", fq, z)  # (B, H, T)
        return num / (den + EPS)[..., None]  # (B, H, T, D)

    def _causal(self, fq: torch.Tensor, fk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, H, T, D = v.shape
        c = self.params.chunk
        nc = math.ceil(T / c)
        pad = nc * c - T
        fq = F.pad(fq, (0, 0, 0, pad)).view(B, H, nc, c, -1)  # (B, H, nc, c, F)
        fk = F.pad(fk, (0, 0, 0, pad)).view(B, H, nc, c, -1)  # (B, H, nc, c, F)
        v = F.pad(v, (0, 0, 0, pad)).view(B, H, nc, c, D)  # (B, H, nc, c, D)

        # Within a chunk: the masked quadratic form, keys j <= i.
        tril = torch.ones(c, c, dtype=torch.bool, device=v.device).tril()  # (c, c)
        a = torch.einsum("bhnif,bhnjf->bhnij", fq, fk).masked_fill(~tril, 0.0)  # (B,H,nc,c,c)
        num = torch.einsum("bhnij,bhnjd->bhnid", a, v)  # (B, H, nc, c, D)
        den = a.sum(dim=-1)  # (B, H, nc, c)

        # Across chunks: state of all earlier chunks (exclusive prefix sums).
        kv = torch.einsum("bhnjf,bhnjd->bhnfd", fk, v)  # (B, H, nc, F, D)
        kv = torch.cat([torch.zeros_like(kv[:, :, :1]), kv[:, :, :-1].cumsum(dim=2)], dim=2)
        z = fk.sum(dim=3)  # (B, H, nc, F)
        z = torch.cat([torch.zeros_like(z[:, :, :1]), z[:, :, :-1].cumsum(dim=2)], dim=2)
        num = num + torch.einsum("bhnif,bhnfd->bhnid", fq, kv)  # (B, H, nc, c, D)
        den = den + torch.einsum("bhnif,bhnf->bhni", fq, z)  # (B, H, nc, c)
        out = num / (den + EPS)[..., None]  # (B, H, nc, c, D)
        return out.reshape(B, H, nc * c, D)[:, :, :T]  # (B, H, T, D)

    @classmethod
    def validate(cls, params: LinearParams, seq_len: int, causal: bool) -> None:
        if params.feature_map not in FEATURE_MAPS:
            raise ValueError(
                f"attention.feature_map for {cls.name!r} must be one of {list(FEATURE_MAPS)}, "
                f"got {params.feature_map!r}; e.g. attention.feature_map='elu'"
            )
        for field, example in (("n_features", 64), ("chunk", 64)):
            try:
                check_positive_int(cls.name, field, getattr(params, field))
            except ValueError as exc:
                raise ValueError(f"{exc}; allowed >= 1, e.g. attention.{field}={example}") from None

    @classmethod
    def identity(cls, params: LinearParams, seq_len: int, causal: bool) -> Any:
        """`n_features` is inert with the "elu" map (it uses D), `chunk` without causal masking."""
        default = cls.Params()
        if params.feature_map != "favor":
            params = dataclasses.replace(params, n_features=default.n_features)
        if not causal:
            params = dataclasses.replace(params, chunk=default.chunk)
        return super().identity(params, seq_len, causal)

    @classmethod
    def attention_flops(
        cls, params: LinearParams, seq_len: int, n_heads: int, head_dim: int, causal: bool
    ) -> int:
        T, D, Fn = seq_len, head_dim, _n_features(params, head_dim)
        features = 2 * T * D * Fn if params.feature_map == "favor" else 0  # x' @ w^T for q and k
        if not causal:
            per_head = 2 * T * Fn * D + T * Fn  # KV, phi(q) @ KV, phi(q) . z
        else:
            c = params.chunk
            Tp = math.ceil(T / c) * c
            intra = Tp * c * Fn + Tp * c * D  # phi(q) phi(k)^T and A @ v per chunk
            inter = 2 * Tp * Fn * D + Tp * Fn  # chunk KV sums, phi(q) @ state, phi(q) . z
            per_head = intra + inter
        return n_heads * (features + per_head)
