"""What the report shows, gathered from the store as plain Python values (no HTML here).

Everything is read through `Store` methods; `gather_model` returns one `ModelData` per model,
which `page.py` turns into HTML.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sparse_model.errors import UserError

from ..pipeline import LLM
from ..records import SCORE
from ..store import Store

DEFAULT_MAX_EDGES = 1500
DEFAULT_NODES_PER_TASK = 30
DEFAULT_WINDOWS = 4


@dataclass(frozen=True)
class ReportSettings:
    max_edges: int = DEFAULT_MAX_EDGES  # edges drawn per circuit
    nodes_per_task: int = DEFAULT_NODES_PER_TASK  # explained nodes per circuit with a full card
    windows_per_node: int = DEFAULT_WINDOWS  # heatmap windows per node (top and random, about half each)
    all_circuits: bool = False  # draw every stored circuit, not only the newest per task

    def check(self) -> None:
        if self.max_edges < 0:
            raise UserError(f"--max-edges must be 0 or more, got {self.max_edges}")
        if self.nodes_per_task < 0:
            raise UserError(f"--nodes-per-task must be 0 or more, got {self.nodes_per_task}")
        if self.windows_per_node < 0:
            raise UserError(f"--windows must be 0 or more, got {self.windows_per_node}")


@dataclass
class Explained:
    """What the report shows about one node's explanations."""

    selected: dict[str, list[dict]]  # kind -> selected explanations (with score columns), best first
    candidates: list[dict]  # LLM candidates that were not selected

    @property
    def best_llm(self) -> dict | None:
        rows = self.selected.get(LLM) or []
        return rows[0] if rows else None

    def best_score(self, kind: str = LLM) -> float | None:
        rows = self.selected.get(kind) or []
        return rows[0]["score"] if rows else None


def score_key(row: dict) -> tuple:
    """Sort key: best score first, undefined scores last, then oldest first."""
    s = row.get("score")
    return (s is None, -(s if s is not None else 0.0), str(row.get("created_at")))


def llm_rank_key(ex: Explained) -> tuple:
    """Sort key of a node by its best LLM explanation (nodes without one last)."""
    return score_key(ex.best_llm or {"score": None})


@dataclass
class CircuitData:
    """One drawn circuit and what its section shows."""

    circuit: dict  # the circuits row
    nodes: list[dict]  # its nodes (store.circuit_nodes), by rank
    edges: list[dict]  # the edges drawn (see `edge_sample`)
    edge_counts: dict[str, int]  # edge kind -> edges stored
    explained: dict[str, Explained]  # node id -> explanations, for its explained nodes
    order: list[str]  # its explained node ids, best LLM score first
    cards: list[str]  # the node ids of `order` that get a full card
    older: list[dict]  # older circuits of the same task, not drawn
    points: list[dict] = field(default_factory=list)  # the pruning search's points (prune_points), if searched
    roles: list[dict] = field(default_factory=list)  # node_roles rows, largest effect first (`explain --in-task`)
    effects: dict | None = None  # the baselines of the node effects (circuits.effects)


@dataclass
class ModelData:
    """Everything the report shows about one model."""

    model: dict  # the models row
    n_layer: int
    evals: list[dict]  # task_evals rows
    summary: list[dict]  # circuit_summary rows
    explained: dict[str, Explained]  # node id -> explanations, every explained node of the model
    circuits: list[CircuitData]  # the drawn circuits
    card_nodes: dict[str, dict] = field(default_factory=dict)  # node id -> node row, nodes with a card
    tasks_of: dict[str, list[str]] = field(default_factory=dict)  # node id -> tasks of its drawn circuits
    windows: dict[str, list[dict]] = field(default_factory=dict)  # node id -> heatmap windows
    scales: dict[str, float] = field(default_factory=dict)  # node id -> largest |activation|

    @property
    def drawn_ids(self) -> set[str]:
        return {c.circuit["circuit_id"] for c in self.circuits}


def models_to_report(store: Store, model: str | None) -> list[dict]:
    """The models rows to report (one, or every model), or a UserError saying what to run first."""
    where = f" for model {model}" if model else ""
    if not store.has_table("circuits") or not store.has_table("models"):
        raise UserError(f"no circuits in {store.path}{where}: nothing to report; train a model, then run "
                        "`circuits tasks RUN` and `circuits prune RUN --all` first")
    if model is not None:
        m = store.get_model(model)
        if m is None:
            raise UserError(f"no model named {model!r} in {store.path}; list them with `circuits models`")
        models = [m]
    else:
        models = store.list_models()
    if not models:
        raise UserError(f"no models and no circuits in {store.path}: nothing to report; run `circuits train`, "
                        "`circuits tasks RUN` and `circuits prune RUN --all` first")
    if not any(store.list_circuits(m["name"]) for m in models):
        run = models[0]["run_dir"] if len(models) == 1 and models[0].get("run_dir") else "RUN"
        raise UserError(f"no circuits in {store.path}{where}: nothing to report; run `circuits tasks {run}` and "
                        f"`circuits prune {run} --all` first")
    return models


