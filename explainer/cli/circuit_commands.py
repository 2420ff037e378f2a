"""`circuits tasks`, `circuits prune` and `circuits circuits`."""

from __future__ import annotations

import click

from sparse_model.prune_settings import PruneSettings, SearchSettings

from .common import db_option, device_option, open_store, output_options, print_rows, resolve_run


@click.command("tasks")
@click.argument("run")
@click.option("--task", "tasks", multiple=True, help="Only this task (repeatable). Default: all tasks.")
@click.option("--target-loss", type=float, default=0.15, show_default=True, help="A task counts as learned at or below this loss.")
@device_option
@output_options
@db_option
def tasks_command(run, tasks, target_loss, device, fmt):
    """Task loss and accuracy of the unpruned model, per task; stored in task_evals.

    RUN is a run folder or a model name.

    \b
    Example:
      circuits tasks runs/demo
    """
    run_dir = resolve_run(run).folder()
    from ..jobs.circuits import evaluate_tasks_job  # torch: only once the run is known to be there

    with open_store() as store:
        rows = evaluate_tasks_job(store, run_dir, tasks or None, target_loss, device=device)
    print_rows(["task", "loss", "accuracy", "learned", "n_val", "random_labels"],
               [[r["name"], r["loss"], r["accuracy"], r["learned"], r["n_val"], r["random_labels"]] for r in rows], fmt)


@click.command("prune")
@click.argument("run")
@click.option("--task", "tasks", multiple=True, help="Prune this task (repeatable).")
@click.option("--all", "all_tasks", is_flag=True, help="Prune every task.")
@click.option("--target-loss", type=float, default=0.15, show_default=True, help="Task loss the circuit must reach, in (0, ln 2).")
@click.option("--budget", type=float, default=SearchSettings.budget_s, show_default=True,
              help="Seconds per task for the search over the pruner's settings.")
@click.option("--search/--no-search", default=True, show_default=True,
              help="Search the pruner's settings for the smallest sufficient circuit, or run it once.")
@click.option("--steps", type=int, default=None, help=f"Mask-learning steps of one run (implies --no-search; default {PruneSettings.steps}).")
@click.option("--k-coef", type=float, default=None, help=f"Penalty per kept node of one run (implies --no-search; default {PruneSettings.k_coef:g}).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@output_options
@db_option
def prune_command(run, tasks, all_tasks, target_loss, budget, search, steps, k_coef, seed, device, fmt):
    """Prune the model to the smallest circuit per task, verify it, and store nodes and edges.

    By default each task's pruning searches the pruner's settings within --budget seconds and keeps
    the smallest circuit whose held-out loss meets the target; every point it tried is stored in
    prune_points. A set that keeps more than a quarter of the model, or more than half of what a
    random node ranking needs, is stored with status no_small_circuit.

    \b
    Example:
      circuits prune runs/demo --task single_double_quote
      circuits prune runs/demo --all --target-loss 0.2 --budget 60
      circuits prune runs/demo --task single_double_quote --steps 1000 --k-coef 1e-3
    """
    if bool(tasks) == all_tasks:
        raise click.UsageError("give --task T (repeatable) or --all")
    one = PruneSettings(target_loss=target_loss, seed=seed,
                        **({"steps": steps} if steps is not None else {}), **({"k_coef": k_coef} if k_coef is not None else {}))
    searching = search and steps is None and k_coef is None
    settings = SearchSettings(one, budget) if searching else one
    run_dir = resolve_run(run).folder()
    from ..jobs.circuits import prune_job  # torch: only once the run is known to be there

    with open_store() as store:
        rows = prune_job(store, run_dir, None if all_tasks else list(tasks), settings, device=device)
    print_rows(["task", "status", "nodes", "random_ranking_nodes", "edges", "full_loss", "sufficiency_loss",
                "necessity_loss", "points", "seconds"],
               [[r["task"], r["status"], r["n_nodes"], r["baseline_nodes"], r["n_edges"], r["full_loss"],
                 r["sufficiency_loss"], r["necessity_loss"], r["search_points"] or 1, r["seconds"]] for r in rows], fmt)
    for r in rows:
        if r["note"] and fmt == "table":
            click.echo(f"{r['task']}: {r['status']}: {r['note']}", err=True)


@click.command("circuits")
@click.argument("run", required=False)
@output_options
@db_option
def circuits_command(run, fmt):
    """List stored circuits (of one model, or all).

    \b
    Example:
      circuits circuits demo --csv
    """
    model = resolve_run(run).name if run else None
    with open_store(read_only=True) as store:
        rows = store.list_circuits(model)
    print_rows(["model", "task", "status", "nodes", "random_ranking_nodes", "edges", "full_loss", "sufficiency_loss",
                "necessity_loss", "circuit_id"],
               [[r["model"], r["task"], r["status"], r["n_nodes"], r.get("baseline_nodes"), r["n_edges"], r["full_loss"],
                 r["sufficiency_loss"], r["necessity_loss"], r["circuit_id"]] for r in rows], fmt)


COMMANDS = [tasks_command, prune_command, circuits_command]
