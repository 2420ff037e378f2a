"""`circuits demo` killed with SIGKILL in every stage and started again finishes with the same rows as an
uninterrupted run, and no row twice.

Each run is a real `circuits demo` process (tiny model, one task, two nodes, the real Qwen2.5-Coder-0.5B
joined into a fresh cache) that `$CIRCUITS_KILL_AT` makes send itself SIGKILL at a chosen point of a
stage (`sparse_model/failpoints.py`): the same signal as `kill -9`, at a point that is known to be mid-stage.
The killed runs form one chain: each one resumes what the last left and is killed in the next stage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from explainer.store import Store

# In the order the demo reaches them; each kill lands in the middle of its stage.
KILLS = ["train.step:20", "tasks.task:3", "prune.step:10", "join.chunk:3", "records.node:1", "explain.node:1",
         "report.write:1"]
# Per-run bookkeeping, not results: which job asked what, and when.
SKIP_TABLES = {"jobs", "llm_requests", "schema_version"}
SKIP_COLUMNS = {"seconds", "job_id", "created_at", "started_at", "finished_at", "updated_at"}


def _demo(folder: Path, corpus: Path, cache: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CIRCUITS_KILL_AT"}
    env["CIRCUITS_MODEL_CACHE"] = str(cache)
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
            out[table] = sorted((tuple(str(v).replace(str(folder), "<folder>") for v in row) for row in rows))
    return out


@pytest.mark.slow
def test_demo_killed_in_every_stage_finishes_with_the_rows_of_an_uninterrupted_run(tmp_path, small_corpus, embedded_llm):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    done = _demo(reference, small_corpus, tmp_path / "cache-reference", None)
    assert done.returncode == 0, done.stderr

    for kill_at in KILLS:
        r = _demo(killed, small_corpus, tmp_path / "cache-killed", kill_at)
        assert r.returncode == -signal.SIGKILL, f"not killed at {kill_at} (exit {r.returncode}): {r.stderr[-2000:]}"
    assert not (killed / "report.html").exists()  # the last kill landed before the report's rename
    last = _demo(killed, small_corpus, tmp_path / "cache-killed", None)
    assert last.returncode == 0, last.stderr
    assert last.stdout == done.stdout  # the same summary rows

    want, got = _rows(reference), _rows(killed)
    assert set(got) == set(want)
    for table in want:
        assert got[table] == want[table], f"table {table} differs after the kills"
        assert not [row for row, n in Counter(got[table]).items() if n > 1], f"duplicate rows in {table}"
    assert sum(map(len, want.values())) > 0 and want["explanations"]
    assert (killed / "report.html").read_text().count("random_control") == (reference / "report.html").read_text().count("random_control")
    assert list((tmp_path / "cache-killed").glob("*.partial-*")) == []  # the killed join left nothing behind
