"""`circuits sql`: read-only SQL over the store."""

from __future__ import annotations

import click

from . import main
from .common import db_option, open_store, output_options, print_rows


@main.command("sql")
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
