"""Readers never wait for a writer: while a real `circuits explain` job writes (driven by the FAKE
fault server, slowed down so the job runs for a while), `circuits jobs`, `sql`, `report` and
`export` in other processes read what is committed so far; a second writer gets one clear line;
the job loses nothing."""

from __future__ import annotations

import json
import time

from click.testing import CliRunner

from explainer.cli import main
from fault_server import FaultServer
from test_resilience import SECRET, _args, _one_error_line, _rows, _run, _spawn


def _invoke(db, *args) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["--db", str(db), *args], env={"OPENAI_API_KEY": SECRET})
    return r.exit_code, r.stdout, r.stderr


def test_readers_see_a_running_job_and_a_second_writer_gets_one_line(tmp_path, tiny_run, small_prompts):
    clean, db = tmp_path / "clean.duckdb", tmp_path / "c.duckdb"
    for path in (clean, db):  # a (not learned) circuit row, so that the report has something to show
        r = CliRunner().invoke(main, ["--db", str(path), "prune", str(tiny_run), "--task", "single_double_quote",
                                      "--steps", "5"])
        assert r.exit_code == 0, r.output
    with FaultServer(latency=0.05) as server:  # one server for both runs: its address is part of the settings
        code, _, err = _run(clean, tiny_run, server, small_prompts)
        assert code == 0, err
        server.reset()
        server.latency = 0.5  # about 30 requests: the job writes for 15 s
        job = _spawn(db, tiny_run, server, small_prompts)
        deadline = time.monotonic() + 120
        while server.count(kind="explain") < 1:  # records are stored; the first explanation is asked for
            assert job.poll() is None, job.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # the readers run here, in the test's process: another process than the job's
        out = {name: _invoke(db, *args) for name, args in {
            "jobs": ["jobs", "--json"],
            "sql": ["sql", "SELECT count(*) AS n FROM activation_records", "--json"],
            "report": ["report", "-o", str(tmp_path / "report.html")],
            "export": ["export", "--parquet", str(tmp_path / "parquet")],
            "second writer": _args(db, tiny_run, server, small_prompts)[2:],
        }.items()}
        still_running = job.poll() is None
        server.latency = 0.0  # the readers are done: let the job finish quickly
        _, job_err = job.communicate(timeout=300)
        assert job.returncode == 0, job_err

    for name in ("jobs", "sql", "report", "export"):
        assert out[name][0] == 0, (name, out[name][2])
    assert still_running  # the readers finished while the job was still writing
    (listed,) = json.loads(out["jobs"][1])
    assert listed["status"] == "running" and listed["nodes_done"] < 3
    assert json.loads(out["sql"][1])[0]["n"] > 0  # the committed records are visible
    assert (tmp_path / "report.html").stat().st_size > 0 and (tmp_path / "parquet" / "explanations.parquet").exists()
    code, _, err = out["second writer"]
    assert code == 1 and _one_error_line(err) and "in use by another circuits job" in err
    assert _rows(db) == _rows(clean)  # the job lost nothing and wrote nothing twice
