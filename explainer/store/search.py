"""The queries behind search by meaning (`circuits search`), as a mixin of `Store`.

Embeddings live in the side table `explanation_embeddings` (migration 8, see `schema.py`), one
row per searchable explanation: kind llm, selected, purpose 'circuit', with text. The store only
keeps and compares vectors; the sentence-embedding model is run by the jobs layer
(`explainer.jobs.search`), which passes the vectors in. Similarity is DuckDB's own
`array_cosine_similarity` over `FLOAT[384]` arrays, no extension.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Sequence

from .rows import rows_as_dicts as _dicts

EMBEDDING_SIZE = 384  # the FLOAT[384] of explanation_embeddings.embedding
# The explanations search looks through (and so the ones that get an embedding): each node's chosen
# LLM explanation of a real job, not the baselines, the other best-of-k candidates or the suite's rows.
SEARCHABLE = "e.kind = 'llm' AND e.selected AND e.purpose = 'circuit' AND e.text IS NOT NULL"
# The newest circuit of each task of each model (as `Store.newest_circuits`), for the task filter.
_NEWEST = ("SELECT circuit_id, model, task FROM circuits QUALIFY row_number() OVER "
           "(PARTITION BY model, task ORDER BY created_at DESC, circuit_id DESC) = 1")


def is_searchable(row: dict) -> bool:
    """SEARCHABLE for an explanations row before it is stored (the explain job's embedding hook)."""
    return (row.get("kind") == "llm" and bool(row.get("selected")) and (row.get("purpose") or "circuit") == "circuit"
            and row.get("text") is not None)


def embedding_statements(embedder: str, ids: Sequence[str], vectors: Sequence[Any]) -> list[tuple[str, list]]:
    """The statements that store `vectors[i]` as the embedding of explanation `ids[i]`, replacing any."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} explanation ids but {len(vectors)} embeddings")
    rows = [v.tolist() if hasattr(v, "tolist") else [float(x) for x in v] for v in vectors]
    bad = [len(r) for r in rows if len(r) != EMBEDDING_SIZE]
    if bad:
        raise ValueError(f"embeddings must have {EMBEDDING_SIZE} floats, got {bad[0]}")
    if not rows:
        return []
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    # unnest in a subquery, then one cast per row: about 20 times faster than executemany
    return [("DELETE FROM explanation_embeddings WHERE explanation_id IN (SELECT unnest(?::VARCHAR[]))", [list(ids)]),
            ("INSERT INTO explanation_embeddings SELECT id, ?, embedding::FLOAT[384], ? "
             "FROM (SELECT unnest(?::VARCHAR[]) AS id, unnest(?::FLOAT[][]) AS embedding)",
             [embedder, now, list(ids), rows])]


class SearchQueries:
    """Search queries; mixed into `Store`, which provides `self.con`, `has_table` and `_transaction`."""

    def searchable_models(self) -> dict[str, int]:
        """Model -> how many searchable explanations it has (an empty dict: nothing to search)."""
        if not self.has_table("explanations"):
            return {}
        rows = self.con.execute(f"SELECT e.model, count(*) FROM explanations e WHERE {SEARCHABLE} "
                                "GROUP BY e.model ORDER BY e.model").fetchall()
        return dict(rows)

    def circuit_tasks(self, model: str | None = None) -> list[str]:
        """The tasks with a stored circuit (of `model`, or of any model)."""
        if not self.has_table("circuits"):
            return []
        sql = "SELECT DISTINCT task FROM circuits" + (" WHERE model = ?" if model else "") + " ORDER BY task"
        return [r[0] for r in self.con.execute(sql, [model] if model else []).fetchall()]

    def missing_embeddings(self, embedder: str) -> list[tuple[str, str]]:
        """(explanation_id, text) of every searchable explanation without an embedding by `embedder`
        (all of them in a file opened read-only before migration 8 was applied)."""
        if not self.has_table("explanations"):
            return []
        if not self.has_table("explanation_embeddings"):
            sql = f"SELECT e.explanation_id, e.text FROM explanations e WHERE {SEARCHABLE} ORDER BY 1"
            return self.con.execute(sql).fetchall()
        return self.con.execute(
            "SELECT e.explanation_id, e.text FROM explanations e LEFT JOIN explanation_embeddings v "
            f"ON v.explanation_id = e.explanation_id AND v.embedder = ? WHERE {SEARCHABLE} "
            "AND v.explanation_id IS NULL ORDER BY 1", [embedder]).fetchall()

    def save_embeddings(self, embedder: str, ids: Sequence[str], vectors: Sequence[Any]) -> None:
        """Store the embeddings of explanations `ids` (each EMBEDDING_SIZE floats), in one transaction."""
        self._transaction(embedding_statements(embedder, ids, vectors))

    def search_explanations(self, vector: Sequence[float], embedder: str, model: str | None = None,
                            task: str | None = None, limit: int = 20) -> list[dict]:
        """The `limit` searchable explanations most similar to `vector` (cosine, highest first), of
        `model`'s nodes and of the nodes in `task`'s newest circuit if given. Each row: node (its
        name), model, tasks (the tasks whose newest circuit holds the node, comma-separated),
        explanation, score (the held-out correlation, node_scores.score), similarity, node_id,
        explainer, explanation_id."""
        vec = vector.tolist() if hasattr(vector, "tolist") else [float(x) for x in vector]
        if len(vec) != EMBEDDING_SIZE:
            raise ValueError(f"a query embedding must have {EMBEDDING_SIZE} floats, got {len(vec)}")
        if not self.has_table("explanation_embeddings"):  # a file before migration 8, opened read-only
            return []
        params: dict[str, Any] = {"vec": vec, "embedder": embedder, "limit": int(limit)}
        where = ""
        if model:
            where += " AND e.model = $model"
            params["model"] = model
        if task:
            where += (" AND e.node_id IN (SELECT cn.node_id FROM circuit_nodes cn JOIN newest nc USING (circuit_id) "
                      "WHERE nc.task = $task)")
            params["task"] = task
        # The similarities first, over the embeddings alone: joining first would carry every
        # 384-float array through the join (twice as slow at 10,000 rows, bench/search_speed.py).
        sql = f"""
            WITH newest AS ({_NEWEST}),
            sims AS (
                SELECT explanation_id, array_cosine_similarity(embedding, $vec::FLOAT[384]) AS similarity
                FROM explanation_embeddings WHERE embedder = $embedder
            ), hits AS (
                SELECT e.explanation_id, e.node_id, e.model, e.text, e.explainer, v.similarity
                FROM sims v JOIN explanations e ON e.explanation_id = v.explanation_id
                WHERE {SEARCHABLE}{where}
                ORDER BY v.similarity DESC, e.explanation_id LIMIT $limit
            ), node_tasks AS (
                SELECT cn.node_id, string_agg(nc.task, ', ' ORDER BY nc.task) AS tasks
                FROM circuit_nodes cn JOIN newest nc USING (circuit_id)
                WHERE cn.node_id IN (SELECT node_id FROM hits) GROUP BY cn.node_id
            )
            SELECT coalesce(n.name, h.node_id) AS node, h.model, t.tasks, h.text AS explanation, s.value AS score,
                   h.similarity, h.node_id, h.explainer, h.explanation_id
            FROM hits h
            LEFT JOIN nodes n ON n.node_id = h.node_id
            LEFT JOIN node_tasks t ON t.node_id = h.node_id
            LEFT JOIN scores s ON s.explanation_id = h.explanation_id AND s.split = 'score'
                AND s.method = 'correlation'
            ORDER BY h.similarity DESC, h.explanation_id
        """
        return _dicts(self.con.execute(sql, params))
