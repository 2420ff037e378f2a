"""What the demo's explanations are worth, against token lookup on the same nodes and windows, side
by side in one run (issue: "the explanation the tool stands behind beats the lookup table").

For each setting, the demo's nodes (the top --nodes of each task's newest circuit) are explained
again in a copy of the demo's database, with one loaded embedded LLM, and the script prints per
setting: the selected explanations' mean held-out score, token lookup's on the same nodes, their
ratio, the best LLM-written candidate of each node taken alone (and its ratio), which writers the
selected explanations come from, how many selected texts the reply check would refuse (must be 0),
and seconds per node ("reused" when the database already holds that setting's rows, as it holds
the demo's own: then `circuits jobs` has the demo's time). Undefined scores count as 0, as in the demo summary.

    python bench/demo_explanations.py --db circuits.duckdb --run runs/demo \
        --setting demo --setting k=8,explain=10,calibrate=10,score=10 [--nodes 20]

A setting is `demo` (the demo's own ExplainSettings) or comma-separated overrides of it: k (best of
k), explain, calibrate, score (window counts), window (tokens); `llm_only` pools the LLM alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.jobs.demo import DemoSettings  # noqa: E402
from explainer.jobs.explain import ExplainSettings, explain_job  # noqa: E402
from explainer.llm import make_client  # noqa: E402
from explainer.prompts import fixed_text, load_prompt  # noqa: E402
from explainer.explain import DEFAULT_PROMPT  # noqa: E402
from explainer.replies import echo_reason, vague_reason  # noqa: E402
from explainer.store import Store  # noqa: E402

KEYS = {"k": "explanations_per_node", "explain": "explain_windows", "calibrate": "calibrate_windows",
        "score": "score_windows", "window": "window"}


def parse_setting(text: str, base: ExplainSettings) -> ExplainSettings:
    if text == "demo":
        return base
    out = base
    for part in text.split(","):
        if part == "llm_only":
            out = replace(out, llm_only=True)
            continue
        key, value = part.split("=")
        out = replace(out, **{KEYS[key]: int(value)})
    return out


def measure(db: Path, run: str, nodes: list[str], s: ExplainSettings) -> dict:
    t0 = time.perf_counter()
    with Store.open(db) as store:
        summary = explain_job(store, run, make_client("local"), nodes=nodes, settings=replace(s, shuffled=False),
                              progress=False, cache=False)
        seconds = time.perf_counter() - t0
        rows = [r for r in store.explanations(settings_key=summary.settings_key, selected=True) if r["node_id"] in nodes]
        score = {(r["node_id"], r["kind"]): store.scores(r["explanation_id"]).get(("score", "correlation")) or 0.0
                 for r in rows}
        best_llm = store.best_llm_scores(summary.settings_key)
    fixed = fixed_text(load_prompt(DEFAULT_PROMPT))
    selected = [r for r in rows if r["kind"] == "llm"]
    echoes = [r["text"] for r in selected if r["text"] and r["writer"] == "llm"
              and (echo_reason(r["text"], fixed) or vague_reason(r["text"], fixed))]
    n = len(nodes)
    mean = sum(score.get((x, "llm"), 0.0) for x in nodes) / n
    lookup = sum(score.get((x, "token_lookup"), 0.0) for x in nodes) / n
    llm = sum(best_llm.get(x) or 0.0 for x in nodes) / n
    writers: dict[str, int] = {}
    for r in selected:
        writers[r["writer"]] = writers.get(r["writer"], 0) + 1
    # Nodes the database already had with these settings (the demo's own setting) are reused, not timed.
    return {"mean": mean, "lookup": lookup, "llm": llm, "writers": writers, "echoes": echoes,
            "s_per_node": seconds / summary.explained if summary.explained else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, help="the demo's database (copied, never written)")
    ap.add_argument("--run", required=True, help="the demo's run folder")
    ap.add_argument("--setting", action="append", default=None, help="repeatable; default: demo")
    ap.add_argument("--nodes", type=int, default=None, help="top nodes per circuit (default: the demo's)")
    args = ap.parse_args()
    demo = DemoSettings()
    limit = args.nodes or demo.max_nodes_per_task
    with Store.open(args.db, read_only=True) as store:
        model = store.query("SELECT name FROM models ORDER BY created_at DESC LIMIT 1")[1][0][0]
        circuits = {t: c for t, c in store.newest_circuits(model).items() if c["status"] == "circuit"}
        tasks = sorted(circuits)
        nodes = list(dict.fromkeys(n["node_id"] for t in tasks
                                   for n in store.circuit_nodes(circuits[t]["circuit_id"])[:limit]))
    print(f"{model}: {len(nodes)} nodes, the top {limit} of the circuits of {', '.join(tasks)}", flush=True)
    rows = []
    for text in args.setting or ["demo"]:
        s = parse_setting(text, demo.explain)
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "c.duckdb"
            shutil.copy(args.db, db)
            rows.append((text, measure(db, args.run, nodes, s)))
        print(f"done: {text}", file=sys.stderr, flush=True)
    print(f"{'setting':44} {'selected':>8} {'lookup':>7} {'ratio':>6} {'best LLM':>8} {'ratio':>6} {'s/node':>6} "
          f"{'echoes':>6}  writers of the selected")
    for text, m in rows:
        seconds = "reused" if m["s_per_node"] is None else f"{m['s_per_node']:.1f}"
        print(f"{text:44} {m['mean']:8.3f} {m['lookup']:7.3f} {m['mean'] / m['lookup']:6.2f} {m['llm']:8.3f} "
              f"{m['llm'] / m['lookup']:6.2f} {seconds:>6} {len(m['echoes']):6d}  "
              + ", ".join(f"{w} {n}" for w, n in sorted(m["writers"].items())))
        for e in m["echoes"]:
            print(f"    echo: {e!r}")


if __name__ == "__main__":
    main()
