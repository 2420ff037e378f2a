"""`circuits demo`: the whole method on the embedded defaults, in one command."""

from __future__ import annotations

from dataclasses import replace

import click

from sparse_model.prune_settings import check_target_loss

from ..jobs.settings import DemoSettings

from .common import db_option, device_option, open_store, output_options, print_rows

_D = DemoSettings()


@click.command("demo")
@click.option("--out", default=_D.out, show_default=True, type=click.Path(file_okay=False),
              help="Run folder of the demo model (reused if it is there).")
@click.option("--report", default=_D.report, show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the HTML report.")
@click.option("--preset", default=_D.preset, show_default=True, help="Model preset (standard: about 30 minutes).")
@click.option("--target-loss", type=float, default=_D.target_loss, show_default=True,
              help="Task loss that counts as learned and that circuits must reach (the paper's 0.15). When no task "
                   "reaches it, the demo prunes the tasks under 0.5 at 0.5 and says so.")
@click.option("--task", "tasks", multiple=True, help="Prune and explain this task (repeatable). Default: every learned task.")
@click.option("--max-nodes", type=int, default=_D.max_nodes_per_task, show_default=True,
              help="Explain at most this many nodes per circuit, highest-ranked first (0: all).")
@click.option("--corpus", type=click.Path(), default=None,
              help="Folder of .py files to train on (default: this Python's standard library).")
@click.option("--model", "llm", default=None,
              help="Embedded LLM for the explanations: qwen2.5-coder-0.5b (default), qwen2.5-coder-1.5b, or a GGUF file.")
@device_option
@output_options
@db_option
def demo_command(out, report, preset, target_loss, tasks, max_nodes, corpus, llm, device, fmt):
    """Train the demo model, prune every task it learned, explain the circuit nodes with the
    embedded LLM (the 15 highest-ranked per circuit by default, best of 6 plus the
    candidates written without an LLM; --max-nodes 0 for all), write the
    HTML report and print a summary; 13 to 19 minutes on 2 cores the first time, by CPU. Run it
    again and it reuses everything already done, even after an interruption.

    \b
    Example:
      circuits demo
      circuits sql "SELECT task, kind, avg(score) FROM node_scores GROUP BY ALL"
    """
    check_target_loss(target_loss)
    settings = DemoSettings(out=out, report=report, preset=preset, tasks=tuple(tasks) or None, target_loss=target_loss,
                            prune=replace(_D.prune, base=replace(_D.prune.base, target_loss=target_loss)), max_nodes_per_task=max_nodes or None,
                            corpus=corpus, llm=llm, device=device)
    from ..jobs.demo import run_demo

    with open_store() as store:
        rows = run_demo(store, settings, log=lambda m: click.echo(m, err=True))
    cols = ["task", "status", "target_loss", "sufficient", "unpruned_loss", "nodes", "random_ranking_nodes", "edges", "sufficiency_loss", "necessity_loss",
            "explained", "mean_score", "token_lookup_mean", "of_token_lookup", "llm_candidate_mean", "best_node",
            "best_explanation", "best_writer", "score", "token_lookup_score"]
    print_rows(cols, [[r[c] for c in cols] for r in rows], fmt)
    click.echo(f"report: {report}", err=True)


COMMANDS = [demo_command]
