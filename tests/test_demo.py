"""`circuits demo` runs every stage and, run again, reuses everything; `circuits export` writes every
table to Parquet. The demo runs on the tiny model (the 5-minute demo model is measured in the README)."""

from __future__ import annotations

import shutil

import duckdb
import pytest
from click.testing import CliRunner

from explainer.cli import main
from explainer.jobs.demo import DemoSettings, run_demo
from explainer.jobs.explain import ExplainSettings
from explainer.llm import make_client
from explainer.store import Store
from sparse_model.prune import PruneSettings


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory, tiny_run, small_corpus, embedded_llm):
    tmp = tmp_path_factory.mktemp("demo")
    out = tmp / "tiny"
    shutil.copytree(tiny_run, out)  # stage 1 finds the trained run and reuses it
    settings = DemoSettings(out=str(out), report=str(tmp / "report.html"), preset="tiny", corpus=str(small_corpus),
                            tasks=("random_control",), prune=PruneSettings(k_coef=5e-5),
                            explain=ExplainSettings(explanations_per_node=1, window=12, explain_windows=1,
                                                    score_windows=1, calibrate_windows=1))
    logs: list[str] = []
    with Store.open(tmp / "c.duckdb") as store:
        # the demo's plumbing on the fast SmolLM2; the default explainer is tested in test_evaluation.py
        rows = run_demo(store, settings, client=make_client("local", model="smollm2-135m"), progress=False,
                        log=logs.append)
    return tmp, settings, rows, logs


def _count(db, sql):
    with Store.open(db, read_only=True) as s:
        return s.query(sql)[1][0][0]


def test_demo_runs_every_stage_and_summarises_each_task(demo_db):
    tmp, settings, rows, logs = demo_db
    assert [line[:5] for line in logs] == ["[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"]
    (row,) = rows
    assert row["task"] == "random_control" and row["nodes"] > 1 and row["unpruned_loss"] > 0
    n = row["nodes"]
    db = tmp / "c.duckdb"
    assert _count(db, "SELECT count(DISTINCT node_id) FROM node_scores WHERE kind = 'llm'") == n
    assert _count(db, "SELECT count(*) FROM task_evals") >= 12
    html = (tmp / "report.html").read_text()
    assert "random_control" in html and "<svg" in html
    if row["best_node"] is not None:  # some LLM explanation was scored: it is reported with its baseline
        assert row["best_explanation"] and row["score"] is not None


def test_a_second_demo_reuses_everything(demo_db):
    tmp, settings, rows, _ = demo_db
    db = tmp / "c.duckdb"
    before = [_count(db, f"SELECT count(*) FROM {t}") for t in ("circuits", "explanations", "simulations", "scores")]
    (tmp / "report.html").unlink()
    with Store.open(db) as store:
        again = run_demo(store, settings, client=make_client("local", model="smollm2-135m"), progress=False,
                         log=lambda m: None)
    assert again == rows
    assert [_count(db, f"SELECT count(*) FROM {t}") for t in ("circuits", "explanations", "simulations", "scores")] == before
    assert _count(db, "SELECT requests - cache_hits FROM job_summary ORDER BY started_at DESC LIMIT 1") == 0
    assert (tmp / "report.html").exists()


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


def test_db_option_works_after_the_command_too(tmp_path):
    db = tmp_path / "after.duckdb"
    Store.open(db).close()
    r = CliRunner().invoke(main, ["sql", "SELECT count(*) AS n FROM models", "--db", str(db), "--json"])
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(main, ["sql", "SELECT 1", "--db", str(tmp_path / "missing.duckdb")])
    assert r.exit_code == 1 and "missing.duckdb" in r.stderr
