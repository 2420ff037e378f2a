"""Explainer recovery on the ground-truth suite, embedded explainers side by side in one run: per model
and prompt, the mean score of the LLM's explanation of each rule neuron against the correct
explanation's and token lookup's, failures, and seconds (embedding simulator, one seed).

    python bench/explainer_recovery.py --run runs/standard [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b]
        [--prompts explain,explain_marked]

Tune prompts on the training rules; the held-out rows are the ones to report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.jobs.evaluate import run_suite  # noqa: E402
from explainer.llm import make_client  # noqa: E402
from explainer.simulators import EmbeddingSimulator  # noqa: E402
from explainer.suite import EvalSettings, SuiteData  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (its validation text and tokenizer)")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--prompts", default="explain_marked")
    args = ap.parse_args()
    data = SuiteData.from_run(args.run)
    settings = EvalSettings(seeds=(0,), recovery=True)
    rows = []
    for model in args.models.split(","):
        for prompt in args.prompts.split(","):
            t0 = time.perf_counter()
            res = run_suite(data, EmbeddingSimulator(), settings, client=make_client("local", model=model),
                            explain_prompt=prompt)
            seconds = time.perf_counter() - t0
            for rule_set, x in res.summary()["recovery"].items():
                ratio = x["llm"] / x["correct"] if x["llm"] is not None and x["correct"] else None
                rows.append((model, prompt, rule_set, x["rules"], x["failed"], x["llm"], x["correct"],
                             x["token_lookup"], ratio, seconds / len(res.rules)))
    print("| model | prompt | rules | n | failed | llm | correct | token lookup | llm / correct | s per rule |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    for r in rows:
        print("| " + " | ".join(fmt(v) for v in r) + " |")


if __name__ == "__main__":
    main()
