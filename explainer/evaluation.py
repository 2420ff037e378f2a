"""The ground-truth suite: can a simulator tell a right explanation from a wrong one, and does the
explainer find the right one? (`circuits eval`; rules in `explainer.ground_truth`.)

Per rule neuron and seed, the rule's activations over the run's validation windows go through the
same path as a real node's: `records.sample_records` and `records.split_records` (seeded), the
score split's first `score_windows` top windows plus as many random ones (top + random 1:1), the
explain split's first `explain_windows` top windows for the explainer and the token-lookup
baseline. The seed also shuffles the order of the windows before sampling, so ties between
windows of equal maximum (binary rules) are broken differently per seed.

Measurements:

- Discrimination. The correct explanation and each wrong one are simulated by the same simulator
  on the same score windows and scored by pooled correlation. AUROC = the fraction of (correct,
  wrong) pairs where the correct explanation scores higher, ties 1/2 (`scoring.auroc`), pooled
  over the pairs of all rules of a set (training / held-out). An undefined correlation (the
  simulator predicted the same value on every token, or every simulation failed) counts as 0.0:
  the simulator got no linear signal from that explanation. So a constant simulator scores 0.5
  and a simulator that knows the rule scores 1. Mean, standard deviation, min and max over seeds.
- Explainer recovery (optional; needs an LLM): the LLM explains each rule neuron from its top
  windows (`explain.Explainer`, candidate 0), the explanation is scored like the others, and
  compared with the correct explanation's score and the token-lookup baseline's.

Storage (existing tables, `purpose = 'eval'`): every scored explanation is an `explanations` row
with node_id `eval/<run>/<rule>/w<window>s<seed>`, model 'eval', kind 'correct', 'wrong', 'llm' or
'token_lookup', explainer 'ground_truth' (given texts), 'token_lookup', or the LLM;
its simulations and scores as for real nodes; the records in `activation_records` under the same
node_id. Each rule's AUROC is an `explanations` row of kind 'auroc' (no text, not selected) with
one `scores` row: split 'score', method 'auroc'. The settings JSON of every row holds the rule,
its set ('training' / 'held_out'), the seed and the simulator; settings_key hashes the settings
that change a result, so one SQL query compares simulators:

    SELECT simulator, simulate_prompt, settings->>'rule_set' AS rule_set, avg(s.value) AS auroc
    FROM explanations e JOIN scores s USING (explanation_id)
    WHERE e.purpose = 'eval' AND s.method = 'auroc' GROUP BY ALL ORDER BY ALL;
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sparse_model.errors import UserError

from . import scoring
from .ground_truth import HELD_OUT, TRAINING, Annotations, Rule, annotate, resolve_rules, rule_activations, \
    wrong_explanations
from .records import ActivationRecord, sample_records, split_records, token_table, window_starts
from .simulate import Simulation

SUITE_VERSION = 1
EVAL_MODEL = "eval"
GIVEN = "ground_truth"  # explainer of the correct and wrong explanations


@dataclass(frozen=True)
class EvalSettings:
    window: int = 64  # tokens per window
    score_windows: int = 5  # top windows and as many random ones scored per explanation
    explain_windows: int = 5  # top windows shown to the explainer (and to the token-lookup baseline)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_windows: int | None = None  # windows cut from the validation split (default: records.MAX_WINDOWS)
    recovery: bool = False  # explain every rule neuron with the LLM (seed seeds[0] only)

    def check(self) -> None:
        if self.window < 2:
            raise UserError(f"--window must be at least 2 tokens, got {self.window}")
        if self.score_windows < 1 or self.explain_windows < 1:
            raise UserError("--score-windows and --explain-windows must be at least 1")
        if not self.seeds:
            raise UserError("--seeds must be at least 1")


@dataclass
class RuleResult:
    rule: str
    rule_set: str  # training | held_out
    seed: int
    correct: float | None  # pooled correlation of the correct explanation
    wrong: dict[str, float | None]  # wrong explanation -> pooled correlation
    auroc: float | None
    seconds: float = 0.0
    llm_explanation: str | None = None  # explainer recovery
    llm_failure: str | None = None
    llm_score: float | None = None
    token_lookup: float | None = None


@dataclass
class SuiteResult:
    simulator: str  # method
    version: str  # simulator / prompt version
    rules: list[RuleResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return summarise(self.rules) | {"simulator": self.simulator, "version": self.version, "seconds": self.seconds}


# ---- pure parts ------------------------------------------------------------------------------


def _defined(x: float | None) -> float:
    """An undefined correlation counts as 0.0 (no linear signal), see the module docstring."""
    return 0.0 if x is None else float(x)


def discrimination_auroc(correct: Sequence[float | None], wrong: Sequence[float | None]) -> float | None:
    """Fraction of (correct, wrong) pairs where the correct explanation's score is higher, ties 1/2;
    None (undefined correlation) counts as 0.0. None if either side is empty."""
    return scoring.auroc([_defined(c) for c in correct], [_defined(w) for w in wrong])


def pooled_auroc(results: Sequence[RuleResult]) -> float | None:
    """AUROC over the pairs of several rules together (each rule's correct explanation against its
    own wrong ones): total wins over total pairs."""
    wins = pairs = 0.0
    for r in results:
        a = discrimination_auroc([r.correct], list(r.wrong.values()))
        if a is not None:
            wins += a * len(r.wrong)
            pairs += len(r.wrong)
    return wins / pairs if pairs else None


def _stats(values: Sequence[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    if not v:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "min": float(min(v)), "max": float(max(v)), "n": len(v)}


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarise(results: Sequence[RuleResult]) -> dict[str, Any]:
    """AUROC per rule set: pooled over the set's rules per seed, then mean/std/min/max over seeds;
    and the explainer-recovery means."""
    out: dict[str, Any] = {}
    seeds = sorted({r.seed for r in results})
    for rule_set in ("training", "held_out"):
        per_seed = [pooled_auroc([r for r in results if r.rule_set == rule_set and r.seed == s]) for s in seeds]
        out[rule_set] = _stats(per_seed)
    rec = [r for r in results if r.llm_explanation is not None or r.llm_failure is not None]
    if rec:
        out["recovery"] = {
            "rules": len(rec), "failed": sum(r.llm_explanation is None for r in rec),
            "llm": _mean([r.llm_score for r in rec]), "correct": _mean([r.correct for r in rec]),
            "token_lookup": _mean([r.token_lookup for r in rec]),
            "llm_beats_token_lookup": _mean([float(_defined(r.llm_score) > _defined(r.token_lookup)) for r in rec]),
            "llm_at_least_correct": _mean([float(_defined(r.llm_score) >= _defined(r.correct)) for r in rec]),
        }
    return out


# ---- records ---------------------------------------------------------------------------------


@dataclass
class SuiteData:
    """A run's validation text, annotated once for every rule."""

    run_name: str
    val: np.ndarray
    table: list[str]
    ann: Annotations

    @classmethod
    def from_run(cls, run_dir: Path | str) -> "SuiteData":
        from sparse_model.tokenizer import load_tokenizer

        run_dir = Path(run_dir)
        for f in ("tokens_val.npy", "tokenizer.json", "run.json"):
            if not (run_dir / f).exists():
                raise UserError(f"{run_dir} has no {f}; pass a trained run folder (circuits train ... --out DIR)")
        val = np.load(run_dir / "tokens_val.npy")
        table = token_table(load_tokenizer(run_dir / "tokenizer.json"))
        name = json.loads((run_dir / "run.json").read_text())["name"]
        return cls(run_name=name, val=val, table=table, ann=annotate(table, val))


