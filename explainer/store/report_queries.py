"""The queries only the HTML report makes, as a mixin of `Store` (which owns every query).

Kept apart from store.py so the report's questions are read in one place; they use `self.con`
like every other Store method.
"""

from __future__ import annotations

from .rows import rows_as_dicts as _dicts


class ReportQueries:
    """Report queries; mixed into `Store`, which provides `self.con`."""

    def has_table(self, name: str) -> bool:
        """Whether the table or view exists (a read-only file is never migrated, so it may lack some)."""
        return self.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                                [name]).fetchone()[0] > 0

    def task_evals(self, model: str) -> list[dict]:
        """The unpruned model's evaluation on every task, by task."""
        return _dicts(self.con.execute("SELECT * FROM task_evals WHERE model = ? ORDER BY task", [model]))

    def circuit_summary(self, model: str) -> list[dict]:
        """Every stored circuit of the model (the circuit_summary view), by task."""
        return _dicts(self.con.execute(
            "SELECT * FROM circuit_summary WHERE model = ? ORDER BY task, circuit_id", [model]))

    def selected_explanations(self, model: str) -> list[dict]:
        """Every selected general explanation of the model's circuit nodes (not the ground-truth suite's,
        not the in-task ones of `circuits explain --in-task`, which node_roles shows) with
        its scores from node_scores, plus what the view leaves out: candidate, raw_text and, for a
        shuffled explanation, the node it was written for (source_node_id, source_name)."""
        # DISTINCT: node_scores repeats an explanation once per task whose circuit holds its node.
        # The detection and fuzzing columns came with schema 13; a read-only older file has none.
        excerpt = ("ns.detection, ns.fuzzing" if "detection" in self._columns("node_scores")
                   else "NULL AS detection, NULL AS fuzzing")
        return _dicts(self.con.execute(f"""
            SELECT DISTINCT ns.explanation_id, ns.node_id, ns.kind, ns.explanation AS text, ns.writer, ns.explainer,
                   ns.simulator, ns.failure, ns.created_at, ns.score, ns.mean_window_correlation, ns.r_squared,
                   ns.absolute_deviation_explained, ns.calibrate_score, {excerpt},
                   e.candidate, e.raw_text, e.source_node_id, src.name AS source_name
            FROM node_scores ns
            JOIN explanations e ON e.explanation_id = ns.explanation_id
            LEFT JOIN nodes src ON src.node_id = e.source_node_id
            WHERE ns.model = ? AND coalesce(ns.purpose, 'circuit') = 'circuit'""", [model]))

    def unselected_explanations(self, model: str, kind: str) -> list[dict]:
        """The model's explanations of `kind` that were not selected (best-of-k candidates that lost),
        each with its writer, its correlation on the calibrate split (what the selection compared)
        and, for the best LLM-written one, its held-out score."""
        return _dicts(self.con.execute("""
            SELECT e.explanation_id, e.node_id, e.kind, e.text, e.writer, e.candidate, e.failure, e.raw_text,
                   e.created_at, s.value AS calibrate_score, t.value AS score
            FROM explanations e
            LEFT JOIN scores s ON s.explanation_id = e.explanation_id AND s.split = 'calibrate'
                                  AND s.method = 'correlation'
            LEFT JOIN scores t ON t.explanation_id = e.explanation_id AND t.split = 'score'
                                  AND t.method = 'correlation'
            WHERE e.model = ? AND e.kind = ? AND NOT coalesce(e.selected, false)
              AND coalesce(e.purpose, 'circuit') = 'circuit'""", [model, kind]))

    def edge_counts(self, circuit_id: str) -> dict[str, int]:
        """Edge kind -> number of edges of the circuit."""
        return dict(self.con.execute("SELECT kind, count(*) FROM edges WHERE circuit_id = ? GROUP BY kind",
                                     [circuit_id]).fetchall())

    def strongest_edges(self, circuit_id: str, kind: str, limit: int) -> list[dict]:
        """The `limit` edges of one kind with the largest |weight|, each with `rel` = |weight| / the
        largest |weight| of that kind (NULL when it is 0)."""
        return _dicts(self.con.execute("""
            SELECT source, target, weight, kind,
                   abs(weight) / nullif(max(abs(weight)) OVER (), 0) AS rel
            FROM edges WHERE circuit_id = ? AND kind = ?
            ORDER BY abs(weight) DESC, source, target LIMIT ?""", [circuit_id, kind, limit]))

    def activation_peaks(self, node_ids: list[str]) -> dict[str, float]:
        """Node id -> the largest |activation| over all of its activation records."""
        rows = self.con.execute(
            "SELECT node_id, max(list_max(activations)), min(list_min(activations)) FROM activation_records "
            "WHERE list_contains(?::VARCHAR[], node_id) GROUP BY node_id", [node_ids]).fetchall()
        return {nid: max(abs(hi or 0.0), abs(lo or 0.0)) for nid, hi, lo in rows}

    def simulated_windows(self, explanation_ids: list[str], split: str) -> list[dict]:
        """The simulations of these explanations on one split, each beside its activation record
        (tokens, activations); by node, then top, random, other samplings, then rank."""
        return _dicts(self.con.execute("""
            SELECT s.node_id, s.sampling, s.rank, s.predicted, s.failure, r.tokens, r.activations
            FROM simulations s JOIN activation_records r
              ON r.node_id = s.node_id AND r.sampling = s.sampling AND r.rank = s.rank
            WHERE list_contains(?::VARCHAR[], s.explanation_id) AND s.split = ?
            ORDER BY s.node_id, CASE s.sampling WHEN 'top' THEN 0 WHEN 'random' THEN 1 ELSE 2 END, s.rank""",
                                       [explanation_ids, split]))
