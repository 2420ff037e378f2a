"""`circuits eval`: the ground-truth suite (`explainer.suite`) over a trained run, every row stored.

Storage (the tables real nodes use, `purpose = 'eval'`): every scored explanation is an
`explanations` row with node_id `eval/<run>/<rule>/w<window>s<seed>`, model 'eval', kind 'correct',
'wrong', 'llm' or 'token_lookup', explainer 'ground_truth' (given texts), 'token_lookup', or the
LLM; its simulations and scores as for real nodes; the records in `activation_records` under the
same node_id. Each rule's AUROC is an `explanations` row of kind 'auroc' (no text, not selected)
with one `scores` row: split 'score', method 'auroc'. The settings JSON of every row holds the rule,
its set ('training' / 'held_out'), the seed and the simulator; settings_key hashes the settings
that change a result, so one SQL query compares simulators:

    SELECT simulator, simulate_prompt, settings->>'rule_set' AS rule_set, avg(s.value) AS auroc
    FROM explanations e JOIN scores s USING (explanation_id)
    WHERE e.purpose = 'eval' AND s.method = 'auroc' GROUP BY ALL ORDER BY ALL;
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

from sparse_model.errors import UserError

from ..explain import DEFAULT_PROMPT as DEFAULT_EXPLAIN_PROMPT, Explainer
from ..ground_truth import TRAINING, Rule, resolve_rules
from ..llm import LLMClient
from ..pipeline import AUROC, LLM, TOKEN_LOOKUP
from ..simulators import Simulator
from ..store import Store
from ..suite import EvalSettings, RuleResult, RuleRun, SuiteData, SuiteResult, run_rule
from .rows import Item, explanation_item, record_rows, row_id, settings_key, value_item

SUITE_VERSION = 2  # 2: rules from tokenize/ast (code_labels), the meaning family, token lookup always
EVAL_MODEL = "eval"
GIVEN = "ground_truth"  # explainer of the correct and wrong explanations


class _Saver:
    """The suite's rows for the store (see the module docstring)."""

    def __init__(self, store: Store | None, data: SuiteData, simulator: Simulator, llm: dict | None, s: EvalSettings,
                 explainer: Explainer | None = None):
        self.store, self.data, self.sim, self.s = store, data, simulator, s
        self.settings = {"suite": SUITE_VERSION, "run": data.run_name, "simulator": simulator.method,
                         "simulate_prompt": simulator.version, "llm": llm, "window": s.window,
                         "score_windows": s.score_windows, "explain_windows": s.explain_windows,
                         "n_windows": s.n_windows}
        self.explain_prompt = explainer.version if explainer is not None else None
        if explainer is not None:  # recovery: best-of-k settings and the explain prompt change its rows
            self.settings["recovery"] = {"explain_prompt": explainer.version, "k": s.explanations_per_rule,
                                         "calibrate_windows": s.calibrate_windows}
        self.key = settings_key(self.settings)
        self.llm_name = f"{llm['backend']}:{llm['model']}" if llm else None

    def node(self, rule: Rule, seed: int) -> str:
        return f"eval/{self.data.run_name}/{rule.name}/w{self.s.window}s{seed}"

    def _row(self, rule: Rule, seed: int, kind: str, text: str | None, candidate: int = 0, **kw: Any) -> dict:
        nid = self.node(rule, seed)
        row = {"explanation_id": row_id(self.key, nid, kind, candidate, text), "node_id": nid, "model": EVAL_MODEL,
               "kind": kind, "text": text, "candidate": candidate, "selected": kind != AUROC, "explainer": GIVEN,
               "simulator": self.sim.method, "simulate_prompt": self.sim.version, "settings_key": self.key,
               "settings": {**self.settings, "rule": rule.name, "rule_set": "training" if rule.name in TRAINING
                            else "held_out", "rule_kind": rule.kind, "rule_family": rule.family, "seed": seed},
               "failure": None, "raw_text": None, "purpose": "eval"}
        row.update(kw)
        return row

    def save(self, rule: Rule, run: RuleRun) -> None:
        if self.store is None:
            return
        seed = run.result.seed
        items: list[Item] = [explanation_item(self._row(rule, seed, kind, scored.text, candidate), run.windows, scored)
                             for kind, candidate, scored in run.scored]
        items.append(value_item(self._row(rule, seed, AUROC, None), "auroc", run.result.auroc))
        rec = run.recovery_windows or run.windows
        if run.baseline is not None:
            items.append(explanation_item(self._row(rule, seed, TOKEN_LOOKUP, run.baseline.text, explainer=TOKEN_LOOKUP,
                                                    simulator=TOKEN_LOOKUP, simulate_prompt=None), rec, run.baseline))
        if run.best is not None:
            for i, cand in enumerate(run.best.candidates):
                row = self._row(rule, seed, LLM, cand.text, i, explainer=self.llm_name, explain_prompt=self.explain_prompt,
                                selected=run.best.selected(i), failure=cand.failure, raw_text=cand.raw_text)
                items.append(explanation_item(row, rec, run.best.scored.get(i)))
        self.store.save_activation_records(EVAL_MODEL, self.node(rule, seed), record_rows(run.splits, seed))
        self.store.save_explanations(items)


