"""The ground-truth suite as a measurement on plain arrays: rule neurons with known explanations,
run through the same pipeline as real nodes (`explainer.pipeline`), and the numbers that say
whether a simulator can tell the right explanation from wrong ones. The job that runs it over a
trained run and stores every row is `explainer.jobs.evaluate` (`circuits eval`).

Per rule neuron and seed, the rule's activations over the run's validation windows go through the
same path as a real node's: `records.sample_records` and `records.split_records` (seeded), then
`pipeline.pick_windows`: the score split's first `score_windows` top windows plus as many random
ones, the explain split's first `explain_windows` top windows for the explainer and the token-lookup
baseline. The seed also shuffles the order of the windows before sampling, so ties between windows
of equal maximum (binary rules) are broken differently per seed.

- Discrimination. The correct explanation and each wrong one are simulated by the same simulator
  on the same score windows and scored by pooled correlation. AUROC = the fraction of (correct,
  wrong) pairs where the correct explanation scores higher, ties 1/2 (`scoring.auroc`), pooled
  over the pairs of all rules of a set (training / held-out). An undefined correlation (the
  simulator predicted the same value on every token, or every simulation failed) counts as 0.0:
  the simulator got no linear signal from that explanation. So a constant simulator scores 0.5
  and a simulator that knows the rule scores 1. Mean, standard deviation, min and max over seeds.
- Explainer recovery (optional; needs an LLM): the LLM explains each rule neuron from its top
  windows exactly as the explain job explains a real node (`pipeline.best_of_k`: k candidates, the
  best by its score on the calibrate split's windows), the chosen explanation is scored on the
  score windows like the others, and compared with the correct explanation's score and the
  token-lookup baseline's (both on the same score windows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from sparse_model.errors import UserError
from sparse_model.run import Run

from . import scoring
from .explain import Explainer
from .ground_truth import FAMILIES, TOKEN_SYNTAX, TRAINING, Rule, rule_activations, wrong_explanations
from .code_labels import CodeLabels, label_stream
from .pipeline import CORRECT, WRONG, BestOfK, ScoredExplanation, Windows, best_of_k, best_of_k_sizes, pick_windows, \
    simulate_and_score, token_lookup
from .records import ActivationRecord, sample_records, split_records, token_table, window_starts
from .simulators import Simulator


@dataclass(frozen=True)
class EvalSettings:
    window: int = 64  # tokens per window
    score_windows: int = 5  # top windows and as many random ones scored per explanation
    explain_windows: int = 5  # top windows shown to the explainer (and to the token-lookup baseline)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_windows: int | None = None  # windows cut from the validation split (default: records.MAX_WINDOWS)
    recovery: bool = False  # explain every rule neuron with the LLM (seed seeds[0] only)
    # recovery: best-of-k, as the explain job's explanations_per_node and calibrate windows (top and as
    # many random ones that pick the best candidate); None: by simulator (pipeline.best_of_k_sizes)
    explanations_per_rule: int | None = None
    calibrate_windows: int | None = None

    def check(self) -> None:
        if self.window < 2:
            raise UserError(f"--window must be at least 2 tokens, got {self.window}")
        if self.score_windows < 1 or self.explain_windows < 1:
            raise UserError("--score-windows and --explain-windows must be at least 1")
        if any(v is not None and v < 1 for v in (self.explanations_per_rule, self.calibrate_windows)):
            raise UserError("--explanations-per-rule and --calibrate-windows must be at least 1")
        if not self.seeds:
            raise UserError("--seeds must be at least 1")

    def resolved(self, simulator_method: str) -> "EvalSettings":
        """These settings with best-of-k's unset sizes filled in for the simulator in use."""
        k, calibrate = best_of_k_sizes(simulator_method, self.explanations_per_rule, self.calibrate_windows)
        return replace(self, explanations_per_rule=k, calibrate_windows=calibrate)


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
    token_lookup: float | None = None  # the token-lookup baseline on the same score windows
    llm_candidates: list[str | None] = field(default_factory=list)  # every candidate, None where unusable
    family: str = TOKEN_SYNTAX  # token/syntax | meaning (ground_truth.FAMILIES)


@dataclass
class SuiteResult:
    simulator: str  # method
    version: str  # simulator / prompt version
    rules: list[RuleResult] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        return summarise(self.rules) | {"simulator": self.simulator, "version": self.version, "seconds": self.seconds}


# ---- measurements ---------------------------------------------------------------------------


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


def summarise(results: Sequence[RuleResult]) -> dict[str, Any]:
    """AUROC per rule set: pooled over the set's rules per seed, then mean/std/min/max over seeds;
    and the explainer-recovery means per rule set."""
    out: dict[str, Any] = {}
    seeds = sorted({r.seed for r in results})
    for rule_set in ("training", "held_out"):
        per_seed = [pooled_auroc([r for r in results if r.rule_set == rule_set and r.seed == s]) for s in seeds]
        out[rule_set] = _stats(per_seed)
    for family in FAMILIES:
        for rule_set in ("training", "held_out"):
            group = [r for r in results if r.rule_set == rule_set and r.family == family]
            if group:
                out.setdefault("families", {}).setdefault(family, {})[rule_set] = _group(group, seeds)
    for rule_set in ("training", "held_out"):
        rec = [r for r in results if r.rule_set == rule_set and (r.llm_explanation is not None or r.llm_failure is not None)]
        if rec:
            out.setdefault("recovery", {})[rule_set] = _recovery(rec)
    return out


