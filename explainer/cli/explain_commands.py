"""`circuits explain` and `circuits explanations`."""

from __future__ import annotations

import click

from explainer.explain_jobs import ExplainSettings, explain_job
from explainer.llm import make_client
from explainer.simulate import SIMULATORS

from . import main
from .common import db_option, open_store, output_options, print_rows, resolve_run

_D = ExplainSettings()


@main.command("explain")
@click.argument("run")
@click.option("--task", "tasks", multiple=True, help="Explain the nodes of this task's circuit (repeatable). "
              "Default: every circuit of the model.")
@click.option("--node", "nodes", multiple=True, help="Explain this node, e.g. L0.mlp.neuron[3] (repeatable).")
@click.option("--backend", type=click.Choice(["local", "openai"]), default="local", show_default=True,
              help="local: the embedded SmolLM2 in process; openai: any OpenAI-compatible server.")
@click.option("--model", default=None, help="LLM model name (openai backend), or a GGUF file (local backend).")
@click.option("--base-url", default=None, envvar="OPENAI_BASE_URL", help="OpenAI-compatible server URL "
              "(default $OPENAI_BASE_URL); the key is read from $OPENAI_API_KEY.")
@click.option("--explanations-per-node", "k", type=int, default=_D.explanations_per_node, show_default=True,
              help="Best-of-k: candidates per node, the best picked on the validation split.")
@click.option("--simulator", type=click.Choice(["auto", *SIMULATORS]), default="auto", show_default=True,
              help="How activations are simulated; auto picks the best the endpoint supports.")
@click.option("--concurrency", type=int, default=None, help="Requests in flight at once (default 4; local: 1).")
@click.option("--window", type=int, default=None, help="Tokens per activation record (default 64, or the model's context).")
@click.option("--explain-windows", type=int, default=_D.explain_windows, show_default=True,
              help="Top windows shown to the explainer.")
@click.option("--score-windows", type=int, default=_D.score_windows, show_default=True,
              help="Top and as many random windows scored per explanation.")
@click.option("--calibrate-windows", type=int, default=_D.calibrate_windows, show_default=True,
              help="Top and as many random windows for calibration and best-of-k selection.")
@click.option("--prompts", "prompts_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of prompt files (explain.json, simulate.json, simulate_text.json) to use instead of prompts/.")
@click.option("--no-shuffled", is_flag=True, help="Skip the shuffled-explanation control.")
@click.option("--seed", type=int, default=0, show_default=True)
@output_options
@db_option
def explain_command(run, tasks, nodes, backend, model, base_url, k, simulator, concurrency, window, explain_windows,
                    score_windows, calibrate_windows, prompts_dir, no_shuffled, seed, fmt):
    """Explain, simulate and score every circuit node of a run; results in the explanations,
    simulations and scores tables (query them through the node_scores view).

    A rerun with the same settings skips nodes already done.

    \b
    Examples:
      circuits explain runs/demo
      circuits explain runs/demo --task single_double_quote --explanations-per-node 3
      OPENAI_API_KEY=... circuits explain runs/demo --backend openai --model gpt-4o-mini
      circuits explain runs/demo --backend openai --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
    """
    settings = ExplainSettings(explanations_per_node=k, simulator=simulator, window=window,
                               explain_windows=explain_windows, score_windows=score_windows,
                               calibrate_windows=calibrate_windows, seed=seed, shuffled=not no_shuffled)
    settings.check()
    run_dir = resolve_run(run)
    client = make_client(backend, model=model, base_url=base_url, concurrency=concurrency)
    with open_store() as store:
        s = explain_job(store, run_dir, client, tasks=list(tasks) or None, nodes=list(nodes) or None, settings=settings,
                        prompts_dir=prompts_dir)
    click.echo(f"{s.model}: {s.explained} nodes explained, {s.skipped} already done, {s.failed} failed "
               f"(simulator {s.simulator}, settings {s.settings_key})", err=True)
    print_rows(["kind", "mean_score"], [[k, v] for k, v in s.mean_score.items()], fmt)
