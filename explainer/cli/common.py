"""Options and output helpers shared by every command."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from sparse_model.device import DEVICES
from sparse_model.errors import UserError
from sparse_model.run import Run, is_run_folder

from ..store import Store, resolve_db_path


def _remember_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None:  # kept on the root context, where `db_path` reads it, wherever --db was given
        ctx.find_root().ensure_object(dict)["db"] = value
    return value


def db_option(f: Callable) -> Callable:
    """`--db PATH`, accepted on the group and on every command (the later one wins)."""
    return click.option("--db", type=click.Path(dir_okay=False), default=None, expose_value=False, callback=_remember_db,
                        is_eager=True, help="DuckDB file (default $CIRCUITS_DB or ./circuits.duckdb).")(f)


def db_path() -> Path:
    ctx = click.get_current_context()
    return resolve_db_path(ctx.find_root().ensure_object(dict).get("db"))


def open_store(read_only: bool = False) -> Store:
    store = Store.open(db_path(), read_only=read_only)
    if store.taken_over:
        jobs = ", ".join(f"{r['job_id']} (pid {r['pid']})" for r in store.taken_over)
        click.echo(f"taking over {store.path}: job {jobs} ended without finishing, its process is gone; "
                   "marked interrupted (run its command again to finish it)", err=True)
    return store


def resolve_run(run: str) -> Run:
    """RUN, as every command takes it: a run folder, or the name of a model in the store (whose
    run folder the store remembers)."""
    if is_run_folder(run):
        return Run(run)
    db = db_path()
    if db.exists():
        with Store.open(db, read_only=True) as store:
            row = store.get_model(run)
        if row is not None:
            return Run(row["run_dir"], name=row["name"])
    raise UserError(f"no run named {run!r}: not a run folder and not a model in {db}; list them with `circuits models`")


def device_option(f: Callable) -> Callable:
    """`--device auto|cpu|cuda|mps` for every command that runs the model (auto: CUDA if present)."""
    return click.option("--device", type=click.Choice(DEVICES, case_sensitive=False), default="auto", show_default=True,
                        help="Where torch runs: auto is CUDA if torch sees one, else CPU.")(f)


def output_options(f: Callable) -> Callable:
    """`--csv` / `--json`, shared by every command that prints rows."""
    f = click.option("--json", "fmt", flag_value="json", help="Print rows as JSON.")(f)
    f = click.option("--csv", "fmt", flag_value="csv", help="Print rows as CSV.")(f)
    return click.option("--table", "fmt", flag_value="table", default=True, help="Print rows as a table (default).")(f)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> None:
    if fmt == "json":
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=2))
    elif fmt == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows([[("" if v is None else v) for v in r] for r in rows])
    else:
        cells = [[_cell(v) for v in r] for r in rows]
        widths = [max([len(c)] + [min(len(r[i]), 60) for r in cells]) for i, c in enumerate(columns)]
        line = lambda vals: "  ".join(v[:60].ljust(w) for v, w in zip(vals, widths)).rstrip()
        click.echo(line(list(columns)))
        click.echo(line(["-" * w for w in widths]))
        for r in cells:
            click.echo(line(r))
