"""How the explainer's score grows with k in best-of-k, from one run: per rule neuron of the
ground-truth suite, K candidates are written once (candidate 0 greedy, the rest sampled, the shared
prompt evaluated once), each is simulated on the calibrate and the score windows, and best-of-k for
every k <= K is read off the same candidates (the first k, the best by calibrate correlation), so
the columns compare side by side. "oracle" is the best candidate by its score-window correlation:
what a perfect selector would reach, an upper bound and not a result. "best fact" is no LLM at
all: the lexer description that fits the marked tokens best (`pipeline.fact_lookup`), scored alike.
With `--simulators plain,literal` the same candidates are scored under both embedding simulators
(without and with literal tokens, `simulators.literal`), one table each.

    python bench/best_of_k.py --run runs/tiny [--model qwen2.5-coder-1.5b] [--prompt explain_marked_facts]
        [--rule-set training|held_out] [--K 16] [--ks 1,3,8,16] [--calibrate-windows 5]
        [--seed 0] [--simulators plain,literal] [--detail]

Tune on the training rules; report the held-out rows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.explain import DEFAULT_PROMPT, Explainer  # noqa: E402
from explainer.ground_truth import HELD_OUT, RULES, TRAINING  # noqa: E402
from explainer.llm import make_client  # noqa: E402
from explainer.llm.local import DEFAULT_MODEL  # noqa: E402
from explainer.pipeline import fact_lookup, pick_windows, simulate_and_score, token_lookup  # noqa: E402
from explainer.simulators import EMBEDDING, EmbeddingSimulator  # noqa: E402
from explainer.simulators.embedding import DEFAULT_FACTS_VERSION, DEFAULT_LITERAL  # noqa: E402
from explainer.suite import EvalSettings, SuiteData, rule_records  # noqa: E402


def calibrate_of(scored) -> float:
    found = scored.scores.get("calibrate")
    return float("-inf") if found is None or found.correlation is None else found.correlation


def held_out_of(scored) -> float:
    return 0.0 if scored.score is None else scored.score  # an undefined score counts as 0, as in the suite


async def run_rule(rule, data, simulators: dict, explainer, s: EvalSettings, K: int, seed: int) -> dict:
    """{simulator name: the rule's results under it}; the K candidates are written once and
    scored under every simulator."""
    splits = rule_records(data, rule, s.window, seed, s.n_windows)
    windows = pick_windows(splits, s.explain_windows, s.calibrate_windows, s.score_windows)
    texts, times = {}, {}
    for batch in explainer.batches(K):  # as the explain job writes them; a batch's time is shared out
        t0 = time.perf_counter()
        for i, cand in zip(batch, await explainer.candidates(windows.explain, batch, seed=seed)):
            texts[i], times[i] = cand.text, (time.perf_counter() - t0) / len(batch)
    lookup, out = held_out_of(token_lookup(windows)), {}
    for name, simulator in simulators.items():
        correct = await simulate_and_score(simulator, rule.explanation, windows)
        fact = await fact_lookup(simulator, windows)
        cands = [(texts[i], await simulate_and_score(simulator, texts[i], windows) if texts[i] is not None else None)
                 for i in range(K)]
        out[name] = dict(correct=held_out_of(correct), lookup=lookup,
                         fact=0.0 if fact is None else held_out_of(fact), fact_text=fact and fact.text, cands=cands,
                         times=[times[i] for i in range(K)])
    return out


def best_of(cands, k: int) -> tuple[str | None, float]:
    usable = [(calibrate_of(sc), -i, text, held_out_of(sc)) for i, (text, sc) in enumerate(cands[:k]) if sc is not None]
    if not usable:
        return None, 0.0
    _, _, text, score = max(usable)
    return text, score


def table(results: dict, version: str, args, s: EvalSettings, ks: list[int]) -> None:
    families = sorted({f for f, _ in results.values()})
    print(f"\n{args.model}, {args.prompt}, {version}, {args.rule_set} rules, seed {args.seed}, K {args.K}, "
          f"{s.calibrate_windows} + {s.calibrate_windows} calibrate windows "
          f"(mean held-out score; best of the first k candidates by calibrate correlation)")
    print("| family | rules | correct | token lookup | best fact (no LLM) | " + " | ".join(f"k={k}" for k in ks) + " | oracle | "
          + " | ".join(f"k={k} / correct" for k in (ks[0], ks[-1])) + " |")
    print("|---" * (6 + len(ks) + 2) + "|")
    for fam in families + ["all"]:
        group = [r for f, r in results.values() if fam in (f, "all")]
        correct = np.mean([r["correct"] for r in group])
        means = [np.mean([best_of(r["cands"], k)[1] for r in group]) for k in ks]
        oracle = np.mean([max([held_out_of(sc) for _, sc in r["cands"] if sc is not None] or [0.0]) for r in group])
        print(f"| {fam} | {len(group)} | {correct:.3f} | {np.mean([r['lookup'] for r in group]):.3f} | "
              f"{np.mean([r['fact'] for r in group]):.3f} | "
              + " | ".join(f"{m:.3f}" for m in means) + f" | {oracle:.3f} | "
              + " | ".join(f"{m / correct:.2f}" for m in (means[0], means[-1])) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--rule-set", choices=["training", "held_out"], default="training")
    ap.add_argument("--K", type=int, default=16)
    ap.add_argument("--ks", default="1,2,3,4,8,12,16,24,32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calibrate-windows", type=int, default=None,
                    help="top and as many random windows that pick the best candidate (default: the embedding "
                         "simulator's, see pipeline.best_of_k_sizes)")
    ap.add_argument("--facts-version", type=int, default=DEFAULT_FACTS_VERSION, help="the embedding simulator's facts version")
    ap.add_argument("--simulators", default="literal" if DEFAULT_LITERAL else "plain",
                    help="comma-separated: plain (facts only), literal (facts and tokens named literally)")
    ap.add_argument("--detail", action="store_true")
    args = ap.parse_args()
    ks = [k for k in map(int, args.ks.split(",")) if k <= args.K]
    names = TRAINING if args.rule_set == "training" else HELD_OUT
    rules = [RULES[n] for n in names]
    data = SuiteData.from_run(args.run)
    s = EvalSettings(calibrate_windows=args.calibrate_windows).resolved(EMBEDDING)
    choices = {"plain": False, "literal": True}
    if bad := [n for n in args.simulators.split(",") if n not in choices]:
        ap.error(f"unknown simulator {bad[0]}; choose from plain, literal")
    simulators = {n: EmbeddingSimulator(facts_version=args.facts_version, literal=choices[n])
                  for n in args.simulators.split(",")}
    explainer = Explainer(make_client("local", model=args.model), prompt_name=args.prompt)
    by_sim: dict[str, dict] = {n: {} for n in simulators}
    for n, rule in enumerate(rules, 1):
        out = asyncio.run(run_rule(rule, data, simulators, explainer, s, args.K, args.seed))
        for name, res in out.items():
            by_sim[name][rule.name] = (rule.family, res)
        res = out[next(iter(simulators))]
        picks = {k: best_of(res["cands"], k) for k in ks}
        line = " ".join(f"k{k} {v:.2f}" for k, (_, v) in picks.items())
        print(f"[{n}/{len(rules)}] {rule.name} ({rule.family}): correct {res['correct']:.2f} lookup "
              f"{res['lookup']:.2f} best fact {res['fact']:.2f} | {line} | first {res['times'][0]:.1f}s, later "
              f"{np.mean(res['times'][1:]) if len(res['times']) > 1 else 0:.2f}s each", flush=True)
        if args.detail:
            for i, (text, sc) in enumerate(res["cands"]):
                cal = calibrate_of(sc) if sc is not None else None
                print(f"    {i:2d} cal {cal if cal is None else round(cal, 2)} held-out "
                      f"{None if sc is None else round(held_out_of(sc), 2)} {text!r}")
    for name, simulator in simulators.items():
        table(by_sim[name], simulator.version, args, s, ks)
    results = by_sim[next(iter(simulators))]
    times = [t for _, r in results.values() for t in r["times"]]
    first = [r["times"][0] for _, r in results.values()]
    later = [t for _, r in results.values() for t in r["times"][1:]]
    print(f"\nseconds: first candidate {np.mean(first):.2f}, each later one "
          f"{np.mean(later) if later else float('nan'):.2f}; per rule {sum(times) / len(results):.1f} (all {sum(times):.0f} s)")


if __name__ == "__main__":
    main()
