"""The fast training step's two CPU kernels, each computing what the plain PyTorch code computes.

1. Which entries AbsTopK keeps, exactly as `torch.topk` would (and which weights the top-k
projection keeps, sparsity.py: the same question over a whole matrix). AbsTopK (model.py) keeps
the k largest-|x| entries of every row. `torch.topk` on a CPU spends most of its time building
(value, index) pairs; it was a fifth of a training step at the demo shape. Only the k-th largest
value of each row is needed: `numpy.partition` finds it several times faster (rows split over the
process's torch threads, numpy releasing the GIL), and the kept entries are then those at or above
it. That set is topk's whenever a row has exactly k such entries. A row with ties at its k-th value
(typically a row with fewer than k nonzeros, whose zeros tie) gets its mask from `torch.topk`
itself, so the mask, and with it every activation and gradient, is the same as topk's bit for bit
(tests/test_kernels.py). numpy's partition is slow on rows where most values tie, which training
never hands it (it would on weights projected twice at the same density).

2. The loss head: unembedding, bias, bigram rows and mean cross-entropy as one autograd function.
The logits live in one buffer: it starts as the bigram rows, takes the bias and the product in
place, becomes exp(logits - row max) in place, and in backward becomes the logits' gradient in
place. PyTorch's own path allocates and fills several tensors of that size (the logits, the sum
with the bigram rows, log-softmax and its gradient, the zero-filled gradient of the loss). The same
loss and gradients up to float rounding (the additions happen in another order). Its backward
reuses the buffer, so it runs once per forward (as in training).

`use_fast_kernels(False)` restores PyTorch's own code: the step as first written, which
`bench/train_speed.py` measures against. Other devices, and autocast, always use PyTorch's code.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

_enabled = True  # one switch for both kernels (StepSettings.cpu_kernels)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_MIN_ENTRIES_PER_THREAD = 1 << 18  # below this, handing rows to threads costs more than it saves


def use_fast_kernels(enabled: bool) -> None:
    """Turn both kernels on (the default) or off (PyTorch's own code, as first written)."""
    global _enabled
    _enabled = bool(enabled)


def _reset_pool() -> None:  # a forked child has none of its parent's threads
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_reset_pool)


def _chunks(n_rows: int, n_entries: int) -> int:
    """How many threads to split the rows over: the process's torch threads, if the array is big enough."""
    return max(1, min(torch.get_num_threads(), n_rows, n_entries // _MIN_ENTRIES_PER_THREAD))


def _threads() -> ThreadPoolExecutor:
    global _pool, _pool_size
    n = torch.get_num_threads()
    if _pool is None or _pool_size != n:  # one pool per process, remade only if the thread count changes
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="abs-topk"), n
    return _pool


def _kth_largest(a: np.ndarray, k: int) -> np.ndarray:
    """(rows, 1) k-th largest value of every row of a 2-D array."""
    pos = a.shape[1] - k
    n = _chunks(a.shape[0], a.size)
    if n == 1:
        return np.partition(a, pos, axis=1)[:, pos:pos + 1]
    parts = _threads().map(lambda c: np.partition(c, pos, axis=1)[:, pos:pos + 1], np.array_split(a, n))
    return np.concatenate(list(parts))


def _torch_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    idx = a.topk(k, dim=-1, sorted=False).indices
    return torch.zeros_like(a).scatter_(-1, idx, 1.0)


@torch.no_grad()
def keep_mask(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of x's dtype, 1 at the k largest-|x| entries of the last dimension (the set `torch.topk`
    picks) and 0 elsewhere. (A float mask: comparisons into bool tensors are several times slower.)"""
    a = x.detach().abs()
    width = a.shape[-1]
    if not _enabled or a.device.type != "cpu" or a.dtype not in (torch.float32, torch.float64) or k >= width:
        return _torch_mask(a, k)
    rows = a.reshape(-1, width)
    thr = torch.from_numpy(_kth_largest(rows.numpy(), k))
    mask = torch.ge(rows, thr, out=torch.empty_like(rows))
    off = (mask.sum(-1) != k).nonzero().squeeze(1)  # ties at the k-th value (or a NaN): topk decides
    if off.numel():
        mask[off] = _torch_mask(rows[off], k)
    return mask.view_as(a)


def fused_loss_applies(x: torch.Tensor) -> bool:
    return _enabled and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


class UnembedCrossEntropy(torch.autograd.Function):
    """mean over rows of cross_entropy(x @ weight.T + bias + bigram[prev], target); x (N, d)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, bigram: torch.Tensor | None,
                prev: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if bigram is not None:
            buf = bigram.index_select(0, prev).add_(bias)
        else:
            buf = bias.expand(n, -1).clone()
        buf.addmm_(x, weight.t())  # the logits
        picked = buf.gather(1, target[:, None])
        top = buf.amax(1, keepdim=True)
        total = buf.sub_(top).exp_().sum(1, keepdim=True)  # buf: exp(logits - max), softmax times total
        loss = (top + total.log() - picked).mean()
        ctx.has_bigram = bigram is not None
        ctx.save_for_backward(x, weight, buf, total, prev, target)
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor):
        x, weight, buf, total, prev, target = ctx.saved_tensors
        n = buf.shape[0]
        scale = grad / n
        buf.mul_(scale / total)  # the softmax times grad / n ...
        buf.scatter_add_(1, target[:, None], (-scale).expand(n, 1))  # ... minus the one-hot: d loss / d logits
        need = ctx.needs_input_grad
        gx = buf @ weight if need[0] else None
        gw = buf.t() @ x if need[1] else None
        gb = buf.sum(0) if need[2] else None
        gbig = None
        if ctx.has_bigram and need[3]:
            gbig = buf.new_zeros(weight.shape[0], buf.shape[1]).index_add_(0, prev, buf)
        return gx, gw, gb, gbig, None, None
