"""How faithful is each simulator? The ground-truth suite by rule family (token/syntax, meaning) and
rule set (training: tuned on; held-out: reported), mean ± spread over seeds, side by side in one run:

- AUROC: the correct explanation scored above the rule's wrong ones (targets, held-out: at least
  0.95 on token/syntax rules, 0.9 on meaning rules);
- correct: the correct explanation's mean score (targets: 0.75 token/syntax, 0.6 meaning, and above
  token lookup's on each family) — what a right explanation scores under this simulator;
- token lookup: the baseline "mean activation of each token in the top windows", same windows;
- the time to simulate one explanation on 20 windows of 64 tokens (target: at most 2 s), cold (new
  windows) and warm (a new explanation on windows already described, as best-of-k's candidates).

    python bench/simulator_faithfulness.py --run runs/tiny [--only embedding,trained] [--seeds 0,1,2]
        [--rules held_out|training|NAME,...] [--weights FILE]

Settings are the `circuits eval` defaults (64-token windows, 5 top + 5 random score windows).
Each simulator gets its own embedding cache; the embedding model's load is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.ground_truth import FAMILIES, HELD_OUT, RULES, TRAINING  # noqa: E402
from explainer.jobs.evaluate import run_suite  # noqa: E402
from explainer.suite import EvalSettings, SuiteData, rule_records  # noqa: E402
from explainer.simulators.embedding import Embedder, EmbeddingSimulator, _load_model  # noqa: E402
from explainer.simulators.trained import WEIGHTS, TrainedSimulator  # noqa: E402

TARGETS = {"token/syntax": (0.95, 0.75), "meaning": (0.9, 0.6)}  # held-out AUROC, correct mean


def _emb(**kw):
    return lambda: (EmbeddingSimulator(embedder=Embedder(), **kw), None)


def _llm(model: str, prompt_name: str = "simulate"):
    def make():
        from explainer.llm import make_client
        from explainer.simulators import make_simulator

        client = make_client("local", model=model)
        return make_simulator(client, "all_at_once", prompt_name=prompt_name), client
    return make


WEIGHTS_PATH = [WEIGHTS]  # --weights


def _trained():
    return lambda: (TrainedSimulator(weights=WEIGHTS_PATH[0]), None)


CANDIDATES = {
    "embedding": _emb(),  # the default
    "trained": _trained(),  # the head trained on generated rules (simulators.trained), --weights
    "embedding_plain": _emb(literal=False),  # facts v4 without literal tokens
    "embedding_literal": _emb(literal=True),  # facts v4 and the tokens an explanation names literally
    "embedding_lists": _emb(lists=True),  # also the tokens named in plain lists of examples ("such as int, str")
    "embedding_v5": _emb(facts_version=5),
    "embedding_v3": _emb(facts_version=3),
    "embedding_v2": _emb(facts_version=2),
    "embedding_v1": _emb(facts_version=1),
    "all_at_once_qwen_0_5b": _llm("qwen2.5-coder-0.5b"),
    "all_at_once_qwen_1_5b": _llm("qwen2.5-coder-1.5b"),
}


def _pm(x: dict) -> str:
    return "   n/a      " if x["mean"] is None else f"{x['mean']:6.3f} ± {x['std']:.3f}"


def simulate_seconds(data: SuiteData, make, repeats: int = 3) -> tuple[float, float]:
    """Seconds to simulate one (new) explanation on 20 windows of 64 tokens: cold (the first
    explanation on windows the simulator has not seen: their token descriptions are built and
    embedded) and warm (each repeat a new explanation on the same windows, as best-of-k's later
    candidates are)."""
    sim, client = make()
    splits = rule_records(data, RULES["return_keyword"], 64, 0)
    windows = [r.tokens for split in splits.values() for r in split][:20]

    async def go() -> tuple[float, float]:
        try:
            t0 = time.perf_counter()
            await sim.simulate_windows("a warm-up explanation", windows)
            cold = time.perf_counter() - t0
            t0 = time.perf_counter()
            for i in range(repeats):
                await sim.simulate_windows(f"the {i}th explanation of a node about names", windows)
            return cold, (time.perf_counter() - t0) / repeats
        finally:
            if client is not None:
                await client.close()
    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run folder (its validation tokens are the text)")
    ap.add_argument("--only", default="embedding,embedding_v5,embedding_v3", help="comma-separated: " + ", ".join(CANDIDATES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--rules", default=None, help="comma-separated rule names, or 'held_out' or 'training' (default all)")
    ap.add_argument("--window", type=int, default=64, help="tokens per window (LLM simulators: 32 fits in minutes)")
    ap.add_argument("--score-windows", type=int, default=5, help="top windows and as many random ones scored")
    ap.add_argument("--weights", default=str(WEIGHTS), help="the trained simulator's weights file")
    args = ap.parse_args()
    WEIGHTS_PATH[0] = args.weights
    names = [n for n in args.only.split(",") if n]
    if bad := [n for n in names if n not in CANDIDATES]:
        ap.error(f"unknown simulator {bad[0]}; choose from {', '.join(CANDIDATES)}")
    settings = EvalSettings(seeds=tuple(int(x) for x in args.seeds.split(",")), window=args.window,
                            score_windows=args.score_windows)
    rules = list(HELD_OUT) if args.rules == "held_out" else list(TRAINING) if args.rules == "training" \
        else args.rules.split(",") if args.rules else None
    data = SuiteData.from_run(args.run)
    _load_model()
    rows = []
    for name in names:
        t0 = time.perf_counter()
        sim, client = CANDIDATES[name]()
        res = run_suite(data, sim, settings, rules=rules, client=client)
        secs = simulate_seconds(data, CANDIDATES[name])
        rows.append((name, sim.version, res.summary(), secs))
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    print(f"{'simulator':24} {'family':13} {'set':9} {'rules':>5} {'AUROC':>14} {'correct':>14} {'token lookup':>14}")
    for name, version, s, secs in rows:
        for family in FAMILIES:
            for rule_set in ("training", "held_out"):
                g = s.get("families", {}).get(family, {}).get(rule_set)
                if g:
                    print(f"{name:24} {family:13} {rule_set:9} {g['rules']:5d} {_pm(g['auroc']):>14} "
                          f"{_pm(g['correct']):>14} {_pm(g['token_lookup']):>14}")
    print()
    print(f"{'simulator':24} {'version':36} {'s per 20x64, cold':>17} {'warm':>6}  held-out targets met")
    for name, version, s, (cold, secs) in rows:
        met = []
        for family, (auroc_t, correct_t) in TARGETS.items():
            g = s.get("families", {}).get(family, {}).get("held_out")
            if g and g["auroc"]["mean"] is not None:
                met.append(f"{family}: AUROC {'yes' if g['auroc']['mean'] >= auroc_t else 'no'}, correct "
                           f"{'yes' if g['correct']['mean'] >= correct_t else 'no'}, above lookup "
                           f"{'yes' if g['correct']['mean'] > (g['token_lookup']['mean'] or 0) else 'no'}")
        print(f"{name:24} {version:36} {cold:17.3f} {secs:6.3f}  {'; '.join(met)}")


if __name__ == "__main__":
    main()
