"""Query results as Python values, shared by every query of the store."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import duckdb


def utc_now() -> datetime:
    """The time every row is stamped with: UTC, without a time zone (DuckDB TIMESTAMP)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def rows_as_dicts(cur: duckdb.DuckDBPyConnection) -> list[dict]:
    """Fetch all rows of `cur` as dicts, parsing JSON columns into Python objects."""
    names = [d[0] for d in cur.description]
    is_json = [str(d[1]) == "JSON" for d in cur.description]
    return [{n: (json.loads(v) if j and v is not None else v) for n, j, v in zip(names, is_json, row)}
            for row in cur.fetchall()]
