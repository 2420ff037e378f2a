"""`circuits tasks`, `circuits prune` and `circuits circuits`."""

from __future__ import annotations

import click

from sparse_model.prune import PruneSettings

from ..jobs.circuits import evaluate_tasks_job, prune_job

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
    with open_store() as store:
        rows = evaluate_tasks_job(store, run_dir, tasks or None, target_loss, device=device)
    print_rows(["task", "loss", "accuracy", "learned", "n_val", "random_labels"],
               [[r["name"], r["loss"], r["accuracy"], r["learned"], r["n_val"], r["random_labels"]] for r in rows], fmt)


@click.command("prune")
@click.argument("run")
@click.option("--task", "tasks", multiple=True, help="Prune this task (repeatable).")
@click.option("--all", "all_tasks", is_flag=True, help="Prune every task.")
@click.option("--target-loss", type=float, default=0.15, show_default=True, help="Task loss the circuit must reach, in (0, ln 2).")
@click.option("--steps", type=int, default=PruneSettings.steps, show_default=True, help="Mask-learning steps.")
@click.option("--k-coef", type=float, default=PruneSettings.k_coef, show_default=True, help="Penalty per kept node.")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@output_options
@db_option
def prune_command(run, tasks, all_tasks, target_loss, steps, k_coef, seed, device, fmt):
    """Prune the model to the smallest circuit per task, verify it, and store nodes and edges.

    \b
    Example:
      circuits prune runs/demo --task single_double_quote
      circuits prune runs/demo --all --target-loss 0.2
    """
    if bool(tasks) == all_tasks:
        raise click.UsageError("give --task T (repeatable) or --all")
    settings = PruneSettings(target_loss=target_loss, steps=steps, k_coef=k_coef, seed=seed)
    run_dir = resolve_run(run).folder()
    with open_store() as store:
        rows = prune_job(store, run_dir, None if all_tasks else list(tasks), settings, device=device)
    print_rows(["task", "status", "nodes", "grown", "edges", "full_loss", "sufficiency_loss", "necessity_loss",
                "sufficient", "seconds"],
               [[r["task"], r["status"], r["n_nodes"], r["grown_nodes"], r["n_edges"], r["full_loss"], r["sufficiency_loss"],
                 r["necessity_loss"], r["sufficient"], r["seconds"]] for r in rows], fmt)
    for r in rows:
        if r["note"] and fmt == "table":
            click.echo(f"{r['task']}: not sufficient: {r['note']}", err=True)


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
    print_rows(["model", "task", "status", "nodes", "edges", "full_loss", "sufficiency_loss", "necessity_loss", "circuit_id"],
               [[r["model"], r["task"], r["status"], r["n_nodes"], r["n_edges"], r["full_loss"], r["sufficiency_loss"],
                 r["necessity_loss"], r["circuit_id"]] for r in rows], fmt)


COMMANDS = [tasks_command, prune_command, circuits_command]
