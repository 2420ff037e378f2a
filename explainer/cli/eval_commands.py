"""`circuits eval`: the ground-truth suite for explainers and simulators (commands register on `main` below)."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from sparse_model.errors import UserError

from ..ground_truth import RULES
from ..explain import DEFAULT_PROMPT as DEFAULT_EXPLAIN_PROMPT
from ..jobs.settings import ExplainSettings
from ..llm import make_client
from ..simulators import EMBEDDING, NO_LLM, SIMULATORS, EmbeddingSimulator, make_simulator

from .common import db_option, open_store, print_rows, resolve_run

SIMULATOR_CHOICES = ["auto", *SIMULATORS, "embedding_context"]


def _fmt(stats: dict) -> tuple:
    return stats["mean"], stats["std"], stats["min"], stats["max"]


@click.command("eval")
@click.argument("run")
@click.option("--simulator", "simulators", multiple=True, type=click.Choice(SIMULATOR_CHOICES),
              help="Simulator to measure (repeatable; default auto: the embedding simulator on the local backend). "
                   "embedding_context is the crude embedding baseline.")
@click.option("--prompt", "prompt_name", default=None,
              help="Simulation prompt file in prompts/ for the LLM simulators, e.g. simulate_contrastive.")
@click.option("--explain-prompt", default=DEFAULT_EXPLAIN_PROMPT, show_default=True,
              help="Explanation prompt file in prompts/ for explainer recovery: explain_marked_facts, explain_marked_seen, or explain (worked examples, for large models).")
@click.option("--backend", type=click.Choice(["local", "openai"]), default="local", show_default=True)
@click.option("--model", default=None, help="LLM model name (openai backend); for the local backend qwen2.5-coder-0.5b (default), qwen2.5-coder-1.5b, smollm2-135m or a GGUF file.")
@click.option("--base-url", default=None, envvar="OPENAI_BASE_URL", help="OpenAI-compatible server URL.")
@click.option("--concurrency", type=int, default=None, help="LLM requests in flight at once.")
@click.option("--seeds", type=int, default=None, help="Seeds (record samples) per rule; default 3 for the embedding "
              "simulator, 1 for LLM simulators.")
@click.option("--rules", "rules", multiple=True, type=click.Choice(list(RULES)), help="Only these rules (repeatable).")
@click.option("--window", type=int, default=None, help="Tokens per window; default 64 (embedding), 32 (LLM simulators).")
@click.option("--score-windows", type=int, default=None,
              help="Top and as many random windows scored per explanation; default 5 (embedding), 2 (LLM).")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Also let the LLM explain every rule neuron (first seed) and score its explanation.")
@click.option("--explanations-per-rule", type=int, default=None,
              help="Recovery: candidate explanations per rule neuron, the best picked on calibrate windows (best of k; "
                   "default as `circuits explain`: 32 with the embedding simulator, 3 with an LLM simulator).")
@click.option("--calibrate-windows", type=int, default=None,
              help="Recovery: top and as many random windows that pick the best candidate (default 10 with the "
                   "embedding simulator, 5 with an LLM simulator).")
@click.option("--real-nodes", type=int, default=0, show_default=True,
              help="Also explain this many circuit nodes of RUN with the simulator (as `circuits explain` with its defaults).")
@click.option("--task", "tasks", multiple=True, help="With --real-nodes: take the nodes of this task's circuit "
              "(repeatable; default every circuit of the model).")
@click.option("--scorer", "scorers", multiple=True, type=click.Choice(["detection", "fuzzing"]),
              help="Also measure this excerpt scorer (repeatable): its discrimination per rule family with the LLM of "
                   "--backend/--model, and its prompt tokens per explanation.")
@click.option("--json", "as_json", is_flag=True, help="Print the full results as JSON.")
@db_option
def eval_command(run, simulators, prompt_name, explain_prompt, backend, model, base_url, concurrency, seeds, rules, window,
                 score_windows, recovery, explanations_per_rule, calibrate_windows, real_nodes, tasks, scorers, as_json):
    """Ground-truth suite: rule neurons with known explanations measure whether a simulator ranks
    the correct explanation above wrong ones (AUROC, per rule set, spread over seeds) and whether
    the explainer recovers it. Every score is stored with purpose 'eval'.

    \b
    Examples:
      circuits eval runs/standard
      circuits eval runs/standard --simulator embedding --simulator all_at_once --no-recovery
      circuits eval runs/standard --simulator all_at_once --prompt simulate_contrastive --no-recovery
      circuits eval runs/standard --scorer detection --scorer fuzzing --no-recovery
      circuits eval runs/standard --backend openai --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
    """
    if seeds is not None and seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}")
    if real_nodes < 0:
        raise UserError(f"--real-nodes must be at least 0, got {real_nodes}")
    loaded = resolve_run(run)
    from ..jobs.evaluate import run_suite, to_json  # torch: only once the run is known
    from ..suite import EvalSettings, SuiteData

    data = SuiteData.from_run(loaded.folder())
    results = []
    with open_store() as store:
        for name in simulators or ("auto",):
            client = make_client(backend, model=model, base_url=base_url, concurrency=concurrency) \
                if (recovery or name not in (*NO_LLM, "embedding_context")) else None
            if name == "embedding_context":
                sim = EmbeddingSimulator("context")
            elif name == EMBEDDING:
                sim = EmbeddingSimulator()
            else:
                if client is not None:
                    asyncio.run(client.probe())
                sim = make_simulator(client, name, prompt_name=prompt_name)
            llm_sim = sim.method not in NO_LLM
            settings = EvalSettings(window=window or (32 if llm_sim else 64),
                                    score_windows=score_windows or (2 if llm_sim else 5),
                                    seeds=tuple(range(seeds or (1 if llm_sim else 3))), recovery=recovery,
                                    explanations_per_rule=explanations_per_rule, calibrate_windows=calibrate_windows)
            click.echo(f"{sim.method} ({sim.version}): {len(rules or RULES)} rules x {len(settings.seeds)} seeds, "
                       f"{settings.window}-token windows, {settings.score_windows} + {settings.score_windows} "
                       f"score windows{', explainer recovery' if recovery else ''}", err=True)
            res = run_suite(data, sim, settings, rules=list(rules) or None, store=store, client=client,
                            explain_prompt=explain_prompt,
                            progress=lambda r: click.echo(_rule_line(r), err=True))
            results.append(res)
        if not as_json:
            _print_suites(results)
        excerpt_rows = _excerpt_suite(data, scorers, backend, model, base_url, concurrency, list(rules) or None,
                                      seeds or 1, as_json) if scorers else []
        real = []
        if real_nodes:
            for sim in {r.simulator: r for r in results}:
                _real_nodes(store, loaded, backend, model, base_url, concurrency, sim, real_nodes, list(tasks))
            real = store.real_node_scores(data.run_name)
    if as_json:
        click.echo(json.dumps({"suites": [to_json(r) for r in results], "real_nodes": real,
                               "excerpt_scorers": excerpt_rows}, indent=2, default=str))
        return
    if real:
        click.echo("\nreal circuit nodes (stored scores, every explain job of this model):")
        cols = ["model", "simulator", "kind", "nodes", "mean_score", "llm_beats_shuffled"]
        print_rows(cols, [[x[c] for c in cols] for x in real])


def _excerpt_suite(data, scorers, backend, model, base_url, concurrency, rules, seeds, as_json) -> list[dict]:
    """Detection and fuzzing on the suite's rules (`explainer.excerpt_suite`), printed per family."""
    from ..excerpt_scorers import SCORERS
    from ..excerpt_suite import run_excerpt_rule, summarise

    client = make_client(backend, model=model, base_url=base_url, concurrency=concurrency)
    out = []

    async def go() -> None:
        try:
            await client.probe()
            for name in scorers:
                scorer = SCORERS[name](client)
                for rule in rules or list(RULES):
                    for seed in range(seeds):
                        r = await run_excerpt_rule(RULES[rule], seed, data, scorer)
                        out.append(r)
                        click.echo(f"  {name} {rule} seed {seed}: correct {r.correct['balanced_accuracy']}, "
                                   f"{r.prompt_tokens:.0f} prompt tokens per explanation" + "".join(
                                       f"; {n}" for n in r.notes), err=True)
        finally:
            await client.close()

    asyncio.run(go())
    rows = summarise(out)
    if not as_json:
        click.echo(f"\nexcerpt scorers ({client.settings()['model']}): discrimination = correct explanation above "
                   "wrong ones (AUROC), by balanced accuracy and by P(1)")
        cols = ["scorer", "rule_set", "family", "rules", "discrimination", "discrimination_p",
                "correct_balanced_accuracy", "prompt_tokens", "failures"]
        print_rows(cols, [[r[c] for c in cols] for r in rows])
    return rows


