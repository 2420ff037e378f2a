"""A writer that commits one short transaction after another, never idle (as the activation-records
stage stores thousands of nodes), still lets a reader in another process answer: the waiting
reader marks that it waits and the writer closes the file for a moment after its next commit
(explainer/store/shared.py). The writer loses nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from click.testing import CliRunner

from explainer.cli import main
from explainer.store import Store

WRITER = textwrap.dedent("""
    import sys, time
    from explainer.store import Store
    db, seconds = sys.argv[1], float(sys.argv[2])
    with Store.open(db) as store:
        store.con.execute("CREATE TABLE IF NOT EXISTS busy (i INTEGER)")
        print("ready", flush=True)
        end, i = time.monotonic() + seconds, 0
        while time.monotonic() < end:  # back-to-back transactions: the file is never idle
            store._transaction([("INSERT INTO busy VALUES (?)", [i])])
            i += 1
    print(i, flush=True)
""")


def test_a_reader_is_answered_while_a_writer_commits_back_to_back(tmp_path, monkeypatch):
    db = tmp_path / "c.duckdb"
    Store.open(db).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "12"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        monkeypatch.setenv("CIRCUITS_DB_WAIT", "5")  # well under the writer's 12 s: it must let us in
        answers = []
        for _ in range(3):
            r = CliRunner().invoke(main, ["--db", str(db), "sql", "SELECT count(*) AS n FROM busy", "--csv"])
            assert r.exit_code == 0, r.stderr
            answers.append(int(r.stdout.splitlines()[1]))
        assert writer.poll() is None  # answered while the writer was still writing
        written = int(writer.communicate(timeout=60)[0].strip())
    finally:
        if writer.poll() is None:
            writer.kill()
    assert answers == sorted(answers) and answers[0] > 0  # each saw what was committed so far
    with Store.open(db, read_only=True) as store:
        assert store.query("SELECT count(*) FROM busy")[1][0][0] == written  # nothing lost
