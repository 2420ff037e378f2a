"""One optimizer step of weight-sparse training, and what makes it fast on a CPU.

The step is the recipe of docs/method.md, "Weight-sparse training": loss, backward, the global
gradient rescaled to RMS 1, AdamW at the scheduled learning rate, then the top-k projection at the
scheduled density. `StepSettings` picks how it runs, never what it computes:

- `keep_freed_memory`: glibc returns every freed block of 32 MiB or more to the kernel, so each
  step's logits (batch x context x vocab floats) are page-faulted in afresh; that cost about a
  sixth of the step at the demo shape. Raising glibc's mmap and trim thresholds keeps freed memory
  in the process for reuse (the resident size stays at its peak). Linux/glibc only; elsewhere a no-op.
- `micro_batch`: the batch goes through forward and backward in slices of this many sequences,
  the gradients adding up (each slice's loss weighted by its share), which keeps the working set
  in cache. The same gradient up to float rounding.
- `fused_adam`: PyTorch's fused AdamW kernel, one pass over each tensor instead of several.
- `cpu_kernels`: on a CPU, AbsTopK's mask from numpy's partition instead of `torch.topk` (the same
  mask bit for bit), and the unembedding, bigram table and cross-entropy as one autograd function
  that works in a single logits buffer (`kernels.py`).

`PLAIN_STEP` turns all four off: the step as it was first written, kept for `bench/train_speed.py`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

from .kernels import use_fast_kernels
from .model import SparseGPT
from .sparsity import normalize_grad_rms_, project_


@dataclass(frozen=True)
class StepSettings:
    micro_batch: int | None = 16  # sequences per forward/backward; None: the whole batch at once
    fused_adam: bool = True
    keep_freed_memory: bool = True
    cpu_kernels: bool = True


FAST_STEP = StepSettings()
PLAIN_STEP = StepSettings(micro_batch=None, fused_adam=False, keep_freed_memory=False, cpu_kernels=False)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h
_KEEP_BYTES = 1 << 30
_memory_kept = False


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks up to 1 GiB for reuse instead of unmapping them; True if it
    did (once per process)."""
    global _memory_kept
    if _memory_kept:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc: nothing to tune
    _memory_kept = bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))
    return _memory_kept


def forward_backward(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     micro_batch: int | None, no_sync: Callable[[], ContextManager] = nullcontext,
                     autocast: Callable[[], ContextManager] = nullcontext) -> float:
    """Mean loss over the batch, with its gradient accumulated into the parameters' .grad.

    `loss_fn` is the model's loss, or its DistributedDataParallel wrapper (`distributed.py`), whose
    `no_sync` holds the gradient all-reduce back until the last slice."""
    n = x.shape[0]
    size = n if micro_batch is None else max(1, min(micro_batch, n))
    total = 0.0
    for start in range(0, n, size):
        xs, ys = x[start:start + size], y[start:start + size]
        with nullcontext() if start + size >= n else no_sync():
            with autocast():
                loss = loss_fn(xs, ys)
            share = xs.shape[0] / n
            (loss * share if share != 1.0 else loss).backward()
        total += loss.item() * share
    return total


def train_step(model: SparseGPT, opt: torch.optim.Optimizer, params: list[torch.nn.Parameter], x: torch.Tensor,
               y: torch.Tensor, lr: float, density: float, settings: StepSettings = FAST_STEP,
               loss_fn: Callable | None = None, no_sync: Callable[[], ContextManager] = nullcontext,
               autocast: Callable[[], ContextManager] = nullcontext) -> float:
    """One step of the recipe on batch (x, y); returns the batch's mean loss before the step.
    (x, y) is this process's share of the batch when several processes train (`distributed.py`)."""
    opt.zero_grad(set_to_none=True)
    use_fast_kernels(settings.cpu_kernels)
    loss = forward_backward(loss_fn or model.loss, x, y, settings.micro_batch, no_sync, autocast)
    normalize_grad_rms_(params)
    for group in opt.param_groups:
        group["lr"] = lr
    opt.step()
    project_(model, density)
    return loss
