"""The CUDA FlexAttention path (spaces/attention/flex.py), checked on the CPU: FlexAttention
runs eagerly there (forward only), so each variant's pattern can be compared with its einsum
kernel, padding included. No GPU figures are claimed by these tests."""

from __future__ import annotations

import warnings

import pytest
import torch

from spaces.attention import flex
from spaces.attention.sparse import SparseAttention, SparseParams
from spaces.attention.window import WindowAttention, WindowParams

pytestmark = pytest.mark.skipif(not flex.available(), reason="this torch has no FlexAttention")

H, D = 2, 8


def _inputs(T: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(2, H, T, D, generator=gen, dtype=torch.float64) for _ in range(3)]


def _compare(module, T: int, causal: bool, padded: bool, monkeypatch) -> None:
    q, k, v = _inputs(T)
    key_mask = None
    if padded:  # row 1 has 7 padding tokens at the end
        key_mask = torch.ones(2, T, dtype=torch.bool)
        key_mask[1, T - 7 :] = False
    with torch.no_grad():
        kernel = module.attend(q, k, v, key_mask, causal)
        monkeypatch.setattr(flex, "use_flex", lambda q: True)  # as on CUDA
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "called without torch.compile": eager on CPU
            fused = module.attend(q, k, v, key_mask, causal)
        monkeypatch.undo()
    real = torch.ones(2, T, dtype=torch.bool) if key_mask is None else key_mask
    torch.testing.assert_close(
        fused[real[:, None, :, None].expand_as(fused)].view(-1),
        kernel[real[:, None, :, None].expand_as(kernel)].view(-1),
        atol=1e-9,
        rtol=1e-9,
    )


@pytest.mark.parametrize("T", [40, 200])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("window, global_tokens", [(4, 0), (16, 0), (16, 3), (300, 0)])
def test_window_pattern_matches_the_kernel(T, causal, padded, window, global_tokens, monkeypatch):
    if causal and global_tokens:
        pytest.skip("global tokens are bidirectional only")
    params = WindowParams(window=window, global_tokens=global_tokens)
    _compare(WindowAttention(H * D, H, T, params), T, causal, padded, monkeypatch)


@pytest.mark.parametrize("T", [64, 200])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize(
    "params",
    [
        SparseParams(block=16, local_blocks=1, global_blocks=1, random_blocks=0),
        SparseParams(block=8, local_blocks=2, global_blocks=0, random_blocks=2, seed=3),
        SparseParams(block=32, local_blocks=1, global_blocks=2, random_blocks=1),
    ],
)
def test_sparse_pattern_matches_the_kernel(T, causal, padded, params, monkeypatch):
    _compare(SparseAttention(H * D, H, T, params), T, causal, padded, monkeypatch)


def test_sparse_pattern_is_the_dense_mask():
    m = SparseAttention(H * D, H, 100, SparseParams(block=16, random_blocks=2, seed=1))
    i = torch.arange(100)
    for causal in (False, True):
        grid = m.pattern(100, causal)(i[:, None], i[None, :])
        assert torch.equal(grid, m.dense_mask(100, causal))


def test_the_path_is_cuda_only_and_can_be_turned_off(monkeypatch):
    q = torch.zeros(1, 1, 8, 8)
    assert not flex.use_flex(q)  # CPU tensors keep the einsum kernels (no CPU backward)
    monkeypatch.setenv("ATTNSEARCH_FLEX", "0")
    assert not flex.available()
    monkeypatch.setenv("ATTNSEARCH_FLEX", "1")
    assert flex.available()


def test_heads_below_16_keep_the_einsum_kernel_on_cuda():
    """The compiled FlexAttention kernel raises NYI for head dims below 16 (seen on an H200,
    torch 2.11): such heads stay on the einsum kernel; 16 and up, powers of 2 or not, use flex."""
    from types import SimpleNamespace

    def on_cuda(head_dim):
        return SimpleNamespace(is_cuda=True, shape=(2, 4, 64, head_dim))

    assert flex.MIN_HEAD_DIM == 16
    assert [d for d in (8, 15, 16, 24, 64) if flex.use_flex(on_cuda(d))] == [16, 24, 64]


