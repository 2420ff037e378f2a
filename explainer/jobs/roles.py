"""Node roles: what each node of a task's circuit does for that task (docs/method.md, "Node roles").

`circuits explain RUN --task T --in-task` is one call to `explain_job` with a `TaskSource`:

1. effects (`sparse_model.node_effects`), once per circuit: each node's effect on the task loss
   when it alone is mean-ablated from the circuit and from the full model, its direct effect on the
   answer logits, and the tokens it promotes and suppresses; stored in node_effects.
2. the nodes with the largest effect in the circuit (`max_nodes`, or the named ones) get in-task
   records: their activation at every token of every prefix of the task's pairs (task_records).
3. those go through the same explain, simulate, score loop as text windows, with the explain_task
   prompt (each excerpt introduced by its variant and answer) and scored on held-out pairs; stored
   as explanations with purpose 'task' and the task's name, beside the node's general explanation.

    from explainer.jobs.roles import TaskSource
    explain_job(store, "runs/demo", client, source=TaskSource("single_double_quote"))
"""

from __future__ import annotations

from typing import Sequence

from sparse_model.errors import UserError
from sparse_model.failpoints import failpoint
from sparse_model.node_effects import node_effects, task_activations, vocab_projection
from sparse_model.nodes import Node
from sparse_model.progress import progress_bar
from sparse_model.run import Run
from sparse_model.tasks import left_aligned

from ..pipeline import Windows
from ..records import ActivationRecord, token_table
from ..store import Store
from ..task_records import TASK_SAMPLING, deal_pairs, task_records, task_windows, variant_label
from .explain import GeneralSource
from .settings import ExplainSettings

TASK_RECORDS_VERSION = 1  # how pairs become records and windows (explainer/task_records.py)
EXPLAIN_PROMPT = "explain_task"
DEFAULT_MAX_NODES = 15  # nodes explained per circuit, largest effect first (the demo's budget per circuit)
EXPLAIN_PAIRS = 5  # pairs (both prefixes) shown to the explainer
TOP_TOKENS = 8  # promoted and suppressed tokens kept per node


def _circuit(store: Store, run: Run, task: str) -> dict:
    circuit = store.newest_circuits(run.name).get(task)
    if circuit is None:
        raise UserError(f"model {run.name} has no circuit for {task}; run `circuits prune {run.run_dir} --task {task}` first")
    if not circuit["n_nodes"]:
        raise UserError(f"the {task} circuit of {run.name} has no nodes (status {circuit['status']}); "
                        "there is nothing to explain in it")
    return circuit


def ensure_effects(store: Store, run: Run, task: str, circuit: dict, progress: bool = True) -> list[dict]:
    """The circuit's node effects, computed and stored once (on the task's validation pairs)."""
    have = store.node_effects(circuit["circuit_id"])
    if have:
        return have
    built = run.tasks([task])[0]
    kept = [Node.from_id(n["node_id"])[1] for n in store.circuit_nodes(circuit["circuit_id"])]
    bar = progress_bar(total=len(kept), desc="node effects", unit="node", enabled=progress)
    base, effects = node_effects(run.model, built.val, run.means, kept, on_node=lambda: bar.update(1))
    bar.close()
    table = token_table(run.tokenizer)
    rows = []
    for e in effects:
        vocab = vocab_projection(run.model, e.location, e.index, TOP_TOKENS)
        up, down = vocab if vocab else ([], [])
        rows.append({"node_id": Node(e.location, e.index).node_id(run.name),
                     "effect_in_circuit": e.effect_in_circuit, "logit_diff_in_circuit": e.logit_diff_in_circuit,
                     "effect_in_model": e.effect_in_model, "logit_diff_in_model": e.logit_diff_in_model,
                     "direct_logit_diff": e.direct_logit_diff,
                     "promoted": [table[i] for i, _ in up] if vocab else None,
                     "promoted_logits": [v for _, v in up] if vocab else None,
                     "suppressed": [table[i] for i, _ in down] if vocab else None,
                     "suppressed_logits": [v for _, v in down] if vocab else None,
                     "n_examples": len(built.val)})
    base["sum_effect_in_model"] = sum(e.effect_in_model for e in effects)
    store.save_node_effects(circuit["circuit_id"], run.name, task, base, rows)
    return store.node_effects(circuit["circuit_id"])


