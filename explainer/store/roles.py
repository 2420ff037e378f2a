"""The queries of node roles (what each circuit node does for its task: `circuits roles`), as a
mixin of `Store`: in-task records, node effects, and the node_roles view (schema migration 12)."""

from __future__ import annotations

import json

from .rows import rows_as_dicts as _dicts, utc_now as _now


class RoleQueries:
    """Node-role queries; mixed into `Store`, which provides `self.con` and `self._transaction`."""

    def save_task_records(self, model: str, task: str, node_id: str, rows: list[dict]) -> None:
        """Replace a node's records on one task in one transaction. Each row: rank, pair, variant,
        split, label, tokens, activations."""
        now = _now()
        self._transaction([("DELETE FROM task_records WHERE node_id = ? AND task = ?", [node_id, task])], many={
            "INSERT INTO task_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)": [
                [node_id, model, task, r["rank"], r["pair"], r["variant"], r["split"], r["label"],
                 max(r["activations"]) if r["activations"] else None, r["tokens"], r["activations"], now]
                for r in rows]})

    def task_records(self, node_id: str, task: str) -> list[dict]:
        """A node's records on a task, by rank (pair, then variant)."""
        return _dicts(self.con.execute("SELECT * FROM task_records WHERE node_id = ? AND task = ? ORDER BY rank",
                                       [node_id, task]))

    def task_record_nodes(self, task: str) -> set[str]:
        """Nodes that already have records on `task`."""
        return {r[0] for r in self.con.execute("SELECT DISTINCT node_id FROM task_records WHERE task = ?",
                                               [task]).fetchall()}

    def save_node_effects(self, circuit_id: str, model: str, task: str, baselines: dict, rows: list[dict]) -> None:
        """Replace a circuit's node effects and their baselines (circuits.effects), in one transaction."""
        now = _now()
        self._transaction([
            ("DELETE FROM node_effects WHERE circuit_id = ?", [circuit_id]),
            ("UPDATE circuits SET effects = ? WHERE circuit_id = ?", [json.dumps(baselines), circuit_id]),
        ], many={"INSERT INTO node_effects VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)": [
            [circuit_id, r["node_id"], model, task, r["effect_in_circuit"], r["logit_diff_in_circuit"],
             r["effect_in_model"], r["logit_diff_in_model"], r["direct_logit_diff"], r["promoted"],
             r["promoted_logits"], r["suppressed"], r["suppressed_logits"], r["n_examples"], now] for r in rows]})

    def node_effects(self, circuit_id: str) -> list[dict]:
        """A circuit's node effects, largest effect in the circuit first."""
        return _dicts(self.con.execute(
            "SELECT * FROM node_effects WHERE circuit_id = ? ORDER BY effect_in_circuit DESC, node_id", [circuit_id]))

    def circuit_effects(self, circuit_id: str) -> dict | None:
        """The baselines a circuit's node effects were measured against (None before `circuits roles`)."""
        row = self.con.execute("SELECT effects FROM circuits WHERE circuit_id = ?", [circuit_id]).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def node_roles(self, circuit_id: str) -> list[dict]:
        """The node_roles view for one circuit, largest effect in the circuit first."""
        return _dicts(self.con.execute(
            "SELECT * FROM node_roles WHERE circuit_id = ? ORDER BY effect_in_circuit DESC, node_id", [circuit_id]))
