import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from explainer.store import schema as store_mod
from explainer.store import DEFAULT_DB, MIGRATIONS, Store, resolve_db_path
from sparse_model.errors import UserError

LATEST = MIGRATIONS[-1][0]


def model_row(name="m1", **over):
    row = {
        "name": name,
        "config": {"d_model": 64, "n_layers": 2, "heads": [1, 2]},
        "corpus_manifest": {"files": ["a.py", "b.py"], "sha": "abc"},
        "n_params": 123456,
        "n_nonzero": 1234,
        "density": {"attn.q": 0.01, "mlp.in": 0.02},
        "train_loss": 2.5,
        "val_loss": 2.7,
        "tokens_seen": 10_000,
        "steps": 100,
        "checkpoint_path": "runs/m1/ckpt.safetensors",
        "run_dir": "runs/m1",
    }
    row.update(over)
    return row


def test_creates_file_and_records_schema(tmp_path):
    db = tmp_path / "c.duckdb"
    with Store.open(db) as s:
        assert db.exists()
        assert s.schema_version() == LATEST
        rows = s.con.execute("SELECT version, applied_at FROM schema_version").fetchall()
        assert [r[0] for r in rows] == [v for v, _ in MIGRATIONS]
        assert all(r[1] is not None for r in rows)
        assert s.list_models() == []


def test_reopen_is_idempotent(tmp_path):
    db = tmp_path / "c.duckdb"
    Store.open(db).close()
    with Store.open(db) as s:
        s.upsert_model(model_row())
    with Store.open(db) as s:
        n = s.con.execute("SELECT count(*) FROM schema_version").fetchone()[0]
        assert n == len(MIGRATIONS)
        assert s.get_model("m1") is not None


def test_upsert_get_list_roundtrip(tmp_path):
    with Store.open(tmp_path / "c.duckdb") as s:
        s.upsert_model(model_row("b"))
        s.upsert_model(model_row("a", density=None, run_dir=None))
        got = s.get_model("b")
        for k, v in model_row("b").items():
            assert got[k] == v, k
        assert got["created_at"] is not None and got["updated_at"] is not None
        assert s.get_model("a")["density"] is None
        assert s.get_model("missing") is None
        assert [m["name"] for m in s.list_models()] == ["a", "b"]
        assert s.list_models()[1]["config"]["heads"] == [1, 2]


def test_upsert_replaces_by_name(tmp_path):
    with Store.open(tmp_path / "c.duckdb") as s:
        s.upsert_model(model_row("m", steps=1, val_loss=3.0))
        first = s.get_model("m")
        s.upsert_model(model_row("m", steps=2, val_loss=None, config={"d_model": 128}))
        got = s.get_model("m")
        assert len(s.list_models()) == 1
        assert got["steps"] == 2 and got["val_loss"] is None
        assert got["config"] == {"d_model": 128}
        assert got["created_at"] == first["created_at"]
        assert got["updated_at"] >= first["updated_at"]


def test_upsert_rejects_unknown_column(tmp_path):
    with Store.open(tmp_path / "c.duckdb") as s:
        with pytest.raises(ValueError):
            s.upsert_model(model_row(bogus=1))
        assert s.list_models() == []


@pytest.mark.parametrize("kind", ["text", "sqlite", "empty"])
def test_not_a_duckdb_file_is_left_alone(tmp_path, kind):
    db = tmp_path / "c.duckdb"
    if kind == "text":
        db.write_text("name,value\nx,1\n" * 50)
    elif kind == "sqlite":
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE t (a)")
        con.commit()
        con.close()
    else:
        db.write_bytes(b"")
    before = db.read_bytes()
    for ro in (False, True):
        with pytest.raises(UserError, match="is not a DuckDB database; pass --db"):
            Store.open(db, read_only=ro)
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.duckdb"]


