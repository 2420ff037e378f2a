"""The explain, simulate, score loop over the nodes of a trained run (REFERENCE §2), as one job.

For each node: activation records (captured once per node and stored), k candidate explanations
from the LLM, each simulated on the calibrate (validation) split; the best candidate is simulated
on the score (test) split and scored there. Two baselines are stored and scored the same way:
`token_lookup` (no LLM) and `shuffled` (another node's explanation, simulated for this node).

Each node's explanations, simulations and scores are committed in one transaction; a rerun with
the same settings skips nodes already done. `circuits explain` is one call to `explain_job`:

    from explainer.explain_jobs import ExplainSettings, explain_job
    from explainer.llm import LLMClient
    from explainer.llm_local import LocalBackend
    with Store.open("circuits.duckdb") as store:
        summary = explain_job(store, "runs/demo", LLMClient(LocalBackend()), tasks=["single_double_quote"])
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm import tqdm

from sparse_model.errors import UserError
from sparse_model.model import node_locations, parse_node_name

from . import scoring
from .accounting import Ledger, ResponseCache, load_price, new_job_id, working_on
from .circuit_jobs import LoadedRun, node_id, register_model
from .explain import Explainer
from .llm import LLMClient
from .records import DEFAULT_WINDOW, capture_activations, sample_records, split_records, token_table
from .simulate import Simulation, Simulator
from .store import Store

LLM, TOKEN_LOOKUP, SHUFFLED = "llm", "token_lookup", "shuffled"


@dataclass(frozen=True)
class ExplainSettings:
    """Everything that changes a job's results (besides the LLM and the prompts)."""

    explanations_per_node: int = 3  # best-of-k
    simulator: str = "auto"
    window: int | None = None  # tokens per activation record; default 64, or the model's context if shorter
    explain_windows: int = 5  # top windows shown to the explainer
    score_windows: int = 5  # top windows and as many random ones, on the score (test) split
    calibrate_windows: int = 5  # top windows and as many random ones, on the calibrate (validation) split
    seed: int = 0
    shuffled: bool = True

    def check(self) -> None:
        if self.explanations_per_node < 1:
            raise UserError(f"--explanations-per-node must be at least 1, got {self.explanations_per_node}")
        for name in ("explain_windows", "score_windows", "calibrate_windows"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.window is not None and self.window < 2:
            raise UserError(f"--window must be at least 2 tokens, got {self.window}")


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
    mean_score: dict[str, float | None] = field(default_factory=dict)  # kind -> mean test score over the job's nodes

    def to_dict(self) -> dict:
        return asdict(self)


# ---- which nodes ---------------------------------------------------------------------------


def select_nodes(store: Store, run: LoadedRun, tasks: Sequence[str] | None = None,
                 nodes: Sequence[str] | None = None) -> list[str]:
    """Node ids to explain: the named nodes, else the nodes of the named tasks' circuits, else the
    nodes of every circuit of the model (status 'circuit'), in circuit rank order."""
    model = run.name
    if nodes:
        locs = node_locations(run.model.cfg)
        out = []
        for raw in nodes:
            name = raw.split("/", 1)[1] if raw.startswith(model + "/") else raw
            try:
                loc, idx = parse_node_name(name)
            except ValueError:
                raise UserError(f"not a node name: {raw!r}; expected e.g. L0.mlp.neuron[3]") from None
            if loc not in locs or not 0 <= idx < locs[loc]:
                raise UserError(f"model {model} has no node {name}; locations: {', '.join(locs)}")
            out.append(node_id(model, loc, idx))
        return list(dict.fromkeys(out))
    circuits = store.list_circuits(model)  # ordered by task, created_at: the last per task is the newest
    latest: dict[str, dict] = {}
    for c in circuits:
        latest[c["task"]] = c
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


def ensure_records(store: Store, run: LoadedRun, node_ids: Sequence[str], window: int, seed: int = 0,
                   progress: bool = True) -> int:
    """Capture, sample, split and store the records of every node that has none (or has windows of
    another length), reading all those nodes in one pass over the validation text. Returns the
    number of nodes captured."""
    have = store.record_windows(run.name)
    todo = [nid for nid in node_ids if have.get(nid) != window]
    if not todo:
        return 0
    val = np.load(run.run_dir / "tokens_val.npy", mmap_mode="r")
    pairs = [parse_node_name(nid.split("/", 1)[1]) for nid in todo]
    acts, starts = capture_activations(run.model, val, pairs, window=window)
    table = token_table(run.tokenizer)
    for i, nid in enumerate(tqdm(todo, desc="activation records", unit="node", disable=not progress)):
        splits = split_records(sample_records(acts[i], starts, val, table, seed=seed))
        rows = [{"kind": r.kind, "rank": r.rank, "split": split, "start": r.start, "max_activation": r.max_activation,
                 "tokens": r.tokens, "activations": r.activations, "sample_seed": seed}
                for split, recs in splits.items() for r in recs]
        store.save_activation_records(run.name, nid, rows)
    return len(todo)


@dataclass
class _Rec:
    """A stored activation record, as the explainer and simulators see it."""

    kind: str
    rank: int
    split: str
    tokens: list[str]
    activations: list[float]


def _node_records(store: Store, nid: str, s: ExplainSettings) -> dict[str, list[_Rec]]:
    """The windows a job uses: `explain_windows` top windows of the explain split, and on each of
    the calibrate and score splits n top plus n random windows."""
    rows = [_Rec(r["kind"], r["rank"], r["split"], list(r["tokens"]), list(r["activations"]))
            for r in store.activation_records(nid)]

    def pick(split: str, n: int) -> list[_Rec]:
        recs = [r for r in rows if r.split == split]
        return [r for r in recs if r.kind == "top"][:n] + [r for r in recs if r.kind == "random"][:n]

    return {"explain": [r for r in rows if r.split == "explain" and r.kind == "top"][:s.explain_windows],
            "calibrate": pick("calibrate", s.calibrate_windows), "score": pick("score", s.score_windows)}


# ---- scoring one explanation -----------------------------------------------------------------


def _score_split(recs: list[_Rec], preds: list[list[float] | None], split: str,
                 calib: tuple[float, float] | None) -> list[dict]:
    ok = [(r.activations, p) for r, p in zip(recs, preds) if p is not None]
    true, pred = [np.asarray(t) for t, _ in ok], [np.asarray(p) for _, p in ok]
    n = int(sum(len(t) for t in true))
    summary = scoring.score_summary(true, pred, calib if split == "score" else None)
    out = [{"split": split, "method": "correlation", "value": summary["pooled_correlation"], "n_tokens": n}]
    if split == "score":
        out.append({"split": split, "method": "mean_window_correlation", "value": summary["mean_window_correlation"],
                    "n_tokens": n})
        for m in ("r_squared", "absolute_deviation_explained"):
            out.append({"split": split, "method": m, "value": summary.get(m), "n_tokens": n})
    return out


def _calibration(recs: list[_Rec], preds: list[list[float] | None]) -> tuple[float, float] | None:
    ok = [(r.activations, p) for r, p in zip(recs, preds) if p is not None]
    if not ok:
        return None
    return scoring.fit_calibration(np.concatenate([p for _, p in ok]), np.concatenate([t for t, _ in ok]))


def _sim_rows(recs: list[_Rec], sims: list[Simulation], simulator: str) -> list[dict]:
    return [{"kind": r.kind, "rank": r.rank, "split": r.split, "predicted": s.predicted, "simulator": simulator,
             "failure": s.failure, "raw_text": s.raw_text} for r, s in zip(recs, sims)]


def _calibrated_item(row: dict, recs: dict[str, list[_Rec]], cal: list[Simulation], test: list[Simulation],
                     simulator: str) -> tuple[dict, list, list]:
    """One explanation as stored: a calibration fitted on its calibrate simulations, its scores on
    both splits (r² and absolute deviation on the score split, calibrated) and its simulation rows."""
    cal_preds, test_preds = [s.predicted for s in cal], [s.predicted for s in test]
    calib = _calibration(recs["calibrate"], cal_preds)
    row.update(calibration_slope=calib[0] if calib else None, calibration_intercept=calib[1] if calib else None)
    scores = _score_split(recs["calibrate"], cal_preds, "calibrate", None) + \
        _score_split(recs["score"], test_preds, "score", calib)
    return row, _sim_rows(recs["calibrate"], cal, simulator) + _sim_rows(recs["score"], test, simulator), scores


def _failure(sims: list[Simulation]) -> str | None:
    failed = [s for s in sims if s.predicted is None]
    if failed and len(failed) == len(sims):
        return f"all {len(sims)} simulations failed; first: {failed[0].failure}"
    return None


# ---- the job -------------------------------------------------------------------------------


class _Job:
    def __init__(self, store: Store, run: LoadedRun, client: LLMClient, s: ExplainSettings,
                 prompts_dir: str | None = None, job_id: str | None = None):
        self.store, self.run, self.client, self.s, self.job_id = store, run, client, s, job_id
        self.explainer = Explainer(client, prompts_dir)
        self.simulator = Simulator(client, s.simulator, prompts_dir)
        llm = client.settings()
        self.explainer_name = f"{llm['backend']}:{llm['model']}"
        self.settings = {"llm": llm, "explain_prompt": self.explainer.version, "simulate_prompt": self.simulator.version,
                         "simulator": self.simulator.method, **asdict(s)}
        self.settings.pop("shuffled")  # whether baselines run does not change any row
        self.key = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]

    def _id(self, nid: str, kind: str, candidate: int = 0) -> str:
        return hashlib.sha256(f"{self.key}|{nid}|{kind}|{candidate}".encode()).hexdigest()[:20]

    def _row(self, nid: str, kind: str, **kw: Any) -> dict:
        llm_kind = kind != TOKEN_LOOKUP
        row = {"explanation_id": self._id(nid, kind, kw.get("candidate", 0)), "node_id": nid, "model": self.run.name,
               "kind": kind, "candidate": 0, "selected": True, "job_id": self.job_id,
               "explainer": self.explainer_name if kind == LLM else kind,
               "explain_prompt": self.explainer.version if kind == LLM else None,
               "simulator": self.simulator.method if llm_kind else TOKEN_LOOKUP,
               "simulate_prompt": self.simulator.version if llm_kind else None,
               "settings_key": self.key, "settings": self.settings}
        row.update(kw)
        return row

    async def _simulate(self, text: str, recs: list[_Rec]) -> list[Simulation]:
        # All windows at once: the client's concurrency limit decides how many are in flight.
        return list(await asyncio.gather(*(self.simulator.simulate(text, r.tokens) for r in recs)))

    async def _scored(self, row: dict, text: str, recs: dict[str, list[_Rec]],
                      calibrate_sims: list[Simulation] | None = None) -> tuple[dict, list, list]:
        """Simulate `text` on the calibrate and score splits, calibrate, score; one stored item."""
        with working_on(row["explanation_id"], row["node_id"]):
            cal = calibrate_sims if calibrate_sims is not None else await self._simulate(text, recs["calibrate"])
            test = await self._simulate(text, recs["score"])
        row["failure"] = _failure(test)
        return _calibrated_item(row, recs, cal, test, self.simulator.method)

    async def explain_node(self, nid: str) -> float | None:
        """Explain one node (best of k), add the token-lookup baseline, commit both; returns the test score."""
        recs = _node_records(self.store, nid, self.s)
        candidates = []
        validated = []  # (validation score, candidate index, calibrate simulations)
        for i in range(self.s.explanations_per_node):
            with working_on(self._id(nid, LLM, i), nid):
                cand = await self.explainer.candidate(recs["explain"], i, seed=self.s.seed)
                candidates.append(cand)
                if cand.text is None:
                    continue
                cal = await self._simulate(cand.text, recs["calibrate"])
            v = _score_split(recs["calibrate"], [s.predicted for s in cal], "calibrate", None)[0]["value"]
            validated.append((-np.inf if v is None else v, i, cal))
        best = max(validated, key=lambda x: (x[0], -x[1])) if validated else None
        items: list[tuple[dict, list, list]] = []
        for i, cand in enumerate(candidates):
            row = self._row(nid, LLM, candidate=i, text=cand.text, selected=best is not None and best[1] == i,
                            failure=cand.failure, raw_text=cand.raw_text)
            if best is not None and best[1] == i:
                items.append(await self._scored(row, cand.text, recs, best[2]))
            elif cand.text is not None:
                cal = next(c for _, j, c in validated if j == i)
                items.append((row, _sim_rows(recs["calibrate"], cal, self.simulator.method),
                              _score_split(recs["calibrate"], [s.predicted for s in cal], "calibrate", None)))
            else:
                items.append((row, [], []))
        if best is None:  # every candidate failed: the first one stands for the node, with its reason
            items[0][0]["selected"] = True
        items.append(self._token_lookup(nid, recs))
        self.store.save_explanations(items)
        chosen = next(it for it in items if it[0]["kind"] == LLM and it[0]["selected"])
        return next((s["value"] for s in chosen[2] if s["split"] == "score" and s["method"] == "correlation"), None)

    def _token_lookup(self, nid: str, recs: dict[str, list[_Rec]]) -> tuple[dict, list, list]:
        preds = {split: scoring.token_lookup_predictions(recs["explain"], recs[split]) for split in ("calibrate", "score")}
        sims = {split: [Simulation([float(x) for x in p]) for p in (preds[split] or [])] or
                [Simulation(None, failure="no explanation windows") for _ in recs[split]] for split in preds}
        row = self._row(nid, TOKEN_LOOKUP, text="each token's mean activation over the explanation windows")
        return _calibrated_item(row, recs, sims["calibrate"], sims["score"], TOKEN_LOOKUP)

    async def shuffle_node(self, nid: str, source: str, text: str) -> float | None:
        recs = _node_records(self.store, nid, self.s)
        item = await self._scored(self._row(nid, SHUFFLED, text=text, source_node_id=source), text, recs)
        self.store.save_explanations([item])
        return next((s["value"] for s in item[2] if s["split"] == "score" and s["method"] == "correlation"), None)


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


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def explain_job(store: Store, run_dir: Path | str, client: LLMClient, tasks: Sequence[str] | None = None,
                nodes: Sequence[str] | None = None, settings: ExplainSettings | None = None,
                progress: bool = True, prompts_dir: str | Path | None = None, cache: bool = True,
                retry_failed: bool = False, prices: str | Path | None = None, command: str | None = None) -> JobSummary:
    """Explain, simulate and score every selected node of a run (see the module docstring).

    The job is a row in `jobs`; each of its LLM requests a row in `llm_requests`. Answers are cached
    in the store: rerunning a job, or restarting a killed one, asks the LLM only what it has not
    answered yet. cache=False (--no-cache) asks again (and stores the fresh answers).
    retry_failed: redo the nodes whose LLM explanation failed with these settings (asking again).
    prices: a JSON price table (see `accounting.load_price`) to record each request's cost.
    prompts_dir: a folder of prompt files to use instead of the package's `prompts/` (their
    content hashes are part of the settings, so results never mix).
    """
    s = settings or ExplainSettings()
    s.check()
    price = load_price(prices, client.settings()["model"]) if prices and client.settings()["model"] else None
    run = LoadedRun(run_dir)
    if s.window is None:
        s = replace(s, window=min(DEFAULT_WINDOW, run.model.cfg.n_ctx))
    register_model(store, run)
    node_ids = select_nodes(store, run, tasks, nodes)
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
            ensure_records(store, run, node_ids, s.window, seed=s.seed, progress=progress)
            if prices and price is None:  # the model name was resolved by the probe
                client.ledger.price = price = load_price(prices, client.settings()["model"])
            job = _Job(store, run, client, s, None if prompts_dir is None else str(prompts_dir), job_id)
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
            bar = tqdm(total=len(todo), desc="explain", unit="node", disable=not progress or not todo)

            def on_node(score: float | None) -> None:
                scores.append(score)
                summary.explained += 1
                mean = _mean(scores)
                bar.set_postfix_str(f"mean score {mean:.3f}" if mean is not None else "mean score n/a")
                bar.update(1)

            await _run_pool(todo, job.explain_node, client.concurrency, on_node)
            bar.close()
            if s.shuffled:
                await _shuffled(store, job, node_ids, client.concurrency, progress, summary)
        finally:
            await client.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        store.update_job(job_id, status="interrupted")
        raise
    except BaseException as e:
        store.update_job(job_id, status="failed", error=" ".join(str(e).split())[:500])
        raise
    store.update_job(job_id, status="finished")
    assert summary is not None
    summary.job_id = job_id
    _summarise(store, summary.settings_key, node_ids, summary)
    return summary


