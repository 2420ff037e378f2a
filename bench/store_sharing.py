"""What sharing the database with readers costs a job: the same explain job with the database held
for the whole job (`Store.open(..., shared=False)`, as before) and held only while used (the
default), side by side in one run, alternating, with ratios.

    python bench/store_sharing.py [RUN] [--latency 0.3] [--nodes 8] [--repeats 3]

The LLM is the fake server from tests/fault_server.py with a fixed latency per request (0.3 s by
default; --latency 0 is the case where the job does nothing but talk to the database, and the file
is then never idle long enough to be closed; a real LLM takes seconds per request, so the share of
the database in a real job is smaller still). RUN is a trained run folder
(default: a `tiny` model trained into a temporary folder first, ~20 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--latency", type=float, default=0.3, help="seconds the fake server takes per request")
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from fake_llm_job import prepare
    from fault_server import FaultServer

    from explainer.jobs.explain import explain_job
    from explainer.llm import make_client
    from explainer.store import Store

    tmp, run, prompts, nodes, settings = prepare(args.run, "store_sharing_", args.nodes)

    def job(db: Path, shared: bool) -> tuple[float, int]:
        client = make_client("openai", base_url=server.base_url, concurrency=4)
        with Store.open(db, shared=shared) as store:
            t0 = time.perf_counter()
            explain_job(store, run, client, nodes=nodes, settings=settings, progress=False, prompts_dir=prompts,
                        explain_prompt="explain")
            seconds = time.perf_counter() - t0
            opens = getattr(store.con, "opens", 1)
        return seconds, opens

    times: dict[bool, list[float]] = {False: [], True: []}
    opens: dict[bool, int] = {}
    with FaultServer(latency=args.latency) as server:
        for i in range(args.repeats):
            for shared in (False, True):
                seconds, opens[shared] = job(tmp / f"{'shared' if shared else 'held'}{i}.duckdb", shared)
                times[shared].append(seconds)
    held, shared = statistics.median(times[False]), statistics.median(times[True])
    print(f"\n{args.nodes} nodes, fake server latency {args.latency:g} s, median of {args.repeats}")
    print(f"{'database':<32} {'seconds':>8} {'file opens':>11} {'ratio':>7}")
    print(f"{'held for the whole job':<32} {held:8.2f} {opens[False]:11d} {1.0:7.3f}")
    print(f"{'held only while used (default)':<32} {shared:8.2f} {opens[True]:11d} {shared / held:7.3f}")


if __name__ == "__main__":
    main()
