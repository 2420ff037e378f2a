"""The project's one DuckDB file, and the only place that creates or migrates its tables.

Everything the tool produces (models, circuits, nodes, edges, activation records, explanations,
scores) lives in a single DuckDB database, `circuits.duckdb` by default (see `resolve_db_path`).
DuckDB lets one process write a file at a time; a second writer gets a `UserError`.

Tables
------
schema_version(version INTEGER, applied_at TIMESTAMP)
    One row per applied migration. The highest `version` is the schema of the file.
models (migration 1)
    name VARCHAR PRIMARY KEY, config JSON, corpus_manifest JSON, n_params BIGINT,
    n_nonzero BIGINT, density JSON (matrix name -> fraction of nonzero weights),
    train_loss DOUBLE, val_loss DOUBLE, tokens_seen BIGINT, steps BIGINT,
    checkpoint_path VARCHAR, run_dir VARCHAR, created_at TIMESTAMP, updated_at TIMESTAMP
    (timestamps are UTC and set by `Store.upsert_model`).
tasks, task_evals, nodes, circuits, circuit_nodes, edges, view circuit_summary (migration 2)
    Task definitions and the full model's loss on them; every node of a model; pruned circuits
    with their nodes and edges (see the SQL in `MIGRATIONS`).
activation_records (migration 3)
    node_id, model, kind (top | random | quantile), rank, split (explain | score | calibrate |
    holdout), start (window offset in the validation tokens), max_activation, tokens VARCHAR[],
    activations DOUBLE[], sample_seed, created_at; PRIMARY KEY (node_id, kind, rank).
explanations (migration 3)
    explanation_id PRIMARY KEY, node_id, model, kind (llm | token_lookup | shuffled), text (NULL when
    none was usable, see failure), candidate (index among best-of-k), selected (picked on the
    calibrate split; true for baselines), source_node_id (shuffled: whose explanation),
    explainer, explain_prompt, simulator, simulate_prompt (prompt versions), settings_key (hash
    of the settings that change the result; reruns skip done work by it), settings JSON,
    calibration_slope, calibration_intercept, failure, raw_text (unusable LLM output),
    purpose ('circuit' | 'eval'), created_at.
simulations (migration 3)
    explanation_id, node_id, kind, rank (the activation record simulated), split, predicted
    DOUBLE[] (NULL on failure), simulator, failure, raw_text; PRIMARY KEY (explanation_id, kind, rank).
scores (migration 3)
    explanation_id, split (score = held-out test | calibrate = validation for best-of-k), method
    (correlation | mean_window_correlation | r_squared | absolute_deviation_explained), value
    (NULL when undefined, never NaN), n_tokens; PRIMARY KEY (explanation_id, split, method).
node_scores (view, migration 3)
    One row per selected explanation and per task with a circuit containing its node (task NULL
    for nodes in no circuit): model, task, node_id, name, layer, location, kind, explanation,
    explainer, simulator, score (correlation on split 'score'), mean_window_correlation,
    r_squared, absolute_deviation_explained, validation_score (correlation on 'calibrate'),
    failure, purpose, settings_key, explanation_id, created_at.
jobs (migration 4)
    job_id PRIMARY KEY, command, model, backend, llm_model, base_url, settings_key, status
    (running | finished | interrupted | failed), pid, error, started_at, finished_at.
llm_requests (migration 4)
    One row per LLM request a job made (or took from the cache): job_id, seq, explanation_id,
    node_id, method (chat | prompt_logprobs), cache_hit, prompt_tokens, completion_tokens,
    tokens_estimated (the server gave no usage: about 4 characters per token), seconds, attempts,
    status (ok | error), error, cost (NULL without a price table), created_at.
llm_cache (migration 4)
    key PRIMARY KEY (sha256 of endpoint, model, method and the full request; never the API key),
    endpoint, model, method, response JSON, cache_version, created_at.
explanations.job_id (migration 4): the job that wrote the row.
job_summary (view, migration 4)
    One row per job with nodes done, failures, requests, cache hits, tokens, cost and seconds,
    computed from the rows the job wrote, so a killed job is counted too.

Adding a migration
------------------
Append `(next_version, "SQL script")` to `MIGRATIONS` below, where `next_version` is the last
version plus one; never edit or reorder an entry that has been committed, because existing files
have already applied it. A script may hold several `;`-separated statements; each migration runs
in its own transaction together with its `schema_version` row, so it is applied fully or not at
all. Add the new tables to the list above. JSON columns come back from `Store` as Python objects.
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

import duckdb

from sparse_model.errors import UserError

DEFAULT_DB = "circuits.duckdb"
ENV_VAR = "CIRCUITS_DB"

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE models (
            name VARCHAR PRIMARY KEY,
            config JSON,
            corpus_manifest JSON,
            n_params BIGINT,
            n_nonzero BIGINT,
            density JSON,
            train_loss DOUBLE,
            val_loss DOUBLE,
            tokens_seen BIGINT,
            steps BIGINT,
            checkpoint_path VARCHAR,
            run_dir VARCHAR,
            created_at TIMESTAMP,
            updated_at TIMESTAMP
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE tasks (
            name VARCHAR PRIMARY KEY,
            description VARCHAR,
            answers JSON,
            random_labels BOOLEAN,
            updated_at TIMESTAMP
        );
        CREATE TABLE task_evals (
            model VARCHAR,
            task VARCHAR,
            loss DOUBLE,
            accuracy DOUBLE,
            mean_logit_diff DOUBLE,
            n_val INTEGER,
            learned BOOLEAN,
            target_loss DOUBLE,
            created_at TIMESTAMP,
            PRIMARY KEY (model, task)
        );
        CREATE TABLE nodes (
            node_id VARCHAR PRIMARY KEY,
            model VARCHAR,
            layer INTEGER,
            location VARCHAR,
            idx INTEGER,
            name VARCHAR,
            mean DOUBLE
        );
        CREATE INDEX nodes_model ON nodes (model);
        CREATE TABLE circuits (
            circuit_id VARCHAR PRIMARY KEY,
            model VARCHAR,
            task VARCHAR,
            status VARCHAR,
            target_loss DOUBLE,
            full_loss DOUBLE,
            full_accuracy DOUBLE,
            selection_loss DOUBLE,
            sufficiency_loss DOUBLE,
            sufficiency_accuracy DOUBLE,
            necessity_loss DOUBLE,
            sufficient BOOLEAN,
            n_nodes INTEGER,
            n_edges INTEGER,
            n_candidates INTEGER,
            settings JSON,
            settings_digest VARCHAR,
            seconds DOUBLE,
            created_at TIMESTAMP
        );
        CREATE TABLE circuit_nodes (
            circuit_id VARCHAR,
            node_id VARCHAR,
            rank INTEGER,
            score DOUBLE,
            PRIMARY KEY (circuit_id, node_id)
        );
        CREATE TABLE edges (
            circuit_id VARCHAR,
            source VARCHAR,
            target VARCHAR,
            weight DOUBLE,
            kind VARCHAR
        );
        CREATE INDEX edges_circuit ON edges (circuit_id);
        CREATE VIEW circuit_summary AS
            SELECT c.model, c.task, c.status, c.n_nodes, c.n_edges, c.full_loss, c.sufficiency_loss,
                   c.necessity_loss, c.sufficient, c.target_loss, t.random_labels, c.circuit_id
            FROM circuits c LEFT JOIN tasks t ON t.name = c.task;
        """,
    ),
    (
        3,
        """
        CREATE TABLE activation_records (
            node_id VARCHAR,          -- nodes.node_id, e.g. 'demo/L1.mlp.neuron[37]'
            model VARCHAR,
            kind VARCHAR,             -- top | random | quantile
            rank INTEGER,
            split VARCHAR,            -- explain | score | calibrate | holdout
            start BIGINT,             -- offset of the window in the validation token array
            max_activation DOUBLE,
            tokens VARCHAR[],
            activations DOUBLE[],
            sample_seed INTEGER,
            created_at TIMESTAMP,
            PRIMARY KEY (node_id, kind, rank)
        );
        CREATE TABLE explanations (
            explanation_id VARCHAR PRIMARY KEY,
            node_id VARCHAR,
            model VARCHAR,
            kind VARCHAR,             -- llm | token_lookup | shuffled
            text VARCHAR,             -- NULL when no usable explanation was produced (see failure)
            candidate INTEGER,        -- index among the best-of-k candidates (0 for baselines)
            selected BOOLEAN,         -- the candidate picked on the calibrate (validation) split; true for baselines
            source_node_id VARCHAR,   -- shuffled: the node whose explanation this is; else NULL
            explainer VARCHAR,        -- e.g. 'local:SmolLM2-135M-Instruct', 'openai:gpt-4o-mini', 'token_lookup'
            explain_prompt VARCHAR,   -- prompt version (content hash); NULL for token_lookup
            simulator VARCHAR,        -- all_at_once | chat_logprobs | text | token_lookup
            simulate_prompt VARCHAR,  -- prompt version; NULL for token_lookup
            settings_key VARCHAR,     -- hash of every setting that changes the result; reruns skip done work by it
            settings JSON,
            calibration_slope DOUBLE,
            calibration_intercept DOUBLE,
            failure VARCHAR,          -- why this explanation has no score, if it has none
            raw_text VARCHAR,         -- the LLM's raw output when it could not be used
            purpose VARCHAR DEFAULT 'circuit',  -- 'circuit' for real jobs, 'eval' for the ground-truth suite
            created_at TIMESTAMP
        );
        CREATE INDEX explanations_node ON explanations (node_id);
        CREATE TABLE simulations (
            explanation_id VARCHAR,
            node_id VARCHAR,
            kind VARCHAR,             -- the activation record simulated: (node_id, kind, rank)
            rank INTEGER,
            split VARCHAR,
            predicted DOUBLE[],       -- NULL on failure
            simulator VARCHAR,
            failure VARCHAR,          -- NULL if the simulation succeeded
            raw_text VARCHAR,         -- raw LLM output kept when it failed to parse
            PRIMARY KEY (explanation_id, kind, rank)
        );
        CREATE TABLE scores (
            explanation_id VARCHAR,
            split VARCHAR,            -- score (the held-out test split) | calibrate (validation, used to pick best-of-k)
            method VARCHAR,           -- correlation | mean_window_correlation | r_squared | absolute_deviation_explained
            value DOUBLE,             -- NULL when undefined (e.g. a constant vector), never 0 for undefined
            n_tokens INTEGER,
            PRIMARY KEY (explanation_id, split, method)
        );
        CREATE VIEW node_scores AS
            WITH s AS (
                SELECT explanation_id,
                       max(value) FILTER (WHERE split = 'score' AND method = 'correlation') AS score,
                       max(value) FILTER (WHERE split = 'score' AND method = 'mean_window_correlation')
                           AS mean_window_correlation,
                       max(value) FILTER (WHERE split = 'score' AND method = 'r_squared') AS r_squared,
                       max(value) FILTER (WHERE split = 'score' AND method = 'absolute_deviation_explained')
                           AS absolute_deviation_explained,
                       max(value) FILTER (WHERE split = 'calibrate' AND method = 'correlation')
                           AS validation_score
                FROM scores GROUP BY explanation_id
            ), cc AS (
                SELECT DISTINCT cn.node_id, c.task  -- a node pruned for a task several times: one row
                FROM circuit_nodes cn JOIN circuits c ON c.circuit_id = cn.circuit_id
            )
            SELECT e.model, cc.task, e.node_id, n.name, n.layer, n.location, e.kind,
                   e.text AS explanation, e.explainer, e.simulator, s.score, s.mean_window_correlation,
                   s.r_squared, s.absolute_deviation_explained, s.validation_score, e.failure,
                   e.purpose, e.settings_key, e.explanation_id, e.created_at
            FROM explanations e
            LEFT JOIN nodes n ON n.node_id = e.node_id
            LEFT JOIN cc ON cc.node_id = e.node_id
            LEFT JOIN s ON s.explanation_id = e.explanation_id
            WHERE e.selected;
        """,
    ),
    (
        4,
        """
        CREATE TABLE jobs (
            job_id VARCHAR PRIMARY KEY,
            command VARCHAR,
            model VARCHAR,
            backend VARCHAR,
            llm_model VARCHAR,
            base_url VARCHAR,
            settings_key VARCHAR,
            status VARCHAR,
            pid INTEGER,
            error VARCHAR,
            started_at TIMESTAMP,
            finished_at TIMESTAMP
        );
        CREATE TABLE llm_requests (
            job_id VARCHAR,
            seq INTEGER,
            explanation_id VARCHAR,
            node_id VARCHAR,
            method VARCHAR,
            cache_hit BOOLEAN,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            tokens_estimated BOOLEAN,
            seconds DOUBLE,
            attempts INTEGER,
            status VARCHAR,
            error VARCHAR,
            cost DOUBLE,
            created_at TIMESTAMP
        );
        CREATE INDEX llm_requests_job ON llm_requests (job_id);
        CREATE TABLE llm_cache (
            key VARCHAR PRIMARY KEY,
            endpoint VARCHAR,
            model VARCHAR,
            method VARCHAR,
            response JSON,
            cache_version INTEGER,
            created_at TIMESTAMP
        );
        ALTER TABLE explanations ADD COLUMN job_id VARCHAR;
        CREATE VIEW job_summary AS
            WITH r AS (
                SELECT job_id, count(*) AS requests, count(*) FILTER (WHERE cache_hit) AS cache_hits,
                       count(*) FILTER (WHERE status <> 'ok') AS request_errors,
                       sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
                       sum(cost) AS cost, max(created_at) AS last_request
                FROM llm_requests GROUP BY job_id
            ), e AS (
                SELECT job_id, count(DISTINCT node_id) AS nodes_done,
                       count(DISTINCT node_id) FILTER (WHERE failure IS NOT NULL OR text IS NULL) AS failures
                FROM explanations WHERE kind = 'llm' AND selected GROUP BY job_id
            )
            SELECT j.job_id, j.started_at, j.status, j.model, j.backend, j.llm_model,
                   coalesce(e.nodes_done, 0) AS nodes_done, coalesce(e.failures, 0) AS failures,
                   coalesce(r.requests, 0) AS requests, coalesce(r.cache_hits, 0) AS cache_hits,
                   coalesce(r.request_errors, 0) AS request_errors,
                   coalesce(r.prompt_tokens, 0) AS prompt_tokens, coalesce(r.completion_tokens, 0) AS completion_tokens,
                   r.cost,
                   date_diff('millisecond', j.started_at, coalesce(j.finished_at, r.last_request, j.started_at)) / 1000.0
                       AS seconds,
                   j.settings_key, j.error, j.pid, j.command
            FROM jobs j LEFT JOIN r USING (job_id) LEFT JOIN e USING (job_id);
        """,
    ),
]