def test_a_padding_free_block_mask_is_built_once_per_length(monkeypatch):
    m = WindowAttention(H * D, H, 64, WindowParams(window=8))
    q, k, v = _inputs(64)
    monkeypatch.setattr(flex, "use_flex", lambda q: True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.attend(q, k, v, None, False)
        first = m._flex_masks[False][(64, "cpu")]
        m.attend(q, k, v, None, False)
        assert m._flex_masks[False][(64, "cpu")] is first and len(m._flex_masks[False]) == 1
        m.attend(q, k, v, torch.ones(2, 64, dtype=torch.bool), False)  # padding: its own mask
        assert len(m._flex_masks[False]) == 1 and not m._flex_masks[True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize(
    "module",
    [
        lambda T, causal: WindowAttention(
            2 * 16, 2, T, WindowParams(window=64, global_tokens=0 if causal else 2)
        ),
        lambda T, causal: SparseAttention(2 * 16, 2, T, SparseParams(block=32, random_blocks=1)),
    ],
)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_on_cuda_forward_and_gradients_match_the_einsum_kernel(module, causal, padded, monkeypatch):
    T = 512  # head dim 16: the compiled kernel's smallest
    m = module(T, causal).cuda()
    key_mask = None
    if padded:  # row 1 has 7 padding tokens at the end
        key_mask = torch.ones(2, T, dtype=torch.bool, device="cuda")
        key_mask[1, T - 7 :] = False
    grads = []
    for fused in (False, True):
        monkeypatch.setattr(flex, "use_flex", lambda q, fused=fused: fused)
        gen = torch.Generator().manual_seed(0)
        q, k, v = (
            torch.randn(2, 2, T, 16, generator=gen).cuda().requires_grad_() for _ in range(3)
        )
        out = m.attend(q, k, v, key_mask, causal)
        real = torch.ones(2, T, dtype=torch.bool, device="cuda") if key_mask is None else key_mask
        out = out * real[:, None, :, None]  # padded query rows are don't-care in both kernels
        out.square().sum().backward()
        grads.append((out.detach(), q.grad, k.grad, v.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=2e-3, rtol=2e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_bf16_training_of_a_window_model_runs_through_flex():
    """The training path as a search runs it: bf16 autocast, the compiled flex kernel, a
    finite loss and gradients over two steps (the second reuses the cached block mask)."""
    from spaces import ArchConfig, build_model
    from trainers.step import autocast

    cfg = ArchConfig(
        vocab_size=256,
        seq_len=1024,
        causal=True,
        depth=2,
        d_model=128,
        n_heads=2,
        attention="window",
        attention_params={"window": 128},
    )
    model = build_model(cfg).cuda()
    tokens = torch.randint(0, 256, (4, 1024), device="cuda")
    for _ in range(2):
        with autocast(torch.device("cuda")):
            logits = model(tokens)
        assert logits.dtype == torch.bfloat16
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_recompile_limit_is_raised_for_many_candidate_shapes():
    flex._compiled.cache_clear()
    flex._compiled()
    config = torch._dynamo.config
    limit = getattr(config, "recompile_limit", None) or config.cache_size_limit
    assert limit >= flex.RECOMPILE_LIMIT


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_full_attention_runs_on_the_flash_kernel_in_bf16():
    """Full attention (no padding) is plain SDPA: with only the flash backend allowed it still
    runs, so training uses flash. With padding it needs a mask (memory-efficient kernel)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from spaces.attention.full import FullAttention

    m = FullAttention(512, 8, 2048).cuda()
    x = torch.randn(2, 2048, 512, device="cuda", requires_grad=True)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        y = m(x, causal=True)
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()


def test_inside_an_outer_torch_compile_the_plain_flex_function_is_traced(monkeypatch):
    """`search.train --compile` compiles the whole model: flex.attend must then hand dynamo the
    plain flex_attention (compiled with the model), not the separately compiled kernel. Checked
    with dynamo's eager backend on the CPU (forward): the traced path and the output."""
    m = WindowAttention(H * 16, H, 64, WindowParams(window=8))
    x = torch.randn(2, 64, H * 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(x, causal=True)  # the einsum kernel
    monkeypatch.setattr(flex, "use_flex", lambda q: True)
    seen = []
    real = flex._kernel

    def spy(q):
        kernel = real(q)
        seen.append((kernel, torch.compiler.is_compiling()))
        return kernel

    monkeypatch.setattr(flex, "_kernel", spy)
    torch._dynamo.reset()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = torch.compile(m, backend="eager")(x, causal=True)
    torch._dynamo.reset()
    assert seen == [(flex._FLEX.flex_attention, True)]
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