def rule_records(data: SuiteData, rule: Rule, window: int, seed: int,
                 n_windows: int | None = None) -> dict[str, list[ActivationRecord]]:
    """One rule neuron's records by split, exactly as for a real node (see the module docstring)."""
    starts = window_starts(len(data.val), window, n_windows)
    acts = rule_activations(rule, data.ann, starts, window)
    order = np.random.default_rng(seed).permutation(len(starts))
    records = sample_records(acts[order], starts[order], data.val, data.table, seed=seed)
    return split_records(records, seed=seed)


def pick_windows(splits: dict[str, list[ActivationRecord]], s: EvalSettings) -> dict[str, list[ActivationRecord]]:
    """The explain windows (top only) and the score windows (n top + n random), as `explain_jobs`."""
    score = splits["score"]
    return {"explain": [r for r in splits["explain"] if r.kind == "top"][:s.explain_windows],
            "score": [r for r in score if r.kind == "top"][:s.score_windows] +
                     [r for r in score if r.kind == "random"][:s.score_windows]}


# ---- simulation and scoring --------------------------------------------------------------------


async def simulate_windows(simulator: Any, text: str, recs: Sequence[ActivationRecord]) -> list[Simulation]:
    """Simulate `text` on every window; a simulator with a synchronous `predict` (no LLM) is called
    once for all windows."""
    if hasattr(simulator, "predict"):
        return [Simulation(p) for p in simulator.predict(text, [r.tokens for r in recs])]
    return list(await asyncio.gather(*(simulator.simulate(text, r.tokens) for r in recs)))


