"""Pruning that searches: try the pruner's settings, keep the smallest sufficient circuit, and say
what a random ranking of the nodes would have needed (docs/method.md, "Pruning search").

One run of the pruner (`prune.prune`) is one point of a trade-off: its size depends on the
penalty, the number of steps and the learning rate far more than on the task (README, "Pruning").
`search` runs the points of SEARCH_GRID in order, as many as fit in a time budget, keeps the
smallest one whose held-out sufficiency loss meets the target, and returns it as a `Circuit`
carrying every point it tried (`Circuit.search`), so that the size against loss trade-off can be
stored, queried and drawn.

    c = search(model, task, means, SearchSettings(budget_s=120))
    c.n_nodes, c.status, [(p.nodes, p.sufficiency_loss) for p in c.search]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import torch

from .errors import UserError
from .model import SparseGPT
from .progress import progress_bar
from .prune import (Circuit, PruneSettings, Trial, finish_circuit, gate, learn_scores, loss_with, shrink, split_val,
                    try_settings)
from .prune_settings import GRID_VERSION, SEARCH_GRID, SearchSettings  # noqa: F401 (importable from here too)
from .tasks import Task

@dataclass
class SearchPoint:
    """One tried setting: what it overrides of the base, the size it kept and its losses."""

    index: int
    overrides: dict
    settings: PruneSettings
    nodes: int
    edges: int
    selection_loss: float
    sufficiency_loss: float
    sufficient: bool
    seconds: float
    chosen: bool = False

    def to_row(self) -> dict:
        return {**asdict(self), "settings": self.settings.to_dict()}


EVALUATIONS = 16  # loss evaluations of a point besides its steps: bisection, held-out check, growing
RESERVE = 60  # evaluations kept back for the chosen circuit: necessity and the random-ranking baseline


def step_costs(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], s: PruneSettings) -> tuple[float, float]:
    """(seconds per mask step, seconds per loss evaluation) on this machine: 3 timed steps, 1 evaluation,
    after one untimed step (the first step of a process costs several times the others)."""
    learn_scores(model, task, means, replace(s, steps=1))
    t0 = time.perf_counter()
    learn_scores(model, task, means, replace(s, steps=3))
    step = (time.perf_counter() - t0) / 3
    t0 = time.perf_counter()
    loss_with(model, split_val(task)[0])
    return step, time.perf_counter() - t0


def search(model: SparseGPT, task: Task, means: dict[str, torch.Tensor], ss: SearchSettings,
           progress: bool = False) -> Circuit:
    """Try the first ss.points of SEARCH_GRID (those that fit in ss.budget_s), shrink each
    sufficient set greedily (`prune.shrink`, until it changes no more), keep the smallest
    sufficient set (ties: the lower held-out loss; none sufficient: the lowest held-out loss) and
    return it as a circuit with every point tried."""
    t0 = time.perf_counter()
    head = gate(model, task, ss.base, t0)
    if head.status == "not_learned":  # nothing to search
        return head
    grid = [(over, replace(ss.base, **over)) for over in SEARCH_GRID[:ss.points]]
    deadline = None if ss.budget_s is None else t0 + ss.budget_s
    if deadline is not None:
        step, evaluation = step_costs(model, task, means, ss.base)

        def cost(s: PruneSettings) -> float:
            return s.steps * step + EVALUATIONS * evaluation

        if time.perf_counter() + cost(grid[0][1]) + RESERVE * evaluation > deadline:
            need = time.perf_counter() - t0 + cost(grid[0][1]) + RESERVE * evaluation
            raise UserError(f"a search budget of {ss.budget_s:g} s is too small for one search point of {task.name} "
                            f"(about {need:.0f} s on this machine); give --budget {int(need) + 1} or more, "
                            f"or --no-search for one run")
    trials: list[tuple[SearchPoint, Trial]] = []

    def add(index: int, over: dict, s: PruneSettings, trial: Trial, since: float) -> None:
        trials.append((SearchPoint(index, over, s, trial.k, trial.edge_count(model), trial.selection_loss,
                                   trial.sufficiency_loss, trial.sufficiency_loss <= s.target_loss,
                                   time.perf_counter() - since), trial))

    for over, s in progress_bar(grid, enabled=progress, desc=f"search {task.name}", unit="point", leave=False):
        if deadline is not None and trials and time.perf_counter() + cost(s) + RESERVE * evaluation > deadline:
            continue  # a shorter point later in the grid may still fit
        t1 = time.perf_counter()
        trial = try_settings(model, task, means, s)
        add(len(trials), dict(over), s, trial, t1)
        if trial.sufficiency_loss <= s.target_loss and trial.k <= ss.shrink_max and not task.random_labels:
            t1 = time.perf_counter()
            stop = None if deadline is None else deadline - RESERVE * evaluation
            shrunk = shrink(model, trial, task, means, s, stop)
            while shrunk.sufficiency_loss <= s.target_loss:  # again, until a pass removes nothing
                again = shrink(model, shrunk, task, means, s, stop)
                if again.k >= shrunk.k or again.sufficiency_loss > s.target_loss:
                    break
                shrunk = again
            add(len(trials), {**over, "shrink": True}, s, shrunk, t1)
    sufficient = [(p, t) for p, t in trials if p.sufficient]
    point, trial = min(sufficient, key=lambda pt: (pt[0].nodes, pt[0].sufficiency_loss)) if sufficient else \
        min(trials, key=lambda pt: pt[0].sufficiency_loss)
    point.chosen = True
    circuit = finish_circuit(model, task, means, head, point.settings, trial, t0)
    circuit.search = [p for p, _ in trials]
    circuit.search_settings = ss
    return circuit