def run_suite(data: SuiteData, simulator: Simulator, settings: EvalSettings | None = None,
              rules: Sequence[str] | None = None, store: Store | None = None, client: LLMClient | None = None,
              progress: Callable[[RuleResult], None] | None = None, explain_prompt: str = DEFAULT_EXPLAIN_PROMPT) -> SuiteResult:
    """Run the suite for one simulator. `client`: the LLM client, for the explainer (recovery) and
    to be closed at the end. `store`: a `Store` to keep every row (or None).
    `progress(result)` is called after each rule and seed. `explain_prompt`: the explainer's prompt file."""
    s = (settings or EvalSettings()).resolved(simulator.method)
    s.check()
    chosen = resolve_rules(rules)
    explainer = None
    if s.recovery:
        if client is None:
            raise UserError("explainer recovery needs an LLM; pass a backend")
        explainer = Explainer(client, prompt_name=explain_prompt)
    saver = _Saver(store, data, simulator, client.settings() if client is not None else None, s, explainer)
    out = SuiteResult(simulator=simulator.method, version=simulator.version)
    t0 = time.perf_counter()

    async def main() -> None:
        try:
            if explainer is not None:
                await client.probe()  # an unreachable server fails before any work
            for seed in s.seeds:
                for rule in chosen:
                    ex = explainer if seed == s.seeds[0] else None
                    run = await run_rule(rule, seed, data, simulator, s, ex)
                    saver.save(rule, run)
                    out.rules.append(run.result)
                    if progress:
                        progress(run.result)
        finally:
            if client is not None:
                await client.close()

    asyncio.run(main())
    out.seconds = time.perf_counter() - t0
    if store is not None:
        store.save_calibration(calibration_rows(out, data.run_name))
    return out


def calibration_rows(result: SuiteResult, run_name: str) -> list[dict]:
    """simulator_calibration rows (schema migration 6) from a suite's summary: per family and rule set."""
    rows = []
    for family, sets in result.summary().get("families", {}).items():
        for rule_set, g in sets.items():
            rows.append({"simulator_version": result.version, "simulator": result.simulator, "family": family,
                         "rule_set": rule_set, "suite_version": SUITE_VERSION, "run": run_name, "rules": g["rules"],
                         "seeds": g["correct"]["n"], "auroc": g["auroc"]["mean"], "correct_mean": g["correct"]["mean"],
                         "correct_std": g["correct"]["std"], "token_lookup_mean": g["token_lookup"]["mean"]})
    return rows


def to_json(result: SuiteResult) -> dict:
    return {"summary": result.summary(), "rules": [asdict(r) for r in result.rules]}
