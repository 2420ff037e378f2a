"""Explain-job throughput against an OpenAI-compatible server, by --concurrency, and a cached rerun.

    python bench/llm_throughput.py [RUN] [--latency 0.5] [--server-slots 8] [--nodes 8]
    python bench/llm_throughput.py [RUN] --real [--model smollm2-135m] [--slots 1 2] [--nodes 6]
    python bench/llm_throughput.py RUN --cost [--nodes 4] [--per 10000]

Fake server (default): tests/fault_server.py with a fixed latency per request and a fixed number of
slots (like a GPU server's batch), so the numbers measure our client: how many requests it keeps in
flight, and what a rerun costs when every answer is in the response cache.

--real: real llama_cpp.server processes running an embedded GGUF model. llama_cpp.server answers
one request at a time, so a server with S slots is S processes (the machine's cores split between
them) behind a least-busy balancer (`balancer.py`). The job is the real one (default prompts, k=2
candidates per node, the embedding simulator, so every LLM request is an explanation); the
servers are restarted for every row, so no row profits from another's warm state. Also prints
this project's own accounting per node (requests and tokens, from llm_requests).

--cost: what one node costs with the explain job's default settings (best of 3, 5 top and 5
random windows of 64 tokens for explaining, calibrating and scoring, the shuffled control, the
all-at-once simulator that a vLLM server supports), counted by this project's own accounting
(`llm_requests`), against the fake server at zero latency so it takes seconds. The fake's token
counts are its own, so every request it received is tokenized again with the Qwen2.5-Coder
tokenizer (the embedded GGUF, vocabulary only). Prints requests and tokens per node, and for --per
nodes. Pass a run with a context of at least 64 (the demo preset), e.g. runs/demo.

RUN is a trained run folder (default: a `tiny` model trained into a temporary folder first, ~20 s).
Each row runs the same job into a fresh database; the cached rerun (fake server) deletes the
results of the last one and runs it again. Prints seconds, requests per second and ratios.
"""

from __future__ import annotations

import argparse
import contextlib
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
    ap.add_argument("--concurrency", type=int, nargs="+", default=None, help="default: 1 4 16 (fake), 1 2 4 (real)")
    ap.add_argument("--real", action="store_true", help="real llama_cpp.server processes instead of the fake")
    ap.add_argument("--model", default="smollm2-135m", help="--real: embedded model name or GGUF file")
    ap.add_argument("--slots", type=int, nargs="+", default=[1, 2], help="--real: server processes behind the balancer")
    ap.add_argument("--cost", action="store_true", help="requests and tokens per node at the default settings")
    ap.add_argument("--per", type=int, default=10_000, help="--cost: nodes in the job to price")
    args = ap.parse_args()
    if args.real:
        return real(args)
    if args.cost:
        return cost(args)
    args.concurrency = args.concurrency or [1, 4, 16]

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


