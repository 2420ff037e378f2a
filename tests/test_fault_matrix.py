"""The fault matrix: a full `circuits explain` job against a REAL llama.cpp server (SmolLM2) through
a FAKE loopback proxy (tests/fault_proxy.py) that faults the first attempt of every distinct
request, the capability probe's included: 429 with Retry-After, 429 bare, 500, 503, a dropped
connection, malformed JSON, and one hang past the timeout. The job completes with the same rows
as a fault-free run, Retry-After is obeyed, attempts are bounded, a rerun asks nothing, and the
API key is in no file written."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from explainer.cli import main
from fault_proxy import RETRY_AFTER, FaultProxy
from test_resilience import _q, _rows

SECRET = "sk-fault-matrix-SECRET-31c9"
TIMEOUT = 8  # seconds per attempt; the hang outlasts it


def _job(db, run, base_url, prompts, *extra):
    args = ["--db", str(db), "explain", str(run), "--backend", "openai", "--base-url", base_url, "--model", "smollm2",
            "--node", "L0.mlp.neuron[1]", "--node", "L0.mlp.neuron[2]", "--window", "6", "--explain-windows", "1",
            "--score-windows", "1", "--calibrate-windows", "1", "--explanations-per-node", "1", "--concurrency", "2",
            "--timeout", str(TIMEOUT), "--max-attempts", "3", "--prompts", str(prompts), "--explain-prompt",
            "explain", *extra]
    r = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": SECRET})
    return r.exit_code, r.stderr


@pytest.mark.slow
def test_a_job_through_every_kind_of_fault_ends_with_the_rows_of_a_fault_free_run(tmp_path, tiny_run, llama_server,
                                                                                   small_prompts):
    with FaultProxy(llama_server, hang_first=TIMEOUT + 5) as proxy:
        faulty = tmp_path / "faulty.duckdb"
        code, err = _job(faulty, tiny_run, proxy.base_url, small_prompts)
        assert code == 0, err
        applied, requests, gaps = dict(proxy.applied), proxy.requests, list(proxy.retry_gaps)

        proxy.off()  # the same address (it is part of the settings), no faults
        clean = tmp_path / "clean.duckdb"
        code, err = _job(clean, tiny_run, proxy.base_url, small_prompts)
        assert code == 0, err
        distinct = proxy.requests

        proxy.reset_counts()  # a rerun of the faulty job's database: everything from the cache
        code, err = _job(faulty, tiny_run, proxy.base_url, small_prompts)
        assert code == 0, err
        rerun_requests = proxy.requests

    assert _rows(faulty) == _rows(clean)  # nothing lost, nothing twice, nothing changed by a fault
    assert set(applied) == {"hang", "429-retry-after", "429", "500", "503", "drop", "malformed-json"}
    assert requests == distinct + sum(applied.values())  # each faulted request was retried exactly once
    assert gaps and min(gaps) >= RETRY_AFTER * 0.95  # Retry-After obeyed
    attempts = [a for (a,) in _q(faulty, "SELECT attempts FROM llm_requests WHERE NOT cache_hit")]
    assert max(attempts) == 2 and min(attempts) >= 1  # bounded: one fault, one retry
    assert _q(faulty, "SELECT count(*) FROM llm_requests WHERE method = 'probe' AND attempts = 2") == [(1,)]
    assert _q(clean, "SELECT DISTINCT simulator FROM explanations WHERE kind = 'llm'") == [("all_at_once",)]
    assert rerun_requests == 0
    for path in [faulty, clean, *tiny_run.rglob("*")]:  # the key is sent, never written
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    figures = {"requests": requests, "distinct requests": distinct, "faults": applied,
               "retries": sum(applied.values()), "nodes lost": 0}
    print("fault matrix:", json.dumps(figures))
