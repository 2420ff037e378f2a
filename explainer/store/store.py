"""The `Store`: an open connection to the circuits database and every query the tool makes.

The tables, views and migrations are described in `schema.py`.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path, PurePath
from typing import Any

import duckdb

from sparse_model.errors import UserError

from . import schema
from .rows import rows_as_dicts as _rows_as_dicts, utc_now as _now
from .report_queries import ReportQueries
from .roles import RoleQueries
from .search import SearchQueries, embedding_statements
from .shared import SharedConnection, lock_for_writing, unlock_for_writing


DEFAULT_DB = "circuits.duckdb"
ENV_VAR = "CIRCUITS_DB"

# Bytes 8..12 of every DuckDB file (after an 8-byte checksum) are this magic string.
_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8


def resolve_db_path(db: str | Path | None) -> Path:
    """The database path: `db` if given, else $CIRCUITS_DB, else ./circuits.duckdb."""
    chosen = db if db not in (None, "") else (os.environ.get(ENV_VAR) or DEFAULT_DB)
    return Path(chosen).expanduser()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def _check_is_duckdb(path: Path) -> None:
    """Refuse files that exist but are not DuckDB databases, before DuckDB touches them."""
    with open(path, "rb") as f:
        head = f.read(_MAGIC_OFFSET + len(_MAGIC))
    if head[_MAGIC_OFFSET:] != _MAGIC:
        raise UserError(
            f"{path} is not a DuckDB database; pass --db with another path or remove the file"
        )


class Store(ReportQueries, RoleQueries, SearchQueries):
    """An open connection to the circuits database. Use `Store.open(...)`."""

    def __init__(self, con: duckdb.DuckDBPyConnection | SharedConnection, path: Path, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only
        self._writer_lock = False
        self.taken_over: list[dict] = []  # jobs left 'running' by processes that died (see _take_over_jobs)

    # ---- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False, shared: bool = True) -> "Store":
        """Open (and, unless read_only, create and migrate) the database at `path`. `shared`: hold
        the file only while it is used, so other processes can read it meanwhile (`shared.py`);
        False holds it until `close` (kept for the benchmark that compares the two)."""
        path = Path(path)
        in_memory = str(path) == ":memory:"
        if not in_memory:
            if path.is_dir():
                raise UserError(f"{path} is a directory; pass --db with a database file path")
            if not path.parent.is_dir():
                raise UserError(
                    f"directory {path.parent} does not exist; "
                    "create it or pass --db with another path"
                )
            if path.exists():
                _check_is_duckdb(path)
            elif read_only:
                raise UserError(
                    f"no database yet at {path}; run `circuits train` first to create it"
                    " (or pass --db with another path)"
                )
        def connect() -> duckdb.DuckDBPyConnection:
            return duckdb.connect(str(path), read_only=read_only, config={"autoinstall_known_extensions": False})

        try:
            # A file is held only while it is used (explainer/store/shared.py), so readers can look at
            # a running job; ":memory:" has nobody to share with.
            con = connect() if in_memory or not shared else SharedConnection(connect, path=path, reader=read_only)
        except duckdb.Error as e:
            raise cls._open_error(path, e) from None
        store = cls(con, path, read_only)
        try:
            store._migrate()
        except BaseException as e:
            con.close()
            if isinstance(e, duckdb.Error):  # a shared connection opens the file here, at its first use
                raise cls._open_error(path, e) from None
            raise
        if not in_memory and not read_only:
            if not lock_for_writing(path):
                con.close()
                raise UserError(f"database {path} is in use by another circuits job that writes to it; "
                                "wait for it to finish or use another --db (reading it works meanwhile)")
            store._writer_lock = True
            store.taken_over = store._take_over_jobs()
        return store

    def _take_over_jobs(self) -> list[dict]:
        """Jobs still marked 'running' by another process, while this process holds the writer
        lock: that process is gone (a live writer would hold the lock), killed before it could say
        so. They are marked 'interrupted', so `circuits jobs` does not show a dead job as running;
        rerunning the job's command finishes it as before."""
        if not self._columns("jobs"):  # a file migrated only part of the way (tests of old schemas)
            return []
        rows = _rows_as_dicts(self.con.execute(
            "SELECT job_id, pid, command FROM jobs WHERE status = 'running' AND coalesce(pid, -1) <> ?", [os.getpid()]))
        for r in rows:
            self.update_job(r["job_id"], status="interrupted",
                            error=f"process {r['pid']} ended without finishing the job (killed?)")
        return rows

    @staticmethod
    def _open_error(path: Path, e: duckdb.Error) -> UserError:
        msg = _one_line(e)
        if "Conflicting lock" in msg or "Could not set lock" in msg:
            pid = re.search(r"PID (\d+)", msg)
            who = f" (pid {pid.group(1)})" if pid else ""
            return UserError(
                f"database {path} is in use by another circuits process{who}; "
                "wait for it to finish or use another --db"
            )
        if "not a valid DuckDB database" in msg:
            return UserError(
                f"{path} is not a DuckDB database; pass --db with another path or remove the file"
            )
        if isinstance(e, duckdb.ConnectionException):
            return UserError(
                f"database {path} is already open in this process in another mode; close it first"
            )
        return UserError(f"cannot open database {path}: {msg}")

    def close(self) -> None:
        self.con.close()
        if self._writer_lock:
            self._writer_lock = False
            unlock_for_writing(self.path)

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- schema ------------------------------------------------------------------------------

    def schema_version(self) -> int:
        """Highest applied migration (0 for a file without a schema_version table)."""
        has_table = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchone()[0]
        if not has_table:
            return 0
        sql = "SELECT coalesce(max(version), 0) FROM schema_version"
        return self.con.execute(sql).fetchone()[0]

    def _migrate(self) -> None:
        known = schema.MIGRATIONS[-1][0] if schema.MIGRATIONS else 0
        current = self.schema_version()
        if current > known:
            raise UserError(
                f"{self.path} was written by a newer version of circuits "
                f"(schema {current} > {known}); upgrade the tool"
            )
        if self.read_only:
            return
        self.con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER, applied_at TIMESTAMP)"
        )
        for version, script in schema.MIGRATIONS:
            if version <= current:
                continue
            self.con.begin()
            try:
                self.con.execute(script)
                self.con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, _now()])
                self.con.commit()
            except BaseException:
                self.con.rollback()
                raise

    # ---- models ------------------------------------------------------------------------------

    def _columns(self, table: str) -> list[str]:
        return [
            r[0]
            for r in self.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                "ORDER BY ordinal_position",
                [table],
            ).fetchall()
        ]

    def upsert_model(self, row: dict[str, Any]) -> None:
        """Insert the model `row`, or replace the one with the same name (keeping created_at).

        JSON columns (config, corpus_manifest, density) take Python objects; missing columns are
        stored as NULL; created_at/updated_at are set here.
        """
        if not row.get("name"):
            raise ValueError("upsert_model needs a non-empty 'name'")
        columns = self._columns("models")
        unknown = set(row) - set(columns)
        if unknown:
            raise ValueError(f"unknown models columns: {sorted(unknown)}")
        json_cols = {
            r[0]
            for r in self.con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'models' AND data_type = 'JSON'"
            ).fetchall()
        }
        now = _now()
        values = []
        for c in columns:
            v = row.get(c)
            if c in ("created_at", "updated_at"):
                v = now
            elif c in json_cols and v is not None:
                v = json.dumps(v)
            elif isinstance(v, PurePath):
                v = str(v)
            values.append(v)
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in columns if c not in ("name", "created_at")
        )
        sql = (
            f"INSERT INTO models ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
            f"ON CONFLICT (name) DO UPDATE SET {updates}"
        )
        self.con.begin()
        try:
            self.con.execute(sql, values)
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise

    def get_model(self, name: str) -> dict | None:
        rows = _rows_as_dicts(self.con.execute("SELECT * FROM models WHERE name = ?", [name]))
        return rows[0] if rows else None

    def list_models(self) -> list[dict]:
        return _rows_as_dicts(self.con.execute("SELECT * FROM models ORDER BY name"))

    # ---- tasks, nodes and circuits --------------------------------------------------------------

    def _transaction(self, statements: list[tuple[str, list | None]], many: dict[str, list[list]] | None = None) -> None:
        self.con.begin()
        try:
            for sql, params in statements:
                self.con.execute(sql, params)
            for sql, rows in (many or {}).items():
                if rows:
                    self.con.executemany(sql, rows)
            self.con.commit()
        except BaseException:
            self.con.rollback()
            raise

    def save_task_evals(self, model: str, rows: list[dict], target_loss: float) -> None:
        """Task definitions and the unpruned model's validation loss/accuracy on them, in one transaction."""
        now = _now()
        self._transaction([], many={
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?)":
                [[r["name"], r["description"], json.dumps(r["answers"]), r["random_labels"], now] for r in rows],
            "INSERT OR REPLACE INTO task_evals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)":
                [[model, r["name"], r["loss"], r["accuracy"], r["mean_logit_diff"], r["n_val"], r["loss"] <= target_loss,
                  target_loss, now] for r in rows],
        })

    def save_nodes(self, model: str, rows: list[dict]) -> None:
        """Every node of a model (each row: node, a `sparse_model.nodes.Node`; layer; mean);
        replaces the model's nodes."""
        self._transaction([("DELETE FROM nodes WHERE model = ?", [model])], many={
            "INSERT INTO nodes (node_id, model, layer, location, site, idx, name, mean) VALUES (?, ?, ?, ?, ?, ?, ?, ?)":
                [[r["node"].node_id(model), model, r["layer"], r["node"].location, r["node"].site, r["node"].index,
                  r["node"].name, r["mean"]] for r in rows],
        })

    def has_nodes(self, model: str) -> bool:
        return self.con.execute("SELECT count(*) FROM nodes WHERE model = ?", [model]).fetchone()[0] > 0

    def save_circuit(self, row: dict, nodes: list[dict], edges: list[dict], points: list[dict] = ()) -> None:
        """Insert a circuit with its nodes, edges and search points (`prune_points` rows without
        circuit_id), replacing the circuit with the same id atomically."""
        cid = row["circuit_id"]
        columns = self._columns("circuits")
        values = [json.dumps(row[c]) if c == "settings" else (_now() if c == "created_at" else row.get(c)) for c in columns]
        # a file not yet migrated to 10 (only tests write one) has no prune_points
        points_table = [("DELETE FROM prune_points WHERE circuit_id = ?", [cid])] if self._columns("prune_points") else []
        self._transaction(
            [("DELETE FROM edges WHERE circuit_id = ?", [cid]),
             ("DELETE FROM circuit_nodes WHERE circuit_id = ?", [cid]),
             *points_table,
             ("DELETE FROM circuits WHERE circuit_id = ?", [cid]),
             (f"INSERT INTO circuits ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)],
            many={
                "INSERT INTO circuit_nodes VALUES (?, ?, ?, ?)": [[cid, n["node_id"], n["rank"], n["score"]] for n in nodes],
                "INSERT INTO edges VALUES (?, ?, ?, ?, ?)": [[cid, e["source"], e["target"], e["weight"], e["kind"]] for e in edges],
                "INSERT INTO prune_points VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)": [
                    [cid, p["index"], json.dumps(p["overrides"]), json.dumps(p["settings"]), p["nodes"], p["edges"],
                     p["selection_loss"], p["sufficiency_loss"], p["sufficient"], p["seconds"], p["chosen"]]
                    for p in points],
            })

    def prune_points(self, circuit_id: str) -> list[dict]:
        """The settings a pruning search tried for this circuit, in the order it tried them."""
        return _rows_as_dicts(self.con.execute(
            "SELECT * FROM prune_points WHERE circuit_id = ? ORDER BY point", [circuit_id]))

    def list_circuits(self, model: str | None = None) -> list[dict]:
        sql = "SELECT * FROM circuits" + (" WHERE model = ?" if model else "") + " ORDER BY model, task, created_at"
        return _rows_as_dicts(self.con.execute(sql, [model] if model else []))

    def newest_circuits(self, model: str) -> dict[str, dict]:
        """Task -> the newest stored circuit of that task (the one `circuits explain --task` explains)."""
        rows = _rows_as_dicts(self.con.execute(
            "SELECT * FROM circuits WHERE model = ? QUALIFY row_number() OVER (PARTITION BY task "
            "ORDER BY created_at DESC, circuit_id DESC) = 1 ORDER BY task", [model]))
        return {r["task"]: r for r in rows}

    def circuit_with_settings(self, model: str, task: str, settings_digest: str) -> dict | None:
        """The circuit of a task pruned with these settings, if stored."""
        rows = _rows_as_dicts(self.con.execute(
            "SELECT * FROM circuits WHERE model = ? AND task = ? AND settings_digest = ? "
            "ORDER BY created_at DESC LIMIT 1", [model, task, settings_digest]))
        return rows[0] if rows else None

    def circuit_nodes(self, circuit_id: str) -> list[dict]:
        return _rows_as_dicts(self.con.execute(
            "SELECT n.*, cn.rank, cn.score FROM circuit_nodes cn JOIN nodes n USING (node_id) "
            "WHERE cn.circuit_id = ? ORDER BY cn.rank", [circuit_id]))

    def circuit_edges(self, circuit_id: str) -> list[dict]:
        return _rows_as_dicts(self.con.execute("SELECT * FROM edges WHERE circuit_id = ? ORDER BY source, target", [circuit_id]))

    # ---- activation records, explanations, scores ----------------------------------------------

    def save_activation_records(self, model: str, node_id: str, rows: list[dict]) -> None:
        """Replace all activation records of `node_id` in one transaction (so a rerun never mixes samples).

        Each row: sampling, rank, split, start, max_activation, tokens (list[str]), activations
        (list[float]), sample_seed.
        """
        now = _now()
        self._transaction([("DELETE FROM activation_records WHERE node_id = ?", [node_id])], many={
            "INSERT INTO activation_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)":
                [[node_id, model, r["sampling"], r["rank"], r["split"], r["start"], r["max_activation"],
                  [str(t) for t in r["tokens"]], [float(a) for a in r["activations"]], r["sample_seed"], now]
                 for r in rows],
        })

    def activation_records(self, node_id: str, split: str | None = None) -> list[dict]:
        """A node's records, ordered by split, sampling (top, random, quantile) and rank."""
        sql = "SELECT * FROM activation_records WHERE node_id = ?" + (" AND split = ?" if split else "")
        sql += (" ORDER BY split, CASE sampling WHEN 'top' THEN 0 WHEN 'random' THEN 1 WHEN 'quantile' THEN 2"
                " ELSE 3 END, sampling, rank")
        return _rows_as_dicts(self.con.execute(sql, [node_id, split] if split else [node_id]))

    def record_windows(self, model: str) -> dict[str, int]:
        """Node id -> tokens per record, for the nodes of `model` that already have activation records
        (so a rerun skips them unless it asks for another window length)."""
        rows = self.con.execute("SELECT node_id, min(len(tokens)) FROM activation_records WHERE model = ? "
                                "GROUP BY node_id", [model])
        return dict(rows.fetchall())

    def save_calibration(self, rows: list[dict]) -> None:
        """Insert or replace simulator_calibration rows (see the schema), in one transaction."""
        columns = ["simulator_version", "simulator", "family", "rule_set", "suite_version", "run", "rules", "seeds",
                   "auroc", "correct_mean", "correct_std", "token_lookup_mean"]
        now = _now()
        sql = (f"INSERT OR REPLACE INTO simulator_calibration ({', '.join(columns)}, created_at) "
               f"VALUES ({', '.join('?' * (len(columns) + 1))})")
        self._transaction([], many={sql: [[r.get(c) for c in columns] + [now] for r in rows]})

    def save_explanation(self, explanation: dict, simulations: list[dict], scores: list[dict]) -> None:
        """Insert one explanation with its simulations and scores, replacing any with the same id."""
        self.save_explanations([(explanation, simulations, scores)])

    def save_explanations(self, items: list[tuple[dict, list[dict], list[dict]]], embedder: str | None = None,
                          embeddings: dict[str, Any] | None = None) -> None:
        """Like `save_explanation` for many explanations, all in one transaction.

        An explanation dict holds the explanations columns except created_at (missing ones are
        NULL; settings is a dict; purpose defaults to 'circuit'). Simulations: sampling, rank, split,
        predicted, simulator, failure, raw_text. Scores: split, method, value (NaN is stored as
        NULL), n_tokens. embeddings: explanation id -> its text's embedding by `embedder`
        (explanation_embeddings); a replaced explanation loses its old one.
        """
        columns = self._columns("explanations")
        statements: list[tuple[str, list | None]] = []
        inserts: list[tuple[str, list | None]] = []
        sim_rows: list[list] = []
        score_rows: list[list] = []
        insert_sql = f"INSERT INTO explanations ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        now = _now()
        for e, sims, scs in items:
            eid = e.get("explanation_id")
            if not eid:
                raise ValueError("save_explanation needs a non-empty 'explanation_id'")
            unknown = set(e) - set(columns) - {"created_at"}
            if unknown:
                raise ValueError(f"unknown explanations columns: {sorted(unknown)}")
            for table in ("scores", "simulations", "explanation_embeddings", "explanations"):
                statements.append((f"DELETE FROM {table} WHERE explanation_id = ?", [eid]))
            row = dict(e, created_at=now, purpose=e.get("purpose") or "circuit")
            if row.get("settings") is not None:
                row["settings"] = json.dumps(row["settings"])
            inserts.append((insert_sql, [row.get(c) for c in columns]))
            for s in sims:
                predicted = s.get("predicted")
                sim_rows.append([eid, e.get("node_id"), s["sampling"], s["rank"], s.get("split"),
                                 None if predicted is None else [float(x) for x in predicted],
                                 s.get("simulator", e.get("simulator")), s.get("failure"), s.get("raw_text")])
            for sc in scs:
                v = sc.get("value")
                v = None if v is None or math.isnan(float(v)) else float(v)
                score_rows.append([eid, sc["split"], sc["method"], v, sc.get("n_tokens")])
        if embeddings:
            if not embedder:
                raise ValueError("save_explanations needs the embedder that made the embeddings")
            inserts += embedding_statements(embedder, list(embeddings), list(embeddings.values()))
        self._transaction(statements + inserts, many={
            "INSERT INTO simulations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)": sim_rows,
            "INSERT INTO scores VALUES (?, ?, ?, ?, ?)": score_rows,
        })

    def explanations(self, node_id: str | None = None, kind: str | None = None, settings_key: str | None = None,
                     selected: bool | None = None, model: str | None = None) -> list[dict]:
        """Explanations matching every given filter, ordered by node_id, kind, candidate."""
        filters = {"node_id": node_id, "kind": kind, "settings_key": settings_key, "selected": selected, "model": model}
        used = {k: v for k, v in filters.items() if v is not None}
        where = " WHERE " + " AND ".join(f"{k} = ?" for k in used) if used else ""
        sql = f"SELECT * FROM explanations{where} ORDER BY node_id, kind, candidate"
        return _rows_as_dicts(self.con.execute(sql, list(used.values())))

    def done_nodes(self, settings_key: str, kind: str) -> set[str]:
        """Node ids that already have a selected explanation of `kind` made with `settings_key`."""
        rows = self.con.execute(
            "SELECT DISTINCT node_id FROM explanations WHERE selected AND settings_key = ? AND kind = ?",
            [settings_key, kind])
        return {r[0] for r in rows.fetchall()}

    # ---- jobs, LLM requests and the response cache ------------------------------------------------

    def start_job(self, row: dict) -> None:
        self.con.execute("INSERT INTO jobs (job_id, command, model, backend, llm_model, base_url, settings_key, status, "
                         "pid, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                         [row["job_id"], row.get("command"), row.get("model"), row.get("backend"), row.get("llm_model"),
                          row.get("base_url"), row.get("settings_key"), os.getpid(), _now()])

    def update_job(self, job_id: str, **values: Any) -> None:
        """Set columns of a job row, e.g. status='finished' (finished_at is set with any final status)."""
        if values.get("status") in ("finished", "interrupted", "failed"):
            values["finished_at"] = _now()
        unknown = set(values) - set(self._columns("jobs"))
        if unknown:
            raise ValueError(f"unknown jobs columns: {sorted(unknown)}")
        sets = ", ".join(f"{k} = ?" for k in values)
        self.con.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", [*values.values(), job_id])

    def list_jobs(self) -> list[dict]:
        return _rows_as_dicts(self.con.execute("SELECT * FROM job_summary ORDER BY started_at"))

    def record_request(self, row: dict) -> None:
        """One LLM request of a job (committed at once, so a killed job still accounts for it)."""
        self.con.execute("INSERT INTO llm_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [row["job_id"], row["seq"], row.get("explanation_id"), row.get("node_id"), row["method"],
                          row["cache_hit"], row.get("prompt_tokens"), row.get("completion_tokens"),
                          row.get("tokens_estimated", False), row.get("seconds"), row.get("attempts"), row["status"],
                          row.get("error"), row.get("cost"), _now()])

    def cache_get(self, key: str) -> tuple[Any, int] | None:
        """(response, cache_version) of a cached LLM response, or None."""
        row = self.con.execute("SELECT response, cache_version FROM llm_cache WHERE key = ?", [key]).fetchone()
        return None if row is None else (json.loads(row[0]), row[1])

    def cache_put(self, key: str, endpoint: str, model: str, method: str, response: Any, version: int) -> None:
        self.con.execute("INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [key, endpoint, model, method, json.dumps(response), version, _now()])

    def simulations(self, explanation_id: str) -> list[dict]:
        return _rows_as_dicts(self.con.execute(
            "SELECT * FROM simulations WHERE explanation_id = ? ORDER BY split, sampling, rank", [explanation_id]))

    def scores(self, explanation_id: str) -> dict[tuple[str, str], float | None]:
        """(split, method) -> value (None when undefined) for one explanation."""
        rows = self.con.execute("SELECT split, method, value FROM scores WHERE explanation_id = ?", [explanation_id])
        return {(split, method): value for split, method, value in rows.fetchall()}

    # ---- summaries the jobs print --------------------------------------------------------------

    def real_node_scores(self, model: str | None = None) -> list[dict]:
        """Stored scores of real circuit nodes (purpose 'circuit'), per model, simulator and kind (llm,
        token_lookup, shuffled): nodes, mean score, and, for llm, the fraction of nodes where the
        node's own LLM explanation beats the shuffled one (another node's explanation) on the same
        windows, ties 1/2, an AUROC of the simulator on real nodes."""
        where = "WHERE purpose = 'circuit' AND score IS NOT NULL" + (" AND model = ?" if model else "")
        params = [model] if model else []
        rows = self.con.execute(
            f"SELECT model, simulator, kind, count(DISTINCT node_id), avg(score) FROM node_scores {where} "
            "GROUP BY ALL ORDER BY ALL", params).fetchall()
        out = [{"model": m, "simulator": sim, "kind": k, "nodes": n, "mean_score": v, "llm_beats_shuffled": None}
               for m, sim, k, n, v in rows]
        pairs = self.con.execute(
            "SELECT l.model, l.simulator, avg(CASE WHEN l.score > s.score THEN 1.0 WHEN l.score = s.score THEN 0.5 "
            "ELSE 0.0 END), count(*) FROM node_scores l JOIN node_scores s ON s.node_id = l.node_id "
            "AND s.settings_key = l.settings_key AND s.kind = 'shuffled' "
            "WHERE l.kind = 'llm' AND l.purpose = 'circuit' AND l.score IS NOT NULL AND s.score IS NOT NULL"
            + (" AND l.model = ?" if model else "") + " GROUP BY ALL", params).fetchall()
        for m, sim, frac, _n in pairs:
            for row in out:
                if row["model"] == m and row["simulator"] == sim and row["kind"] == "llm":
                    row["llm_beats_shuffled"] = frac
        return out

    def best_llm_scores(self, settings_key: str) -> dict[str, float | None]:
        """Node id -> the held-out score of its best LLM-written candidate (the one best-of-k also
        scored on the score split, selected or not), for one explain job's settings."""
        rows = self.con.execute(
            "SELECT e.node_id, s.value FROM explanations e JOIN scores s ON s.explanation_id = e.explanation_id "
            "WHERE e.settings_key = ? AND e.kind = 'llm' AND e.writer = 'llm' AND s.split = 'score' "
            "AND s.method = 'correlation'", [settings_key]).fetchall()
        return {nid: value for nid, value in rows}

    def task_summary(self, model: str, task: str) -> dict | None:
        """The newest circuit of a task (unpruned loss, size, losses), how many of its nodes have an
        explanation, their mean held-out score beside token lookup's on the same nodes and beside
        their best LLM-written candidates' (taken alone), and the best-scoring explanation with its
        writer and the token-lookup score of the same node."""
        circuit = self.newest_circuits(model).get(task)
        if circuit is None:
            return None
        best = self.con.execute(
            "SELECT l.name, l.explanation, l.writer, l.score, t.score FROM node_scores l "
            "LEFT JOIN node_scores t ON t.node_id = l.node_id AND t.kind = 'token_lookup' AND t.task = l.task "
            "AND t.settings_key = l.settings_key "
            "WHERE l.model = ? AND l.task = ? AND l.kind = 'llm' AND l.score IS NOT NULL "
            "ORDER BY l.score DESC LIMIT 1", [model, task]).fetchone()
        name, text, writer, score, lookup = best if best else (None, None, None, None, None)
        explained, mean, lookup_mean, llm_mean = self.con.execute(
            "SELECT count(DISTINCT l.node_id), avg(coalesce(l.score, 0)), avg(coalesce(t.score, 0)), "
            "avg(coalesce(b.value, 0)) FROM node_scores l "
            "LEFT JOIN node_scores t ON t.node_id = l.node_id AND t.kind = 'token_lookup' AND t.task = l.task "
            "AND t.settings_key = l.settings_key "
            "LEFT JOIN explanations c ON c.node_id = l.node_id AND c.settings_key = l.settings_key AND c.kind = 'llm' "
            "AND c.writer = 'llm' AND c.explanation_id IN (SELECT explanation_id FROM scores WHERE split = 'score') "
            "LEFT JOIN scores b ON b.explanation_id = c.explanation_id AND b.split = 'score' AND b.method = 'correlation' "
            "WHERE l.model = ? AND l.task = ? AND l.kind = 'llm'", [model, task]).fetchone()
        return {"task": task, "status": circuit["status"], "target_loss": circuit["target_loss"],
                "sufficient": circuit["sufficient"], "unpruned_loss": circuit["full_loss"], "nodes": circuit["n_nodes"],
                "random_ranking_nodes": circuit.get("baseline_nodes"),
                "edges": circuit["n_edges"], "sufficiency_loss": circuit["sufficiency_loss"],
                "necessity_loss": circuit["necessity_loss"], "explained": explained,
                "mean_score": mean, "token_lookup_mean": lookup_mean,
                "of_token_lookup": mean / lookup_mean if mean is not None and lookup_mean else None,
                "llm_candidate_mean": llm_mean, "best_node": name, "best_explanation": text, "best_writer": writer,
                "score": score, "token_lookup_score": lookup}

    # ---- export ---------------------------------------------------------------------------------

    def export_parquet(self, folder: str | Path) -> list[tuple[str, int]]:
        """Every table and view to `<folder>/<name>.parquet` (readable by DuckDB, pandas, Spark).
        The folder must not exist or be empty, so no earlier export is mixed in. Returns (name, rows)."""
        out = Path(folder)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"{out} exists and is not an empty folder; export to a new folder")
        names = [r[0] for r in self.con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY table_name").fetchall()]
        out.mkdir(parents=True, exist_ok=True)
        done = []
        for name in names:
            path = out / f"{name}.parquet"
            self.con.execute(f"COPY (SELECT * FROM \"{name}\") TO '{_sql_string(str(path))}' (FORMAT PARQUET)")
            done.append((name, self.con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]))
        return done

    # ---- ad-hoc SQL --------------------------------------------------------------------------

    def query(self, sql: str, params: list | dict | None = None) -> tuple[list[str], list[tuple]]:
        """Run user SQL; return (column names, rows). Errors become one-line UserErrors."""
        try:
            cur = self.con.execute(sql, params)
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()
        except duckdb.Error as e:
            msg = _one_line(e)
            if "read-only mode" in msg:
                raise UserError(
                    "circuits sql is read-only; use SELECT/DESCRIBE/SHOW queries only"
                ) from None
            raise UserError(
                f"SQL error: {msg}; fix the query (SHOW TABLES lists the tables)"
            ) from None