def real(args) -> None:
    import os

    from balancer import Balancer
    from fake_llm_job import prepare
    from llama_server import start_llama_server

    from explainer.jobs.explain import ExplainSettings, explain_job
    from explainer.llm import make_client
    from explainer.llm.local import SMOLLM2, smollm2_path
    from explainer.llm.models import model_file
    from explainer.store import Store

    concurrency = args.concurrency or [1, 2, 4]
    tmp, run, _prompts, nodes, _settings = prepare(args.run, "llm_throughput_real_", args.nodes)
    settings = ExplainSettings(explanations_per_node=2, simulator="embedding", window=32, explain_windows=3,
                               score_windows=3, calibrate_windows=3, shuffled=False)
    path = smollm2_path() if args.model == SMOLLM2 else model_file(args.model)
    cores = os.cpu_count() or 1
    rows, per_node = [], None
    for slots in args.slots:
        threads = max(1, cores // slots)
        for c in concurrency:
            with contextlib.ExitStack() as stack:
                urls = [stack.enter_context(start_llama_server(path, n_threads=threads)) for _ in range(slots)]
                lb = stack.enter_context(Balancer(urls))
                client = make_client("openai", base_url=lb.base_url, concurrency=c, model="smollm2")
                db = tmp / f"s{slots}c{c}.duckdb"
                with Store.open(db) as store:
                    t0 = time.perf_counter()
                    explain_job(store, run, client, nodes=nodes, settings=settings, progress=False)
                    seconds = time.perf_counter() - t0
                    _, acc = store.query("SELECT method, count(*), sum(prompt_tokens), sum(completion_tokens) "
                                         "FROM llm_requests WHERE NOT cache_hit GROUP BY method ORDER BY method")
                explains = sum(n for m, n, _, _ in acc if m != "probe")
                rows.append((slots, threads, c, seconds, explains, lb.max_in_flight, list(lb.served)))
                per_node = [(m, n / len(nodes), (p or 0) / len(nodes), (q or 0) / len(nodes)) for m, n, p, q in acc
                            if m != "probe"]
                print(f"slots {slots} x {threads} thread(s), concurrency {c}: {seconds:.1f} s", flush=True)

    print(f"\n{len(nodes)} nodes x 2 candidates, model {path.name}, {cores} cores; servers restarted per row")
    print(f"{'slots':>5} {'threads/slot':>12} {'concurrency':>11} {'seconds':>8} {'explain req':>11} "
          f"{'max in flight':>13} {'served per slot':>16} {'req/min':>8} {'vs 1 slot, c=1':>15}")
    base = rows[0][3]
    for slots, threads, c, seconds, n, active, served in rows:
        print(f"{slots:5d} {threads:12d} {c:11d} {seconds:8.1f} {n:11d} {active:13d} {str(served):>16} "
              f"{60 * n / seconds:8.1f} {base / seconds:14.2f}x")
    print("\nper node, by this project's accounting (llm_requests, cache misses, probe excluded):")
    for m, n, p, q in per_node or []:
        print(f"  {m}: {n:.1f} requests, {p:.0f} prompt tokens, {q:.0f} completion tokens")


def cost(args) -> None:
    from collections import defaultdict

    from fake_llm_job import prepare
    from fault_server import FaultServer
    from llama_cpp import Llama

    from explainer.jobs.explain import ExplainSettings, explain_job
    from explainer.llm import make_client
    from explainer.llm.models import model_file
    from explainer.store import Store

    import re

    import fault_server

    fake_reply = fault_server.chat_reply

    def reply(messages: list[dict]) -> tuple[str, str]:
        """The fake answers the default (marked-token) explain prompt too: "the token X", X its
        first marked token, so every candidate goes on to be simulated as a real one would."""
        kind, text = fake_reply(messages)
        marked = re.search(r"<<(.+?)>>", str(messages[-1].get("content", ""))) if messages else None
        return ("explain", f'the token "{marked.group(1).strip()}"') if kind == "chat" and marked else (kind, text)

    fault_server.chat_reply = reply
    tmp, run, _prompts, nodes, _settings = prepare(args.run, "llm_cost_", args.nodes)
    settings = ExplainSettings()  # the defaults: simulator auto; with an LLM simulator best of 3 on 5 + 5 windows
    with FaultServer(latency=0.0) as server:
        client = make_client("openai", base_url=server.base_url, concurrency=8)
        with Store.open(tmp / "cost.duckdb") as store:
            s = explain_job(store, run, client, nodes=nodes, settings=settings, progress=False)
        received = [r for r in server.requests if r.kind != "models"]
    tok = Llama(model_path=str(model_file("qwen2.5-coder-0.5b")), vocab_only=True, verbose=False)
    count = lambda text: len(tok.tokenize(text.encode(), add_bos=False, special=True))  # noqa: E731
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    probe = 3  # the capability probe's chat, chat log-probs and echo requests, once per job
    for r in received[probe:]:
        row = by_kind[r.kind]
        row[0] += 1
        row[1] += count(r.prompt_text)
        row[2] += int((r.body or {}).get("max_tokens") or 0) if r.kind != "echo" else 1
    n = len(nodes)
    print(f"\n{n} nodes of {run}, default settings, simulator {s.simulator}; tokens by the Qwen2.5-Coder tokenizer "
          f"(completion: the requests' max_tokens, an upper bound)")
    print(f"{'request kind':<16} {'per node':>9} {'prompt tok/node':>16} {'max completion tok/node':>24}")
    total = [0.0, 0.0, 0.0]
    for kind, (k, p, c) in sorted(by_kind.items()):
        print(f"{kind:<16} {k / n:9.1f} {p / n:16.0f} {c / n:24.0f}")
        total = [total[0] + k / n, total[1] + p / n, total[2] + c / n]
    print(f"{'all':<16} {total[0]:9.1f} {total[1]:16.0f} {total[2]:24.0f}")
    print(f"\na {args.per:,}-node job: {total[0] * args.per:,.0f} requests, {total[1] * args.per / 1e6:,.1f}M prompt "
          f"tokens, at most {total[2] * args.per / 1e6:,.1f}M completion tokens (plus the probe's {probe} requests)")


if __name__ == "__main__":
    main()
