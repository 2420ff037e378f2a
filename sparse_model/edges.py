"""The edges of a circuit: the nonzero weights that join two of its nodes (docs/method.md,
"Pruning", step 6). `circuit_edges` lists them; `count_edges` only counts them, fast enough to run
for every point of a pruning search, where a point may keep thousands of nodes.
"""

from __future__ import annotations

import torch

from .model import SparseGPT

Edge = tuple[str, int, str, int, float, str]  # (source location, index, target location, index, weight, kind)


def _sets(kept: list[tuple[str, int]]) -> dict[str, set[int]]:
    sets: dict[str, set[int]] = {}
    for loc, i in kept:
        sets.setdefault(loc, set()).add(i)
    return sets


def _structure(model: SparseGPT):
    """The circuit's possible edges: (source, target, weight matrix (target units x source units),
    kind) within blocks, and (written location, read location, read gain) across the residual stream."""
    matrices, residual = [], []
    reads: list[tuple[str, torch.Tensor]] = []  # (read location, its norm gain), in forward order
    for i, block in enumerate(model.blocks):
        reads += [(f"L{i}.attn.resid_read", block.ln_attn.weight), (f"L{i}.mlp.resid_read", block.ln_mlp.weight)]
    reads.append(("final.resid_read", model.ln_f.weight))
    for i, block in enumerate(model.blocks):
        a, m = f"L{i}.attn", f"L{i}.mlp"
        for ch, lin in (("q", block.attn.q), ("k", block.attn.k), ("v", block.attn.v)):
            matrices.append((f"{a}.resid_read", f"{a}.{ch}", lin.weight))
        matrices.append((f"{a}.v", f"{a}.resid_write", block.attn.o.weight))
        matrices.append((f"{m}.resid_read", f"{m}.neuron", block.mlp.fc.weight))
        matrices.append((f"{m}.neuron", f"{m}.resid_write", block.mlp.proj.weight))
    writes = [(f"L{i}.attn.resid_write", 2 * i + 1) for i in range(model.cfg.n_layer)] + \
             [(f"L{i}.mlp.resid_write", 2 * i + 2) for i in range(model.cfg.n_layer)]
    for write, first_read in writes:
        residual += [(write, read, gain) for read, gain in reads[first_read:]]
    return matrices, residual


@torch.no_grad()
def circuit_edges(model: SparseGPT, kept: list[tuple[str, int]]) -> list[Edge]:
    """Every nonzero weight joining two kept nodes.

    Within a block: residual read -> q/k/v channel (W_q, W_k, W_v), value channel -> attention write
    (W_o), residual read -> MLP neuron (W_fc), neuron -> MLP write (W_proj); kind "weight". Across
    blocks through the residual stream: a written channel -> the same channel read later, weighted
    by the reading RMSNorm's gain (kind "residual"). Query-key channel pairs interact through
    attention scores, not a weight, and are not edges.
    """
    sets = _sets(kept)
    matrices, residual = _structure(model)
    edges: list[Edge] = []
    for src, dst, w in matrices:
        w = w.detach().cpu()  # one copy, not one device read per entry
        for d in sorted(sets.get(dst, ())):
            for s_ in sorted(sets.get(src, ())):
                v = float(w[d, s_])
                if v != 0.0:
                    edges.append((src, s_, dst, d, v, "weight"))
    for write, read, gain in residual:
        gain = gain.detach().cpu()
        for c in sorted(sets.get(write, set()) & sets.get(read, set())):
            if float(gain[c]) != 0.0:
                edges.append((write, c, read, c, float(gain[c]), "residual"))
    return edges


@torch.no_grad()
def count_edges(model: SparseGPT, kept: list[tuple[str, int]]) -> int:
    """len(circuit_edges(model, kept)), without building the list."""
    sets = _sets(kept)
    matrices, residual = _structure(model)
    n = 0
    for src, dst, w in matrices:
        if src in sets and dst in sets:
            n += int((w.detach().cpu()[sorted(sets[dst])][:, sorted(sets[src])] != 0).sum())
    for write, read, gain in residual:
        common = sorted(sets.get(write, set()) & sets.get(read, set()))
        n += int((gain.detach().cpu()[common] != 0).sum()) if common else 0
    return n
