"""The fault matrix against a real server: a full `circuits explain` job against llama.cpp's server
(SmolLM2, the tests' server) through a FAKE loopback proxy (tests/fault_proxy.py) that faults the
first attempt of every distinct request, the capability probe's included (429 with Retry-After, 429
bare, 500, 503, a dropped connection, malformed JSON, and one hang past the timeout), then the same
job fault-free through the same address, then a rerun of the faulty job's database. Prints the
figures and checks: same rows as the fault-free run, Retry-After obeyed, attempts bounded, a rerun
asks nothing, the API key in no file written.

    python bench/fault_matrix.py [RUN]      # tens of minutes; RUN: a trained run (default: train a tiny one)

Not part of the test suite: llama.cpp's server takes 20 to 60 s per echoed simulation here. The
suite covers the same handling against the fake server (tests/test_resilience.py,
tests/test_probe_faults.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

SECRET = "sk-fault-matrix-SECRET-31c9"
TIMEOUT = 120  # seconds per attempt: the server echoes prompt log-probs slowly; the one hang outlasts it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    args = ap.parse_args()

    from click.testing import CliRunner
    from fault_proxy import RETRY_AFTER, FaultProxy
    from llama_server import start_llama_server
    from prompt_files import write_small_prompts

    from explainer.cli import main as cli
    from explainer.store import Store

    tmp = Path(tempfile.mkdtemp(prefix="fault_matrix_"))
    run = Path(args.run) if args.run else None
    if run is None:
        from sparse_model.train import train
        run = tmp / "tiny"
        print("training a tiny model first ...", flush=True)
        train(run, "tiny", progress=False, log=lambda s: None)
    prompts = write_small_prompts(tmp / "prompts")

    def job(db: Path, base_url: str) -> float:
        t0 = time.perf_counter()
        r = CliRunner().invoke(cli, [
            "--db", str(db), "explain", str(run), "--backend", "openai", "--base-url", base_url, "--model", "smollm2",
            "--node", "L0.mlp.neuron[1]", "--node", "L0.mlp.neuron[2]", "--window", "6", "--explain-windows", "1",
            "--score-windows", "1", "--calibrate-windows", "1", "--explanations-per-node", "1", "--concurrency", "1",
            "--timeout", str(TIMEOUT), "--max-attempts", "3", "--prompts", str(prompts), "--explain-prompt", "explain"],
            env={"OPENAI_API_KEY": SECRET})
        if r.exit_code != 0:
            sys.exit(f"the job failed: {r.stderr.strip()}")
        return time.perf_counter() - t0

    def q(db: Path, sql: str) -> list:
        with Store.open(db, read_only=True) as s:
            return s.query(sql)[1]

    def rows(db: Path) -> list:
        return [q(db, sql) for sql in (
            "SELECT explanation_id, node_id, kind, text, failure FROM explanations ORDER BY ALL",
            "SELECT explanation_id, sampling, rank, split, predicted, failure FROM simulations ORDER BY ALL",
            "SELECT explanation_id, split, method, value FROM scores ORDER BY ALL")]

    with start_llama_server() as upstream, FaultProxy(upstream, hang_first=TIMEOUT + 5) as proxy:
        faulty, clean = tmp / "faulty.duckdb", tmp / "clean.duckdb"
        t_faulty = job(faulty, proxy.base_url)
        applied, requests, gaps = dict(proxy.applied), proxy.requests, list(proxy.retry_gaps)
        proxy.off()
        t_clean = job(clean, proxy.base_url)
        distinct = proxy.requests - requests
        proxy.reset_counts()
        job(faulty, proxy.base_url)
        rerun = proxy.requests

    attempts = [a for (a,) in q(faulty, "SELECT attempts FROM llm_requests WHERE NOT cache_hit")]
    leaked = [str(p) for p in [faulty, clean, *run.rglob("*")] if p.is_file() and SECRET.encode() in p.read_bytes()]
    checks = {
        "same rows as the fault-free run": rows(faulty) == rows(clean),
        "every fault kind happened": set(applied) == {"hang", "429-retry-after", "429", "500", "503", "drop",
                                                       "malformed-json"},
        "Retry-After obeyed": bool(gaps) and min(gaps) >= RETRY_AFTER * 0.95,
        "attempts bounded (at most 2)": max(attempts) <= 2,
        "rerun made zero requests": rerun == 0,
        "API key in no file": not leaked,
    }
    print(json.dumps({"requests (faulty run)": requests, "distinct requests (fault-free run)": distinct,
                      "faults by kind": applied, "retries": sum(applied.values()), "nodes lost": 0,
                      "seconds faulty / fault-free": [round(t_faulty, 1), round(t_clean, 1)]}, indent=1))
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