def ensure_task_records(store: Store, run: Run, task: str, node_ids: Sequence[str], progress: bool = True) -> int:
    """Every prefix of the task's pairs (train and validation) with each node's activation at each
    of its tokens, stored per node in task_records. Returns the number of nodes captured."""
    have = store.task_record_nodes(task)
    todo = [n for n in node_ids if n not in have]
    if not todo:
        return 0
    built = run.tasks([task])[0]
    table = token_table(run.tokenizer)
    tokens, labels, pairs, variants, acts = [], [], [], [], []
    offset = 0
    for examples in (built.train, built.val):
        ids, lengths = left_aligned(examples, run.model.cfg.n_ctx)  # as evaluation reads them
        for row in range(len(examples)):
            tokens.append([table[int(t)] for t in ids[row, :int(lengths[row])]])
            pairs.append(offset + int(examples.pair[row]))
            variants.append(row % 2)
            labels.append(variant_label(row % 2, table[int(examples.correct[row])]))
        acts += task_activations(run.model, examples, [Node.from_id(n)[1] for n in todo])
        offset = max(pairs) + 1 if pairs else 0
    split_of = deal_pairs(offset)
    for j, nid in enumerate(progress_bar(todo, enabled=progress, desc="in-task records", unit="node")):
        records = task_records(tokens, [a[:, j] for a in acts], pairs, variants, labels)
        store.save_task_records(run.name, task, nid, [
            {"rank": r.rank, "pair": r.rank // 2, "variant": r.rank % 2, "split": split_of[r.rank // 2],
             "label": r.label, "tokens": r.tokens, "activations": r.activations} for r in records])
        failpoint("records.node")
    return len(todo)


class TaskSource(GeneralSource):
    """In-task explanations of a task's circuit nodes (see the module docstring)."""

    shuffled = False

    def __init__(self, task: str, max_nodes: int | None = DEFAULT_MAX_NODES, explain_pairs: int = EXPLAIN_PAIRS):
        self.task, self.max_nodes, self.explain_pairs = task, max_nodes, explain_pairs
        self.settings = {"task": task, "task_records": TASK_RECORDS_VERSION, "explain_pairs": explain_pairs}
        self.row = {"purpose": "task", "task": task}
        self.effects: list[dict] = []
        self.circuit: dict | None = None

    def nodes(self, store: Store, run: Run, tasks: Sequence[str] | None, nodes: Sequence[str] | None) -> list[str]:
        self.circuit = _circuit(store, run, self.task)
        self.effects = ensure_effects(store, run, self.task, self.circuit)
        ranked = [e["node_id"] for e in self.effects]  # largest effect in the circuit first
        if nodes:
            ids = [n if "/" in n else f"{run.name}/{n}" for n in nodes]
            outside = [n for n in ids if n not in ranked]
            if outside:
                raise UserError(f"{outside[0].rpartition('/')[2]} is not in the {self.task} circuit of {run.name}; "
                                f"list its nodes with `circuits sql \"SELECT name FROM node_roles WHERE task = "
                                f"'{self.task}'\"`")
            return ids
        return ranked[:self.max_nodes] if self.max_nodes else ranked

    def prepare(self, store: Store, run: Run, node_ids: Sequence[str], s: ExplainSettings, progress: bool) -> None:
        ensure_task_records(store, run, self.task, node_ids, progress)

    def windows(self, store: Store, nid: str, s: ExplainSettings) -> Windows:
        rows = store.task_records(nid, self.task)
        records = [ActivationRecord(list(r["tokens"]), list(r["activations"]), TASK_SAMPLING, r["rank"], r["rank"],
                                    label=r["label"]) for r in rows]
        return task_windows(records, {r["pair"]: r["split"] for r in rows}, self.explain_pairs)