def load_explanations(store: Store, model: str) -> dict[str, Explained]:
    """Node id -> its explanations: the selected ones of each kind (best first) and the LLM
    candidates that lost the selection (oldest first)."""
    if not store.has_table("explanations"):
        return {}
    out: dict[str, Explained] = {}
    for r in store.selected_explanations(model):
        out.setdefault(r["node_id"], Explained(defaultdict(list), [])).selected[r["kind"]].append(r)
    for r in store.unselected_explanations(model, LLM):
        out.setdefault(r["node_id"], Explained(defaultdict(list), [])).candidates.append(r)
    for ex in out.values():
        for lst in ex.selected.values():
            lst.sort(key=score_key)
        ex.candidates.sort(key=lambda r: (str(r.get("created_at")), r.get("candidate") or 0))
    return out


def edge_sample(store: Store, circuit_id: str, max_edges: int) -> tuple[list[dict], dict[str, int]]:
    """The strongest edges of a circuit, at most `max_edges`, shared among edge kinds in proportion
    to their counts; each row has `rel` = |weight| / max |weight| of its kind."""
    counts = store.edge_counts(circuit_id)
    total = sum(counts.values())
    if total == 0 or max_edges == 0:
        return [], counts
    if total <= max_edges:
        caps = dict(counts)
    else:  # largest remainder, so the caps add up to exactly max_edges
        exact = {k: max_edges * n / total for k, n in counts.items()}
        caps = {k: int(v) for k, v in exact.items()}
        left = max_edges - sum(caps.values())
        for k in sorted(exact, key=lambda k: exact[k] - caps[k], reverse=True)[:left]:
            caps[k] += 1
    out: list[dict] = []
    for kind, cap in caps.items():
        if cap > 0:
            out += store.strongest_edges(circuit_id, kind, cap)
    return out, counts


def pick_windows(rows: list[dict], n: int) -> list[dict]:
    """At most `n` windows, about half top and half random (more top ones when random are few)."""
    tops = [r for r in rows if r["sampling"] == "top"]
    rand = [r for r in rows if r["sampling"] != "top"]
    k_top = min(len(tops), max(n - len(rand), (n + 1) // 2))
    return tops[:k_top] + rand[: n - k_top]


def load_windows(store: Store, cards: dict[str, Explained], n: int) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """node_id -> windows to draw (score split: simulated by the best LLM explanation when there is
    one, else the bare records), and node_id -> largest |activation| over all its records."""
    if not cards or not store.has_table("activation_records"):
        return {}, {}
    scale = store.activation_peaks(list(cards))
    if n == 0:
        return {}, scale
    best = {nid: ex.best_llm["explanation_id"] for nid, ex in cards.items() if ex.best_llm is not None}
    by_node: dict[str, list[dict]] = defaultdict(list)
    if best:
        for r in store.simulated_windows(list(best.values()), SCORE):
            by_node[r["node_id"]].append(r)
    for nid in cards:
        if nid not in by_node:  # no simulation to show: the bare records, without a simulated side
            for r in store.activation_records(nid, split=SCORE):
                by_node[nid].append(dict(r, predicted=None, failure=None))
    return {nid: pick_windows(rows, n) for nid, rows in by_node.items()}, scale


def _n_layer(m: dict) -> int:
    cfg = m.get("config") or {}
    return int((cfg.get("model") or {}).get("n_layer") or 0) if isinstance(cfg, dict) else 0


def gather_model(store: Store, m: dict, settings: ReportSettings) -> ModelData:
    """Everything the report shows about model row `m`."""
    model = m["name"]
    circuits = store.list_circuits(model)
    newest = store.newest_circuits(model)
    drawn = [c for c in (circuits if settings.all_circuits else newest.values()) if c["n_nodes"]]
    explained = load_explanations(store, model)
    data = ModelData(model=m, n_layer=_n_layer(m), evals=store.task_evals(model),
                     summary=store.circuit_summary(model), explained=explained, circuits=[])
    tasks_of: dict[str, list[str]] = defaultdict(list)
    for c in drawn:
        nodes = store.circuit_nodes(c["circuit_id"])
        here = {x["node_id"]: explained[x["node_id"]] for x in nodes if x["node_id"] in explained}
        for nid in here:
            if c["task"] not in tasks_of[nid]:
                tasks_of[nid].append(c["task"])
        order = sorted(here, key=lambda nid: llm_rank_key(here[nid]))  # stable: ties keep circuit rank order
        cards = order[: settings.nodes_per_task]
        by_id = {x["node_id"]: x for x in nodes}
        for nid in cards:
            data.card_nodes.setdefault(nid, by_id[nid])
        edges, counts = edge_sample(store, c["circuit_id"], settings.max_edges)
        older = [] if settings.all_circuits else [o for o in circuits if o["task"] == c["task"]
                                                   and o["circuit_id"] != c["circuit_id"]]
        roles = store.has_table("node_roles")
        data.circuits.append(CircuitData(c, nodes, edges, counts, here, order, cards, older,
                                         store.prune_points(c["circuit_id"]),
                                         store.node_roles(c["circuit_id"]) if roles else [],
                                         store.circuit_effects(c["circuit_id"]) if roles else None))
    data.tasks_of = dict(tasks_of)
    data.windows, data.scales = load_windows(store, {nid: explained[nid] for nid in data.card_nodes},
                                             settings.windows_per_node)
    return data
