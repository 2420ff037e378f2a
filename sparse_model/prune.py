"""Pruning a model to the smallest circuit of nodes that still does a task (Gao et al. 2025;
docs/method.md, "Pruning").

1. Mean activations: every node's mean over pretraining text, computed once per model and kept in
   the run folder (`node_means.safetensors`); a pruned node is frozen at its mean (mean ablation).
2. Mask learning: each node has a score tau; the forward pass multiplies the node by the Heaviside
   step H(tau) (kept) and puts its mean in the rest; the backward pass uses the sigmoid's derivative
   as a surrogate for H's. Objective: task loss + k_coef * (number of kept nodes). AdamW, tau clamped
   to [-1, 1] after every step. Gradients to the activations pass a pruned node as if its mask were
   sigmoid(tau) (straight-through), so a chain of nodes pruned at once can recover.
3. Discretise: rank nodes by tau and bisect on how many to keep until the task loss on the selection
   half of the validation pairs meets the target with a margin (target x (1 - selection_margin)).
4. Verify on the other (held-out) half: sufficiency = loss of the circuit alone, everything else
   mean-ablated. If it misses the target, grow the circuit with the next nodes by score (steps of
   5% of its size) until held-out meets the target or the circuit has grown by `max_growth` (a
   fraction of its selected size); `grown_nodes` says how many were added, and a circuit that
   still misses is stored with `sufficient` false and a `note` saying why. Necessity = loss of the
   full model with only the circuit's nodes mean-ablated (near ln 2 when the circuit is necessary).

Deviations from the paper: no final scale-and-shift fit of the logits (the reported losses are
those of the raw circuit, so they are, if anything, pessimistic); 200 mask steps on batches of 32
pairs instead of batches of 64, to prune a task in about a minute on 2 CPU cores (bench/prune_speed.py)
- only the ranking of the scores matters to the bisection, and it settles early.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from .failpoints import failpoint
from .progress import progress_bar

from .edges import circuit_edges, count_edges
from .prune_settings import LN2, PruneSettings, check_target_loss  # noqa: F401 (importable from here too)
from .model import SparseGPT, node_locations
from .tasks import Task, TaskExamples, task_logit_diff
from .train import get_batch

MEANS_FILE = "node_means.safetensors"


# ---------------------------------------------------------------------------------------------
# Heaviside with a sigmoid-derivative surrogate gradient


class _HeavisideSigmoidGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tau: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(tau)
        return (tau > 0).to(tau.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (tau,) = ctx.saved_tensors
        s = torch.sigmoid(tau)
        return grad * s * (1 - s)


def heaviside(tau: torch.Tensor) -> torch.Tensor:
    """H(tau) = 1 where tau > 0 else 0; its gradient is sigmoid'(tau)."""
    return _HeavisideSigmoidGrad.apply(tau)


# ---------------------------------------------------------------------------------------------
# Mean activations and ablation