async def _shuffled(store: Store, job: _Job, node_ids: Sequence[str], concurrency: int, progress: bool,
                    summary: JobSummary) -> None:
    """The shuffled control: each node is simulated with the explanation of the next node (in id
    order) among the model's nodes explained with the same settings."""
    explained = {e["node_id"]: e["text"] for e in store.explanations(settings_key=job.key, kind=LLM, selected=True)
                 if e["text"] is not None and e["model"] == job.run.name}
    order = sorted(explained)
    if len(order) < 2:
        return
    source = {n: order[(i + 1) % len(order)] for i, n in enumerate(order)}
    # Done: a shuffled row with today's source and text (a retried node can change the rotation).
    done = {e["node_id"] for e in store.explanations(settings_key=job.key, kind=SHUFFLED, selected=True)
            if e["node_id"] in source and e["source_node_id"] == source[e["node_id"]]
            and e["text"] == explained[source[e["node_id"]]]}
    todo = [n for n in node_ids if n in source and n not in done]
    bar = tqdm(total=len(todo), desc="shuffled control", unit="node", disable=not progress or not todo)

    def on_node(_score: float | None) -> None:
        summary.shuffled += 1
        bar.update(1)

    await _run_pool(todo, lambda n: job.shuffle_node(n, source[n], explained[source[n]]), concurrency, on_node)
    bar.close()


def _summarise(store: Store, key: str, node_ids: Sequence[str], summary: JobSummary) -> None:
    ids = set(node_ids)
    rows = [r for r in store.explanations(settings_key=key, selected=True) if r["node_id"] in ids]
    summary.failed = sum(1 for r in rows if r["kind"] == LLM and (r["text"] is None or r["failure"]))
    for kind in (LLM, TOKEN_LOOKUP, SHUFFLED):
        vals = [store.scores(r["explanation_id"]).get(("score", "correlation")) for r in rows if r["kind"] == kind]
        summary.mean_score[kind] = _mean(vals)
