"""`circuits demo` runs every stage, run again reuses everything, and killed with SIGKILL in any stage and
started again finishes with the same rows; `circuits export` writes every table to Parquet.

Every demo here is a real `circuits demo` process on the tiny model (one task, two nodes, the real
Qwen2.5-Coder-0.5B joined into a fresh model cache); the 5-minute demo model is measured in the README.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from explainer.cli import main
from explainer.store import Store

# Where `$CIRCUITS_KILL_AT` (sparse_model/failpoints.py) makes the demo SIGKILL itself: in the order the demo
# reaches them, each in the middle of its stage. The same signal as `kill -9`, at a point known to be mid-stage.
KILLS = ["train.step:20", "tasks.task:3", "prune.step:10", "records.node:1", "join.chunk:3", "explain.node:1",
         "report.write:1"]  # the model parts are joined when the explainer first needs them
# Per-run bookkeeping, not results: which job asked what, and when.
SKIP_TABLES = {"jobs", "llm_requests", "schema_version"}
SKIP_COLUMNS = {"seconds", "search_seconds", "job_id", "created_at", "started_at", "finished_at", "updated_at"}


def _demo(folder: Path, corpus: Path, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CIRCUITS_KILL_AT"}
    env["CIRCUITS_MODEL_CACHE"] = str(folder / "model-cache")  # empty at first: the demo joins the model parts
    if kill_at:
        env["CIRCUITS_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "explainer", "--db", str(folder / "c.duckdb"), "demo", "--out", str(folder / "demo"),
           "--report", str(folder / "report.html"), "--preset", "tiny", "--corpus", str(corpus), "--task",
           "random_control", "--max-nodes", "2", "--model", "qwen2.5-coder-0.5b", "--json"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _rows(folder: Path) -> dict[str, list[tuple]]:
    """Every result table's rows, without per-run bookkeeping columns, with the folder's path taken out."""
    out: dict[str, list[tuple]] = {}
    with Store.open(folder / "c.duckdb", read_only=True) as store:
        tables = [t for (t,) in store.query("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' AND table_type = 'BASE TABLE'")[1]]
        for table in sorted(set(tables) - SKIP_TABLES):
            cols = [c for c, typ in store.query(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?", [table])[1]
                    if c not in SKIP_COLUMNS and not typ.startswith("TIMESTAMP")]
            rows = store.query(f"SELECT {', '.join(cols)} FROM {table}")[1]
            out[table] = sorted(tuple(str(v).replace(str(folder), "<folder>") for v in row) for row in rows)
    return out


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory, small_corpus, embedded_llm):
    tmp = tmp_path_factory.mktemp("demo")
    done = _demo(tmp, small_corpus)
    assert done.returncode == 0, done.stderr
    return tmp, json.loads(done.stdout), done


def _count(db, sql):
    with Store.open(db, read_only=True) as s:
        return s.query(sql)[1][0][0]


def test_demo_runs_every_stage_and_summarises_each_task(demo_db):
    tmp, rows, done = demo_db
    stages = [line[:5] for line in done.stderr.splitlines() if line.startswith("[")]
    assert stages == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    assert "joining the 6 parts of Qwen2.5-Coder-0.5B-Instruct" in done.stderr
    (row,) = rows
    assert row["task"] == "random_control" and row["nodes"] >= 1 and row["unpruned_loss"] > 0
    db = tmp / "c.duckdb"
    assert _count(db, "SELECT count(DISTINCT node_id) FROM node_scores WHERE kind = 'llm'") == min(2, row["nodes"])
    assert _count(db, "SELECT count(*) FROM task_evals") >= 12
    html = (tmp / "report.html").read_text()
    assert "random_control" in html and "<svg" in html
    if row["best_node"] is not None:  # some LLM explanation was scored: it is reported with its baseline
        assert row["best_explanation"] and row["score"] is not None


def test_a_second_demo_reuses_everything(demo_db, small_corpus):
    tmp, rows, done = demo_db
    db = tmp / "c.duckdb"
    before = _rows(tmp)
    (tmp / "report.html").unlink()
    again = _demo(tmp, small_corpus)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == rows
    assert _rows(tmp) == before
    assert _count(db, "SELECT requests - cache_hits FROM job_summary ORDER BY started_at DESC LIMIT 1") == 0
    assert (tmp / "report.html").exists()


def test_demo_killed_in_every_stage_finishes_with_the_rows_of_an_uninterrupted_run(demo_db, tmp_path, small_corpus):
    reference = demo_db[0]
    for kill_at in KILLS:  # one chain: each run resumes what the last one left and is killed in the next stage
        r = _demo(tmp_path, small_corpus, kill_at)
        assert r.returncode == -signal.SIGKILL, f"not killed at {kill_at} (exit {r.returncode}): {r.stderr[-2000:]}"
    assert not (tmp_path / "report.html").exists()  # the last kill landed before the report's rename
    last = _demo(tmp_path, small_corpus)
    assert last.returncode == 0, last.stderr
    assert json.loads(last.stdout) == demo_db[1]  # the same summary rows

    want, got = _rows(reference), _rows(tmp_path)
    assert set(got) == set(want) and want["explanations"]
    for table in want:
        assert got[table] == want[table], f"table {table} differs after the kills"
        assert not [row for row, n in Counter(got[table]).items() if n > 1], f"duplicate rows in {table}"
    assert (tmp_path / "report.html").read_text().count("random_control") > 0
    assert [p.name for p in tmp_path.glob(".report.html-*")] == []  # the killed write's temporary file is gone
    assert list((tmp_path / "model-cache").glob("*.partial-*")) == []  # the killed join left nothing behind


def test_export_writes_every_table_to_parquet_and_refuses_a_non_empty_folder(demo_db):
    tmp = demo_db[0]
    out = tmp / "parquet"
    r = CliRunner().invoke(main, ["--db", str(tmp / "c.duckdb"), "export", "--parquet", str(out), "--json"])
    assert r.exit_code == 0, r.stderr
    with Store.open(tmp / "c.duckdb", read_only=True) as s:
        tables = {t for (t,) in s.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'")[1]}
        n_scores = s.query("SELECT count(*) FROM node_scores")[1][0][0]
    assert {p.stem for p in out.glob("*.parquet")} == tables
    con = duckdb.connect()  # a fresh DuckDB, as a user elsewhere would read the files
    assert con.execute(f"SELECT count(*) FROM '{out / 'node_scores.parquet'}'").fetchone()[0] == n_scores
    tokens = con.execute(f"SELECT tokens FROM '{out / 'activation_records.parquet'}' LIMIT 1").fetchone()[0]
    assert isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)  # lists stay lists
    r = CliRunner().invoke(main, ["--db", str(tmp / "c.duckdb"), "export", "--parquet", str(out)])
    assert r.exit_code == 1 and "not an empty folder" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_demo_bad_target_loss_is_one_line(tmp_path):
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "c.duckdb"), "demo", "--target-loss", "0.9"])
    assert r.exit_code == 1 and "outside" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("model,needle", [("/nonexistent/model.gguf", "no model file"), ("bad", "no model file"),
                                          ("file", "not a GGUF model file")])
def test_demo_with_a_wrong_model_is_one_line_before_any_training(tmp_path, model, needle):
    if model == "file":
        model = str(tmp_path / "x.gguf")
        Path(model).write_text("not a model")
    r = CliRunner().invoke(main, ["--db", str(tmp_path / "c.duckdb"), "demo", "--out", str(tmp_path / "run"),
                                  "--model", model])
    assert r.exit_code == 1 and needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_db_option_works_after_the_command_too(tmp_path):
    db = tmp_path / "after.duckdb"
    Store.open(db).close()
    r = CliRunner().invoke(main, ["sql", "SELECT count(*) AS n FROM models", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(main, ["sql", "SELECT 1", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 1 and "missing.duckdb" in r.stderr


def test_readers_are_answered_in_every_stage_of_a_running_demo(tmp_path, small_corpus, embedded_llm):
    """`circuits sql` polled from another process throughout a real demo (training, tasks, pruning,
    records, joining the model, explaining, the report) is answered every time, while the demo
    writes; the stages it was answered in are the demo's own progress lines."""
    env = {k: v for k, v in os.environ.items() if k != "CIRCUITS_KILL_AT"}
    env["CIRCUITS_MODEL_CACHE"] = str(tmp_path / "model-cache")
    db = tmp_path / "c.duckdb"
    Store.open(db).close()  # the file exists before the demo starts, so the first poll has something to read
    log = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "explainer", "--db", str(db), "demo", "--out", str(tmp_path / "demo"),
           "--report", str(tmp_path / "report.html"), "--preset", "tiny", "--corpus", str(small_corpus), "--task",
           "random_control", "--max-nodes", "2", "--model", "qwen2.5-coder-0.5b", "--json"]
    with open(log, "w") as err:
        demo = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        answered: list[str] = []
        try:
            while demo.poll() is None:
                r = subprocess.run([sys.executable, "-m", "explainer", "--db", str(db), "sql",
                                    "SELECT count(*) FROM schema_version", "--csv"],
                                   capture_output=True, text=True, timeout=120, env=env)
                stages = [line[:5] for line in log.read_text().splitlines() if line.startswith("[")]
                assert r.returncode == 0, (stages[-1:], r.stderr)  # answered, whatever the demo was doing
                answered.append(stages[-1] if stages else "start")
        finally:
            if demo.poll() is None:
                demo.kill()
    assert demo.returncode == 0, log.read_text()[-2000:]
    assert {"[1/5]", "[3/5]", "[4/5]"} <= set(answered), Counter(answered)  # polled during the long stages
