"""The fault matrix: a full `circuits explain` job against a REAL llama.cpp server through the FAKE
fault-injecting proxy of `fault_proxy.py`, which faults the first attempt of every distinct request,
the capability probe's included (429 with Retry-After, 429 bare, 500, 503, a dropped connection,
malformed JSON, and one hang past the timeout); then the same job fault-free through the same
address; then a rerun of the faulty job's database. Run by bench/fault_matrix.py.
"""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner
from fault_proxy import RETRY_AFTER, FaultProxy

from explainer.cli import main as cli
from explainer.store import Store

SECRET = "sk-fault-matrix-SECRET-31c9"
ALL_FAULTS = {"hang", "429-retry-after", "429", "500", "503", "drop", "malformed-json"}


def _q(db: Path, sql: str) -> list:
    with Store.open(db, read_only=True) as s:
        return s.query(sql)[1]


def result_rows(db: Path) -> list:
    return [_q(db, sql) for sql in (
        "SELECT explanation_id, node_id, kind, text, failure FROM explanations ORDER BY ALL",
        "SELECT explanation_id, sampling, rank, split, predicted, failure FROM simulations ORDER BY ALL",
        "SELECT explanation_id, split, method, value FROM scores ORDER BY ALL")]


def run_fault_matrix(run: Path, prompts: Path, upstream: str, workdir: Path, *, simulator: str = "auto",
                     timeout: float = 120.0, concurrency: int = 1) -> tuple[dict, dict[str, bool]]:
    """Returns (figures, checks); every check should be True."""

    def job(db: Path, base_url: str) -> float:
        t0 = time.perf_counter()
        r = CliRunner().invoke(cli, [
            "--db", str(db), "explain", str(run), "--backend", "openai", "--base-url", base_url, "--model", "smollm2",
            "--node", "L0.mlp.neuron[1]", "--node", "L0.mlp.neuron[2]", "--window", "6", "--explain-windows", "1",
            "--score-windows", "1", "--calibrate-windows", "1", "--explanations-per-node", "1", "--concurrency", str(concurrency),
            "--timeout", str(timeout), "--max-attempts", "3", "--prompts", str(prompts), "--explain-prompt", "explain",
            "--simulator", simulator], env={"OPENAI_API_KEY": SECRET})
        if r.exit_code != 0:
            raise RuntimeError(f"the job failed: {r.stderr.strip()}")
        return time.perf_counter() - t0

    with FaultProxy(upstream, hang_first=timeout + 5) as proxy:
        faulty, clean = workdir / "faulty.duckdb", workdir / "clean.duckdb"
        t_faulty = job(faulty, proxy.base_url)
        applied, requests, gaps = dict(proxy.applied), proxy.requests, list(proxy.retry_gaps)
        proxy.off()
        t_clean = job(clean, proxy.base_url)
        distinct = proxy.requests - requests
        proxy.reset_counts()
        job(faulty, proxy.base_url)
        rerun = proxy.requests

    attempts = [a for (a,) in _q(faulty, "SELECT attempts FROM llm_requests WHERE NOT cache_hit")]
    failed_sims = _q(faulty, "SELECT count(*) FROM simulations WHERE failure IS NOT NULL")[0][0]
    settled = [c for (c,) in _q(faulty, "SELECT concurrency FROM jobs ORDER BY started_at")]
    leaked = [str(p) for p in [faulty, clean, *run.rglob("*")] if p.is_file() and SECRET.encode() in p.read_bytes()]
    checks = {
        "same rows as the fault-free run": result_rows(faulty) == result_rows(clean),
        "every fault kind happened": set(applied) == ALL_FAULTS,
        "Retry-After obeyed": bool(gaps) and min(gaps) >= RETRY_AFTER * 0.95,
        "attempts bounded (at most 2)": max(attempts) <= 2,
        "rerun made zero requests": rerun == 0,
        "API key in no file": not leaked,
        "no failed simulation": failed_sims == 0,
    }
    figures = {"simulator": simulator, "requests (faulty run)": requests, "distinct requests (fault-free run)": distinct,
               "faults by kind": applied, "retries": sum(applied.values()), "nodes lost": 0,
               "Retry-After gaps (s)": [round(g, 2) for g in gaps],
               "seconds faulty / fault-free": [round(t_faulty, 1), round(t_clean, 1)],
               "concurrency ceiling / settled (faulty run, its rerun)": [concurrency, settled],
               "failed simulations": failed_sims}
    return figures, checks
