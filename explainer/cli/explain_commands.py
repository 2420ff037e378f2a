"""`circuits explain` and `circuits jobs`."""

from __future__ import annotations

import sys

import click

from ..explain import DEFAULT_PROMPT as DEFAULT_EXPLAIN_PROMPT
from ..jobs.settings import ExplainSettings
from ..llm import RetryPolicy, make_client
from ..simulators import SIMULATORS
from ..store.shared import process_alive

from .common import db_option, device_option, open_store, output_options, print_rows, resolve_run

_D = ExplainSettings()
_R = RetryPolicy()


@click.command("explain")
@click.argument("run")
@click.option("--task", "tasks", multiple=True, help="Explain the nodes of this task's circuit (repeatable). "
              "Default: every circuit of the model.")
@click.option("--node", "nodes", multiple=True, help="Explain this node, e.g. L0.mlp.neuron[3] (repeatable).")
@click.option("--backend", type=click.Choice(["local", "openai"]), default="local", show_default=True,
              help="local: the embedded Qwen2.5-Coder in process; openai: any OpenAI-compatible server.")
@click.option("--model", default=None, help="LLM model name (openai backend); for the local backend qwen2.5-coder-0.5b (default), qwen2.5-coder-1.5b, smollm2-135m or a GGUF file.")
@click.option("--base-url", default=None, envvar="OPENAI_BASE_URL", help="OpenAI-compatible server URL "
              "(default $OPENAI_BASE_URL); the key is read from $OPENAI_API_KEY.")
@click.option("--explanations-per-node", "k", type=int, default=None,
              help="Best-of-k: candidates per node, the best picked on the calibrate split "
                   "(default 32 with the embedding simulator, 3 with an LLM simulator).")
@click.option("--simulator", type=click.Choice(["auto", *SIMULATORS]), default="auto", show_default=True,
              help="How activations are simulated; auto picks the best the endpoint supports.")
@click.option("--concurrency", type=int, default=None, help="Requests in flight at once (default 4; local: 1).")
@click.option("--window", type=int, default=None, help="Tokens per activation record (default 64, or the model's context).")
@click.option("--explain-windows", type=int, default=_D.explain_windows, show_default=True,
              help="Top windows shown to the explainer.")
@click.option("--score-windows", type=int, default=_D.score_windows, show_default=True,
              help="Top and as many random windows scored per explanation.")
@click.option("--calibrate-windows", type=int, default=None,
              help="Top and as many random windows for calibration and best-of-k selection "
                   "(default 10 with the embedding simulator, 5 with an LLM simulator).")
