"""Block-sparse attention: local, global and random key blocks (BigBird / Sparse Transformer).

Zaheer et al., 2020, "Big Bird: Transformers for Longer Sequences", arXiv:2007.14062;
Child et al., 2019, "Generating Long Sequences with Sparse Transformers", arXiv:1904.10509.

The sequence is cut into nb blocks of b tokens. Query block i sees a fixed set of key blocks
(its layout row): its own, `local_blocks` neighbours on each side (causal: only earlier ones),
the first `global_blocks` blocks, and `random_blocks` extra blocks drawn once by a seeded
generator from the blocks it does not already see (causal: only earlier ones). The first
`global_blocks` query blocks are global: they are scored densely against every key (causal:
every earlier key).

The layout is an (nb - G, K) table of key-block indices, K the most blocks any row sees, padded
with a dummy block index that is masked. Keys and values are gathered per query block, so
time is O(n * K * b * d + G * b * n * d) and memory O(n * K * b) for the scores; no (n x n)
tensor is built (except the dense mask helper `dense_mask`, meant for tests).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, cast

import torch
import torch.nn.functional as F

from spaces.attention import flex
from spaces.attention.base import ATTENTION, Attention, check_positive_int, neg_inf


@dataclasses.dataclass(frozen=True)
class SparseParams:
    block: int = 64  # block size b: the unit of the layout; scores cost b x (K * b) per block
    local_blocks: int = 1  # neighbouring blocks seen on each side (causal: previous only)
    global_blocks: int = 1  # first blocks that see all keys and are seen by all queries
    random_blocks: int = 0  # extra random key blocks per query block (BigBird's "random")
    seed: int = 0  # seeds the random-block draw, so the layout is the same on every run


def block_layout(params: SparseParams, nb: int, causal: bool) -> torch.Tensor:
    """(nb - G, K) long: key blocks seen by each non-global query block; nb marks padding."""
    G = min(params.global_blocks, nb)
    i = torch.arange(nb)[:, None]  # (nb, 1) query block
    j = torch.arange(nb)[None, :]  # (1, nb) key block
    if causal:
        seen = (j <= i) & (j >= i - params.local_blocks)
    else:
        seen = (j - i).abs() <= params.local_blocks
    seen = seen | (j < G)  # (nb, nb)
    if params.random_blocks > 0:
        free = ~seen & (j < i) if causal else ~seen
        gen = torch.Generator().manual_seed(params.seed)
        draw = torch.rand(nb, nb, generator=gen, dtype=torch.float64).masked_fill(~free, 2.0)
        pick = draw.topk(min(params.random_blocks, nb), dim=1, largest=False).indices
        chosen = torch.zeros_like(seen).scatter(1, pick, free.gather(1, pick))
        seen = seen | chosen
    seen = seen[G:]  # (nb - G, nb): global query blocks are computed densely
    K = int(seen.sum(1).max()) if len(seen) else 0
    order = torch.where(seen, j, nb + j).sort(dim=1).values[:, :K]  # seen blocks first
    return order.masked_fill(order >= nb, nb)  # (nb - G, K)


def block_table(params: SparseParams, T: int, causal: bool) -> torch.Tensor:
    """(nb, nb) bool: which key blocks each query block sees at length T (global rows see all;
    causal masking inside a block comes on top)."""
    _, nb, G = _blocking(params, T)
    blocks = torch.zeros(nb, nb + 1, dtype=torch.bool)  # column nb: the dummy block
    blocks[:G] = True
    lay = block_layout(params, nb, causal)
    blocks[G:].scatter_(1, lay, torch.ones_like(lay, dtype=torch.bool))
    return blocks[:, :nb]


def token_pattern(params: SparseParams, T: int, causal: bool) -> list[list]:
    """The pattern in tokens, whatever the block size: [first query, end, [[first key, end],
    ...]] for each run of query positions that see the same keys; with causal masking, a key
    run that reaches the query's own block ends at "q", the query itself. Equal for params
    that let every query see the same keys."""
    b = _blocking(params, T)[0]
    table = block_table(params, T, causal)  # (nb, nb)
    nb = table.shape[0]
    if causal:  # a global query block "sees all", but only its past counts
        table &= torch.ones(nb, nb, dtype=torch.bool).tril()
    edge = torch.zeros(nb, 1, dtype=torch.bool)
    step = torch.cat([edge, table, edge], dim=1).int().diff(dim=1)  # +1 opens a run, -1 closes
    runs: list[list] = [[] for _ in range(nb)]
    for (i, lo), (_, hi) in zip(
        torch.nonzero(step == 1).tolist(), torch.nonzero(step == -1).tolist()
    ):
        end = min(hi * b, T)
        runs[i].append([min(lo * b, T), "q" if causal and hi == i + 1 else end])
    out: list[list] = []
    for i, row in enumerate(runs):
        if out and out[-1][2] == row:
            out[-1][1] = min((i + 1) * b, T)
        else:
            out.append([i * b, min((i + 1) * b, T), row])
    return out


def _blocking(params: SparseParams, T: int) -> tuple[int, int, int]:
    """Block size b (never above T), block count nb, global query blocks G."""
    b = min(params.block, T)
    nb = math.ceil(T / b)
    return b, nb, min(params.global_blocks, nb)


@ATTENTION.register()  # under its `name`
class SparseAttention(Attention[SparseParams]):
    """Fixed block-sparse pattern: O(n * K * b) instead of O(n^2)."""

    name = "sparse"
    supports_causal = True
    supports_bidirectional = True
    span_param = "block"
    search_choices = {
        "block": [16, 32, 64, 128],
        "local_blocks": [1, 2, 3],
        "global_blocks": [0, 1, 2],
        "random_blocks": [0, 1, 2, 3],
    }

    def __init__(
        self, d_model: int, n_heads: int, seq_len: int, params: SparseParams | None = None
    ) -> None:
        super().__init__(d_model, n_heads, seq_len, params)
        _, self._nb, _ = _blocking(self.params, seq_len)
        # The random draw happens here, once; buffers follow the module across devices.
        self.register_buffer("layout_bidirectional", self.layout(seq_len, False), persistent=False)
        self.register_buffer("layout_causal", self.layout(seq_len, True), persistent=False)

    def layout(self, T: int, causal: bool) -> torch.Tensor:
        """(nb - G, K) key-block indices per non-global query block at length T."""
        return block_layout(self.params, _blocking(self.params, T)[1], causal)

    def _layout_for(self, nb: int, causal: bool, device: torch.device) -> torch.Tensor:
        if nb == self._nb:
            return cast(torch.Tensor, self.layout_causal if causal else self.layout_bidirectional)
        return block_layout(self.params, nb, causal).to(device)

    def block_table(self, T: int, causal: bool) -> torch.Tensor:
        """(nb, nb) bool: which key blocks each query block sees (global rows see all)."""
        return block_table(self.params, T, causal)

    def dense_mask(self, T: int, causal: bool) -> torch.Tensor:
        """(T, T) bool: which keys each query may see (before key_mask). For tests only."""
        b = _blocking(self.params, T)[0]
        blocks = self.block_table(T, causal)
        blocks = blocks.repeat_interleave(b, 0).repeat_interleave(b, 1)[:T, :T]
        if causal:
            blocks &= torch.ones(T, T, dtype=torch.bool).tril()
        return blocks

    def pattern(self, T: int, causal: bool) -> flex.Pattern:
        """Query i sees key j when i's block sees j's block in the layout (and j <= i causal);
        the FlexAttention form of `dense_mask`."""
        b = _blocking(self.params, T)[0]
        table = self.block_table(T, causal).to(self.q_proj.weight.device)

        def allowed(qi: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
            seen = table[qi // b, kv // b]
            return seen & (kv <= qi) if causal else seen

        return allowed

    def attend(self, q, k, v, key_mask, causal):
        B, H, T, D = q.shape
        if flex.use_flex(q):  # CUDA: the same pattern, empty tiles skipped (attention/flex.py)
            pattern = lambda: self.pattern(T, causal)  # built only with a new block mask
            return flex.attend(q, k, v, pattern, key_mask, self._flex_masks[causal])
        b, nb, G = _blocking(self.params, T)
        pad = nb * b - T
        scale = 1.0 / math.sqrt(D)
        neg = neg_inf(q.dtype)
        dev = q.device
        real = torch.ones(B, T, dtype=torch.bool, device=dev)
        if key_mask is not None:
            real = real & key_mask.to(torch.bool)
        parts = []

        if G > 0:  # global query rows: dense against every (earlier) key
            gq = min(G * b, T)
            s = torch.einsum("bhqd,bhkd->bhqk", q[:, :, :gq] * scale, k)  # (B, H, gq, T)
            ok = real[:, None, None, :]  # (B, 1, 1, T)
            if causal:
                ar = torch.arange(T, device=dev)
                ok = ok & (ar[None, :] <= ar[:gq, None])  # (B, 1, gq, T)
            s.masked_fill_(~ok, neg)  # in place: einsum's backward does not need s
            parts.append(torch.einsum("bhqk,bhkd->bhqd", s.softmax(-1), v))  # (B, H, gq, D)

        if nb > G:  # the other query blocks: gathered key blocks from the layout
            lay = self._layout_for(nb, causal, dev)  # (nq, K)
            nq, K = lay.shape
            qb = F.pad(q * scale, (0, 0, 0, pad)).view(B, H, nb, b, D)[:, :, G:]  # (B,H,nq,b,D)
            kb = F.pad(k, (0, 0, 0, pad + b)).view(B, H, nb + 1, b, D)  # (B, H, nb+1, b, D)
            vb = F.pad(v, (0, 0, 0, pad + b)).view(B, H, nb + 1, b, D)  # (B, H, nb+1, b, D)
            flat = lay.reshape(-1)  # index_select: its backward (index_add) beats indexing's
            kg = kb.index_select(2, flat).view(B, H, nq, K * b, D)  # (B, H, nq, K*b, D)
            vg = vb.index_select(2, flat).view(B, H, nq, K * b, D)  # (B, H, nq, K*b, D)

            kpos = (lay[:, :, None] * b + torch.arange(b, device=dev)).view(nq, K * b)  # (nq, K*b)
            # Padding past T and the dummy block (index nb) are False in the padded mask.
            ok = F.pad(real, (0, pad + b), value=False)[:, kpos]  # (B, nq, K*b)
            ok = ok[:, None, :, None, :]  # (B, 1, nq, 1, K*b)
            if causal:
                qpos = torch.arange(G * b, nb * b, device=dev).view(nq, b)  # (nq, b)
                ok = ok & (kpos[:, None, :] <= qpos[:, :, None])  # (B, 1, nq, b, K*b)

            s = torch.einsum("bhnqd,bhnkd->bhnqk", qb, kg)  # (B, H, nq, b, K*b)
            s.masked_fill_(~ok, neg)  # in place: einsum's backward does not need s
            o = torch.einsum("bhnqk,bhnkd->bhnqd", s.softmax(-1), vg)  # (B, H, nq, b, D)
            parts.append(o.reshape(B, H, nq * b, D))  # (B, H, nq*b, D)

        return torch.cat(parts, dim=2)[:, :, :T]  # (B, H, T, D)

    @classmethod
    def validate(cls, params: SparseParams, seq_len: int, causal: bool) -> None:
        try:
            check_positive_int(cls.name, "block", params.block, upper=seq_len)
        except ValueError as exc:
            raise ValueError(
                f"{exc}; allowed 1..{seq_len}, e.g. attention.block={min(64, seq_len)}"
            ) from None
        for field in ("local_blocks", "global_blocks", "random_blocks", "seed"):
            val = getattr(params, field)
            if isinstance(val, bool) or not isinstance(val, int) or val < 0:
                raise ValueError(
                    f"attention.{field} for {cls.name!r} must be an integer >= 0, "
                    f"got {val!r}; e.g. attention.{field}=1"
                )

    @classmethod
    def identity(cls, params: SparseParams, seq_len: int, causal: bool) -> Any:
        """Which keys each query sees, in tokens, and the cost: different params often give
        the same pattern at the same cost (block 16 with 2 random blocks and block 32 alone
        both attend fully at 64 tokens; at 256 tokens the search's 144 combinations give
        71 patterns, 64 with causal masking)."""
        return {
            "pattern": token_pattern(params, seq_len, causal),
            "flops": cls.attention_flops(params, seq_len, 1, 1, causal),  # x heads x head dim
        }

    @classmethod
    def attention_flops(
        cls, params: SparseParams, seq_len: int, n_heads: int, head_dim: int, causal: bool
    ) -> int:
        b, nb, G = _blocking(params, seq_len)
        nq, K = block_layout(params, nb, causal).shape
        blocks = 2 * nq * b * K * b * head_dim  # q @ gathered keys, probs @ gathered values
        dense = 2 * min(G * b, seq_len) * seq_len * head_dim  # global query rows
        return n_heads * (blocks + dense)
