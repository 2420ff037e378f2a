"""Long jobs against real-world servers: full `circuits explain` jobs driven through a FAKE
OpenAI-compatible server that injects faults (tests/fault_server.py). The fake tests our handling of
429s, 5xx, hangs, dropped connections and garbage; it is not an LLM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from explainer.jobs.accounting import CACHE_VERSION, ResponseCache
from explainer.cli import main
from explainer.store import Store
from output import message_lines
from fault_server import FaultServer

SECRET = "sk-test-SECRET-7f3a9c21"
NODES = ["--node", "L0.mlp.neuron[0]", "--node", "L0.mlp.neuron[1]", "--node", "L0.mlp.neuron[2]"]
SMALL = ["--window", "6", "--explain-windows", "1", "--score-windows", "1", "--calibrate-windows", "1",
         "--explanations-per-node", "1", "--concurrency", "1", "--backoff", "0.05", "--timeout", "2",
         "--explain-prompt", "explain"]  # the fake server answers the worked-example format


def _args(db, run, server, prompts, *extra):
    return ["--db", str(db), "explain", str(run), "--backend", "openai", "--base-url", server.base_url,
            *NODES, *SMALL, "--prompts", str(prompts), *extra]


def _run(db, run, server, prompts, *extra):
    r = CliRunner().invoke(main, _args(db, run, server, prompts, *extra), env={"OPENAI_API_KEY": SECRET})
    return r.exit_code, r.stdout, r.stderr


def _rows(db) -> dict[str, list]:
    """The results a job leaves, without timestamps and job ids (which differ between runs)."""
    q = {
        "explanations": "SELECT explanation_id, node_id, kind, candidate, selected, text, source_node_id, failure, "
                        "calibration_slope, calibration_intercept FROM explanations ORDER BY ALL",
        "simulations": "SELECT explanation_id, sampling, rank, split, predicted, failure FROM simulations ORDER BY ALL",
        "scores": "SELECT explanation_id, split, method, value, n_tokens FROM scores ORDER BY ALL",
        "activation_records": "SELECT node_id, sampling, rank, split, tokens, activations FROM activation_records ORDER BY ALL",
    }
    with Store.open(db, read_only=True) as s:
        return {t: s.query(sql)[1] for t, sql in q.items()}


def _one_error_line(err: str) -> bool:
    """The user sees one line saying what is wrong (progress bars aside), never a traceback."""
    lines = message_lines(err)
    return len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err


def _q(db, sql):
    with Store.open(db, read_only=True) as s:
        return s.query(sql)[1]


@pytest.fixture
def server():
    with FaultServer(hang_seconds=20) as srv:
        yield srv


# ---- retries ------------------------------------------------------------------------------------


def test_job_completes_through_every_kind_of_transient_fault_with_bounded_retries(tmp_path, tiny_run, server,
                                                                                  small_prompts):
    # The probe runs first (4 requests); then one of each fault hits the job's next requests, each
    # followed by a normal answer (which the retry gets).
    faults = ["429", "500", "503", "drop", "disconnect", "malformed-json", "truncated-logprobs", "missing-logprobs",
              "misaligned-text", "hang"]
    server.script(["ok"] * 4 + [x for f in faults for x in (f, "ok")])
    code, _, err = _run(tmp_path / "c.duckdb", tiny_run, server, small_prompts, "--max-attempts", "3")
    assert code == 0, err
    assert "3 nodes explained, 0 already done, 0 failed" in err
    scored = _q(tmp_path / "c.duckdb", "SELECT node_id, score FROM node_scores WHERE kind = 'llm'")
    assert len(scored) == 3 and all(score is not None for _, score in scored)
    # Retries are bounded: no request body was sent more than --max-attempts times.
    bodies: dict[str, int] = {}
    for r in server.requests:
        key = json.dumps(r.body, sort_keys=True)
        bodies[key] = bodies.get(key, 0) + 1
    assert max(bodies.values()) <= 3
    assert all(server.count(fault=f) == 1 for f in faults)
    assert server.count(fault="hang") == 1  # the hung request was given up after --timeout and retried


def test_retry_after_is_obeyed_and_4xx_is_not_retried(tmp_path, tiny_run, server, small_prompts):
    server.script(["ok"] * 4 + ["429-retry-after:2"])
    code, _, err = _run(tmp_path / "c.duckdb", tiny_run, server, small_prompts)
    assert code == 0, err
    first = next(i for i, r in enumerate(server.requests) if r.status == 429)
    again = next(r for r in server.requests[first + 1:] if r.body == server.requests[first].body)
    assert again.received - server.requests[first].received >= 2.0

    # 401: one clear line naming the endpoint, not the key, and no retry.
    server.reset()
    server.add_rule("401")
    code, _, err = _run(tmp_path / "d.duckdb", tiny_run, server, small_prompts, "--no-cache")
    assert code == 1 and server.base_url in err and "OPENAI_API_KEY" in err and SECRET not in err
    assert _one_error_line(err) and server.count() == 1


def test_an_unanswerable_node_is_recorded_the_job_goes_on_and_retry_failed_redoes_only_it(
        tmp_path, tiny_run, server, small_prompts):
    db = tmp_path / "c.duckdb"
    server.add_rule("500", kind="explain", times=2)  # the first node's explanation, on both attempts
    # --llm-only: with the other writers' candidates in the pool, the node would still get an explanation
    code, _, err = _run(db, tiny_run, server, small_prompts, "--max-attempts", "2", "--llm-only")
    assert code == 0, err
    assert "3 nodes explained, 0 already done, 1 failed" in err and "--retry-failed" in err
    failed = _q(db, "SELECT node_id, text, failure FROM explanations WHERE kind = 'llm' AND failure IS NOT NULL")
    assert len(failed) == 1 and failed[0][1] is None and "HTTP 500" in failed[0][2]
    assert _q(db, "SELECT count(*) FROM node_scores WHERE kind = 'llm' AND score IS NOT NULL")[0][0] == 2
    (job,) = _q(db, "SELECT nodes_done, failures, request_errors FROM job_summary")
    assert job == (3, 1, 1)

    server.reset()
    code, _, err = _run(db, tiny_run, server, small_prompts, "--max-attempts", "2", "--retry-failed", "--llm-only")
    assert code == 0, err
    assert "1 nodes explained, 2 already done, 0 failed" in err
    assert server.count(kind="explain") == 1
    assert _q(db, "SELECT count(*) FROM node_scores WHERE kind = 'llm' AND score IS NOT NULL")[0][0] == 3


def test_text_that_does_not_line_up_is_a_recorded_failure_with_its_raw_text(tmp_path, tiny_run, server,
                                                                          small_prompts):
    db = tmp_path / "c.duckdb"
    server.add_rule("misaligned-text", kind="simulate-chat")  # every simulation reply misses a line
    code, _, err = _run(db, tiny_run, server, small_prompts, "--simulator", "text")
    assert code == 0, err
    assert "3 nodes explained, 0 already done, 3 failed" in err
    sims = _q(db, "SELECT s.predicted, s.failure, s.raw_text FROM simulations s JOIN explanations e "
                  "USING (explanation_id) WHERE e.kind = 'llm'")
    assert sims and all(p is None and "line up" in f and raw.count("\t") == 5 for p, f, raw in sims)
    assert _q(db, "SELECT count(*) FROM node_scores WHERE kind = 'llm' AND score IS NULL "
                  "AND failure LIKE 'all 2 simulations failed%'")[0][0] == 3  # both score windows
    # A reply that arrived but does not line up is not retried: one request per simulation.
    assert server.count(kind="simulate-chat") == _q(db, "SELECT count(*) FROM simulations WHERE simulator = 'text'")[0][0]


# ---- the cache --------------------------------------------------------------------------------------


def test_the_cache_serves_a_rerun_with_zero_requests(tmp_path, tiny_run, server, small_prompts):
    db = tmp_path / "c.duckdb"
    code, _, err = _run(db, tiny_run, server, small_prompts)
    assert code == 0, err
    first = _rows(db)
    assert server.count() > 0
    with Store.open(db) as s:  # forget the results, keep the cache: the job must rebuild them for free
        for t in ("scores", "simulations", "explanations"):
            s.con.execute(f"DELETE FROM {t}")
    server.reset()
    code, _, err = _run(db, tiny_run, server, small_prompts)
    assert code == 0, err
    assert server.count() == 0
    assert _rows(db) == first
    jobs = _q(db, "SELECT requests, cache_hits, prompt_tokens FROM job_summary ORDER BY started_at")
    assert jobs[1][0] == jobs[1][1] > 0 and jobs[0][2] > 0  # the rerun: every request a cache hit

    server.reset()  # --no-cache asks again
    with Store.open(db) as s:
        for t in ("scores", "simulations", "explanations"):
            s.con.execute(f"DELETE FROM {t}")
    code, _, err = _run(db, tiny_run, server, small_prompts, "--no-cache")
    assert code == 0, err
    assert server.count() > 0 and _rows(db) == first


def test_a_cache_from_a_newer_version_is_refused_in_one_line(tmp_path, tiny_run, server, small_prompts):
    db = tmp_path / "c.duckdb"
    code, _, err = _run(db, tiny_run, server, small_prompts)
    assert code == 0, err
    with Store.open(db) as s:
        s.con.execute("UPDATE llm_cache SET cache_version = ?", [CACHE_VERSION + 1])
        s.con.execute("DELETE FROM explanations")
    code, _, err = _run(db, tiny_run, server, small_prompts)
    assert code == 1 and "newer version" in err and "--no-cache" in err and _one_error_line(err)


# ---- kill and restart --------------------------------------------------------------------------------


def _spawn(db, run, server, prompts, *extra) -> subprocess.Popen:
    env = dict(os.environ, OPENAI_API_KEY=SECRET)
    # Ctrl-C as in a terminal: a shell that started the tests in the background hands its children
    # SIGINT ignored, and Python then never raises KeyboardInterrupt.
    return subprocess.Popen([sys.executable, "-m", "explainer", *_args(db, run, server, prompts, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_requests(server: FaultServer, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while server.count() < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the job made too few requests"
        time.sleep(0.02)


def test_sigkill_mid_job_then_restart_leaves_exactly_the_rows_of_a_clean_run(tmp_path, tiny_run, small_prompts):
    with FaultServer(latency=0.05) as server:
        clean = tmp_path / "clean.duckdb"
        code, _, err = _run(clean, tiny_run, server, small_prompts)
        assert code == 0, err
        total = server.count()

        for kill_at in (total // 3, (2 * total) // 3):  # mid-node, and during the shuffled controls
            db = tmp_path / f"killed{kill_at}.duckdb"
            server.reset()
            proc = _spawn(db, tiny_run, server, small_prompts)
            _wait_for_requests(server, proc, kill_at)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            listed = CliRunner().invoke(main, ["--db", str(db), "jobs", "--json"])
            assert [j["status"] for j in json.loads(listed.stdout)] == ["running (process gone)"]
            code, _, err = _run(db, tiny_run, server, small_prompts)
            assert code == 0, err
            taken = [line for line in err.splitlines() if "taking over" in line]
            assert len(taken) == 1 and f"pid {proc.pid}" in taken[0], err  # one line says so
            assert sorted(_q(db, "SELECT status FROM jobs")) == [("finished",), ("interrupted",)]
            assert _rows(db) == _rows(clean)
            assert server.count() <= total + 2  # answers from before the kill came from the cache


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, tiny_run, small_prompts):
    with FaultServer(latency=0.05) as server:
        db = tmp_path / "c.duckdb"
        proc = _spawn(db, tiny_run, server, small_prompts)
        _wait_for_requests(server, proc, 12)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "Traceback" not in err
        assert "interrupted" in err and "run the same command again" in err
        assert _q(db, "SELECT status FROM jobs") == [("interrupted",)]
        code, _, err = _run(db, tiny_run, server, small_prompts)
        assert code == 0, err and "already done" in err


# ---- the key, accounting, bad input -------------------------------------------------------------------


def test_the_api_key_is_sent_but_never_written_anywhere(tmp_path, tiny_run, small_prompts):
    with FaultServer() as server:
        server.script(["ok"] * 4 + ["500", "401"])  # errors too: their messages must not carry the key
        db = tmp_path / "c.duckdb"
        _run(db, tiny_run, server, small_prompts, "--max-attempts", "2")
        code, out, err = _run(db, tiny_run, server, small_prompts)
        assert any(r.headers.get("authorization") == f"Bearer {SECRET}" for r in server.requests)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for text in (out, err):
        assert SECRET not in text


def test_jobs_lists_tokens_cache_hits_and_cost(tmp_path, tiny_run, server, small_prompts):
    db = tmp_path / "c.duckdb"
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"fake-fault-server": {"prompt_per_million": 1.0, "completion_per_million": 2.0}}))
    code, _, err = _run(db, tiny_run, server, small_prompts, "--prices", str(prices))
    assert code == 0, err
    r = CliRunner().invoke(main, ["--db", str(db), "jobs", "--json"])
    (job,) = json.loads(r.stdout)
    assert job["status"] == "finished" and job["nodes_done"] == 3 and job["failures"] == 0
    # the capability probe's four requests (model list, chat, chat log-probs, echo) are requests of the job
    assert job["requests"] == server.count(kind="explain") + server.count(kind="echo") - 1 + 4
    assert _q(db, "SELECT count(*) FROM llm_requests WHERE method = 'probe'") == [(4,)]
    assert job["prompt_tokens"] > 0 and job["completion_tokens"] > 0
    assert job["cost"] == pytest.approx((job["prompt_tokens"] * 1.0 + job["completion_tokens"] * 2.0) / 1e6)
    per_explanation = _q(db, "SELECT e.kind, sum(r.prompt_tokens) FROM llm_requests r JOIN explanations e "
                             "USING (explanation_id) GROUP BY ALL ORDER BY ALL")
    assert [k for k, _ in per_explanation] == ["llm", "shuffled"] and all(t > 0 for _, t in per_explanation)


@pytest.mark.parametrize("args,needle", [
    (["--concurrency", "0"], "--concurrency"),
    (["--timeout", "-1"], "--timeout"),
    (["--max-attempts", "0"], "--max-attempts"),
    (["--prices", "PRICES"], "no price for model"),
])
def test_bad_input_is_one_line(tmp_path, tiny_run, server, small_prompts, args, needle):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"prompt_per_million": 0.15, "completion_per_million": 0.6}}))
    args = [str(prices) if a == "PRICES" else a for a in args]
    code, _, err = _run(tmp_path / "c.duckdb", tiny_run, server, small_prompts, *args)
    assert code == 1 and needle in err and _one_error_line(err)


@pytest.mark.parametrize("simulator,k,calibrate", [("embedding", 32, 10), ("text", 3, 5)])
def test_best_of_k_by_default_is_sized_for_the_simulator(tmp_path, tiny_run, server, small_prompts, simulator, k,
                                                         calibrate):
    # Unset, best-of-k is large where a candidate is cheap to judge (the embedding simulator) and
    # small where each judgement costs LLM passes; the sizes used are in the stored settings.
    args = ["--db", str(tmp_path / "c.duckdb"), "explain", str(tiny_run), "--backend", "openai", "--base-url",
            server.base_url, "--node", "L0.mlp.neuron[0]", "--window", "6", "--explain-windows", "1",
            "--score-windows", "1", "--concurrency", "1", "--explain-prompt", "explain", "--prompts",
            str(small_prompts), "--simulator", simulator, "--no-shuffled"]
    r = CliRunner().invoke(main, args, env={"OPENAI_API_KEY": SECRET})
    assert r.exit_code == 0, r.stderr
    rows = _q(tmp_path / "c.duckdb", "SELECT candidate, settings->>'$.explanations_per_node', "
              "settings->>'$.calibrate_windows' FROM explanations WHERE kind = 'llm' AND writer = 'llm' ORDER BY candidate")
    assert [row[0] for row in rows] == list(range(k))
    assert {(row[1], row[2]) for row in rows} == {(str(k), str(calibrate))}
    assert server.count(kind="explain") == k
