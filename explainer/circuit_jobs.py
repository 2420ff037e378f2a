"""Batch jobs that turn a trained run into stored task results and circuits.

The CLI commands `circuits tasks` and `circuits prune` are one call each to this module; a notebook
can make the same calls:

    from explainer.store import Store
    from explainer.circuit_jobs import evaluate_tasks_job, prune_job
    with Store.open("circuits.duckdb") as store:
        prune_job(store, "runs/demo", tasks=["single_double_quote"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from sparse_model import checkpoint as ckpt
from sparse_model.corpus import load_corpus
from sparse_model.errors import UserError
from sparse_model.model import SparseGPT, node_locations, node_name
from sparse_model.prune import Circuit, PruneSettings, check_target_loss, load_or_compute_means, prune
from sparse_model.tasks import Task, evaluate_tasks, get_task_specs, load_tasks
from sparse_model.tokenizer import load_tokenizer
from sparse_model.train import prepare_data, run_summary

from .store import Store


def node_id(model: str, location: str, index: int) -> str:
    """The stable id of a node in the database: `<model>/<location>[<index>]`."""
    return f"{model}/{node_name(location, index)}"


class LoadedRun:
    """A run folder with its model, tokenizer and node means, loaded once per job."""

    def __init__(self, run_dir: Path | str):
        self.run_dir = Path(run_dir)
        self.model, self.run, self.state = ckpt.load_model(self.run_dir)
        self.name: str = self.run["name"]
        self.tokenizer = load_tokenizer(self.run_dir / ckpt.TOKENIZER_FILE)
        self._means = None

    def train_tokens(self) -> np.ndarray:
        path = self.run_dir / "tokens_train.npy"
        if path.exists():
            return np.load(path, mmap_mode="r")
        corpus = load_corpus(self.run["corpus"]["root"], val_fraction=self.run["train"]["val_fraction"])
        if corpus.manifest["sha256"] != self.run["corpus"]["sha256"]:
            raise UserError(f"the corpus of run {self.name} ({self.run['corpus']['root']}) has changed since training; "
                            f"restore it or retrain")
        return prepare_data(self.run_dir, corpus, self.model.cfg.vocab_size, log=lambda s: None)[0]

    @property
    def means(self):
        if self._means is None:
            self._means = load_or_compute_means(self.run_dir, self.model, self.train_tokens)
        return self._means

    def tasks(self, names: Sequence[str] | None = None) -> list[Task]:
        return load_tasks(self.tokenizer, names)


def _ensure_model_row(store: Store, run: LoadedRun) -> None:
    """A run trained while the database was unusable is registered by the first job that uses it."""
    if store.get_model(run.name) is None:
        store.upsert_model(run_summary(run.run_dir))


def register_model(store: Store, run: LoadedRun) -> None:
    """Make sure the run is in the models table and all its nodes (with means) are in `nodes`."""
    _ensure_model_row(store, run)
    if not store.has_nodes(run.name):
        cfg = run.model.cfg
        rows = []
        for loc, units in node_locations(cfg).items():
            layer = int(loc[1:].split(".", 1)[0]) if loc.startswith("L") else cfg.n_layer
            short = loc.split(".", 1)[1] if loc.startswith("L") else loc
            means = run.means[loc].tolist()
            rows += [{"node_id": node_id(run.name, loc, i), "layer": layer, "location": short, "idx": i,
                      "name": node_name(loc, i), "mean": means[i]} for i in range(units)]
        store.save_nodes(run.name, rows)


def evaluate_tasks_job(store: Store, run_dir: Path | str, tasks: Sequence[str] | None = None,
                       target_loss: float = 0.15) -> list[dict]:
    """Task loss and accuracy of the unpruned model on every (or the named) task; stored in task_evals."""
    check_target_loss(target_loss)
    run = LoadedRun(run_dir)
    built = run.tasks(tasks)
    results = evaluate_tasks(run.model, built)
    for r, t in zip(results, built):
        r.update(description=t.description, answers=[list(a) for a in t.answers], random_labels=t.random_labels,
                 learned=r["loss"] <= target_loss)
    _ensure_model_row(store, run)
    store.save_task_evals(run.name, results, target_loss)
    return results


def circuit_row(model: str, c: Circuit) -> dict:
    return {
        "circuit_id": f"{model}/{c.task}/{c.settings.digest()}", "model": model, "task": c.task, "status": c.status,
        "target_loss": c.settings.target_loss, "full_loss": c.full_loss, "full_accuracy": c.full_accuracy,
        "selection_loss": c.selection_loss, "sufficiency_loss": c.sufficiency_loss,
        "sufficiency_accuracy": c.sufficiency_accuracy, "necessity_loss": c.necessity_loss, "sufficient": c.sufficient,
        "n_nodes": len(c.nodes), "n_edges": len(c.edges), "n_candidates": c.n_candidates,
        "settings": c.settings.to_dict(), "settings_digest": c.settings.digest(), "seconds": c.seconds,
    }


def save_circuit(store: Store, model: str, c: Circuit) -> dict:
    row = circuit_row(model, c)
    nodes = [{"node_id": node_id(model, loc, i), "rank": r, "score": tau} for r, (loc, i, tau) in enumerate(c.nodes)]
    edges = [{"source": node_id(model, sl, si), "target": node_id(model, dl, di), "weight": w, "kind": kind}
             for sl, si, dl, di, w, kind in c.edges]
    store.save_circuit(row, nodes, edges)
    return row


def prune_job(store: Store, run_dir: Path | str, tasks: Sequence[str] | None = None,
              settings: PruneSettings | None = None, progress: bool = True,
              on_circuit: Callable[[dict], None] | None = None) -> list[dict]:
    """Prune every (or the named) task of a run and store each circuit as soon as it is found.

    Tasks the unpruned model has not learned (loss above the target) are stored with status
    `not_learned` and no nodes. Re-pruning the same model, task and settings replaces that circuit.
    """
    settings = settings or PruneSettings()
    if tasks is not None:
        get_task_specs(tasks)  # unknown names fail before any work
    run = LoadedRun(run_dir)
    register_model(store, run)
    rows = []
    for task in run.tasks(tasks):
        circuit = prune(run.model, task, run.means, settings, progress=progress)
        row = save_circuit(store, run.name, circuit)
        rows.append(row)
        if on_circuit:
            on_circuit(row)
    return rows