def test_locked_by_another_process(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITS_DB_WAIT", "0.5")  # a busy file is waited for, then named in one line
    db = tmp_path / "c.duckdb"
    Store.open(db).close()
    holder = textwrap.dedent(
        f"""
        import sys, time, duckdb
        con = duckdb.connect({str(db)!r})
        print("locked", flush=True)
        sys.stdin.read()  # hold the lock until the test closes our stdin
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", holder],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout.readline().strip() == "locked"
        for ro in (False, True):
            with pytest.raises(UserError) as ei:
                Store.open(db, read_only=ro)
            msg = str(ei.value)
            assert "in use by another circuits process" in msg
            assert f"(pid {p.pid})" in msg
            assert "wait for it to finish or use another --db" in msg
            assert "\n" not in msg
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    Store.open(db).close()  # lock released -> opens fine again


def test_newer_schema_version_refused(tmp_path):
    db = tmp_path / "c.duckdb"
    with Store.open(db) as s:
        s.con.execute("INSERT INTO schema_version VALUES (?, now())", [LATEST + 5])
    for ro in (False, True):
        expected = rf"newer version of circuits \(schema {LATEST + 5} > {LATEST}\); upgrade"
        with pytest.raises(UserError, match=expected):
            Store.open(db, read_only=ro)


def test_new_migration_applied_on_reopen(tmp_path, monkeypatch):
    db = tmp_path / "c.duckdb"
    Store.open(db).close()
    extra = MIGRATIONS + [(LATEST + 1, "CREATE TABLE t1 (a INTEGER); CREATE TABLE t2 (b INTEGER);")]
    monkeypatch.setattr(store_mod, "MIGRATIONS", extra)
    with Store.open(db) as s:
        assert s.schema_version() == LATEST + 1
        assert s.query("SELECT count(*) FROM t1")[1] == [(0,)]


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    db = tmp_path / "c.duckdb"
    Store.open(db).close()
    bad = MIGRATIONS + [(LATEST + 1, "CREATE TABLE t1 (a INTEGER); SELECT * FROM no_such_table;")]
    monkeypatch.setattr(store_mod, "MIGRATIONS", bad)
    with pytest.raises(Exception):
        Store.open(db)
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with Store.open(db) as s:
        assert s.schema_version() == LATEST
        tables = [r[0] for r in s.query("SHOW TABLES")[1]]
        assert "t1" not in tables


def test_read_only_refuses_writes(tmp_path):
    db = tmp_path / "c.duckdb"
    with Store.open(db) as s:
        s.upsert_model(model_row())
    with Store.open(db, read_only=True) as s:
        cols, rows = s.query("SELECT name, steps FROM models WHERE name = ?", ["m1"])
        assert cols == ["name", "steps"] and rows == [("m1", 100)]
        assert s.get_model("m1")["config"]["d_model"] == 64
        for sql in ("DELETE FROM models", "CREATE TABLE x (a INT)"):
            with pytest.raises(UserError, match="circuits sql is read-only"):
                s.query(sql)
        with pytest.raises(UserError, match="SQL error: .*no_such"):
            s.query("SELECT * FROM no_such")


def test_read_only_missing_file(tmp_path):
    db = tmp_path / "nothing.duckdb"
    with pytest.raises(UserError, match="no database yet.*circuits train"):
        Store.open(db, read_only=True)
    assert not db.exists()


def test_missing_parent_dir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Store.open(tmp_path / "no" / "such" / "c.duckdb")


def test_resolve_db_path(tmp_path, monkeypatch):
    monkeypatch.delenv("CIRCUITS_DB", raising=False)
    assert resolve_db_path(None) == resolve_db_path("") == Path(DEFAULT_DB)
    monkeypatch.setenv("CIRCUITS_DB", str(tmp_path / "env.duckdb"))
    assert resolve_db_path(None) == tmp_path / "env.duckdb"
    assert resolve_db_path(tmp_path / "arg.duckdb") == tmp_path / "arg.duckdb"
    assert resolve_db_path("x.duckdb").name == "x.duckdb"
