"""Explain-job throughput against an OpenAI-compatible server, by --concurrency, and a cached rerun.

    python bench/llm_throughput.py [RUN] [--latency 0.5] [--server-slots 8] [--nodes 8]

The server is the fake from tests/fault_server.py with a fixed latency per request and a fixed
number of slots (like a GPU server's batch), so the numbers measure our client: how many requests
it keeps in flight, and what a rerun costs when every answer is in the response cache. RUN is a
trained run folder (default: a `tiny` model trained into a temporary folder first, ~20 s).
Each concurrency runs the same job into a fresh database; the cached rerun deletes the results of
the last one and runs it again. Prints seconds, requests per second and ratios.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--latency", type=float, default=0.5, help="seconds the server takes per request")
    ap.add_argument("--server-slots", type=int, default=8, help="requests the server works on at once")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = ap.parse_args()

    from fake_llm_job import prepare
    from fault_server import FaultServer

    from explainer.jobs.explain import explain_job
    from explainer.llm import make_client
    from explainer.store import Store

    tmp, run, prompts, nodes, settings = prepare(args.run, "llm_throughput_", args.nodes)

    def job(db: Path, concurrency: int) -> tuple[float, int, int]:
        client = make_client("openai", base_url=server.base_url, concurrency=concurrency)
        with Store.open(db) as store:
            t0 = time.perf_counter()
            explain_job(store, run, client, nodes=nodes, settings=settings, progress=False, prompts_dir=prompts,
                        explain_prompt="explain")
            seconds = time.perf_counter() - t0
        return seconds, client.usage.requests, client.usage.cache_hits

    rows = []
    with FaultServer(latency=args.latency, max_concurrent=args.server_slots) as server:
        for c in args.concurrency:
            db = tmp / f"c{c}.duckdb"
            server.reset()
            seconds, requests, _ = job(db, c)
            rows.append((f"concurrency {c}", seconds, requests, server.count(), server.max_active))
        with Store.open(db) as store:
            for t in ("scores", "simulations", "explanations"):
                store.con.execute(f"DELETE FROM {t}")
        server.reset()
        seconds, requests, hits = job(db, args.concurrency[-1])
        rows.append((f"cached rerun (concurrency {args.concurrency[-1]})", seconds, requests, server.count(),
                     server.max_active))

    print(f"\n{args.nodes} nodes, server latency {args.latency:g} s, {args.server_slots} server slots")
    print(f"{'run':<34} {'seconds':>8} {'job requests':>13} {'served':>7} {'max in flight':>14} {'req/s':>7} {'speed-up':>9}")
    base = rows[0][1]
    for name, seconds, requests, served, active in rows:
        print(f"{name:<34} {seconds:8.2f} {requests:13d} {served:7d} {active:14d} {requests / seconds:7.1f} "
              f"{base / seconds:8.1f}x")


if __name__ == "__main__":
    main()