def _rule_line(r) -> str:
    """One progress line per rule and seed: its AUROC and, with recovery, the LLM's explanation."""
    line = f"  {r.rule} seed {r.seed}: AUROC {'n/a' if r.auroc is None else round(r.auroc, 2)} ({r.seconds:.1f} s)"
    if r.llm_explanation is not None:
        score = "n/a" if r.llm_score is None else f"{r.llm_score:.2f}"
        line += f"; LLM {score}: {r.llm_explanation!r}"
    elif r.llm_failure:
        line += f"; LLM failed: {r.llm_failure}"
    return line


def _print_suites(results) -> None:
    rows = []
    for r in results:
        s = r.summary()
        for rule_set in ("training", "held_out"):
            m, sd, lo, hi = _fmt(s[rule_set])
            rows.append([r.simulator, r.version, rule_set, s[rule_set]["n"], m, sd, lo, hi, r.seconds])
    print_rows(["simulator", "version", "rules", "seeds", "auroc", "std", "min", "max", "seconds"], rows)
    fam_rows = [[r.simulator, family, rule_set, g["rules"], g["auroc"]["mean"], g["correct"]["mean"],
                 g["correct"]["std"], g["token_lookup"]["mean"]]
                for r in results for family, sets in r.summary().get("families", {}).items()
                for rule_set, g in sets.items()]
    if fam_rows:
        click.echo("\nby family (mean over seeds; `correct` is what a right explanation scores under this simulator):")
        print_rows(["simulator", "family", "rules", "n", "auroc", "correct", "std", "token_lookup"], fam_rows)
    rec_rows = [[r.simulator, rule_set, x["rules"], x["failed"], x["llm"], x["correct"], x["token_lookup"],
                 x["llm_beats_token_lookup"]] for r in results
                for rule_set, x in r.summary().get("recovery", {}).items()]
    if rec_rows:
        click.echo("\nexplainer recovery (mean held-out correlation over rule neurons):")
        print_rows(["simulator", "rules", "n", "failed", "llm", "correct", "token_lookup", "llm_beats_token_lookup"],
                   rec_rows)


def _real_nodes(store, run, backend, model, base_url, concurrency, method, n, tasks):
    """Explain the first n circuit nodes of the run with this simulator (stored as a normal explain job)."""
    from ..jobs.explain import explain_job, select_nodes

    if method not in SIMULATORS:
        raise UserError(f"--real-nodes works with the {', '.join(SIMULATORS)} simulators")
    nodes = select_nodes(store, run, tasks=tasks or None)[:n]
    client = make_client(backend, model=model, base_url=base_url, concurrency=concurrency)
    explain_job(store, run.folder(), client, nodes=nodes, settings=ExplainSettings(simulator=method),
                command=" ".join(["circuits", *sys.argv[1:]]) if sys.argv else None)


COMMANDS = [eval_command]