def score_of(recs: Sequence[ActivationRecord], sims: Sequence[Simulation]) -> float | None:
    """Pooled correlation over the windows that were simulated (failed ones left out, as for real nodes)."""
    ok = [(r.activations, s.predicted) for r, s in zip(recs, sims) if s.predicted is not None]
    if not ok:
        return None
    return scoring.pooled_correlation([np.asarray(t) for t, _ in ok], [np.asarray(p) for _, p in ok])


# ---- the suite ---------------------------------------------------------------------------------


class _Saver:
    """Rows for the store (see the module docstring)."""

    def __init__(self, store: Any, data: SuiteData, simulator: Any, llm: dict | None, s: EvalSettings):
        self.store, self.data, self.sim, self.s = store, data, simulator, s
        self.settings = {"suite": SUITE_VERSION, "run": data.run_name, "simulator": simulator.method,
                         "simulate_prompt": simulator.version, "llm": llm, "window": s.window,
                         "score_windows": s.score_windows, "explain_windows": s.explain_windows,
                         "n_windows": s.n_windows}
        self.key = hashlib.sha256(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:16]
        self.llm_name = f"{llm['backend']}:{llm['model']}" if llm else None

    def node(self, rule: Rule, seed: int) -> str:
        return f"eval/{self.data.run_name}/{rule.name}/w{self.s.window}s{seed}"

    def save_records(self, rule: Rule, seed: int, splits: dict[str, list[ActivationRecord]]) -> None:
        if self.store is None:
            return
        rows = [{"kind": r.kind, "rank": r.rank, "split": split, "start": r.start, "max_activation": r.max_activation,
                 "tokens": r.tokens, "activations": r.activations, "sample_seed": seed}
                for split, recs in splits.items() for r in recs]
        self.store.save_activation_records(EVAL_MODEL, self.node(rule, seed), rows)

    def item(self, rule: Rule, seed: int, kind: str, text: str | None, recs: Sequence[ActivationRecord],
             sims: Sequence[Simulation] | None, score: float | None, candidate: int = 0, explainer: str = GIVEN,
             simulator: str | None = None, failure: str | None = None, raw_text: str | None = None,
             method: str = "correlation") -> tuple[dict, list, list]:
        nid = self.node(rule, seed)
        eid = hashlib.sha256(f"{self.key}|{nid}|{kind}|{candidate}|{text}".encode()).hexdigest()[:20]
        rule_set = "training" if rule.name in TRAINING else "held_out"
        row = {"explanation_id": eid, "node_id": nid, "model": EVAL_MODEL, "kind": kind, "text": text,
               "candidate": candidate, "selected": kind != "auroc", "explainer": explainer,
               "simulator": simulator or self.sim.method,
               "simulate_prompt": None if kind == "token_lookup" else self.sim.version,
               "settings_key": self.key, "settings": {**self.settings, "rule": rule.name, "rule_set": rule_set,
                                                      "rule_kind": rule.kind, "seed": seed},
               "failure": failure, "raw_text": raw_text, "purpose": "eval"}
        sim_rows = [{"kind": r.kind, "rank": r.rank, "split": "score",
                     "predicted": sm.predicted, "simulator": row["simulator"], "failure": sm.failure,
                     "raw_text": sm.raw_text} for r, sm in zip(recs, sims or [])]
        n = int(sum(len(r.tokens) for r in recs))
        return row, sim_rows, [{"split": "score", "method": method, "value": score, "n_tokens": n}]

    def save(self, items: list) -> None:
        if self.store is not None and items:
            self.store.save_explanations(items)


async def _run_rule(rule: Rule, seed: int, data: SuiteData, simulator: Any, s: EvalSettings, saver: _Saver,
                    explainer: Any | None) -> RuleResult:
    t0 = time.perf_counter()
    splits = rule_records(data, rule, s.window, seed, s.n_windows)
    saver.save_records(rule, seed, splits)
    recs = pick_windows(splits, s)
    score_recs = recs["score"]
    items = []

    async def scored(kind: str, text: str, candidate: int = 0) -> float | None:
        sims = await simulate_windows(simulator, text, score_recs)
        value = score_of(score_recs, sims)
        failed = [x for x in sims if x.predicted is None]
        failure = f"all {len(sims)} simulations failed; first: {failed[0].failure}" \
            if failed and len(failed) == len(sims) else None
        items.append(saver.item(rule, seed, kind, text, score_recs, sims, value, candidate, failure=failure))
        return value

    correct = await scored("correct", rule.explanation)
    wrong: dict[str, float | None] = {}
    for i, w in enumerate(wrong_explanations(rule)):
        wrong[w] = await scored("wrong", w, candidate=i)
    result = RuleResult(rule=rule.name, rule_set="training" if rule.name in TRAINING else "held_out", seed=seed,
                        correct=correct, wrong=wrong, auroc=discrimination_auroc([correct], list(wrong.values())))
    items.append(saver.item(rule, seed, "auroc", None, [], None, result.auroc, method="auroc"))

    if explainer is not None:
        preds = scoring.token_lookup_predictions(recs["explain"], score_recs)
        tl_sims = [Simulation([float(x) for x in p]) for p in preds] if preds else []
        result.token_lookup = score_of(score_recs, tl_sims) if preds else None
        items.append(saver.item(rule, seed, "token_lookup", "each token's mean activation over the explanation windows",
                                score_recs, tl_sims, result.token_lookup, explainer="token_lookup",
                                simulator="token_lookup"))
        cand = await explainer.candidate(recs["explain"], 0, seed=seed)
        result.llm_explanation, result.llm_failure = cand.text, cand.failure
        if cand.text is not None:
            result.llm_score = await scored("llm", cand.text)
            items[-1][0]["explainer"] = saver.llm_name
            items[-1][0]["explain_prompt"] = explainer.version
        else:
            items.append(saver.item(rule, seed, "llm", None, [], None, None, explainer=saver.llm_name,
                                    failure=cand.failure, raw_text=cand.raw_text))
    saver.save(items)
    result.seconds = time.perf_counter() - t0
    return result