@click.option("--prompts", "prompts_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="A folder of prompt files (explain.json, simulate.json, simulate_text.json) to use instead of prompts/.")
@click.option("--explain-prompt", default=DEFAULT_EXPLAIN_PROMPT, show_default=True,
              help="Explanation prompt file in prompts/: explain_marked_facts (zero-shot, marked tokens and the lexer's "
                   "descriptions of them), explain_marked_seen (without the descriptions), or explain (worked examples, "
                   "for large models); several joined by + take turns writing the candidates.")
@click.option("--scorer", "scorers", default="simulation", show_default=True,
              help="Scorers of the selected explanation, joined by commas: simulation (always), detection (does an "
                   "excerpt activate the node?) and fuzzing (are the marked tokens the active ones?), on held-out excerpts.")
@click.option("--in-task", is_flag=True, help="What each node of the --task circuit does for that task: its effect "
              "when ablated (from the circuit and from the model), the tokens it writes, and an in-task explanation "
              "from the task's own pairs, scored on held-out pairs (table node_roles).")
@click.option("--max-nodes", type=int, default=None, help="With --in-task: explain this many nodes, largest effect "
              "first (default 15; 0: all).")
@click.option("--no-shuffled", is_flag=True, help="Skip the shuffled-explanation control.")
@click.option("--llm-only", is_flag=True, help="Pool only the LLM's candidates in best-of-k, without the token lists "
                                               "and lexer descriptions written without an LLM.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-attempts", type=int, default=_R.max_attempts, show_default=True,
              help="Tries per LLM request (retries on 429, 5xx, timeouts and dropped connections).")
@click.option("--timeout", type=float, default=_R.timeout, show_default=True, help="Seconds per LLM request.")
@click.option("--backoff", type=float, default=_R.backoff, show_default=True,
              help="Longest first wait before a retry, doubled each time (random jitter below it); Retry-After wins.")
@click.option("--no-cache", is_flag=True, help="Ask the LLM again instead of reusing cached answers (new answers are still stored).")
@click.option("--retry-failed", is_flag=True, help="Redo only the nodes whose explanation failed with these settings.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help='JSON price table, e.g. {"gpt-4o-mini": {"prompt_per_million": 0.15, "completion_per_million": 0.6}}.')
@device_option
@output_options
@db_option
def explain_command(run, tasks, nodes, backend, model, base_url, k, simulator, concurrency, window, explain_windows,
                    score_windows, calibrate_windows, prompts_dir, explain_prompt, scorers, in_task, max_nodes, no_shuffled, llm_only,
                    seed, max_attempts, timeout, backoff, no_cache, retry_failed, prices, device, fmt):
    """Explain, simulate and score every circuit node of a run; results in the explanations,
    simulations and scores tables (query them through the node_scores view).

    A rerun with the same settings skips nodes already done, and LLM answers are cached in the
    database: a killed or interrupted job, started again, finishes without asking twice.

    \b
    Examples:
      circuits explain runs/demo
      circuits explain runs/demo --task single_double_quote --explanations-per-node 3
      circuits explain runs/demo --task single_double_quote --in-task
      circuits explain runs/demo --scorer simulation,detection,fuzzing
      OPENAI_API_KEY=... circuits explain runs/demo --backend openai --model gpt-4o-mini
      circuits explain runs/demo --backend openai --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
    """
    settings = ExplainSettings(explanations_per_node=k, simulator=simulator, window=window,
                               explain_windows=explain_windows, score_windows=score_windows,
                               calibrate_windows=calibrate_windows, seed=seed, shuffled=not no_shuffled,
                               llm_only=llm_only,
                               scorers=tuple(x for x in dict.fromkeys(p.strip() for p in scorers.split(","))
                                             if x and x != "simulation"))
    settings.check()
    if in_task and len(tasks) != 1:
        raise click.UsageError("--in-task explains one task's circuit: give exactly one --task")
    if max_nodes is not None and (not in_task or max_nodes < 0):
        raise click.UsageError("--max-nodes goes with --in-task and is 0 (all) or more")
    run_dir = resolve_run(run).folder()
    from ..jobs.explain import explain_job  # torch: only once the run is known to be there
    source = None
    if in_task:
        from ..jobs.roles import DEFAULT_MAX_NODES, EXPLAIN_PROMPT, TaskSource

        source = TaskSource(tasks[0], DEFAULT_MAX_NODES if max_nodes is None else max_nodes)
        if explain_prompt == DEFAULT_EXPLAIN_PROMPT:
            explain_prompt = EXPLAIN_PROMPT

    client = make_client(backend, model=model, base_url=base_url, concurrency=concurrency,
                         retry=RetryPolicy(max_attempts=max_attempts, timeout=timeout, backoff=backoff))
    with open_store() as store:
        s = explain_job(store, run_dir, client, tasks=list(tasks) or None, nodes=list(nodes) or None, settings=settings,
                        prompts_dir=prompts_dir, cache=not no_cache, retry_failed=retry_failed, prices=prices,
                        command=" ".join(["circuits", *sys.argv[1:]]) if sys.argv else None,
                        explain_prompt=explain_prompt, device=device, source=source)
    u = client.usage
    click.echo(f"{s.model}: {s.explained} nodes explained, {s.skipped} already done, {s.failed} failed "
               f"(simulator {s.simulator}, settings {s.settings_key}); job {s.job_id}: {u.requests} LLM requests, "
               f"{u.cache_hits} from the cache, {u.prompt_tokens + u.completion_tokens} tokens", err=True)
    if s.failed:
        click.echo(f"to retry the failed nodes: add --retry-failed to the same command", err=True)
    if s.writers:
        click.echo("selected explanations by writer: " + ", ".join(f"{w} {n}" for w, n in sorted(s.writers.items())),
                   err=True)
    if source is not None:
        _print_roles(source, fmt)
        return
    rows = [[k, v] for k, v in s.mean_score.items()] + [["best LLM-written candidate", s.llm_candidate_score]]
    print_rows(["kind", "mean_score"], rows, fmt)


def _print_roles(source, fmt) -> None:
    """The node_roles rows of the explained circuit, largest effect first, and the effects' check."""
    with open_store(read_only=True) as store:
        rows = store.node_roles(source.circuit["circuit_id"])
        base = store.circuit_effects(source.circuit["circuit_id"])
    if base:
        click.echo(f"{source.task}: circuit loss {base['circuit_loss']:.3f}, model loss {base['model_loss']:.3f}; "
                   f"ablating the whole circuit from the model: {base['necessity_loss']:.3f} "
                   f"(+{base['necessity_loss'] - base['model_loss']:.3f}), the sum of single-node effects in the model: "
                   f"{base['sum_effect_in_model']:+.3f}", err=True)
    cols = ["name", "effect_in_circuit", "effect_in_model", "direct_logit_diff", "task_score", "task_token_lookup_score",
            "task_explanation", "general_explanation", "promoted"]
    print_rows(cols, [[r[c] for c in cols] for r in rows], fmt)


@click.command("jobs")
@output_options
@db_option
def jobs_command(fmt):
    """Past explain jobs: nodes done, failures, LLM requests, cache hits, tokens, cost and time.

    A job whose process died without saying so (killed) shows "running (process gone)" until the
    next job that writes to the database marks it interrupted; run its command again to finish it.

    \b
    Example:
      circuits jobs
    """
    with open_store(read_only=True) as store:
        rows = store.list_jobs()
    for r in rows:
        if r["status"] == "running" and not process_alive(r["pid"]):
            r["status"] = "running (process gone)"
    cols = ["job_id", "started_at", "status", "model", "llm_model", "nodes_done", "failures", "requests", "cache_hits",
            "prompt_tokens", "completion_tokens", "cost", "concurrency", "seconds"]
    print_rows(cols, [[r[c] for c in cols] for r in rows], fmt)


COMMANDS = [explain_command, jobs_command]
