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