def _group(group: Sequence[RuleResult], seeds: Sequence[int]) -> dict[str, Any]:
    """One family's rules in one rule set: AUROC, and the mean scores of the correct explanation
    and of token lookup, each pooled over the rules per seed, then mean/std/min/max over seeds.
    `correct` is the calibration a reader needs: what a right explanation scores under this
    simulator on rules of this family."""
    by_seed = [[r for r in group if r.seed == s] for s in seeds]
    by_seed = [g for g in by_seed if g]
    return {"rules": len({r.rule for r in group}),
            "auroc": _stats([pooled_auroc(g) for g in by_seed]),
            "correct": _stats([float(np.mean([_defined(r.correct) for r in g])) for g in by_seed]),
            "token_lookup": _stats([scoring.mean_defined([r.token_lookup for r in g]) for g in by_seed])}


def _recovery(rec: Sequence[RuleResult]) -> dict[str, Any]:
    """Explainer recovery over some rules: mean scores of the LLM's, the correct and the token-lookup
    explanations, failures, and how often the LLM's beats token lookup or matches the correct one."""
    mean = scoring.mean_defined
    return {"rules": len(rec), "failed": sum(r.llm_explanation is None for r in rec),
            "llm": mean([r.llm_score for r in rec]), "correct": mean([r.correct for r in rec]),
            "token_lookup": mean([r.token_lookup for r in rec]),
            "llm_beats_token_lookup": mean([float(_defined(r.llm_score) > _defined(r.token_lookup)) for r in rec]),
            "llm_at_least_correct": mean([float(_defined(r.llm_score) >= _defined(r.correct)) for r in rec])}


@dataclass
class SuiteData:
    """A run's validation text, labelled once for every rule (`code_labels`)."""

    run_name: str
    val: np.ndarray
    table: list[str]
    labels: CodeLabels

    @classmethod
    def from_run(cls, run_dir) -> "SuiteData":
        run = Run(run_dir)
        val = np.asarray(run.val_tokens())
        table = token_table(run.tokenizer)
        return cls(run_name=run.name, val=val, table=table, labels=label_stream(table, val))


def rule_records(data: SuiteData, rule: Rule, window: int, seed: int,
                 n_windows: int | None = None) -> dict[str, list[ActivationRecord]]:
    """One rule neuron's records by split, exactly as for a real node (see the module docstring)."""
    starts = window_starts(len(data.val), window, n_windows)
    acts = rule_activations(rule, data.labels, starts, window)
    order = np.random.default_rng(seed).permutation(len(starts))
    records = sample_records(acts[order], starts[order], data.val, data.table, seed=seed)
    return split_records(records, seed=seed)


def rule_windows(splits: dict[str, list[ActivationRecord]], s: EvalSettings) -> Windows:
    """The explain windows (top only) and the score windows (n top + n random); no calibration."""
    return pick_windows(splits, explain=s.explain_windows, calibrate=0, score=s.score_windows)


@dataclass
class RuleRun:
    """Everything one rule neuron and seed produced: its records, windows, every scored
    explanation as (kind, candidate, scored), and the LLM's candidates (explainer recovery, made
    and judged on `recovery_windows`: the score windows plus calibrate windows)."""

    result: RuleResult
    splits: dict[str, list[ActivationRecord]]
    windows: Windows
    scored: list[tuple[str, int, ScoredExplanation]] = field(default_factory=list)
    recovery_windows: Windows | None = None
    baseline: ScoredExplanation | None = None  # token lookup, on the recovery windows
    best: BestOfK | None = None


async def run_rule(rule: Rule, seed: int, data: SuiteData, simulator: Simulator, s: EvalSettings,
                   explainer: Explainer | None = None) -> RuleRun:
    """Score the rule's correct and wrong explanations (and, with an explainer, the LLM's own and
    the token-lookup baseline) on the rule neuron's score windows."""
    t0 = time.perf_counter()
    s = s.resolved(simulator.method)
    splits = rule_records(data, rule, s.window, seed, s.n_windows)
    windows = rule_windows(splits, s)
    run = RuleRun(RuleResult(rule=rule.name, rule_set="training" if rule.name in TRAINING else "held_out", seed=seed,
                             correct=None, wrong={}, auroc=None, family=rule.family), splits, windows)

    async def scored(kind: str, text: str, candidate: int = 0) -> float | None:
        result = await simulate_and_score(simulator, text, windows)
        run.scored.append((kind, candidate, result))
        return result.score

    r = run.result
    r.correct = await scored(CORRECT, rule.explanation)
    for i, w in enumerate(wrong_explanations(rule)):
        r.wrong[w] = await scored(WRONG, w, candidate=i)
    r.auroc = discrimination_auroc([r.correct], list(r.wrong.values()))
    if explainer is None:
        run.baseline = token_lookup(windows)
        r.token_lookup = run.baseline.score
    else:
        run.recovery_windows = rec = pick_windows(splits, s.explain_windows, s.calibrate_windows, s.score_windows)
        run.baseline = token_lookup(rec)
        r.token_lookup = run.baseline.score
        run.best = best = await best_of_k(explainer, simulator, rec, s.explanations_per_rule, seed=seed)
        r.llm_explanation, r.llm_score = best.text, best.score
        r.llm_failure = best.candidates[0].failure if best.chosen is None else None
        r.llm_candidates = [c.text for c in best.candidates]
    r.seconds = time.perf_counter() - t0
    return run
