"""FLOPs and parameters of a config, counted by fvcore on the real module.

Convention (fvcore's, used everywhere in this project): **one multiply-add = one FLOP**. So a
"GFLOP" here equals a GMAC; hardware FLOPs (a multiply and an add counted apart) are about 2x
these numbers, and one training step costs about `TRAIN_FLOPS_FACTOR` = 3x the forward count.

What is counted: every matrix product (linear layers, einsum, matmul/bmm, and the two products
inside `scaled_dot_product_attention`) and fvcore's LayerNorm estimate (5 per element with an
affine transform). What is not: softmax, activations, residual adds, masking, embedding lookups,
sorting and other elementwise or indexing work; `ELEMENTWISE_OPS` lists every such op our models
emit, and a test asserts fvcore reports no other unsupported op, so nothing with real arithmetic
can be silently counted as zero.

Our handles fix three fvcore gaps: it has no handle for `aten::scaled_dot_product_attention`
(counted as the dense T x S grid the kernel's math path computes, causal or not), its einsum
count comes from numpy's rounded estimate (ours is the exact product of the index sizes of each
pairwise contraction), and its matmul ignores broadcast batch dimensions (ours does not).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import Counter
from typing import Any

import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from spaces.attention import ATTENTION
from spaces.config import ArchConfig
from spaces.model import build_model

FLOP_UNIT = "fvcore: 1 multiply-add = 1 FLOP"  # the one statement of the convention
FLOP_CONVENTION = f"{FLOP_UNIT} (forward pass, batch 1, one sequence)"
TRAIN_FLOPS_FACTOR = (
    3  # forward + backward ~ 3x forward (backward ~ 2x: grads wrt inputs and weights)
)
LAYER_NORM_FLOPS_PER_ELEMENT = 5  # fvcore's estimate for an affine LayerNorm

# Ops fvcore does not count and that carry no multiply-add: elementwise maths, reductions,
# activations, softmax, indexing and sorting. Anything outside this set that fvcore reports as
# unsupported fails the tests.
_ELEMENTWISE = (
    "add",
    "add_",
    "sub",
    "sub_",
    "rsub",
    "mul",
    "mul_",
    "div",
    "div_",
    "neg",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "pow",
    "square",
    "abs",
    "sum",
    "mean",
    "softmax",
    "log_softmax",
    "logsumexp",
    "gelu",
    "elu",
    "elu_",
    "sigmoid",
    "tanh",
    "silu",
    "cumsum",
    "amax",
    "argmax",
    "max_pool1d",
    "embedding",
    "sort",
    "argsort",
    "scatter",
    "scatter_add",
    "scatter_add_",
    "where",
    "masked_fill_",
    "fill_",
    "zero_",
    "unfold",
    "repeat",
    "repeat_interleave",
    "tril",
    "triu",
    "ones_like",
    "lt",
    "le",
    "ne",
    "logical_not",
    "logical_and",
    "logical_or",
    "bitwise_and",
    "bitwise_or",
    "bitwise_not",
    "min",
    "minimum",
    "maximum",
    "clamp_min",
    "norm",
    "linalg_vector_norm",
    "normal_",
    "randn",
    "topk",
    "unflatten",
    "index_select",
    "take_along_dim",
    "expand_as",
    "view_as",
    "type_as",
    "new_ones",
    "bernoulli_",
    "round",
    "ceil",
    "sign",
    "pad",
    "clone",
    "zeros_like",
    "empty_like",
    "masked_select",
    "isfinite",
    "any",
    "all",
    "flip",
    "cummax",
    "diff",
    "eye",
    "scatter_",
    "scatter_reduce",
    "index_add",
    "index_add_",
    "gather_",
    "new_empty_strided",
)
ELEMENTWISE_OPS = frozenset(f"aten::{op}" for op in _ELEMENTWISE)


# -- fvcore handles ---------------------------------------------------------------------------
def _matmul_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """Broadcasting matmul: prod(output shape) x contracted size."""
    a, b = (get_shape(v) for v in inputs[:2])
    out = get_shape(outputs[0])
    return math.prod(out) * a[-1] if len(a) > 1 or len(b) > 1 else a[0]


def _einsum_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """Exact MACs of torch.einsum evaluated as left-to-right pairwise contractions."""
    equation = inputs[0].toIValue().replace(" ", "")
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    lhs, out = equation.split("->")
    terms = lhs.split(",")
    size: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        if "." in term:
            raise NotImplementedError(f"einsum with ellipsis is not counted exactly: {equation}")
        for letter, n in zip(term, shape):
            size[letter] = max(size.get(letter, 1), n)
    if len(terms) == 1:
        return 0  # a single-operand einsum only sums or permutes
    total, left = 0, terms[0]
    for i, right in enumerate(terms[1:], start=1):
        letters = set(left) | set(right)
        total += math.prod(size[x] for x in letters)
        keep = set(out).union(*terms[i + 1 :])
        left = "".join(x for x in sorted(letters) if x in keep)
    return total


def _sdpa_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """q @ k^T and p @ v of scaled_dot_product_attention over the dense T x S grid."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = math.prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


