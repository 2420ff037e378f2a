"""Seconds to explain one node, best of k with the default simulator, with the embedded explainers,
side by side in one run: the k candidates written one request after another (each pays its own
decode steps; the shared prompt stays in llama.cpp's context), against the sampled candidates
decoded side by side in one request (`explainer.llm.batched`, the default).

    python bench/explain_cost.py --run runs/tiny [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--k 32]

Nodes are the suite's training rule neurons (real code windows, the explain job's window counts
for the embedding simulator). Each node is explained once per way, the context cleared before each
so both pay for the prompt once; the order of the two ways alternates from node to node. Prints per
model and way: seconds per node (mean and max), the share spent in the LLM, generated tokens per
candidate, and the mean held-out score of the chosen explanation (the two ways sample differently,
so the scores differ by chance, not by design); then the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.explain import Explainer  # noqa: E402
from explainer.ground_truth import RULES, TRAINING  # noqa: E402
from explainer.llm import SAMPLES, make_client  # noqa: E402
from explainer.pipeline import best_of_k, best_of_k_sizes, pick_windows, simulate_split  # noqa: E402
from explainer.simulators import EMBEDDING, EmbeddingSimulator  # noqa: E402
from explainer.suite import EvalSettings, SuiteData, rule_records  # noqa: E402

WAYS = ("one by one", "side by side")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (its validation text and tokenizer)")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--k", type=int, default=None, help="candidates per node (default: the embedding simulator's)")
    ap.add_argument("--nodes", type=int, default=8, help="how many training rule neurons")
    args = ap.parse_args()
    k, calibrate = best_of_k_sizes(EMBEDDING, args.k, None)
    data = SuiteData.from_run(args.run)
    s = EvalSettings(seeds=(0,))
    nodes = [pick_windows(rule_records(data, RULES[r], s.window, 0, s.n_windows), s.explain_windows, calibrate,
                          s.score_windows) for r in TRAINING[:args.nodes]]
    sim = EmbeddingSimulator()
    asyncio.run(simulate_split(sim, "warm-up", nodes[0].calibrate))  # the embedding model's load is not counted

    print(f"{len(nodes)} nodes, best of {k}, {s.explain_windows} explain windows of {s.window} tokens, "
          f"{calibrate} + {calibrate} calibrate windows, the embedding simulator")
    print("| model | candidates written | s per node | max | LLM share | tokens per candidate | held-out score |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        clients = {way: make_client("local", model=model) for way in WAYS}
        clients["one by one"].backend.capabilities -= {SAMPLES}
        explainers = {way: Explainer(c) for way, c in clients.items()}
        llm = clients[WAYS[0]].backend.llm  # both backends share the one loaded model

        async def run() -> dict[str, list[tuple[float, float, float, float]]]:
            await explainers[WAYS[1]].explain(nodes[0].explain, 2)  # warm-up: the model's load is not counted
            out: dict[str, list] = {way: [] for way in WAYS}
            for n, w in enumerate(nodes):
                for way in (WAYS if n % 2 == 0 else WAYS[::-1]):
                    llm.reset()
                    usage = clients[way].usage
                    llm_s, tokens = usage.seconds, usage.completion_tokens
                    t0 = time.perf_counter()
                    found = await best_of_k(explainers[way], sim, w, k)
                    total = time.perf_counter() - t0
                    out[way].append((total, usage.seconds - llm_s, (usage.completion_tokens - tokens) / k,
                                     found.score or 0.0))
            return out

        results = asyncio.run(run())
        for way in WAYS:
            rows = results[way]
            total = statistics.mean(r[0] for r in rows)
            print(f"| {model} | {way} | {total:.1f} | {max(r[0] for r in rows):.1f} | "
                  f"{sum(r[1] for r in rows) / sum(r[0] for r in rows):.0%} | "
                  f"{statistics.mean(r[2] for r in rows):.1f} | {statistics.mean(r[3] for r in rows):.3f} |")
        ratio = statistics.mean(r[0] for r in results[WAYS[0]]) / statistics.mean(r[0] for r in results[WAYS[1]])
        print(f"| {model} | one by one / side by side | {ratio:.2f}x | | | | |", flush=True)


if __name__ == "__main__":
    main()
