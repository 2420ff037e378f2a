"""`circuits search`: find nodes by what their explanations mean."""

from __future__ import annotations

import click


from .common import db_option, db_path, output_options, print_rows

TABLE_COLUMNS = ("node", "model", "tasks", "similarity", "score", "explanation")


@click.command("search")
@click.argument("query")
@click.option("--model", default=None, help="Only this model's nodes (a name as `circuits models` lists it).")
@click.option("--task", default=None, help="Only the nodes of this task's newest circuit.")
@click.option("--limit", type=int, default=20, show_default=True, help="How many nodes to list.")
@output_options
@db_option
def search_command(query, model, task, limit, fmt):
    """List the nodes whose explanations match QUERY in meaning, most similar first.

    Similarity is the cosine of all-MiniLM-L6-v2 sentence embeddings (stored with each explanation;
    older explanations are embedded once, on the first search). `score` is the explanation's
    held-out score, as in the node_scores view.

    \b
    Example:
      circuits search "closing quote of a string"
      circuits search "the keyword return" --model demo --task single_double_quote --limit 5 --json
    """
    from ..jobs.search import COLUMNS, search

    rows = search(db_path(), query, model=model, task=task, limit=limit, log=lambda m: click.echo(m, err=True))
    columns = TABLE_COLUMNS if fmt == "table" else COLUMNS
    print_rows(columns, [[r[c] for c in columns] for r in rows], fmt)


COMMANDS = [search_command]
