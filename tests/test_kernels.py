"""The fast step's CPU kernels compute what PyTorch's own code computes (sparse_model/kernels.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sparse_model import kernels
from sparse_model.model import ModelConfig, SparseGPT, abs_topk
from sparse_model.sparsity import topk_mask


@pytest.fixture
def plain_kernels():
    """Run a block with PyTorch's own code, restoring the fast kernels after."""
    def switch(on: bool) -> None:
        kernels.use_fast_kernels(on)
    yield switch
    kernels.use_fast_kernels(True)


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    plain = torch.randn(4, 64, 128, generator=g)
    wide = torch.randn(4, 300, 512, generator=g)  # 614,400 entries: split over the threads (kernels._chunks)
    zeros = plain.clone()
    zeros[zeros.abs() < 1.2] = 0.0  # about 23% nonzero: most rows have fewer than k=32 nonzeros, zeros tie
    repeats = torch.randint(-3, 4, (256, 128), generator=g).float()  # ties at nonzero values too
    return [plain, wide, zeros, repeats]


@pytest.mark.parametrize("case", range(4), ids=["random", "wide", "mostly-zero", "repeated-values"])
def test_abs_topk_mask_and_gradient_are_topks_bit_for_bit(case, plain_kernels):
    x0 = _inputs()[case]
    results = []
    for fast in (False, True):
        plain_kernels(fast)
        x = x0.clone().requires_grad_()
        y = abs_topk(x, 0.25)
        (y * torch.arange(1, y.numel() + 1).view_as(y).float().sin()).sum().backward()  # no zero weight
        results.append((y.detach(), x.grad))
    (y_plain, g_plain), (y_fast, g_fast) = results
    k = math.ceil(0.25 * x0.shape[-1])
    assert torch.equal(y_fast, y_plain) and torch.equal(g_fast, g_plain)
    assert ((g_fast != 0).sum(-1) == k).all()  # exactly k entries per row pass a gradient, ties or not


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_weight_projection_keeps_the_weights_topk_keeps(axis, plain_kernels):
    g = torch.Generator().manual_seed(3)
    w = torch.randn(256, 128, generator=g)
    w[torch.rand(w.shape, generator=g) < 0.8] = 0.0  # 20% nonzero, density 0.25: the zeros tie at the k-th value
    masks = []
    for fast in (False, True):
        plain_kernels(fast)
        masks.append(topk_mask(w, 0.25, axis))
    assert torch.equal(masks[0], masks[1]) and masks[1].dtype == torch.bool
    assert int(masks[1].sum()) == round(0.25 * w.numel())


def test_keep_mask_keeps_the_largest_magnitudes_on_a_hand_made_row():
    x = torch.tensor([[0.5, -5.0, 1.0, 0.0, -0.1, 4.0, 2.0, -3.0]])
    assert kernels.keep_mask(x, 3).tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]]


def _loss_inputs(dtype=torch.float32, bigram=True):
    g = torch.Generator().manual_seed(1)
    n, d, v = 96, 16, 40
    x = torch.randn(n, d, generator=g, dtype=dtype, requires_grad=True)
    w = (0.3 * torch.randn(v, d, generator=g, dtype=dtype)).requires_grad_()
    b = (0.1 * torch.randn(v, generator=g, dtype=dtype)).requires_grad_()
    big = (0.2 * torch.randn(v, v, generator=g, dtype=dtype)).requires_grad_() if bigram else None
    prev = torch.randint(0, v, (n,), generator=g)
    target = torch.randint(0, v, (n,), generator=g)
    return x, w, b, big, prev, target


@pytest.mark.parametrize("bigram", [True, False])
def test_fused_loss_equals_pytorchs_cross_entropy_and_its_gradients(bigram):
    x, w, b, big, prev, target = _loss_inputs(bigram=bigram)
    params = [t for t in (x, w, b, big) if t is not None]
    logits = F.linear(x, w, b) + (F.embedding(prev, big) if bigram else 0)
    ref = F.cross_entropy(logits, target)
    ref_grads = torch.autograd.grad(ref, params)
    fused = kernels.UnembedCrossEntropy.apply(x, w, b, big, prev, target)
    grads = torch.autograd.grad(fused, params)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-6)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_fused_loss_gradients_in_double_agree_to_rounding():
    x, w, b, big, prev, target = _loss_inputs(dtype=torch.float64)
    ref = torch.autograd.grad(F.cross_entropy(F.linear(x, w, b) + F.embedding(prev, big), target), (x, w, b, big))
    got = torch.autograd.grad(kernels.UnembedCrossEntropy.apply(x, w, b, big, prev, target), (x, w, b, big))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-15)


def test_model_loss_is_the_same_with_and_without_the_kernels(plain_kernels):
    torch.manual_seed(0)
    model = SparseGPT(ModelConfig(n_layer=1, d_model=32, n_head=2, d_head=16, d_mlp=128, n_ctx=32, vocab_size=300))
    with torch.no_grad():
        model.bigram.normal_(0, 0.5)  # a trained table, not zeros
    idx = torch.randint(0, 300, (4, 33), generator=torch.Generator().manual_seed(2))
    out = []
    for fast in (False, True):
        plain_kernels(fast)
        model.zero_grad()
        loss = model.loss(idx[:, :-1], idx[:, 1:])
        loss.backward()
        out.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-6)
    for got, want in zip(out[1][1], out[0][1]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
