"""Detection and fuzzing on the ground-truth suite, side by side with the embedding simulator, in one run.

Per rule neuron and seed (held-out rules by default), `explainer/excerpt_suite.py`: --n activating
and --n silent excerpts of --excerpt tokens; the correct explanation and the wrong ones judged on
them by each scorer. Printed per family:

- discrimination: the suite's AUROC (correct above wrong, ties 1/2, pooled over rules), by the
  balanced accuracy of the 1/0 answers and by the AUROC of P(1);
- the embedding simulator's discrimination on the same rules and seeds (`circuits eval`'s number);
- cost per explanation in prompt tokens, against the all-at-once simulator's prompt on the suite's
  score windows (10 windows of 64 tokens), both counted by the embedded model's tokenizer;
- seconds per explanation.

    python bench/excerpt_scorers.py runs/demo [--model qwen2.5-coder-0.5b] [--rules held_out] [--n 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from explainer.excerpt_scorers import SCORERS  # noqa: E402
from explainer.excerpt_suite import run_excerpt_rule, summarise  # noqa: E402
from explainer.ground_truth import FAMILIES, HELD_OUT, RULES, TRAINING  # noqa: E402
from explainer.suite import EvalSettings, SuiteData, rule_records, rule_windows  # noqa: E402


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--backend", default="local")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--base-url", default=None)
    ap.add_argument("--rules", default="held_out", help="held_out, training, or rule names joined by commas")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--n", type=int, default=5, help="activating and as many silent excerpts per explanation")
    ap.add_argument("--excerpt", type=int, default=32, help="tokens per excerpt")
    ap.add_argument("--scorers", default="detection,fuzzing")
    ap.add_argument("--per-prompt", type=int, default=1, help="excerpts per prompt (more: answers only, no P(1))")
    ap.add_argument("--no-embedding", action="store_true", help="skip the embedding simulator's column")
    args = ap.parse_args()

    from explainer.llm import make_client
    from explainer.prompts import all_at_once_prompt, load_prompt

    names = {"held_out": HELD_OUT, "training": TRAINING}.get(args.rules) or tuple(args.rules.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    data = SuiteData.from_run(args.run)
    client = make_client(args.backend, model=args.model, base_url=args.base_url)
    scorers = [SCORERS[s](client, per_prompt=args.per_prompt) for s in args.scorers.split(",")]
    results = []

    async def run() -> None:
        await client.probe()
        for name in names:
            for seed in seeds:
                for scorer in scorers:
                    r = await run_excerpt_rule(RULES[name], seed, data, scorer, args.n, args.excerpt)
                    results.append(r)
                    print(f"{name:24s} {r.family:12s} {r.scorer:9s} correct ba {_f(r.correct['balanced_accuracy'])} "
                          f"p-auroc {_f(r.correct['auroc'])}; wrong ba "
                          f"{_f(np.mean([w or 0 for w in r.wrong['balanced_accuracy']]))}; "
                          f"{r.prompt_tokens:.0f} tokens, {r.seconds:.1f} s, {r.failures} failures "
                          + " ".join(r.notes), flush=True)

    t0 = time.perf_counter()
    asyncio.run(run())
    total = time.perf_counter() - t0
    print(f"\n{args.backend}:{client.settings()['model']}, rules {args.rules}, seeds {seeds}, {args.n}+{args.n} "
          f"excerpts of {args.excerpt} tokens, {args.per_prompt} per prompt, {total:.0f} s in all")
    print(f"{'scorer':10s} {'rule set':9s} {'family':13s} {'rules':>5s} {'disc. (ba)':>10s} {'disc. (P)':>10s} "
          f"{'correct ba':>10s} {'tokens':>7s} {'failures':>8s}")
    for row in summarise(results):
        print(f"{row['scorer']:10s} {row['rule_set']:9s} {row['family']:13s} {row['rules']:5d} "
              f"{_f(row['discrimination']):>10s} {_f(row['discrimination_p']):>10s} "
              f"{_f(row['correct_balanced_accuracy']):>10s} {row['prompt_tokens']:7.0f} {row['failures']:8d}")

    llm = getattr(client.backend, "llm", None)
    sim_prompt = load_prompt("simulate")
    aao = []
    for name in names:
        windows = rule_windows(rule_records(data, RULES[name], 64, seeds[0]), EvalSettings())
        texts = [all_at_once_prompt(sim_prompt, RULES[name].explanation, w.tokens)[0] for w in windows.score]
        aao.append(sum(len(llm.tokenize(t.encode(), add_bos=False, special=True)) if llm else len(t) // 4
                       for t in texts))
    for scorer in scorers:
        mine = [r for r in results if r.scorer == scorer.method]
        per = np.mean([r.prompt_tokens for r in mine])
        secs = sum(r.seconds for r in mine) / sum(1 + len(r.wrong["balanced_accuracy"]) for r in mine)
        print(f"{scorer.method}: {per:.0f} prompt tokens per explanation, the all-at-once simulator {np.mean(aao):.0f} "
              f"on the score windows: {per / np.mean(aao):.2f}x; {secs:.1f} s per explanation")
    if not args.no_embedding:
        from explainer.jobs.evaluate import run_suite
        from explainer.simulators.embedding import EmbeddingSimulator

        res = run_suite(data, EmbeddingSimulator(), EvalSettings(seeds=tuple(seeds)), rules=list(names))
        for family in FAMILIES:
            group = [r for r in res.rules if r.family == family]
            if group:
                wins = sum(r.auroc * len(r.wrong) for r in group if r.auroc is not None)
                n = sum(len(r.wrong) for r in group if r.auroc is not None)
                print(f"embedding simulator, {family}: discrimination {_f(wins / n if n else None)}")


if __name__ == "__main__":
    main()