def run_suite(data: SuiteData, simulator: Any, settings: EvalSettings | None = None, rules: Sequence[str] | None = None,
              store: Any = None, client: Any = None, progress: Any = None) -> SuiteResult:
    """Run the suite for one simulator (an `EmbeddingSimulator`, a `simulate.Simulator`, or any object
    with `method`, `version` and `async simulate(text, tokens)`). `client`: the LLM client, for the
    explainer (recovery) and to be closed at the end. `store`: a `Store` to keep every row (or None).
    `progress(result)` is called after each rule and seed."""
    s = settings or EvalSettings()
    s.check()
    chosen = resolve_rules(rules)
    explainer = None
    if s.recovery:
        if client is None:
            raise UserError("explainer recovery needs an LLM; pass a backend")
        from .explain import Explainer

        explainer = Explainer(client)
    llm = client.settings() if client is not None else None
    saver = _Saver(store, data, simulator, llm, s)
    out = SuiteResult(simulator=simulator.method, version=simulator.version)
    t0 = time.perf_counter()

    async def main() -> None:
        try:
            if explainer is not None:
                await client.probe()  # an unreachable server fails before any work
            for seed in s.seeds:
                for rule in chosen:
                    ex = explainer if seed == s.seeds[0] else None
                    r = await _run_rule(rule, seed, data, simulator, s, saver, ex)
                    out.rules.append(r)
                    if progress:
                        progress(r)
        finally:
            if client is not None:
                await client.close()

    asyncio.run(main())
    out.seconds = time.perf_counter() - t0
    return out


# ---- real circuit nodes --------------------------------------------------------------------------


def real_node_summary(store: Any, model: str | None = None) -> list[dict]:
    """Stored scores of real circuit nodes (purpose 'circuit'), per model, simulator and kind (llm,
    token_lookup, shuffled): nodes, mean score, and, for llm, the fraction of nodes where the
    node's own LLM explanation beats the shuffled one (another node's explanation) on the same
    windows, ties 1/2, an AUROC of the simulator on real nodes."""
    where = "WHERE purpose = 'circuit' AND score IS NOT NULL" + (" AND model = ?" if model else "")
    params = [model] if model else []
    _, rows = store.query(
        f"SELECT model, simulator, kind, count(DISTINCT node_id), avg(score) FROM node_scores {where} "
        "GROUP BY ALL ORDER BY ALL", params)
    out = [{"model": m, "simulator": sim, "kind": k, "nodes": n, "mean_score": v, "llm_beats_shuffled": None}
           for m, sim, k, n, v in rows]
    _, pairs = store.query(
        "SELECT l.model, l.simulator, avg(CASE WHEN l.score > s.score THEN 1.0 WHEN l.score = s.score THEN 0.5 "
        "ELSE 0.0 END), count(*) FROM node_scores l JOIN node_scores s ON s.node_id = l.node_id "
        "AND s.settings_key = l.settings_key AND s.kind = 'shuffled' "
        f"WHERE l.kind = 'llm' AND l.purpose = 'circuit' AND l.score IS NOT NULL AND s.score IS NOT NULL"
        + (" AND l.model = ?" if model else "") + " GROUP BY ALL", params)
    for m, sim, frac, _n in pairs:
        for row in out:
            if row["model"] == m and row["simulator"] == sim and row["kind"] == "llm":
                row["llm_beats_shuffled"] = frac
    return out


def to_json(result: SuiteResult) -> dict:
    return {"summary": result.summary(), "rules": [asdict(r) for r in result.rules]}
