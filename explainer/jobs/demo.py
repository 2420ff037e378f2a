"""`circuits demo`: one command from a fresh machine to explained circuits.

Stages, each of which reuses what an earlier (possibly interrupted) demo already finished:
train the demo model (resumes from its last checkpoint), evaluate every task, prune every learned
task (a circuit already stored with the same settings is kept), explain each circuit's top nodes by
importance with the embedded LLM (`max_nodes_per_task`; nodes already done are skipped), write the
HTML report, and return one summary row per task.

Tasks count as learned at the paper's target loss of 0.15. The demo preset (about 14 minutes of
training on 2 cores) learns single_double_quote to it (README, "Measured"). A model that learns no
task, for example one trained with fewer steps, is said to have learned none, and the tasks that
reach FALLBACK_TARGET_LOSS are pruned at that looser target instead; every summary row carries the
target its circuit was pruned to, so no task passes as learned at a target it was not held to.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from sparse_model.device import resolve_device
from sparse_model.prune import NO_SMALL_CIRCUIT
from sparse_model.train import train

from ..llm import LLMClient, make_client
from ..llm.local import check_local_model
from ..report import write_report
from ..store import Store
from .circuits import evaluate_tasks_job, prune_job
from .explain import explain_job
from .settings import DemoSettings


def run_demo(store: Store, settings: DemoSettings | None = None, client: LLMClient | None = None,
             progress: bool = True, log: Callable[[str], None] = print) -> list[dict]:
    """Run (or finish) the demo; returns one summary row per learned task."""
    s = settings or DemoSettings()
    resolve_device(s.device)  # a device that is not there is one line now, not after the model part join
    if client is None:
        check_local_model(s.llm)  # a wrong --model is one line now, not after training
    log(f"[1/5] training the {s.preset} model in {s.out} (reused, or resumed from its last checkpoint, if there)")
    summary = train(s.out, s.preset, corpus_dir=s.corpus, progress=progress, log=lambda m: None, device=s.device)
    store.upsert_model(summary)
    model = summary["name"]

    log(f"[2/5] evaluating the tasks (learned: loss at most {s.target_loss})")
    evals = evaluate_tasks_job(store, s.out, target_loss=s.target_loss, device=s.device)
    prune = s.prune
    learned = list(s.tasks) if s.tasks else [r["name"] for r in evals if r["learned"] and not r["random_labels"]]
    if not learned and s.fallback_target_loss is not None and s.fallback_target_loss > s.target_loss:
        near = [r["name"] for r in evals if r["loss"] <= s.fallback_target_loss and not r["random_labels"]]
        if near:
            log(f"the model learned no task to loss {s.target_loss}; pruning the {len(near)} task(s) under "
                f"{s.fallback_target_loss} at that looser target instead (the summary's target_loss says which)")
            learned, prune = near, replace(s.prune, base=replace(s.prune.base, target_loss=s.fallback_target_loss))
    if not learned:
        log(f"the model learned no task to loss {s.target_loss}; nothing to prune or explain "
            f"(train longer, or pass a looser --target-loss)")
        return []

    limit = "" if prune.budget_s is None else f", for up to {prune.budget_s:g} s each"
    log(f"[3/5] pruning {len(learned)} task(s) at target loss {prune.base.target_loss}, trying {prune.points} "
        f"settings of the pruner{limit}: {', '.join(learned)}")
    for task in learned:
        if store.circuit_with_settings(model, task, prune.digest()) is None:
            prune_job(store, s.out, [task], prune, progress=progress, device=s.device)

    circuits = {t: c for t in learned if (c := store.circuit_with_settings(model, t, prune.digest())) is not None}
    skipped = [t for t, c in circuits.items() if c["status"] == NO_SMALL_CIRCUIT]
    nodes = _nodes_to_explain(store, [c for t, c in circuits.items() if t not in skipped], s.max_nodes_per_task)
    limit = "every node" if s.max_nodes_per_task is None else f"the top {s.max_nodes_per_task} nodes by importance"
    if skipped:
        log(f"not explained, no small circuit found: {', '.join(skipped)} (`circuits circuits` says why)")
    log(f"[4/5] explaining {limit} of each circuit ({len(nodes)} nodes) with the embedded LLM "
        f"(nodes already done are skipped)")
    if nodes:
        explain_job(store, s.out, client or make_client("local", model=s.llm), nodes=nodes, settings=s.explain,
                    progress=progress, command="circuits demo", device=s.device)

    log(f"[5/5] writing the report to {s.report}")
    write_report(store, s.report, model=model)
    return summary_rows(store, model, learned)


def _nodes_to_explain(store: Store, circuits: list[dict], limit: int | None) -> list[str]:
    """Node ids of these circuits (the demo leaves out sets that are no small circuit, not a
    random-label control asked for by name), highest-ranked first, at most `limit` per circuit."""
    out: list[str] = []
    for circuit in circuits:
        ids = [n["node_id"] for n in store.circuit_nodes(circuit["circuit_id"])]
        out += ids if limit is None else ids[:limit]
    return list(dict.fromkeys(out))


def summary_rows(store: Store, model: str, tasks: list[str]) -> list[dict]:
    """Per task: unpruned loss, circuit size and losses, and the best LLM explanation with its score
    beside the token-lookup baseline's score on the same node (`Store.task_summary`)."""
    return [row for task in tasks if (row := store.task_summary(model, task)) is not None]
