"""Detection and fuzzing on the ground-truth suite (`circuits eval --scorer`, bench/excerpt_scorers.py):
can a scorer tell a rule neuron's correct explanation from its wrong ones?

Per rule neuron and seed: the rule's records as the suite makes them (`suite.rule_records`); a test
set of `n` activating excerpts across activation deciles and `n` silent ones, from every split but
explain (each window once), cut to `size` tokens around the peak; the correct explanation and the
rule's wrong ones judged on the same excerpts. Discrimination, as the suite's AUROC: the fraction of
(correct, wrong) pairs where the correct explanation scores higher, ties 1/2, an undefined score
counting 0, pooled over the rules of a rule set and family. Two scores per explanation: balanced
accuracy of the answers and the AUROC of P(1).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

from .excerpt_scorers import ExcerptScorer
from .excerpt_scores import Excerpt, excerpt_sets
from .ground_truth import TRAINING, Rule, wrong_explanations
from .records import EXPLAIN
from .suite import SuiteData, discrimination_auroc, rule_records

METRICS = ("balanced_accuracy", "auroc")


@dataclass
class ExcerptRuleResult:
    rule: str
    family: str
    rule_set: str  # training | held_out
    seed: int
    scorer: str  # detection | fuzzing
    correct: dict[str, float | None]  # metric -> the correct explanation's score
    wrong: dict[str, list[float | None]]  # metric -> each wrong explanation's score
    prompt_tokens: float = 0.0  # per explanation
    failures: int = 0  # answers that were neither 1 nor 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def suite_excerpts(data: SuiteData, rule: Rule, seed: int, n: int, size: int,
                   window: int = 64) -> tuple[list[Excerpt], list[Excerpt]]:
    """(detection, fuzzing) excerpts of one rule neuron (see the module docstring)."""
    seen, records = set(), []
    for split, recs in rule_records(data, rule, window, seed).items():
        for r in recs:
            if split != EXPLAIN and r.start not in seen:
                seen.add(r.start)
                records.append((r.tokens, r.activations))
    return excerpt_sets(records, n, size, seed)


async def run_excerpt_rule(rule: Rule, seed: int, data: SuiteData, scorer: ExcerptScorer, n: int = 5,
                           size: int = 32) -> ExcerptRuleResult:
    t0 = time.perf_counter()
    detection, fuzzing = suite_excerpts(data, rule, seed, n, size)
    texts = [rule.explanation, *wrong_explanations(rule)]
    results = await scorer.judge_many(texts, detection if scorer.method == "detection" else fuzzing)
    return ExcerptRuleResult(
        rule=rule.name, family=rule.family, rule_set="training" if rule.name in TRAINING else "held_out", seed=seed,
        scorer=scorer.method, correct={m: getattr(results[0], m) for m in METRICS},
        wrong={m: [getattr(r, m) for r in results[1:]] for m in METRICS},
        prompt_tokens=sum(r.prompt_tokens for r in results) / len(results),
        failures=sum(len(r.failures) for r in results), seconds=time.perf_counter() - t0,
        notes=sorted({r.note for r in results if r.note}))


def pooled_discrimination(results: Sequence[ExcerptRuleResult], metric: str) -> float | None:
    """The suite's AUROC over every (correct, wrong) pair of these rules, by one metric."""
    wins = total = 0.0
    for r in results:
        a = discrimination_auroc([r.correct[metric]], r.wrong[metric])
        if a is not None:
            wins += a * len(r.wrong[metric])
            total += len(r.wrong[metric])
    return wins / total if total else None


def summarise(results: Sequence[ExcerptRuleResult]) -> list[dict]:
    """One row per scorer, rule set and family: discrimination by both metrics, the correct
    explanation's mean balanced accuracy, prompt tokens per explanation, failures."""
    rows = []
    keys = sorted({(r.scorer, r.rule_set, r.family) for r in results})
    for scorer, rule_set, family in keys:
        group = [r for r in results if (r.scorer, r.rule_set, r.family) == (scorer, rule_set, family)]
        correct = [r.correct["balanced_accuracy"] for r in group if r.correct["balanced_accuracy"] is not None]
        rows.append({"scorer": scorer, "rule_set": rule_set, "family": family, "rules": len({r.rule for r in group}),
                     "discrimination": pooled_discrimination(group, "balanced_accuracy"),
                     "discrimination_p": pooled_discrimination(group, "auroc"),
                     "correct_balanced_accuracy": sum(correct) / len(correct) if correct else None,
                     "prompt_tokens": sum(r.prompt_tokens for r in group) / len(group),
                     "failures": sum(r.failures for r in group)})
    return rows
