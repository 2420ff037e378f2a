"""Explainer recovery on the ground-truth suite, embedded explainers side by side in one run: per model
and prompt, the mean score of the LLM's explanation of each rule neuron (best of k, as the explain job
explains a node) against the correct explanation's and token lookup's, failures, and seconds per rule
(embedding simulator, one seed).

    python bench/explainer_recovery.py --run runs/demo [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b]
        [--prompts explain,explain_marked] [--rule-set training|held_out|all] [--k 32] [--detail] [--seed 0]

Tune prompts on the training rules (`--rule-set training --detail` shows every explanation); the
held-out rows are the ones to report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.ground_truth import HELD_OUT, TRAINING  # noqa: E402
from explainer.jobs.evaluate import run_suite  # noqa: E402
from explainer.llm import make_client  # noqa: E402
from explainer.simulators import EmbeddingSimulator  # noqa: E402
from explainer.suite import EvalSettings, SuiteData  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (its validation text and tokenizer)")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--prompts", default="explain_marked")
    ap.add_argument("--rule-set", choices=["training", "held_out", "all"], default="all")
    ap.add_argument("--k", type=int, default=None, help="candidates per rule (best of k on the calibrate windows; "
                    "default the embedding simulator's, see pipeline.best_of_k_sizes)")
    ap.add_argument("--detail", action="store_true", help="print every rule's candidates and scores")
    ap.add_argument("--seed", type=int, default=0, help="record sample and candidate seed")
    args = ap.parse_args()
    rules = {"training": list(TRAINING), "held_out": list(HELD_OUT), "all": None}[args.rule_set]
    data = SuiteData.from_run(args.run)
    settings = EvalSettings(seeds=(args.seed,), recovery=True, explanations_per_rule=args.k)
    rows = []
    for model in args.models.split(","):
        for prompt in args.prompts.split(","):
            t0 = time.perf_counter()
            res = run_suite(data, EmbeddingSimulator(), settings, rules=rules, client=make_client("local", model=model),
                            explain_prompt=prompt)
            seconds = time.perf_counter() - t0
            if args.detail:
                for r in res.rules:
                    print(f"{model} {prompt} {r.rule}: llm {fmt(r.llm_score)} correct {fmt(r.correct)} "
                          f"lookup {fmt(r.token_lookup)} | chosen {r.llm_explanation!r} | all {r.llm_candidates}"
                          + (f" | failure {r.llm_failure}" if r.llm_failure else ""), flush=True)
            for rule_set, x in res.summary()["recovery"].items():
                ratio = x["llm"] / x["correct"] if x["llm"] is not None and x["correct"] else None
                rows.append((model, prompt, rule_set, x["rules"], x["failed"], x["llm"], x["correct"],
                             x["token_lookup"], ratio, seconds / len(res.rules)))
    print("| model | prompt | rules | n | failed | llm | correct | token lookup | llm / correct | s per rule |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(fmt(v) for v in r) + " |")


def fmt(v) -> str:
    return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()
