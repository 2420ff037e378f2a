"""Batch jobs that turn a trained run into stored task results and circuits.

The CLI commands `circuits tasks` and `circuits prune` are one call each to this module; a notebook
can make the same calls:

    from explainer.store import Store
    from explainer.jobs.circuits import evaluate_tasks_job, prune_job
    with Store.open("circuits.duckdb") as store:
        prune_job(store, "runs/demo", tasks=["single_double_quote"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from sparse_model.model import node_locations
from sparse_model.nodes import Node
from sparse_model.prune import Circuit, PruneSettings, check_target_loss, prune
from sparse_model.prune_search import SearchSettings, search
from sparse_model.run import Run
from sparse_model.tasks import evaluate_tasks, get_task_specs
from sparse_model.train import run_summary

from ..store import Store


def _ensure_model_row(store: Store, run: Run) -> None:
    """A run trained while the database was unusable is registered by the first job that uses it."""
    if store.get_model(run.name) is None:
        store.upsert_model(run_summary(run.run_dir))


def register_model(store: Store, run: Run) -> None:
    """Make sure the run is in the models table and all its nodes (with means) are in `nodes`."""
    _ensure_model_row(store, run)
    if not store.has_nodes(run.name):
        n_layer = run.model.cfg.n_layer
        rows = []
        for loc, units in node_locations(run.model.cfg).items():
            means = run.means[loc].tolist()
            rows += [{"node": Node(loc, i), "layer": Node(loc, i).layer(n_layer), "mean": means[i]} for i in range(units)]
        store.save_nodes(run.name, rows)


def evaluate_tasks_job(store: Store, run_dir: Path | str, tasks: Sequence[str] | None = None,
                       target_loss: float = 0.15, device: str | None = "auto") -> list[dict]:
    """Task loss and accuracy of the unpruned model on every (or the named) task; stored in task_evals."""
    check_target_loss(target_loss)
    run = Run(run_dir, device=device)
    built = run.tasks(tasks)
    results = evaluate_tasks(run.model, built)
    for r, t in zip(results, built):
        r.update(description=t.description, answers=[list(a) for a in t.answers], random_labels=t.random_labels,
                 learned=r["loss"] <= target_loss)
    _ensure_model_row(store, run)
    store.save_task_evals(run.name, results, target_loss)
    return results


def circuit_row(model: str, c: Circuit) -> dict:
    search = c.search_settings
    return {
        "circuit_id": f"{model}/{c.task}/{c.digest()}", "model": model, "task": c.task, "status": c.status,
        "target_loss": c.settings.target_loss, "full_loss": c.full_loss, "full_accuracy": c.full_accuracy,
        "selection_loss": c.selection_loss, "sufficiency_loss": c.sufficiency_loss,
        "sufficiency_accuracy": c.sufficiency_accuracy, "necessity_loss": c.necessity_loss, "sufficient": c.sufficient,
        "n_nodes": len(c.nodes), "n_edges": len(c.edges), "n_candidates": c.n_candidates,
        "settings": {**c.settings.to_dict(), **({"search": search.to_dict()["search"]} if search else {})},
        "settings_digest": c.digest(), "seconds": c.seconds,
        "selected_nodes": c.selected_nodes, "grown_nodes": c.grown_nodes, "note": c.note,
        "baseline_nodes": c.baseline_nodes, "search_points": len(c.search) if search else None,
        "search_seconds": c.seconds if search else None,
    }


def save_circuit(store: Store, model: str, c: Circuit) -> dict:
    row = circuit_row(model, c)
    nodes = [{"node_id": Node(loc, i).node_id(model), "rank": r, "score": tau} for r, (loc, i, tau) in enumerate(c.nodes)]
    edges = [{"source": Node(sl, si).node_id(model), "target": Node(dl, di).node_id(model), "weight": w, "kind": kind}
             for sl, si, dl, di, w, kind in c.edges]
    store.save_circuit(row, nodes, edges, [p.to_row() for p in c.search])
    return row


def prune_job(store: Store, run_dir: Path | str, tasks: Sequence[str] | None = None,
              settings: PruneSettings | SearchSettings | None = None, progress: bool = True,
              on_circuit: Callable[[dict], None] | None = None, device: str | None = "auto") -> list[dict]:
    """Prune every (or the named) task of a run and store each circuit as soon as it is found:
    with `SearchSettings` (the default), a search over the pruner's settings within a time budget
    per task; with `PruneSettings`, one run of the pruner.

    Tasks the unpruned model has not learned (loss above the target) are stored with status
    `not_learned` and no nodes; a set that is not a small circuit with status `no_small_circuit`
    (`sparse_model.prune.label`). Re-pruning the same model, task and settings replaces that circuit.
    """
    settings = settings or SearchSettings()
    if tasks is not None:
        get_task_specs(tasks)  # unknown names fail before any work
    run = Run(run_dir, device=device)
    register_model(store, run)
    rows = []
    for task in run.tasks(tasks):
        if isinstance(settings, SearchSettings):
            circuit = search(run.model, task, run.means, settings, progress=progress)
        else:
            circuit = prune(run.model, task, run.means, settings, progress=progress)
        row = save_circuit(store, run.name, circuit)
        rows.append(row)
        if on_circuit:
            on_circuit(row)
    return rows
