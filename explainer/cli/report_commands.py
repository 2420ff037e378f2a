"""`circuits report`: the HTML report (commands register on `main` below)."""

from __future__ import annotations


import click

from sparse_model.errors import UserError

from ..report import DEFAULT_MAX_EDGES, DEFAULT_NODES_PER_TASK, DEFAULT_WINDOWS, ReportSettings, write_report

from .common import db_option, db_path, open_store, resolve_run


@click.command("report")
@click.argument("run", required=False)
@click.option("-o", "--out", "out", type=click.Path(), default="report.html", show_default=True,
              help="HTML file to write (missing folders are created).")
@click.option("--max-edges", type=int, default=DEFAULT_MAX_EDGES, show_default=True,
              help="Edges drawn per circuit (the strongest); the rest are counted in a note.")
@click.option("--nodes-per-task", type=int, default=DEFAULT_NODES_PER_TASK, show_default=True,
              help="Explained nodes per circuit that get heatmaps (best by LLM score).")
@click.option("--windows", type=int, default=DEFAULT_WINDOWS, show_default=True,
              help="Heatmap windows per node (top and random score windows).")
@click.option("--all-circuits", is_flag=True, help="Draw every stored circuit, not only the newest per task.")
@db_option
def report_command(run, out, max_edges, nodes_per_task, windows, all_circuits):
    """Write one self-contained HTML report: circuits, explanations, scores and the model card.

    RUN is a model name or a run folder; without it, every model in the database is reported.
    The file needs no network and opens from disk.

    \b
    Example:
      circuits report -o report.html
      circuits report standard -o reports/standard.html --max-edges 800
    """
    settings = ReportSettings(max_edges=max_edges, nodes_per_task=nodes_per_task, windows_per_node=windows,
                              all_circuits=all_circuits)
    settings.check()
    model = resolve_run(run).name if run else None
    with open_store(read_only=True) as store:
        if model is not None and store.get_model(model) is None:
            raise UserError(f"model {model!r} of run folder {run} is not in {db_path()}; run `circuits tasks {run}` and "
                            f"`circuits prune {run} --all` first (or pass --db with the right database)")
        path = write_report(store, out, model=model, settings=settings)
    size = path.stat().st_size
    click.echo(f"wrote {path} ({size / 1e6:.2f} MB)" if size >= 100_000 else f"wrote {path} ({size / 1e3:.1f} kB)")


COMMANDS = [report_command]
