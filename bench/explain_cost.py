"""Seconds to explain one node, best of k, with the embedded explainers, side by side in one run: the
k candidates share their prompt, so llama.cpp keeps it in its context after the first candidate and
the later ones pay only for sampling. Compared with the same candidates when the context is cleared
before each one (what a server without prefix caching does), and with the default simulator's cost.

    python bench/explain_cost.py --run runs/tiny [--models qwen2.5-coder-0.5b,qwen2.5-coder-1.5b] [--k 3]

Nodes are the suite's training rule neurons (real code windows, the explain job's window counts).
Prints per model: seconds for candidate 0 (the prompt evaluated), each later candidate, the whole
best-of-k with and without reuse and the ratio, and the embedding simulator's seconds per node
(k candidates on 5 + 5 calibrate windows, the chosen one on 5 + 5 score windows).
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
from explainer.llm import make_client  # noqa: E402
from explainer.pipeline import pick_windows, simulate_split  # noqa: E402
from explainer.simulators import EmbeddingSimulator  # noqa: E402
from explainer.suite import EvalSettings, SuiteData, rule_records  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a trained run folder (its validation text and tokenizer)")
    ap.add_argument("--models", default="qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--k", type=int, default=3)
    args = ap.parse_args()
    data = SuiteData.from_run(args.run)
    s = EvalSettings(seeds=(0,))
    nodes = [pick_windows(rule_records(data, RULES[r], s.window, 0, s.n_windows), 5, 5, 5) for r in TRAINING]
    sim = EmbeddingSimulator()
    asyncio.run(simulate_split(sim, "warm-up", nodes[0].calibrate))  # the embedding model's load is not counted

    print(f"{len(nodes)} nodes, best of {args.k}, 5 explain windows of {s.window} tokens")
    print("| model | candidate 0 (s) | later candidate (s) | best of k, reuse (s) | best of k, no reuse (s) "
          "| no reuse / reuse | simulation per node (s) |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        client = make_client("local", model=model)
        explainer = Explainer(client)
        llm = client.backend.llm

        async def node(w, reuse: bool) -> list[float]:
            out = []
            for i in range(args.k):
                if not reuse:
                    llm.reset()
                t0 = time.perf_counter()
                await explainer.candidate(w.explain, i, seed=0)
                out.append(time.perf_counter() - t0)
            return out

        async def run() -> tuple[list[list[float]], list[list[float]], list[float]]:
            await node(nodes[0], True)  # warm-up: the model's load is not counted
            reuse, fresh, sims = [], [], []
            for w in nodes:
                llm.reset()
                reuse.append(await node(w, True))
                fresh.append(await node(w, False))
                t0 = time.perf_counter()
                for _ in range(args.k):
                    await simulate_split(sim, "the keyword return", w.calibrate)
                await simulate_split(sim, "the keyword return", w.score)
                sims.append(time.perf_counter() - t0)
            await client.close()
            return reuse, fresh, sims

        reuse, fresh, sims = asyncio.run(run())
        first = statistics.mean(t[0] for t in reuse)
        later = statistics.mean(x for t in reuse for x in t[1:]) if args.k > 1 else float("nan")
        total_reuse = statistics.mean(sum(t) for t in reuse)
        total_fresh = statistics.mean(sum(t) for t in fresh)
        print(f"| {model} | {first:.2f} | {later:.2f} | {total_reuse:.2f} | {total_fresh:.2f} | "
              f"{total_fresh / total_reuse:.2f}x | {statistics.mean(sims):.2f} |", flush=True)


if __name__ == "__main__":
    main()