# Bytes 8..12 of every DuckDB file (after an 8-byte checksum) are this magic string.
_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8


def resolve_db_path(db: str | Path | None) -> Path:
    """The database path: `db` if given, else $CIRCUITS_DB, else ./circuits.duckdb."""
    chosen = db if db not in (None, "") else (os.environ.get(ENV_VAR) or DEFAULT_DB)
    return Path(chosen).expanduser()


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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


def _rows_as_dicts(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    """Fetch all rows of `cur` as dicts, parsing JSON columns into Python objects."""
    names = [d[0] for d in cur.description]
    is_json = [str(d[1]) == "JSON" for d in cur.description]
    out = []
    for row in cur.fetchall():
        out.append(
            {
                n: (json.loads(v) if j and v is not None else v)
                for n, j, v in zip(names, is_json, row)
            }
        )
    return out


class Store:
    """An open connection to the circuits database. Use `Store.open(...)`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, read_only: bool):
        self.con = con
        self.path = path
        self.read_only = read_only

    # ---- opening -----------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, read_only: bool = False) -> "Store":
        """Open (and, unless read_only, create and migrate) the database at `path`."""
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
        try:
            con = duckdb.connect(
                str(path),
                read_only=read_only,
                config={"autoinstall_known_extensions": False},
            )
        except duckdb.Error as e:
            raise cls._open_error(path, e) from None
        store = cls(con, path, read_only)
        try:
            store._migrate()
        except BaseException:
            con.close()
            raise
        return store

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
        known = MIGRATIONS[-1][0] if MIGRATIONS else 0
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
        for version, script in MIGRATIONS:
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
        """Every node of a model (node_id, layer, location, idx, name, mean); replaces the model's nodes."""
        self._transaction([("DELETE FROM nodes WHERE model = ?", [model])], many={
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?)":
                [[r["node_id"], model, r["layer"], r["location"], r["idx"], r["name"], r["mean"]] for r in rows],
        })

    def has_nodes(self, model: str) -> bool:
        return self.con.execute("SELECT count(*) FROM nodes WHERE model = ?", [model]).fetchone()[0] > 0

    def save_circuit(self, row: dict, nodes: list[dict], edges: list[dict]) -> None:
        """Insert a circuit with its nodes and edges, replacing the circuit with the same id atomically."""
        cid = row["circuit_id"]
        columns = self._columns("circuits")
        values = [json.dumps(row[c]) if c == "settings" else (_now() if c == "created_at" else row.get(c)) for c in columns]
        self._transaction(
            [("DELETE FROM edges WHERE circuit_id = ?", [cid]),
             ("DELETE FROM circuit_nodes WHERE circuit_id = ?", [cid]),
             ("DELETE FROM circuits WHERE circuit_id = ?", [cid]),
             (f"INSERT INTO circuits ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values)],
            many={
                "INSERT INTO circuit_nodes VALUES (?, ?, ?, ?)": [[cid, n["node_id"], n["rank"], n["score"]] for n in nodes],
                "INSERT INTO edges VALUES (?, ?, ?, ?, ?)": [[cid, e["source"], e["target"], e["weight"], e["kind"]] for e in edges],
            })

    def list_circuits(self, model: str | None = None) -> list[dict]:
        sql = "SELECT * FROM circuits" + (" WHERE model = ?" if model else "") + " ORDER BY model, task, created_at"
        return _rows_as_dicts(self.con.execute(sql, [model] if model else []))

    def circuit_nodes(self, circuit_id: str) -> list[dict]:
        return _rows_as_dicts(self.con.execute(
            "SELECT n.*, cn.rank, cn.score FROM circuit_nodes cn JOIN nodes n USING (node_id) "
            "WHERE cn.circuit_id = ? ORDER BY cn.rank", [circuit_id]))

    def circuit_edges(self, circuit_id: str) -> list[dict]:
        return _rows_as_dicts(self.con.execute("SELECT * FROM edges WHERE circuit_id = ? ORDER BY source, target", [circuit_id]))

    # ---- activation records, explanations, scores ----------------------------------------------

    def save_activation_records(self, model: str, node_id: str, rows: list[dict]) -> None:
        """Replace all activation records of `node_id` in one transaction (so a rerun never mixes samples).

        Each row: kind, rank, split, start, max_activation, tokens (list[str]), activations
        (list[float]), sample_seed.
        """
        now = _now()
        self._transaction([("DELETE FROM activation_records WHERE node_id = ?", [node_id])], many={
            "INSERT INTO activation_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)":
                [[node_id, model, r["kind"], r["rank"], r["split"], r["start"], r["max_activation"],
                  [str(t) for t in r["tokens"]], [float(a) for a in r["activations"]], r["sample_seed"], now]
                 for r in rows],
        })

    def activation_records(self, node_id: str, split: str | None = None) -> list[dict]:
        """A node's records, ordered by split, kind (top, random, quantile) and rank."""
        sql = "SELECT * FROM activation_records WHERE node_id = ?" + (" AND split = ?" if split else "")
        sql += (" ORDER BY split, CASE kind WHEN 'top' THEN 0 WHEN 'random' THEN 1 WHEN 'quantile' THEN 2"
                " ELSE 3 END, kind, rank")
        return _rows_as_dicts(self.con.execute(sql, [node_id, split] if split else [node_id]))

    def record_windows(self, model: str) -> dict[str, int]:
        """Node id -> tokens per record, for the nodes of `model` that already have activation records
        (so a rerun skips them unless it asks for another window length)."""
        rows = self.con.execute("SELECT node_id, min(len(tokens)) FROM activation_records WHERE model = ? "
                                "GROUP BY node_id", [model])
        return dict(rows.fetchall())

    def save_explanation(self, explanation: dict, simulations: list[dict], scores: list[dict]) -> None:
        """Insert one explanation with its simulations and scores, replacing any with the same id."""
        self.save_explanations([(explanation, simulations, scores)])

    def save_explanations(self, items: list[tuple[dict, list[dict], list[dict]]]) -> None:
        """Like `save_explanation` for many explanations, all in one transaction.

        An explanation dict holds the explanations columns except created_at (missing ones are
        NULL; settings is a dict; purpose defaults to 'circuit'). Simulations: kind, rank, split,
        predicted, simulator, failure, raw_text. Scores: split, method, value (NaN is stored as
        NULL), n_tokens.
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
            for table in ("scores", "simulations", "explanations"):
                statements.append((f"DELETE FROM {table} WHERE explanation_id = ?", [eid]))
            row = dict(e, created_at=now, purpose=e.get("purpose") or "circuit")
            if row.get("settings") is not None:
                row["settings"] = json.dumps(row["settings"])
            inserts.append((insert_sql, [row.get(c) for c in columns]))
            for s in sims:
                predicted = s.get("predicted")
                sim_rows.append([eid, e.get("node_id"), s["kind"], s["rank"], s.get("split"),
                                 None if predicted is None else [float(x) for x in predicted],
                                 s.get("simulator", e.get("simulator")), s.get("failure"), s.get("raw_text")])
            for sc in scs:
                v = sc.get("value")
                v = None if v is None or math.isnan(float(v)) else float(v)
                score_rows.append([eid, sc["split"], sc["method"], v, sc.get("n_tokens")])
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
            "SELECT * FROM simulations WHERE explanation_id = ? ORDER BY split, kind, rank", [explanation_id]))

    def scores(self, explanation_id: str) -> dict[tuple[str, str], float | None]:
        """(split, method) -> value (None when undefined) for one explanation."""
        rows = self.con.execute("SELECT split, method, value FROM scores WHERE explanation_id = ?", [explanation_id])
        return {(split, method): value for split, method, value in rows.fetchall()}

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