@torch.no_grad()
def compute_means(model: SparseGPT, tokens: np.ndarray, n_windows: int = 256, batch_size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Mean of every node over `n_windows` random windows of pretraining text."""
    rng = np.random.default_rng([seed, 7])
    device = next(model.parameters()).device
    # float32 sums on devices without float64 (MPS); float64 elsewhere, as the stored means were computed
    dtype = torch.float32 if device.type == "mps" else torch.float64
    sums = {loc: torch.zeros(units, dtype=dtype, device=device) for loc, units in node_locations(model.cfg).items()}
    count = 0

    def adder(loc):
        def add(x: torch.Tensor) -> None:
            sums[loc].add_(x.reshape(-1, x.shape[-1]).sum(0).to(dtype))
        return add

    with model.hooked({loc: adder(loc) for loc in sums}):
        for start in range(0, n_windows, batch_size):
            x, _ = get_batch(tokens, min(batch_size, n_windows - start), model.cfg.n_ctx, rng)
            model(x.to(device))
            count += x.numel()
    return {loc: (s / count).float().cpu() for loc, s in sums.items()}


def load_or_compute_means(run_dir: Path, model: SparseGPT, tokens_fn: Callable[[], np.ndarray]) -> dict[str, torch.Tensor]:
    """The run's stored node means, computed (and stored) the first time they are needed."""
    path = Path(run_dir) / MEANS_FILE
    if path.exists():
        try:
            means = load_file(str(path))
            if set(means) == set(node_locations(model.cfg)):
                return means
        except Exception:  # a file cut short by a kill: recompute it
            pass
    means = compute_means(model, tokens_fn())
    tmp = path.with_name(path.name + ".tmp")
    save_file(means, str(tmp))
    tmp.replace(path)
    return means


def ablation_hooks(means: dict[str, torch.Tensor], keep: dict[str, torch.Tensor]) -> dict[str, Callable]:
    """Hooks that replace each node by `keep * x + (1 - keep) * mean` (keep may be 0/1 or a soft mask)."""

    def hook(loc):
        m = means[loc]
        k = keep[loc].to(m.device)
        return lambda x: x * k + m * (1 - k)

    return {loc: hook(loc) for loc in keep}


# ---------------------------------------------------------------------------------------------
# Settings and results


@dataclass
class Circuit:
    task: str
    status: str  # "circuit" | "not_learned" | "control" (random labels: pruned whatever the full model does)
    settings: PruneSettings
    full_loss: float  # unpruned model, all validation pairs (what `circuits tasks` reports)
    full_accuracy: float
    n_candidates: int  # nodes in the model
    selection_loss: float | None = None  # circuit, selection pairs (what bisection looked at)
    sufficiency_loss: float | None = None  # circuit alone, held-out pairs
    sufficiency_accuracy: float | None = None
    necessity_loss: float | None = None  # full model minus the circuit, held-out pairs
    nodes: list[tuple[str, int, float]] = field(default_factory=list)  # (location, index, tau)
    edges: list[tuple[str, int, str, int, float, str]] = field(default_factory=list)  # (src loc, idx, dst loc, idx, weight, kind)
    seconds: float = 0.0
    selected_nodes: int | None = None  # size chosen on the selection pairs, before growing
    grown_nodes: int = 0  # nodes added so that held-out pairs meet the target
    note: str | None = None  # why a circuit is not sufficient, or not a circuit
    baseline_nodes: int | None = None  # nodes a random ranking needs to meet the same target (`random_baseline`)
    search: list = field(default_factory=list)  # prune_search.SearchPoint: every setting a search tried
    search_settings: object | None = None  # prune_search.SearchSettings of the search that found it

    def digest(self) -> str:
        """The settings digest that names this circuit: the search's when a search found it."""
        return (self.search_settings or self.settings).digest()

    @property
    def sufficient(self) -> bool | None:
        return None if self.sufficiency_loss is None else self.sufficiency_loss <= self.settings.target_loss


# ---------------------------------------------------------------------------------------------
# Evaluation under a node set


def split_val(task: Task) -> tuple[TaskExamples, TaskExamples]:
    """Validation pairs split in two by pair parity: selection (bisection) and held-out (verification)."""
    pair = task.val.pair
    sel = torch.nonzero(pair % 2 == 0).squeeze(1)
    held = torch.nonzero(pair % 2 == 1).squeeze(1)
    return task.val.subset(sel), task.val.subset(held)


@torch.no_grad()
def loss_with(model: SparseGPT, examples: TaskExamples, means: dict[str, torch.Tensor] | None = None,
              keep: dict[str, torch.Tensor] | None = None) -> tuple[float, float]:
    """(task loss, accuracy) of the model with every node outside `keep` mean-ablated (None: unpruned)."""
    hooks = ablation_hooks(means, keep) if keep is not None else {}
    with model.hooked(hooks):
        diff = task_logit_diff(model, examples)
    return float(torch.nn.functional.softplus(-diff).mean()), float((diff > 0).float().mean())


def keep_masks(cfg, kept: list[tuple[str, int]], invert: bool = False) -> dict[str, torch.Tensor]:
    masks = {loc: torch.zeros(units) for loc, units in node_locations(cfg).items()}
    for loc, i in kept:
        masks[loc][i] = 1.0
    if invert:
        masks = {loc: 1 - m for loc, m in masks.items()}
    return masks


# ---------------------------------------------------------------------------------------------
# The pruner


def learn_scores(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], s: PruneSettings,
                 progress: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Train one score tau per node. Returns the final scores per location, and each node's
    evidence: the sum over steps of the task loss's pull on its score (minus its gradient without
    the penalty term), which orders nodes whose scores tie, at a clamp or by moving in lockstep."""
    gen = torch.Generator().manual_seed(s.seed)
    device = next(model.parameters()).device  # the scores are drawn on CPU, so every device starts alike
    taus = {loc: torch.nn.Parameter((s.init_mean + s.init_std * torch.randn(units, generator=gen)).to(device))
            for loc, units in node_locations(model.cfg).items()}
    evidence = {loc: torch.zeros_like(t) for loc, t in taus.items()}
    opt = torch.optim.AdamW(taus.values(), lr=s.lr, betas=(0.9, s.beta2), weight_decay=s.weight_decay)
    n_pairs = len(task.train) // 2
    for p in model.parameters():
        p.requires_grad_(False)

    def hook(loc):
        m = means[loc]

        def masked(x: torch.Tensor) -> torch.Tensor:
            tau = taus[loc]
            h = heaviside(tau)
            # Forward: x where kept, the mean where pruned. Backward to x: as if the mask were the soft
            # sigmoid(tau), so gradient still reaches nodes upstream of a pruned one; without this a
            # chain of nodes pruned together can never come back (none of them gets any gradient).
            soft = (torch.sigmoid(tau) - h).detach()
            return m + (x - m) * h + (x - x.detach()) * soft

        return masked

    try:
        with model.hooked({loc: hook(loc) for loc in taus}):
            for step in progress_bar(range(s.steps), enabled=progress, desc=f"prune {task.name}", unit="step", leave=False):
                failpoint("prune.step")
                pairs = torch.randint(0, n_pairs, (min(s.batch_pairs, n_pairs),), generator=gen)
                rows = torch.stack([2 * pairs, 2 * pairs + 1], 1).flatten()
                diff = task_logit_diff(model, task.train.subset(rows))
                n_kept = sum(heaviside(t).sum() for t in taus.values())
                loss = torch.nn.functional.softplus(-diff).mean() + s.k_coef * n_kept
                opt.zero_grad(set_to_none=True)
                loss.backward()
                with torch.no_grad():  # the penalty's gradient is k_coef x sigmoid'(tau); the rest is the task's
                    for loc, t in taus.items():
                        sig = torch.sigmoid(t)
                        evidence[loc] -= t.grad - s.k_coef * sig * (1 - sig)
                torch.nn.utils.clip_grad_norm_(list(taus.values()), s.grad_clip)
                opt.step()
                with torch.no_grad():
                    for t in taus.values():
                        t.clamp_(-1.0, 1.0)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return {loc: t.detach().clone() for loc, t in taus.items()}, {loc: e.cpu() for loc, e in evidence.items()}


def rank_nodes(scores: dict[str, torch.Tensor], evidence: dict[str, torch.Tensor] | None = None,
               decimals: int = 2) -> list[tuple[str, int, float]]:
    """All nodes, highest score first. Scores equal to `decimals` places (at the clamp, or moved in
    lockstep by Adam when the penalty dominates) are ordered by `evidence`, most first; only then by
    forward order and index, so no tie decides by where a node sits in the model."""
    order = {loc: i for i, loc in enumerate(scores)}
    ev = {loc: evidence[loc].tolist() for loc in scores} if evidence is not None else None
    flat = [(loc, i, float(v)) for loc, t in scores.items() for i, v in enumerate(t.tolist())]
    return sorted(flat, key=lambda n: (-round(n[2], decimals), -(ev[n[0]][n[1]] if ev else 0.0), order[n[0]], n[1]))


def bisect_keep(model: SparseGPT, ranked: list[tuple[str, int, float]], examples: TaskExamples,
                means: dict[str, torch.Tensor], target: float) -> tuple[int, float]:
    """Smallest k such that keeping the top-k ranked nodes meets `target` on `examples` (loss assumed
    to fall as k grows). Returns (k, loss at k)."""
    cache: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in cache:
            cache[k] = loss_with(model, examples, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:k]]))[0]
        return cache[k]

    lo, hi = 0, len(ranked)
    if f(hi) > target:
        return hi, f(hi)
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return hi, f(hi)


def control_keep(model: SparseGPT, ranked: list[tuple[str, int, float]], examples: TaskExamples,
                 means: dict[str, torch.Tensor], target: float) -> tuple[int, float]:
    """For a random-label control: the smallest k on a doubling grid whose loss meets `target`, else
    the k with the lowest loss. Returns (k, loss at k)."""
    grid = sorted({min(2 ** i, len(ranked)) for i in range(len(ranked).bit_length() + 1)})
    losses = {k: loss_with(model, examples, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:k]]))[0] for k in grid}
    meeting = [k for k in grid if losses[k] <= target]
    k = meeting[0] if meeting else min(grid, key=lambda k: losses[k])
    return k, losses[k]


@dataclass
class Trial:
    """One run of the pruner with one setting: its node ranking, the size bisection chose on the
    selection pairs, the size after growing to meet the held-out pairs, and the losses."""

    ranked: list[tuple[str, int, float]]
    selected: int
    k: int
    selection_loss: float
    sufficiency_loss: float
    sufficiency_accuracy: float

    def kept(self) -> list[tuple[str, int]]:
        return [(l, i) for l, i, _ in self.ranked[:self.k]]

    def edge_count(self, model: SparseGPT) -> int:
        return count_edges(model, self.kept())


def gate(model: SparseGPT, task: Task, settings: PruneSettings, t0: float) -> Circuit:
    """The unpruned model on the task, as the head of its circuit: status `not_learned` when its loss
    is above the target (then there is nothing to prune), else `control` or `circuit`, to be
    completed by `finish_circuit`."""
    full_loss, full_acc = loss_with(model, task.val)
    n_nodes = sum(node_locations(model.cfg).values())
    status = "control" if task.random_labels else "not_learned" if full_loss > settings.target_loss else "circuit"
    return Circuit(task.name, status, settings, full_loss, full_acc, n_nodes, seconds=time.perf_counter() - t0)


def try_settings(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], settings: PruneSettings,
                 progress: bool = False) -> Trial:
    """Learn the scores, bisect the size on the selection pairs, grow it to meet the held-out pairs."""
    model.eval()
    selection, held = split_val(task)
    scores, evidence = learn_scores(model, task, means, settings, progress)
    ranked = rank_nodes(scores, evidence)
    if task.random_labels:
        # A control with random labels: the full model cannot do it, so the question is whether pruning
        # alone manufactures a "circuit" that does. Loss need not fall with k here: search a grid.
        k, sel_loss = control_keep(model, ranked, selection, means, settings.target_loss)
    else:
        k, sel_loss = bisect_keep(model, ranked, selection, means, settings.target_loss * (1 - settings.selection_margin))
    selected = k
    suff_loss, suff_acc = loss_with(model, held, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:k]]))
    if not task.random_labels:
        k, suff_loss, suff_acc = grow_to_held_out(model, ranked, held, means, settings, k, suff_loss, suff_acc)
    return Trial(ranked, selected, k, sel_loss, suff_loss, suff_acc)


def shrink(model: SparseGPT, trial: Trial, task: Task, means: dict[str, torch.Tensor], settings: PruneSettings,
           deadline: float | None = None) -> Trial:
    """Greedy backward elimination on the selection pairs: try removing each kept node, lowest
    ranked first, and leave it out when the rest still meets the bisection's target (with its
    margin); then check the held-out pairs and grow as `try_settings` does. Stops trying at
    `deadline` (a time.perf_counter() value). The ranking is reordered so that the kept nodes
    come first, in their former order, and the removed ones right after them."""
    selection, held = split_val(task)
    target = settings.target_loss * (1 - settings.selection_margin)
    kept = list(trial.ranked[:trial.k])
    loss = trial.selection_loss
    for node in reversed(trial.ranked[:trial.k]):
        if deadline is not None and time.perf_counter() > deadline:
            break
        rest = [n for n in kept if n is not node]
        found = loss_with(model, selection, means, keep_masks(model.cfg, [(l, i) for l, i, _ in rest]))[0]
        if found <= target:
            kept, loss = rest, found
    dropped = [n for n in trial.ranked[:trial.k] if n not in kept]
    ranked = kept + dropped + trial.ranked[trial.k:]
    k = len(kept)
    suff_loss, suff_acc = loss_with(model, held, means, keep_masks(model.cfg, [(l, i) for l, i, _ in kept]))
    k, suff_loss, suff_acc = grow_to_held_out(model, ranked, held, means, settings, k, suff_loss, suff_acc)
    return Trial(ranked, len(kept), k, loss, suff_loss, suff_acc)


def finish_circuit(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], head: Circuit,
                   settings: PruneSettings, trial: Trial, t0: float) -> Circuit:
    """The circuit of a trial, from its `gate` head: edges, necessity, the random-ranking baseline and
    an honest status."""
    _, held = split_val(task)
    n_nodes = head.n_candidates
    kept = trial.kept()
    nec_loss, _ = loss_with(model, held, means, keep_masks(model.cfg, kept, invert=True))
    c = Circuit(task.name, head.status, settings, head.full_loss, head.full_accuracy, n_nodes, trial.selection_loss,
                trial.sufficiency_loss, trial.sufficiency_accuracy, nec_loss, trial.ranked[:trial.k],
                circuit_edges(model, kept), 0.0, trial.selected, trial.k - trial.selected)
    if c.status == "circuit" and trial.sufficiency_loss > settings.target_loss:
        c.note = (f"held-out sufficiency loss {trial.sufficiency_loss:.3f} is above the target {settings.target_loss:g} "
                  f"even after growing from {trial.selected} to {trial.k} nodes")
    if c.status == "circuit":
        c.baseline_nodes = random_baseline(model, task, means, settings)
        c.status, why = label(trial.k, n_nodes, c.baseline_nodes)
        c.note = why if why and c.note is None else c.note
    c.seconds = time.perf_counter() - t0
    return c


def prune(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], settings: PruneSettings,
          progress: bool = False) -> Circuit:
    """Find, discretise and verify the circuit of one task with one setting (one point; a search
    over settings is `prune_search.search`)."""
    t0 = time.perf_counter()
    model.eval()
    head = gate(model, task, settings, t0)
    if head.status == "not_learned":
        return head
    return finish_circuit(model, task, means, head, settings, try_settings(model, task, means, settings, progress), t0)


# ---------------------------------------------------------------------------------------------
# Is it a circuit? (docs/method.md, "Not a circuit")

MAX_SHARE = 0.25  # a set keeping more than this share of the model's nodes is not a circuit
MAX_OF_BASELINE = 0.5  # nor one that is not at most this fraction of what a random ranking needs
BASELINE_SEEDS = (0, 1, 2)  # random rankings; the baseline is their median size
NO_SMALL_CIRCUIT = "no_small_circuit"


def random_baseline(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], settings: PruneSettings) -> int:
    """How many nodes a random ranking needs to meet the target: the same bisection on the selection
    pairs and growing on the held-out pairs as the pruner's, on random orders of all nodes; the
    median over BASELINE_SEEDS (every node when the target is not met)."""
    selection, held = split_val(task)
    flat = [(loc, i, 0.0) for loc, units in node_locations(model.cfg).items() for i in range(units)]
    sizes = []
    for seed in BASELINE_SEEDS:
        order = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed)).tolist()
        ranked = [flat[j] for j in order]
        k, _ = bisect_keep(model, ranked, selection, means, settings.target_loss * (1 - settings.selection_margin))
        loss, acc = loss_with(model, held, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:k]]))
        k, loss, _ = grow_to_held_out(model, ranked, held, means, settings, k, loss, acc)
        sizes.append(k if loss <= settings.target_loss else len(flat))
    return sorted(sizes)[len(sizes) // 2]


def label(nodes: int, candidates: int, baseline: int) -> tuple[str, str | None]:
    """("circuit", None), or (NO_SMALL_CIRCUIT, why) for a set that keeps more than MAX_SHARE of the
    model's nodes or is not at most MAX_OF_BASELINE of the random-ranking baseline."""
    if nodes > MAX_SHARE * candidates:
        return NO_SMALL_CIRCUIT, (f"keeps {nodes} of {candidates} nodes ({nodes / candidates:.0%}), more than "
                                  f"{MAX_SHARE:.0%} of the model: no small circuit found")
    if nodes > MAX_OF_BASELINE * baseline:
        return NO_SMALL_CIRCUIT, (f"keeps {nodes} nodes where a random ranking needs {baseline}: not at most "
                                  f"{MAX_OF_BASELINE:g}x chance, so the pruner found no small circuit")
    return "circuit", None


def grow_to_held_out(model: SparseGPT, ranked: list[tuple[str, int, float]], held: TaskExamples,
                     means: dict[str, torch.Tensor], s: PruneSettings, k: int, loss: float,
                     acc: float) -> tuple[int, float, float]:
    """Add the next nodes by score, 5% of k at a time, until the held-out loss meets the target or
    k has grown by s.max_growth x its starting size (or every node is kept). Returns (k, loss, acc)."""
    bound = min(len(ranked), k + int(math.ceil(s.max_growth * k)))
    step = max(1, int(math.ceil(0.05 * k)))
    while loss > s.target_loss and k < bound:
        k = min(bound, k + step)
        loss, acc = loss_with(model, held, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:k]]))
    return k, loss, acc


def circuit_loss(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], kept: list[tuple[str, int]]) -> float:
    """Sufficiency loss of a node set on the task's held-out pairs (re-evaluates a stored circuit)."""
    return loss_with(model, split_val(task)[1], means, keep_masks(model.cfg, kept))[0]