HANDLES = {
    "aten::matmul": _matmul_flops,
    "aten::einsum": _einsum_flops,
    "aten::scaled_dot_product_attention": _sdpa_flops,
}


def analysis(cfg: ArchConfig, device: str = "meta") -> FlopCountAnalysis:
    """An fvcore analysis of the model `cfg` builds, on one sequence of cfg.seq_len tokens.

    On the "meta" device tensors carry shapes but no data, so building and tracing skip all
    arithmetic; kernels that need data (e.g. `.item()`) fall back to the CPU in `_count`."""
    with torch.random.fork_rng(), torch.device(device):
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        tokens = torch.zeros(1, cfg.seq_len, dtype=torch.long)
    fca = FlopCountAnalysis(model, (tokens,)).set_op_handle(**HANDLES)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fca.tracer_warnings("none")
    return fca


def _traced(cfg: ArchConfig) -> tuple[FlopCountAnalysis, Counter]:
    """Trace on the meta device; fall back to the CPU for kernels that need real data."""
    for device in ("meta", "cpu"):
        try:
            fca = analysis(cfg, device)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                return fca, fca.by_module()
        except (RuntimeError, NotImplementedError):
            if device == "cpu":
                raise
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=4096)
def _count_canonical(cfg: ArchConfig) -> tuple[int, int, tuple[tuple[str, int], ...], int, int]:
    """(total, one block's FLOPs, unsupported ops, params, one block's params), depth-1 model."""
    fca, by_module = _traced(cfg)
    total, block = int(by_module[""]), int(by_module["blocks.0"])
    unsupported = tuple(sorted(fca.unsupported_ops().items()))
    model = fca._model
    params = sum(p.numel() for p in model.parameters())
    block_params = sum(p.numel() for p in model.blocks[0].parameters())
    return total, block, unsupported, params, block_params


def _count(cfg: ArchConfig) -> tuple[int, tuple[tuple[str, int], ...], int]:
    """(FLOPs, unsupported ops, params) from one fvcore trace of the depth-1 model.

    Every layer of the trunk is the same module shape, so a depth-L model costs exactly the
    depth-1 model plus (L - 1) times its block, as counted by fvcore for `blocks.0`. Sharing and
    dropout do not change FLOPs. One trace per (variant, shape) serves every depth of a search.
    """
    canon = cfg.replace(depth=1, unique_blocks=0, dropout=0.0, layer_attention=None)
    total, block, unsupported, params, block_params = _count_canonical(canon)
    if cfg.layer_attention is None:
        flops = total + (cfg.depth - 1) * block
        params += ((cfg.unique_blocks or cfg.depth) - 1) * block_params
        return flops, unsupported, params
    # A hybrid stack: the trunk outside the blocks, plus each layer's own block, counted by
    # fvcore on a depth-1 model of that layer's attention (one trace per distinct spec).
    blocks: dict = {}
    for spec in dict.fromkeys(cfg.layer_specs()):
        one = canon.replace(attention=spec.attention, attention_params=spec.attention_params)
        _, b_flops, b_unsupported, _, b_params = _count_canonical(one)
        blocks[spec] = (b_flops, b_params)
        unsupported = tuple(
            sorted((Counter(dict(unsupported)) | Counter(dict(b_unsupported))).items())
        )
    specs = cfg.layer_specs()
    flops = total - block + sum(blocks[s][0] for s in specs)
    firsts = dict(zip(reversed(cfg.layer_to_block()), reversed(range(cfg.depth))))
    params += -block_params + sum(blocks[specs[layer]][1] for layer in firsts.values())
    return flops, unsupported, params


def count_flops(cfg: ArchConfig) -> int:
    """Forward FLOPs of one sequence (fvcore convention: 1 multiply-add = 1 FLOP). Cached."""
    return _count(cfg)[0]


