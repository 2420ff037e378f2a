"""What stands between a readable explanation and token lookup, on the demo's nodes.

Token lookup predicts every token of a score window as that exact token string's mean activation
over the explain windows: a table of every distinct token seen there (about 150 per node at the
demo's 10 windows of 32 tokens), with a graded value each, spaces included (" self" and "self" are
two entries). An explanation a person reads at a glance names a few tokens without spaces. This
script measures how much of token lookup's score is left when the table is cut down step by step
to what such an explanation can say, side by side on the same nodes and score windows, all as
pooled correlation on the score split (no simulator involved: these are ceilings):

- `lookup`: token lookup as the demo scores it;
- `no spaces`: the same table keyed by the token stripped of spaces (what a backticked name says);
- `graded N`: only the writer's top N tokens (`writers.top_tokens`) keep their mean, every other
  token gets the overall mean: a list of N tokens whose exact strengths the reader is told;
- `strongest first N`: those N tokens weighted 1 down to `literal.GRADED_LAST` in order of mean,
  as the simulator reads "the tokens ..., strongest first";
- `list N`: those N tokens all at 1, the rest at 0: a plain list of N tokens.

The last column is the demo's own selected explanations (the newest explain settings in the
database), through the embedding simulator.

    python bench/lookup_ceiling.py --db runs/demo's circuits.duckdb [--nodes 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.jobs.demo import DemoSettings  # noqa: E402
from explainer.jobs.rows import records_by_split  # noqa: E402
from explainer.pipeline import pick_windows  # noqa: E402
from explainer.scoring import score_windows, token_means  # noqa: E402
from explainer.simulators.literal import GRADED_LAST  # noqa: E402
from explainer.store import Store  # noqa: E402
from explainer.writers import strongest_first, top_tokens  # noqa: E402

SIZES = (4, 8, 16, 32)


def ceilings(windows) -> dict[str, float]:
    """Each cut-down table's score on the score split (undefined: 0)."""
    acts = [r.activations for r in windows.score]

    def score(predict) -> float:
        found = score_windows(acts, [[predict(t) for t in r.tokens] for r in windows.score]).correlation
        return 0.0 if found is None or found != found else float(found)

    exact, _, overall = token_means(windows.explain)
    stripped, _, _ = token_means(windows.explain, key=str.strip)
    out = {"lookup": score(lambda t: exact.get(t, overall)),
           "no spaces": score(lambda t: stripped.get(t.strip(), overall))}
    for n in SIZES:
        top = top_tokens(windows.explain, n)
        order = strongest_first(windows.explain, top)
        step = (1 - GRADED_LAST) / max(1, len(order) - 1)
        rank = {t: 1 - i * step for i, t in enumerate(order)}
        out[f"graded {n}"] = score(lambda t: stripped[t.strip()] if t.strip() in rank else overall)
        out[f"strongest first {n}"] = score(lambda t: rank.get(t.strip(), 0.0))
        out[f"list {n}"] = score(lambda t: 1.0 if t.strip() in rank else 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="the demo's database (read only)")
    ap.add_argument("--nodes", type=int, default=None, help="top nodes per circuit (default: the demo's)")
    args = ap.parse_args()
    demo = DemoSettings()
    limit = args.nodes or demo.max_nodes_per_task
    s = demo.explain
    rows, selected = [], []
    with Store.open(args.db, read_only=True) as store:
        model = store.query("SELECT name FROM models ORDER BY created_at DESC LIMIT 1")[1][0][0]
        circuits = store.newest_circuits(model)
        nodes = list(dict.fromkeys(n["node_id"] for t in sorted(circuits)
                                   for n in store.circuit_nodes(circuits[t]["circuit_id"])[:limit]))
        chosen = store.query("SELECT node_id, arg_max(score, created_at) FROM node_scores WHERE kind = 'llm' "
                             "GROUP BY node_id")[1]
        chosen = {n: v for n, v in chosen}
        for nid in nodes:
            recs = records_by_split(store.activation_records(nid))
            if not recs:
                continue
            rows.append(ceilings(pick_windows(recs, s.explain_windows, s.calibrate_windows, s.score_windows)))
            selected.append(chosen.get(nid) or 0.0)
    if not rows:
        sys.exit("no node of the newest circuits has activation records; run `circuits demo` first")
    lookup = np.mean([r["lookup"] for r in rows])
    print(f"{model}: {len(rows)} nodes with records (the top {limit} of each circuit); "
          f"score-split pooled correlation, mean over nodes, and its ratio to token lookup")
    for key in rows[0]:
        m = np.mean([r[key] for r in rows])
        print(f"  {key:22} {m:6.3f}  {m / lookup:5.2f}x")
    m = float(np.mean(selected))
    print(f"  {'selected (simulated)':22} {m:6.3f}  {m / lookup:5.2f}x")


if __name__ == "__main__":
    main()
