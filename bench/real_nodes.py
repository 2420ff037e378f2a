"""The explainer on real circuit nodes, side by side in one run: the top nodes of one task's circuit
are explained once per explain prompt (best of K with the default simulator, each prompt in its own
fresh database, one loaded LLM), and the mean held-out scores of the LLM explanations are printed
beside the stored baselines of the same nodes (token lookup, shuffled) and the no-LLM "best fact"
(`pipeline.fact_lookup`, scored on the same windows). With `--simulators plain,literal` each
prompt's stored candidates, its shuffled control and the best fact are also scored under each
embedding simulator (without and with literal tokens, `simulators.literal`; no LLM involved, best
of K picked again on the calibrate windows), one row each.

    python bench/real_nodes.py --run runs/d1700 [--task single_double_quote] [--nodes 40]
        [--prompts explain_marked_facts,explain_marked_seen] [--K 32] [--calibrate-windows 10]
        [--window 32] [--db-dir runs/real_nodes] [--model qwen2.5-coder-1.5b] [--simulators plain,literal]

The run must be trained (`circuits train --preset demo --out runs/d1700`); the circuit is pruned
here with the default settings at --target-loss. The window sizes default to the demo's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.explain import DEFAULT_PROMPT  # noqa: E402
from explainer.jobs.circuits import prune_job  # noqa: E402
from explainer.jobs.explain import ExplainSettings, explain_job  # noqa: E402
from explainer.jobs.rows import records_by_split  # noqa: E402
from explainer.llm import make_client  # noqa: E402
from explainer.llm.local import DEFAULT_MODEL  # noqa: E402
from explainer.pipeline import (CALIBRATE, fact_lookup, pick_windows, score_simulations, simulate_and_score,  # noqa: E402
                                simulate_split)
from explainer.simulators import EmbeddingSimulator, make_simulator  # noqa: E402
from explainer.store import Store  # noqa: E402
from sparse_model.prune import PruneSettings  # noqa: E402
from sparse_model.run import Run  # noqa: E402


def score_of(scored) -> float:
    return 0.0 if scored is None or scored.score is None else scored.score  # undefined counts as 0, as stored


async def rescore(store: Store, ids: list[str], windows: dict, simulator) -> dict[str, float]:
    """Mean held-out scores of the stored LLM candidates (best of them by calibrate correlation),
    the stored shuffled texts and the best fact, all simulated again under `simulator`."""
    llm, shuffled, fact = [], [], []
    for nid in ids:
        w = windows[nid]
        best = (float("-inf"), None, None)  # as pipeline.best_of_k: calibrate windows pick, ties the earlier
        for row in store.explanations(node_id=nid, kind="llm"):
            if row["text"] is not None and row["failure"] is None:
                sims = await simulate_split(simulator, row["text"], w.calibrate)
                cal = score_simulations(row["text"], w, {CALIBRATE: sims}).scores[CALIBRATE].correlation
                if cal is not None and cal > best[0]:
                    best = (cal, row["text"], sims)
        llm.append(score_of(await simulate_and_score(simulator, best[1], w, best[2])) if best[1] else 0.0)
        rows = store.explanations(node_id=nid, kind="shuffled")
        shuffled.append(score_of(await simulate_and_score(simulator, rows[0]["text"], w)) if rows else 0.0)
        fact.append(score_of(await fact_lookup(simulator, w)))
    return {"llm": float(np.mean(llm)), "shuffled": float(np.mean(shuffled)), "fact": float(np.mean(fact))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--task", default="single_double_quote")
    ap.add_argument("--target-loss", type=float, default=0.15)
    ap.add_argument("--nodes", type=int, default=40, help="the circuit's highest-ranked nodes to explain")
    ap.add_argument("--prompts", default=f"{DEFAULT_PROMPT},explain_marked_seen")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--K", type=int, default=32)
    ap.add_argument("--calibrate-windows", type=int, default=10)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--explain-windows", type=int, default=3)
    ap.add_argument("--score-windows", type=int, default=3)
    ap.add_argument("--db-dir", default="runs/real_nodes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--simulators", default="", help="also rescore under these: comma-separated plain, literal")
    args = ap.parse_args()
    choices = {"plain": False, "literal": True}
    rescorers = [n for n in args.simulators.split(",") if n]
    if bad := [n for n in rescorers if n not in choices]:
        ap.error(f"unknown simulator {bad[0]}; choose from plain, literal")
    settings = ExplainSettings(explanations_per_node=args.K, window=args.window, explain_windows=args.explain_windows,
                               score_windows=args.score_windows, calibrate_windows=args.calibrate_windows, seed=args.seed)
    client = make_client("local", model=args.model)
    Path(args.db_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for prompt in args.prompts.split(","):
        db = Path(args.db_dir) / f"{prompt}.duckdb"
        db.unlink(missing_ok=True)  # a fresh database, so every node is explained (and timed) again
        with Store.open(db) as store:
            prune_job(store, args.run, [args.task], PruneSettings(target_loss=args.target_loss), progress=False)
            model = Run(args.run).name
            circuit = store.newest_circuits(model)[args.task]
            if circuit["status"] != "circuit":
                sys.exit(f"{args.task} has no circuit at target loss {args.target_loss} ({circuit['status']})")
            ids = [n["node_id"] for n in store.circuit_nodes(circuit["circuit_id"])][:args.nodes]
            print(f"[{prompt}] explaining {len(ids)} nodes of {model}'s {args.task} circuit", flush=True)
            t0 = time.perf_counter()
            explain_job(store, args.run, client, nodes=ids, settings=settings, explain_prompt=prompt, progress=True)
            seconds = time.perf_counter() - t0
            means = {r["kind"]: r for r in store.real_node_scores(model)}
            simulator = make_simulator(client, settings.simulator)
            s = settings.resolved(simulator.method)
            windows = {nid: pick_windows(records_by_split(store.activation_records(nid)), s.explain_windows,
                                         s.calibrate_windows, s.score_windows) for nid in ids}
            fact = float(np.mean([score_of(asyncio.run(fact_lookup(simulator, windows[nid]))) for nid in ids]))
            lookup = means["token_lookup"]["mean_score"]
            llm = means["llm"]["mean_score"]
            rows.append([prompt, f"{simulator.version} (stored)", len(ids), llm, lookup, means["shuffled"]["mean_score"],
                         fact, llm / lookup, f"{means['llm']['llm_beats_shuffled']:.2f}", f"{seconds / len(ids):.1f}"])
            print(f"[{prompt}] LLM {llm:.3f}, token lookup {lookup:.3f}, {seconds / len(ids):.1f} s per node", flush=True)
            for name in rescorers:
                sim = EmbeddingSimulator(literal=choices[name])
                r = asyncio.run(rescore(store, ids, windows, sim))
                rows.append([prompt, f"{sim.version} ({name}, rescored)", len(ids), r["llm"], lookup, r["shuffled"],
                             r["fact"], r["llm"] / lookup, "", ""])
                print(f"[{prompt}] rescored under {name}: LLM {r['llm']:.3f}", flush=True)
    print(f"\n{args.model}, {args.run} {args.task} circuit (top {args.nodes} nodes), best of {args.K} on "
          f"{args.calibrate_windows} + {args.calibrate_windows} calibrate windows, {args.window}-token windows, "
          f"{args.score_windows} + {args.score_windows} score windows, seed {args.seed} (mean held-out score)")
    print("| explain prompt | simulator | nodes | LLM | token lookup | shuffled | best fact (no LLM) | LLM / token lookup "
          "| LLM beats shuffled | s per node |")
    print("|---" * 10 + "|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | " + " | ".join(f"{x:.3f}" for x in r[3:8]) + f" | {r[8]} | {r[9]} |")


if __name__ == "__main__":
    main()
