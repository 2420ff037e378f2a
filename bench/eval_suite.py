"""The ground-truth suite for every simulator side by side: AUROC (correct explanation above wrong
ones) on the training and held-out rules, and seconds, with ratios to the default.

    python bench/eval_suite.py --run runs/standard [--db circuits.duckdb] [--only embedding,all_at_once]

All simulators run on the same records: the LLM simulators' settings (32-token windows, 2 top + 2
random score windows, one seed) so the embedded SmolLM2 fits in minutes; the embedding simulators
also at the `circuits eval` defaults (64-token windows, 5 + 5, three seeds). One model-heavy
process at a time: the simulators run one after another. Seconds are per simulator, with its own
embedding cache (the embedding model's load, about 9 s, is reported once and not counted), and
the ratio is to the `embedding` row. With --db every score is stored
(purpose 'eval'), so SQL can compare them later.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.jobs.evaluate import run_suite  # noqa: E402
from explainer.suite import EvalSettings, SuiteData  # noqa: E402
from explainer.simulators.embedding import Embedder, EmbeddingSimulator, _load_model  # noqa: E402

LLM_SETTINGS = EvalSettings(window=32, score_windows=2, seeds=(0,))
EMBEDDING_SETTINGS = EvalSettings(window=64, score_windows=5, seeds=(0, 1, 2))


def _llm(prompt_name: str):
    def make():
        from explainer.llm import make_client
        from explainer.simulators import make_simulator

        client = make_client("local", model="smollm2-135m")  # the model these rows were measured with
        return make_simulator(client, "all_at_once", prompt_name=prompt_name), client
    return make


def _emb(**kw):
    # a fresh embedding cache per simulator, so each pays for its own embeddings (the model is loaded once, untimed)
    return lambda: (EmbeddingSimulator(embedder=Embedder(), **kw), None)


CANDIDATES = {
    # name: (factory -> (simulator, client or None), settings)
    "embedding": (_emb(), LLM_SETTINGS),
    "embedding_v1": (_emb(facts_version=1), LLM_SETTINGS),
    "embedding_context": (_emb(variant="context"), LLM_SETTINGS),
    "all_at_once": (_llm("simulate"), LLM_SETTINGS),
    "all_at_once_contrastive": (_llm("simulate_contrastive"), LLM_SETTINGS),
    "embedding@default": (_emb(), EMBEDDING_SETTINGS),
    "embedding_v1@default": (_emb(facts_version=1), EMBEDDING_SETTINGS),
    "embedding_context@default": (_emb(variant="context"), EMBEDDING_SETTINGS),
}


def _f(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run folder (its validation tokens are the text)")
    ap.add_argument("--db", default=None, help="store every score in this DuckDB file")
    ap.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated simulators: " + ", ".join(CANDIDATES))
    ap.add_argument("--rules", default=None, help="comma-separated rule names (default all)")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        ap.error(f"unknown simulator {unknown[0]}; choose from {', '.join(CANDIDATES)}")
    rules = args.rules.split(",") if args.rules else None

    data = SuiteData.from_run(args.run)
    if any(n.startswith("embedding") for n in names):
        t0 = time.perf_counter()
        _load_model()
        print(f"embedding model loaded in {time.perf_counter() - t0:.1f} s (not counted below)", file=sys.stderr)
    store = None
    if args.db:
        from explainer.store import Store

        store = Store.open(args.db)
    rows = []
    try:
        for name in names:
            factory, settings = CANDIDATES[name]
            t0 = time.perf_counter()
            sim, client = factory()
            if client is not None:
                asyncio.run(client.probe())
            res = run_suite(data, sim, settings, rules=rules, store=store, client=client)
            s = res.summary()
            rows.append((name, sim.version, settings, s, time.perf_counter() - t0))
            print(f"{name}: train {_f(s['training']['mean'])} held-out {_f(s['held_out']['mean'])} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    finally:
        if store is not None:
            store.close()
    base = next((r[4] for r in rows if r[0] == "embedding"), rows[0][4] if rows else 1.0)
    print(f"{'simulator':28} {'version':34} {'window':>6} {'score':>5} {'seeds':>5} {'train':>6} {'±':>5} "
          f"{'held-out':>8} {'±':>5} {'seconds':>8} {'ratio':>6}")
    for name, version, st, s, secs in rows:
        tr, ho = s["training"], s["held_out"]
        print(f"{name:28} {version:34} {st.window:>6} {st.score_windows:>5} {len(st.seeds):>5} {_f(tr['mean']):>6} "
              f"{_f(tr['std']):>5} {_f(ho['mean']):>8} {_f(ho['std']):>5} {secs:8.1f} {secs / base:6.1f}x")


if __name__ == "__main__":
    main()
