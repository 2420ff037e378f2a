"""The explain, simulate, score loop over the nodes of a trained run (docs/method.md), as one job.

For each node: activation records (captured once per node and stored), k candidate explanations
from the LLM and the cheap candidates of the other writers (`explainer.writers`: token lists and
lexer descriptions, no LLM), each simulated on the calibrate split; the best candidate is simulated
on the score split and scored there, and so is the best LLM-written one. Two baselines are stored and scored the same way: `token_lookup` (no LLM)
and `shuffled` (another node's explanation, simulated for this node). Every explanation goes
through `explainer.pipeline`, as in the ground-truth suite.

Each node's explanations, simulations and scores are committed in one transaction; a rerun with
the same settings skips nodes already done. `circuits explain` is one call to `explain_job`:

    from explainer.jobs.explain import ExplainSettings, explain_job
    from explainer.llm import make_client
    with Store.open("circuits.duckdb") as store:
        summary = explain_job(store, "runs/demo", make_client("local"), tasks=["single_double_quote"])
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from sparse_model.errors import UserError
from sparse_model.failpoints import failpoint
from sparse_model.model import node_locations
from sparse_model.nodes import Node
from sparse_model.progress import progress_bar
from sparse_model.run import Run

from ..excerpt_scorers import SCORERS, score_rows
from ..explain import DEFAULT_PROMPT as DEFAULT_EXPLAIN_PROMPT, Explainer
from ..scoring import mean_defined
from ..writers import LLM_WRITER, WRITERS_VERSION, cheap_candidates
from ..llm import LLMClient
from ..pipeline import LLM, SHUFFLED, TOKEN_LOOKUP, Windows, best_of_k, pick_windows, simulate_and_score, token_lookup
from ..records import DEFAULT_WINDOW, capture_activations, sample_records, split_records, token_table
from ..simulators import NO_LLM, make_simulator
from ..store import Store
from .accounting import Ledger, ResponseCache, load_price, new_job_id, working_on
from .circuits import register_model
from .rows import Item, explanation_item, record_rows, records_by_split, row_id, settings_key
from .search import embeddings_for
from .settings import ExplainSettings  # noqa: F401 (importable from here too)


@dataclass
class JobSummary:
    model: str
    settings_key: str
    simulator: str
    job_id: str = ""
    nodes: int = 0  # nodes asked for
    explained: int = 0  # nodes explained by this run
    skipped: int = 0  # nodes already done with the same settings
    failed: int = 0  # nodes whose LLM explanation has no score (see explanations.failure)
    shuffled: int = 0
    mean_score: dict[str, float | None] = field(default_factory=dict)  # kind -> mean score over the job's nodes
    # Mean held-out score of each node's best LLM-written candidate, taken alone (selected or not).
    llm_candidate_score: float | None = None
    writers: dict[str, int] = field(default_factory=dict)  # writer of the selected explanation -> nodes

    def to_dict(self) -> dict:
        return asdict(self)


# ---- which nodes ---------------------------------------------------------------------------


def select_nodes(store: Store, run: Run, tasks: Sequence[str] | None = None,
                 nodes: Sequence[str] | None = None) -> list[str]:
    """Node ids to explain: the named nodes, else the nodes of the named tasks' circuits, else the
    nodes of every circuit of the model (status 'circuit'), in circuit rank order."""
    model = run.name
    if nodes:
        locs = node_locations(run.model.cfg)
        out = []
        for raw in nodes:
            try:
                node = Node.from_id(raw)[1] if raw.startswith(model + "/") else Node.parse(raw)
            except ValueError:
                raise UserError(f"not a node name: {raw!r}; expected e.g. L0.mlp.neuron[3]") from None
            if node.location not in locs or not 0 <= node.index < locs[node.location]:
                raise UserError(f"model {model} has no node {node.name}; locations: {', '.join(locs)}")
            out.append(node.node_id(model))
        return list(dict.fromkeys(out))
    latest = store.newest_circuits(model)
    if tasks:
        missing = [t for t in tasks if t not in latest]
        if missing:
            raise UserError(f"model {model} has no circuit for {', '.join(missing)}; "
                            f"run `circuits prune {run.run_dir} --task {missing[0]}` first")
        chosen = [latest[t] for t in tasks]
    else:
        chosen = [c for c in latest.values() if c["status"] == "circuit"]
    out = []
    for c in chosen:
        out += [n["node_id"] for n in store.circuit_nodes(c["circuit_id"])]
    if not out:
        raise UserError(f"model {model} has no circuit nodes to explain; run `circuits prune {run.run_dir} --all` "
                        f"first, or name nodes with --node")
    return list(dict.fromkeys(out))


# ---- activation records ----------------------------------------------------------------------


def ensure_records(store: Store, run: Run, node_ids: Sequence[str], window: int, seed: int = 0,
                   progress: bool = True) -> int:
    """Capture, sample, split and store the records of every node that has none (or has windows of
    another length), reading all those nodes in one pass over the validation text. Returns the
    number of nodes captured."""
    have = store.record_windows(run.name)
    todo = [nid for nid in node_ids if have.get(nid) != window]
    if not todo:
        return 0
    val = run.val_tokens()
    acts, starts = capture_activations(run.model, val, [Node.from_id(nid)[1] for nid in todo], window=window)
    table = token_table(run.tokenizer)
    for i, nid in enumerate(progress_bar(todo, enabled=progress, desc="activation records", unit="node")):
        splits = split_records(sample_records(acts[i], starts, val, table, seed=seed))
        store.save_activation_records(run.name, nid, record_rows(splits, seed))
        failpoint("records.node")
    return len(todo)


# ---- where a node's windows come from -------------------------------------------------------


class GeneralSource:
    """The general explanation: windows of the validation text (activation_records). A job's
    source picks its nodes, makes their records and deals their windows; `roles.TaskSource` is the
    in-task one (the task's own contrast pairs)."""

    settings: dict = {}  # added to the job's settings (and so to its settings key)
    row: dict = {}  # added to every explanations row
    shuffled = True  # whether the job runs the shuffled control

    def nodes(self, store: Store, run: Run, tasks: Sequence[str] | None, nodes: Sequence[str] | None) -> list[str]:
        return select_nodes(store, run, tasks, nodes)

    def prepare(self, store: Store, run: Run, node_ids: Sequence[str], s: ExplainSettings, progress: bool) -> None:
        ensure_records(store, run, node_ids, s.window, seed=s.seed, progress=progress)

    def windows(self, store: Store, nid: str, s: ExplainSettings) -> Windows:
        return pick_windows(records_by_split(store.activation_records(nid)), s.explain_windows,
                            s.calibrate_windows, s.score_windows)


# ---- the job -------------------------------------------------------------------------------


class _Job:
    def __init__(self, store: Store, run: Run, client: LLMClient, s: ExplainSettings,
                 prompts_dir: str | None = None, job_id: str | None = None, explain_prompt: str = DEFAULT_EXPLAIN_PROMPT,
                 source: GeneralSource | None = None):
        self.store, self.run, self.client, self.job_id = store, run, client, job_id
        self.source = source or GeneralSource()
        self.explainer = Explainer(client, prompts_dir, explain_prompt)
        self.simulator = make_simulator(client, s.simulator, prompts_dir)
        self.s = s = s.resolved(self.simulator.method)
        llm = client.settings()
        self.explainer_name = f"{llm['backend']}:{llm['model']}"
        self.settings = {"llm": llm, "explain_prompt": self.explainer.version, "simulate_prompt": self.simulator.version,
                         "simulator": self.simulator.method, **asdict(s)}
        self.settings.pop("shuffled")  # whether baselines run does not change any row
        if not s.llm_only:  # the other writers' version; absent with llm_only, so older keys stay valid
            self.settings["writers"] = WRITERS_VERSION
        self.settings.pop("llm_only")
        if not s.scorers:  # absent without extra scorers, so older keys stay valid
            self.settings.pop("scorers")
        self.scorers = [SCORERS[name](client, prompts_dir) for name in s.scorers]
        self.settings.update(self.source.settings)
        self.key = settings_key(self.settings)

    def _id(self, nid: str, kind: str, candidate: int = 0) -> str:
        return row_id(self.key, nid, kind, candidate)

    def _row(self, nid: str, kind: str, writer: str = LLM_WRITER, **kw: Any) -> dict:
        llm_kind = kind != TOKEN_LOOKUP
        by_llm = kind == LLM and writer == LLM_WRITER
        row = {"explanation_id": self._id(nid, kind, kw.get("candidate", 0)), "node_id": nid, "model": self.run.name,
               "kind": kind, "candidate": 0, "selected": True, "job_id": self.job_id,
               "writer": TOKEN_LOOKUP if kind == TOKEN_LOOKUP else writer,
               "explainer": self.explainer_name if by_llm else writer if kind == LLM else kind,
               "explain_prompt": self.explainer.version if by_llm else None,
               "simulator": self.simulator.method if llm_kind else TOKEN_LOOKUP,
               "simulate_prompt": self.simulator.version if llm_kind else None,
               "settings_key": self.key, "settings": self.settings, **self.source.row}
        row.update(kw)
        return row

    def _windows(self, nid: str) -> Windows:
        return self.source.windows(self.store, nid, self.s)

    async def explain_node(self, nid: str) -> float | None:
        """Explain one node (best of k, with the other writers' candidates), add the token-lookup
        baseline, commit both; returns the score."""
        windows = self._windows(nid)
        extra = [] if self.s.llm_only else cheap_candidates(windows.explain, self.explainer.threshold,
                                                             few=self.simulator.method not in NO_LLM)
        found = await best_of_k(self.explainer, self.simulator, windows, self.s.explanations_per_node, self.s.seed,
                                attribute=lambda i: working_on(self._id(nid, LLM, i), nid), extra=extra)
        items: list[Item] = []
        for i, cand in enumerate(found.candidates):
            failure = cand.failure
            if found.chosen is None and i == 0:  # the node failed: every candidate's reason, once each
                reasons = list(dict.fromkeys(c.failure or "no score" for c in found.candidates))
                failure = f"all {len(found.candidates)} candidates failed: " + "; ".join(reasons)[:800]
            row = self._row(nid, LLM, writer=cand.writer, candidate=i, text=cand.text, selected=found.selected(i),
                            failure=failure, raw_text=cand.raw_text)
            items.append(explanation_item(row, windows, found.scored.get(i)))
        if self.scorers and found.chosen is not None:  # detection and fuzzing, on the held-out records
            chosen = items[found.chosen]
            records = [(r.tokens, r.activations) for r in windows.score]
            with working_on(chosen[0]["explanation_id"], nid):
                chosen[2].extend(await score_rows(self.scorers, found.text, records, self.s.seed))
        baseline = token_lookup(windows)
        items.append(explanation_item(self._row(nid, TOKEN_LOOKUP, text=baseline.text), windows, baseline))
        failpoint("explain.node")  # the LLM has answered (answers cached), nothing of the node committed yet
        self.store.save_explanations(items, **embeddings_for(items))  # the chosen explanation's, for search
        return found.score

    async def shuffle_node(self, nid: str, source: str, text: str, writer: str) -> float | None:
        windows = self._windows(nid)
        row = self._row(nid, SHUFFLED, writer=writer, text=text, source_node_id=source)
        with working_on(row["explanation_id"], nid):
            scored = await simulate_and_score(self.simulator, text, windows)
        self.store.save_explanations([explanation_item(row, windows, scored)])
        return scored.score


async def _run_pool(items: Sequence[Any], worker: Callable[[Any], Any], concurrency: int,
                    on_done: Callable[[Any], None]) -> None:
    """Run `worker` over `items` with at most `concurrency` at once; the first error cancels the rest."""
    queue: asyncio.Queue = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)

    async def loop() -> None:
        while not queue.empty():
            it = queue.get_nowait()
            on_done(await worker(it))

    tasks = [asyncio.create_task(loop()) for _ in range(max(1, min(concurrency, len(items))))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def explain_job(store: Store, run_dir: Path | str, client: LLMClient, tasks: Sequence[str] | None = None,
                nodes: Sequence[str] | None = None, settings: ExplainSettings | None = None,
                progress: bool = True, prompts_dir: str | Path | None = None, cache: bool = True,
                retry_failed: bool = False, prices: str | Path | None = None, command: str | None = None,
                explain_prompt: str = DEFAULT_EXPLAIN_PROMPT, device: str | None = "auto",
                source: GeneralSource | None = None) -> JobSummary:
    """Explain, simulate and score every selected node of a run (see the module docstring).

    The job is a row in `jobs`; each of its LLM requests a row in `llm_requests`. Answers are cached
    in the store: rerunning a job, or restarting a killed one, asks the LLM only what it has not
    answered yet. cache=False (--no-cache) asks again (and stores the fresh answers).
    retry_failed: redo the nodes whose LLM explanation failed with these settings (asking again).
    prices: a JSON price table (see `accounting.load_price`) to record each request's cost.
    prompts_dir: a folder of prompt files to use instead of the package's `prompts/` (their
    content hashes are part of the settings, so results never mix). explain_prompt: the explain
    prompt file's name, e.g. `explain_marked` (zero-shot, for small code models). source: where
    the nodes and their windows come from (`GeneralSource`, the default; `roles.TaskSource`).
    """
    source = source or GeneralSource()
    s = settings or ExplainSettings()
    s.check()
    price = load_price(prices, client.settings()["model"]) if prices and client.settings()["model"] else None
    run = Run(run_dir, device=device)  # the device captures the activation records
    if s.window is None:
        s = replace(s, window=min(DEFAULT_WINDOW, run.model.cfg.n_ctx))
    register_model(store, run)
    node_ids = source.nodes(store, run, tasks, nodes)
    summary: JobSummary | None = None
    job_id = new_job_id()
    llm = client.settings()
    store.start_job({"job_id": job_id, "command": command, "model": run.name, "backend": llm["backend"],
                     "llm_model": llm["model"], "base_url": llm.get("base_url")})
    client.cache = ResponseCache(store, read=cache and not retry_failed)
    client.ledger = Ledger(store, job_id, price)

    async def main() -> None:
        nonlocal summary, price
        try:
            await client.probe()  # before the records: an unreachable server fails in a second
            source.prepare(store, run, node_ids, s, progress)
            if prices and price is None:  # the model name was resolved by the probe
                client.ledger.price = price = load_price(prices, client.settings()["model"])
            job = _Job(store, run, client, s, None if prompts_dir is None else str(prompts_dir), job_id, explain_prompt,
                       source)
            store.update_job(job_id, settings_key=job.key, llm_model=client.settings()["model"])
            summary = JobSummary(model=run.name, settings_key=job.key, simulator=job.simulator.method,
                                 nodes=len(node_ids))
            done = store.done_nodes(job.key, LLM)
            if retry_failed:
                done -= {e["node_id"] for e in store.explanations(settings_key=job.key, kind=LLM, selected=True)
                         if e["text"] is None or e["failure"]}
            todo = [n for n in node_ids if n not in done]
            summary.skipped = len(node_ids) - len(todo)
            scores: list[float | None] = []
            bar = progress_bar(total=len(todo), desc="explain", unit="node", enabled=progress and bool(todo))

            def on_node(score: float | None) -> None:
                scores.append(score)
                summary.explained += 1
                mean = mean_defined(scores)
                bar.set_postfix_str(f"mean score {mean:.3f}" if mean is not None else "mean score n/a")
                bar.update(1)

            await _run_pool(todo, job.explain_node, client.concurrency, on_node)
            bar.close()
            if s.shuffled and source.shuffled:
                await _shuffled(store, job, node_ids, client.concurrency, progress, summary)
        finally:
            await client.close()

    def settled() -> int | None:  # requests in flight the client's adaptive limit settled at
        return getattr(getattr(client, "limit", None), "settled", None)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        store.update_job(job_id, status="interrupted", concurrency=settled())
        raise
    except BaseException as e:
        store.update_job(job_id, status="failed", error=" ".join(str(e).split())[:500], concurrency=settled())
        raise
    store.update_job(job_id, status="finished", concurrency=settled())
    assert summary is not None
    summary.job_id = job_id
    _summarise(store, summary.settings_key, node_ids, summary)
    return summary


async def _shuffled(store: Store, job: _Job, node_ids: Sequence[str], concurrency: int, progress: bool,
                    summary: JobSummary) -> None:
    """The shuffled control: each node is simulated with the explanation of the next node (in id
    order) among the model's nodes explained with the same settings."""
    chosen = [e for e in store.explanations(settings_key=job.key, kind=LLM, selected=True)
              if e["text"] is not None and e["model"] == job.run.name]
    explained = {e["node_id"]: e["text"] for e in chosen}
    writer = {e["node_id"]: e["writer"] or LLM_WRITER for e in chosen}
    order = sorted(explained)
    if len(order) < 2:
        return
    source = {n: order[(i + 1) % len(order)] for i, n in enumerate(order)}
    # Done: a shuffled row with today's source and text (a retried node can change the rotation).
    done = {e["node_id"] for e in store.explanations(settings_key=job.key, kind=SHUFFLED, selected=True)
            if e["node_id"] in source and e["source_node_id"] == source[e["node_id"]]
            and e["text"] == explained[source[e["node_id"]]]}
    todo = [n for n in node_ids if n in source and n not in done]
    bar = progress_bar(total=len(todo), desc="shuffled control", unit="node", enabled=progress and bool(todo))

    def on_node(_score: float | None) -> None:
        summary.shuffled += 1
        bar.update(1)

    await _run_pool(todo, lambda n: job.shuffle_node(n, source[n], explained[source[n]], writer[source[n]]),
                    concurrency, on_node)
    bar.close()


def _summarise(store: Store, key: str, node_ids: Sequence[str], summary: JobSummary) -> None:
    ids = set(node_ids)
    rows = [r for r in store.explanations(settings_key=key, selected=True) if r["node_id"] in ids]
    summary.failed = sum(1 for r in rows if r["kind"] == LLM and (r["text"] is None or r["failure"]))
    for kind in (LLM, TOKEN_LOOKUP, SHUFFLED):
        vals = [store.scores(r["explanation_id"]).get(("score", "correlation")) for r in rows if r["kind"] == kind]
        summary.mean_score[kind] = mean_defined(vals)
    for r in rows:
        if r["kind"] == LLM and r["text"] is not None:
            summary.writers[r["writer"]] = summary.writers.get(r["writer"], 0) + 1
    best_llm = store.best_llm_scores(key)
    summary.llm_candidate_score = mean_defined([best_llm.get(n) for n in node_ids if n in best_llm])
