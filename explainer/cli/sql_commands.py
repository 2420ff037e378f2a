"""`circuits sql` (read-only SQL over the store) and `circuits export`."""

from __future__ import annotations

import click

from .common import db_option, open_store, output_options, print_rows


@click.command("sql")
@click.argument("query")
@output_options
@db_option
def sql_command(query, fmt):
    """Run read-only SQL against the database and print the rows.

    \b
    Example:
      circuits sql "SELECT name, val_loss, n_nonzero FROM models ORDER BY val_loss"
      circuits sql --csv "SELECT * FROM models" > models.csv
    """
    with open_store(read_only=True) as store:
        columns, rows = store.query(query)
    print_rows(columns, rows, fmt)


@click.command("export")
@click.option("--parquet", "folder", required=True, type=click.Path(), help="A new (or empty) folder for the files.")
@output_options
@db_option
def export_command(folder, fmt):
    """Write every table and view to Parquet, one file each, to share or query elsewhere.

    \b
    Example:
      circuits export --parquet results/
      duckdb -c "SELECT * FROM 'results/node_scores.parquet' LIMIT 5"
    """
    with open_store(read_only=True) as store:
        rows = store.export_parquet(folder)
    print_rows(["table", "rows"], rows, fmt)


COMMANDS = [sql_command, export_command]