def unsupported_ops(cfg: ArchConfig) -> Counter:
    """Ops fvcore saw but did not count for this config (should all be in ELEMENTWISE_OPS)."""
    return Counter(dict(_count(cfg)[1]))


def count_params(cfg: ArchConfig) -> int:
    """Learned parameters (tied and ALBERT-shared weights counted once)."""
    return _count(cfg)[2]


def training_flops_per_sequence(cfg: ArchConfig) -> int:
    """FLOPs of one training sequence: forward x TRAIN_FLOPS_FACTOR (3: forward + backward)."""
    return TRAIN_FLOPS_FACTOR * count_flops(cfg)


def sequences_for_compute(cfg: ArchConfig, compute: float) -> int:
    """How many training sequences a compute budget (training FLOPs) buys, at least 1."""
    return max(1, int(compute // training_flops_per_sequence(cfg)))


# -- analytic formula: fast pre-screen and cross-check -----------------------------------------
def estimate_flops(cfg: ArchConfig) -> int:
    """Closed-form forward FLOPs; equals `count_flops` for the layouts our kernels compute."""
    T, d, f = cfg.seq_len, cfg.d_model, cfg.d_ff
    total = 0
    # each distinct layer attention once, times its layers: O(distinct specs), not O(depth)
    specs = Counter(cfg.layer_specs()) if cfg.layer_attention else {cfg.layer_specs()[0]: cfg.depth}
    for spec, layers in specs.items():  # a hybrid stack mixes attentions
        variant = ATTENTION.get(spec.attention)
        n_proj = 3 if variant.shared_qk else 4  # q (k) v o
        total += layers * (
            n_proj * T * d * d  # projections
            + variant.attention_flops(
                spec.attention_params, T, cfg.n_heads, cfg.head_dim, cfg.causal
            )
            + 2 * T * d * f  # FFN up and down
            + 2 * LAYER_NORM_FLOPS_PER_ELEMENT * T * d  # two LayerNorms
        )
    if cfg.norm == "pre":
        total += LAYER_NORM_FLOPS_PER_ELEMENT * T * d  # final LayerNorm
    total += d * cfg.num_classes if cfg.num_classes else T * d * cfg.vocab_size  # head
    return total


def estimate_params(cfg: ArchConfig) -> int:
    """Closed-form parameter count; equals `count_params` (tested), without building a model."""
    d, f = cfg.d_model, cfg.d_ff
    specs = cfg.layer_specs()
    firsts = dict(zip(reversed(cfg.layer_to_block()), reversed(range(cfg.depth))))
    total = (cfg.vocab_size + (cfg.seq_len if cfg.positions == "learned" else 0)) * d
    for layer in firsts.values():  # one weight block per unique block, with its attention
        spec = specs[layer]
        variant = ATTENTION.get(spec.attention)
        n_proj = 3 if variant.shared_qk else 4
        total += (
            n_proj * (d * d + d)
            + variant.extra_params(spec.attention_params, d, cfg.n_heads, cfg.seq_len)
            + (d * f + f)
            + (f * d + d)  # FFN
            + 2 * 2 * d  # two LayerNorms
        )
    total += 2 * d if cfg.norm == "pre" else 0  # final LayerNorm
    total += d * cfg.num_classes + cfg.num_classes  # classifier (the LM head is tied)
    return total


def flop_breakdown(cfg: ArchConfig) -> dict[str, int]:
    """Counted FLOPs split into attention kernel, projections, FFN, norms and head."""
    _, by_module = _traced(cfg)
    parts: Counter[str] = Counter()
    for name, flops in by_module.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "attn":
            parts["attention_kernel"] += flops
        elif leaf in ("q_proj", "k_proj", "v_proj", "o_proj"):
            parts["projections"] += flops
            parts["attention_kernel"] -= flops  # attn's total includes its projections
        elif leaf in ("up", "down"):
            parts["ffn"] += flops
        elif leaf.startswith("norm"):
            parts["norms"] += flops
        elif leaf == "head":
            parts["head"] += flops
    parts["total"] = by_module[""]
    return dict(parts)


__all__ = [
    "ELEMENTWISE_OPS",
    "FLOP_CONVENTION",
    "FLOP_UNIT",
    "TRAIN_FLOPS_FACTOR",
    "count_flops",
    "count_params",
    "estimate_flops",
    "estimate_params",
    "flop_breakdown",
    "sequences_for_compute",
    "training_flops_per_sequence",
    "unsupported_ops",
]
