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
