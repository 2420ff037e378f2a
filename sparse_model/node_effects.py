"""What each node of a circuit does for its task (docs/method.md, "Node effects").

For one task and one circuit (a kept node set), on the task's validation pairs:

- effect in the circuit: how much the task loss rises (and the mean logit difference, correct minus
  wrong answer, falls) when this node alone is mean-ablated from the circuit (every node outside the
  circuit mean-ablated as well). Is the node needed there?
- effect in the model: the same, from the full model. A node the circuit needs can matter little in
  the model when other nodes there do the same work.
- direct effect: for a node that writes to the residual stream (an MLP neuron, an attention or MLP
  write channel, a channel of the final residual read), the part of the mean logit difference that
  goes straight from the node, through the final norm and the unembedding, to the two answer
  tokens, relative to the node's mean. Linearised at the final norm's scale of each example (exact
  for the final read, whose channels the unembedding reads directly); None for nodes that only read.
- what it writes (VocabProj): the tokens whose logits the node's output direction raises and lowers
  most through the final norm's weight and the unembedding, computed exactly from the weights.

`task_activations` reads a node's activation at every token of every prefix of the task, for the
in-task explanation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .model import SparseGPT, node_locations
from .nodes import FINAL, Node
from .prune import ablation_hooks, keep_masks
from .tasks import TaskExamples, left_aligned, task_logit_diff

WRITES = ("attn.resid_write", "mlp.neuron", "mlp.resid_write", FINAL)  # sites with a direct path


@dataclass
class NodeEffect:
    location: str
    index: int
    effect_in_circuit: float  # task loss with the node ablated from the circuit, minus the circuit's
    logit_diff_in_circuit: float  # mean logit difference change (negative: the node helped)
    effect_in_model: float  # the same from the full model
    logit_diff_in_model: float
    direct_logit_diff: float | None  # the node's direct path to the answer logits, relative to its mean


def output_direction(model: SparseGPT, location: str, index: int) -> torch.Tensor | None:
    """The vector the node adds to what the unembedding reads, per unit of activation: in the
    normalised residual (after the final norm's weight) for writers, None for nodes that only read."""
    node = Node(location, index)
    if node.site not in WRITES:
        return None
    d = model.cfg.d_model
    if node.site == FINAL:
        return torch.eye(d)[index]
    if node.site == "mlp.neuron":
        vec = model.blocks[node.layer(model.cfg.n_layer)].mlp.proj.weight[:, index].detach().float().cpu()
    else:
        vec = torch.eye(d)[index]
    return vec * model.ln_f.weight.detach().float().cpu()


def vocab_projection(model: SparseGPT, location: str, index: int, top: int = 8
                     ) -> tuple[list[tuple[int, float]], list[tuple[int, float]]] | None:
    """(promoted, suppressed): the `top` token ids whose logits the node's output direction raises
    most and lowers most, with the logit change per unit of (normalised) activation; None for nodes
    that only read."""
    vec = output_direction(model, location, index)
    if vec is None:
        return None
    logits = model.lm_head.weight.detach().float().cpu() @ vec
    up = torch.topk(logits, top)
    down = torch.topk(-logits, top)
    return ([(int(i), float(v)) for v, i in zip(up.values, up.indices)],
            [(int(i), float(-v)) for v, i in zip(down.values, down.indices)])


@torch.no_grad()
def _diffs(model: SparseGPT, examples: TaskExamples, means: dict[str, torch.Tensor],
           keep: dict[str, torch.Tensor] | None) -> torch.Tensor:
    with model.hooked(ablation_hooks(means, keep) if keep is not None else {}):
        return task_logit_diff(model, examples)


def _loss(diff: torch.Tensor) -> float:
    return float(F.softplus(-diff).mean())


@torch.no_grad()
def _direct(model: SparseGPT, examples: TaskExamples, means: dict[str, torch.Tensor],
            nodes: list[tuple[str, int]]) -> list[float | None]:
    """Each node's direct effect on the mean logit difference (see the module docstring)."""
    device = next(model.parameters()).device
    acts: dict[str, torch.Tensor] = {}
    rms: list[torch.Tensor] = []

    def keep(loc: str):
        def fn(x: torch.Tensor) -> None:
            acts[loc] = x.detach()
        return fn

    def norm_scale(_module, inputs) -> None:  # the final norm's input at the read positions
        x = inputs[0].float()
        rms.append(torch.rsqrt(x.pow(2).mean(-1) + model.ln_f.eps))

    writers = sorted({loc for loc, i in nodes if Node(loc, i).site in WRITES})
    ids, lengths = left_aligned(examples, model.cfg.n_ctx)
    ids, last = ids.to(device), (lengths - 1).to(device)
    handle = model.ln_f.register_forward_pre_hook(norm_scale)
    try:
        with model.hooked({loc: keep(loc) for loc in writers}):
            model(ids, last=last)
    finally:
        handle.remove()
    scale = rms[0].cpu() if rms else None  # (N,)
    rows = torch.arange(len(examples))
    w_u = model.lm_head.weight.detach().float().cpu()
    answer = w_u[examples.correct] - w_u[examples.wrong]  # (N, d_model)
    out: list[float | None] = []
    for loc, i in nodes:
        vec = output_direction(model, loc, i)
        if vec is None:
            out.append(None)
            continue
        a = acts[loc].float().cpu()
        a = a[..., i] if a.dim() == 2 else a[rows, last.cpu(), i]  # final read: (N, units); others (N, T, units)
        delta = a - float(means[loc][i])
        per_example = delta * (answer @ vec)
        if Node(loc, i).site != FINAL:
            per_example = per_example * scale
        out.append(float(per_example.mean()))
    return out


def node_effects(model: SparseGPT, examples: TaskExamples, means: dict[str, torch.Tensor],
                 kept: list[tuple[str, int]], on_node: Callable[[], None] | None = None
                 ) -> tuple[dict[str, float], list[NodeEffect]]:
    """Every kept node's effects (see the module docstring) on `examples`, and the baselines:
    {'circuit_loss', 'model_loss', 'circuit_logit_diff', 'model_logit_diff', 'necessity_loss'}
    (necessity: the full model with the whole circuit ablated). on_node: called after each node."""
    cfg = model.cfg
    circuit = keep_masks(cfg, kept)
    everything = {loc: torch.ones(n) for loc, n in node_locations(cfg).items()}
    base_c = _diffs(model, examples, means, circuit)
    base_m = _diffs(model, examples, means, None)
    necessity = _diffs(model, examples, means, keep_masks(cfg, kept, invert=True))
    effects = []
    direct = _direct(model, examples, means, kept)
    for (loc, i), de in zip(kept, direct):
        circuit[loc][i] = 0.0
        in_c = _diffs(model, examples, means, circuit)
        circuit[loc][i] = 1.0
        everything[loc][i] = 0.0
        in_m = _diffs(model, examples, means, everything)
        everything[loc][i] = 1.0
        effects.append(NodeEffect(loc, i, _loss(in_c) - _loss(base_c), float(in_c.mean() - base_c.mean()),
                                  _loss(in_m) - _loss(base_m), float(in_m.mean() - base_m.mean()), de))
        if on_node:
            on_node()
    base = {"circuit_loss": _loss(base_c), "model_loss": _loss(base_m), "circuit_logit_diff": float(base_c.mean()),
            "model_logit_diff": float(base_m.mean()), "necessity_loss": _loss(necessity)}
    return base, effects


@torch.no_grad()
def task_activations(model: SparseGPT, examples: TaskExamples, nodes: list[tuple[str, int]],
                     batch_size: int = 256) -> list[np.ndarray]:
    """Each prefix's activations at every one of its tokens: a list (one per row of `examples`) of
    arrays (prefix length, len(nodes)), in the order of `nodes`. Prefixes longer than the context
    keep their last n_ctx tokens, as in evaluation."""
    device = next(model.parameters()).device
    ids, lengths = left_aligned(examples, model.cfg.n_ctx)
    ids = ids.to(device)
    by_loc: dict[str, list[tuple[int, int]]] = {}
    for j, (loc, i) in enumerate(nodes):
        by_loc.setdefault(loc, []).append((j, i))
    out: list[np.ndarray] = []
    for chunk in torch.arange(len(examples)).split(batch_size):
        c_len = int(lengths[chunk].max())
        got = torch.zeros(len(chunk), c_len, len(nodes))

        def reader(loc: str):
            cols_j = [j for j, _ in by_loc[loc]]
            units = [i for _, i in by_loc[loc]]

            def fn(x: torch.Tensor) -> None:
                got[:, :, cols_j] = x[..., units].float().cpu()
            return fn

        with model.hooked({loc: reader(loc) for loc in by_loc}):
            model(ids[chunk.to(device), :c_len])
        out += [got[r, :int(lengths[row])].numpy() for r, row in enumerate(chunk.tolist())]
    return out
