"""Weight sparsity: which matrices are sparse, the top-k projection, and the schedules.

Gao et al. (2025); docs/method.md, "Weight-sparse training": after every optimizer step each weight matrix keeps only its
top-k entries by magnitude (same density for every matrix), with at least 4 nonzeros per neuron
and per attention channel so no unit dies. Density anneals linearly from dense to the target
between 1% and 50% of training, and the learning rate is multiplied by sqrt(target / current
density) while it does ("sharkfin"), on top of a 1% warm-up and linear decay to zero.

These are small functions called by the training loop; the model knows nothing of them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .kernels import keep_mask

MIN_PER_UNIT = 4

# Which axis of each sparse matrix indexes a unit that must keep MIN_PER_UNIT weights.
# nn.Linear weights are (out, in): q/k/v/fc rows are channels/neurons; o/proj columns are.
_UNIT_AXIS = {
    "attn.q.weight": 0,
    "attn.k.weight": 0,
    "attn.v.weight": 0,
    "attn.o.weight": 1,
    "mlp.fc.weight": 0,
    "mlp.proj.weight": 1,
}


def sparse_matrices(model: nn.Module) -> dict[str, tuple[nn.Parameter, int | None]]:
    """Name -> (weight matrix, unit axis or None) for every matrix the sparsity applies to:
    embeddings, unembedding, attention and MLP weights. Biases, norms and the bigram table stay dense."""
    out: dict[str, tuple[nn.Parameter, int | None]] = {}
    for name, p in model.named_parameters():
        if name in ("wte.weight", "wpe.weight", "lm_head.weight"):
            out[name] = (p, None)
        else:
            for suffix, axis in _UNIT_AXIS.items():
                if name.endswith(suffix):
                    out[name] = (p, axis)
    return out


def n_keep(numel: int, density: float) -> int:
    return max(1, min(numel, round(density * numel)))


@torch.no_grad()
def topk_mask(w: torch.Tensor, density: float, unit_axis: int | None, min_per_unit: int = MIN_PER_UNIT) -> torch.Tensor:
    """Boolean mask of the entries kept: each unit's `min_per_unit` largest first, then the largest
    of the rest until round(density * numel) entries are kept (more if the floor needs it)."""
    scores = w.abs().float()
    k = n_keep(w.numel(), density)
    if unit_axis is not None:
        other = 1 - unit_axis
        m = min(min_per_unit, w.shape[other])
        protected = scores.topk(m, dim=other).indices
        scores = scores.scatter(other, protected, float("inf"))
        k = max(k, m * w.shape[unit_axis])
    return keep_mask(scores.view(1, -1), k).view_as(w).bool()  # the set flat topk picks (kernels.py)


@torch.no_grad()
def project_(model: nn.Module, density: float) -> None:
    """Zero all but the top entries of every sparse matrix, in place. Density 1 does nothing."""
    if density >= 1.0:
        return
    for p, axis in sparse_matrices(model).values():
        p.mul_(topk_mask(p, density, axis))


def density_at(step: int, total_steps: int, target: float) -> float:
    """Dense until 1% of training, then linear to `target` at 50%, then constant."""
    start, end = 0.01 * total_steps, 0.5 * total_steps
    if target >= 1.0 or step <= start:
        return 1.0
    if step >= end:
        return target
    return 1.0 + (target - 1.0) * (step - start) / (end - start)


def lr_at(step: int, total_steps: int, base_lr: float, target: float) -> float:
    """Linear warm-up over the first 1%, linear decay to zero, times sqrt(target / density)."""
    warmup = max(1, math.ceil(0.01 * total_steps))
    if step < warmup:
        shape = (step + 1) / warmup
    else:
        shape = max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return base_lr * shape * math.sqrt(min(1.0, target) / density_at(step, total_steps, target))


@torch.no_grad()
def normalize_grad_rms_(params: list[nn.Parameter], eps: float = 1e-12) -> float:
    """Rescale all gradients together so their global root-mean-square is 1; returns the old RMS."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    n = sum(g.numel() for g in grads)
    rms = math.sqrt(sum(float(g.pow(2).sum()) for g in grads) / n)
    if rms > eps:
        for g in grads:
            g.div_(rms)
    return rms


def matrix_densities(model: nn.Module) -> dict[str, float]:
    return {name: float((p != 0).sum()) / p.numel() for name, (p, _) in sparse_matrices(model).items()}
