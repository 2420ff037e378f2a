"""Search by meaning (`circuits search`, `explainer.jobs.search`): real DuckDB files, real
all-MiniLM-L6-v2 embeddings, explanations stored through the store's normal API."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os

import pytest
from click.testing import CliRunner

from explainer.cli import main
from explainer.jobs import search as search_mod
from explainer.jobs.search import EMBEDDER, backfill_embeddings, embeddings_for, search
from explainer.store import Store
from sparse_model.errors import UserError
from sparse_model.nodes import Node

pytest.importorskip("sentence_transformers")

M, OTHER = "demo", "other"
TEXTS = {  # node index -> its chosen LLM explanation
    1: "the closing quotation mark of a string literal",
    2: "the keyword return",
    3: "an opening parenthesis after a function name",
    4: "digits of a number literal",
    5: "indentation at the start of a line",
}
SCORES = {1: 0.61, 2: 0.42, 3: 0.05, 4: None, 5: 0.3}


def nid(i, model=M):
    return f"{model}/L1.mlp.neuron[{i}]"


def item(eid, node, text, model=M, kind="llm", selected=True, score=None, **over):
    row = {"explanation_id": eid, "node_id": nid(node, model), "model": model, "kind": kind, "text": text,
           "candidate": 0, "selected": selected, "explainer": "local:test", "simulator": "embedding",
           "settings_key": "k1", "settings": {"k": 1}}
    row.update(over)
    scores = [] if score is None else [{"split": "score", "method": "correlation", "value": score, "n_tokens": 64}]
    return row, [], scores


def fill(store: Store) -> None:
    """Two models' nodes, two tasks' circuits (task `quotes` pruned twice: the newest circuit holds
    nodes 1 and 2, the older one node 3), the explanations of TEXTS, and rows search must skip."""
    for model, ids in ((M, TEXTS), (OTHER, [1])):
        store.save_nodes(model, [{"node": Node("L1.mlp.neuron", i), "layer": 1, "mean": 0.0} for i in ids])
    for cid, task, nodes, when in (("old", "quotes", [3], "2024-01-01"), ("new", "quotes", [1, 2], "2024-06-01"),
                                   ("kw", "keywords", [2, 4], "2024-06-01")):
        store.save_circuit({"circuit_id": cid, "model": M, "task": task, "status": "circuit", "settings": {}},
                           [{"node_id": nid(n), "rank": i, "score": 1.0} for i, n in enumerate(nodes)], [])
        store.con.execute("UPDATE circuits SET created_at = ? WHERE circuit_id = ?", [when, cid])
    items = [item(f"e{i}", i, t, score=SCORES[i]) for i, t in TEXTS.items()]
    items += [item("o1", 1, "the closing quote of a string", model=OTHER, score=0.2),
              # not searchable: a baseline, an unchosen candidate, a failure without text, the suite's rows
              item("b1", 2, "the closing quote of a string", kind="token_lookup"),
              item("c1", 2, "a closing string quote", selected=False, candidate=1),
              item("f1", 3, None, failure="empty reply"),
              item("s1", 3, "a string's closing quote", purpose="eval")]
    store.save_explanations(items)


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "c.duckdb"
    with Store.open(path) as store:
        fill(store)
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A filled database whose embeddings were backfilled by a first search (shared, read-only use)."""
    path = tmp_path_factory.mktemp("search") / "c.duckdb"
    with Store.open(path) as store:
        fill(store)
    search(path, "warm-up", progress=False)
    return path


def _embedded(path) -> set[str]:
    with Store.open(path, read_only=True) as s:
        return {r[0] for r in s.con.execute("SELECT explanation_id FROM explanation_embeddings").fetchall()}


def test_the_matching_explanation_ranks_first_with_its_score(searched):
    rows = search(searched, "closing quote of a string", model=M)
    assert [r["explanation"] for r in rows[:1]] == [TEXTS[1]]
    assert rows[0]["node"] == "L1.mlp.neuron[1]" and rows[0]["node_id"] == nid(1) and rows[0]["model"] == M
    assert rows[0]["score"] == pytest.approx(SCORES[1]) and rows[0]["tasks"] == "quotes"
    ranks = {r["explanation"]: i for i, r in enumerate(rows)}
    assert ranks[TEXTS[1]] < ranks[TEXTS[2]]
    sims = [r["similarity"] for r in rows]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)
    assert {r["explanation_id"] for r in rows} == {f"e{i}" for i in TEXTS}  # only the chosen LLM explanations
    assert search(searched, "the return keyword", model=M, limit=1)[0]["explanation"] == TEXTS[2]
    assert [r["score"] for r in rows if r["explanation_id"] == "e4"] == [None]  # no score: NULL, not 0


def test_filters_by_model_task_and_limit(searched):
    both = search(searched, "closing quote of a string")
    assert {r["model"] for r in both} == {M, OTHER} and len(both) == len(TEXTS) + 1
    assert [r["explanation_id"] for r in search(searched, "closing quote", model=OTHER)] == ["o1"]
    quotes = search(searched, "closing quote of a string", task="quotes")
    assert [r["explanation_id"] for r in quotes] == ["e1", "e2"]  # the newest circuit: node 3 was in the older one
    keywords = {r["explanation_id"]: r["tasks"] for r in search(searched, "anything", task="keywords")}
    assert keywords == {"e2": "keywords, quotes", "e4": "keywords"}
    assert len(search(searched, "closing quote of a string", limit=2)) == 2


def test_cli_table_json_and_csv(searched):
    runner = CliRunner()
    base = ["--db", str(searched), "search", "closing quote of a string", "--model", M]
    out = runner.invoke(main, base + ["--json", "--limit", "3"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert len(rows) == 3 and rows[0]["explanation"] == TEXTS[1] and rows[0]["score"] == pytest.approx(SCORES[1])
    assert set(rows[0]) == set(search_mod.COLUMNS)
    out = runner.invoke(main, base + ["--csv"])
    assert out.exit_code == 0, out.output
    got = list(csv.DictReader(io.StringIO(out.stdout)))
    assert got[0]["node"] == "L1.mlp.neuron[1]" and float(got[0]["similarity"]) > float(got[-1]["similarity"])
    out = runner.invoke(main, base + ["--task", "keywords"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["node", "model", "tasks", "similarity", "score", "explanation"] and len(lines) == 4


def test_backfill_embeds_only_searchable_rows_and_only_once(db, monkeypatch):
    calls = []
    real = search_mod.embed
    monkeypatch.setattr(search_mod, "embed", lambda texts: calls.append(list(texts)) or real(texts))
    assert _embedded(db) == set()  # stored without the explain job's hook
    search(db, "closing quote of a string", progress=False)
    assert _embedded(db) == {f"e{i}" for i in TEXTS} | {"o1"}
    assert sorted(t for c in calls[:-1] for t in c) == sorted([*TEXTS.values(), "the closing quote of a string"])
    calls.clear()
    rows = search(db, "closing quote of a string", progress=False)
    assert calls == [["closing quote of a string"]]  # the query only: nothing embedded twice
    with Store.open(db) as store:
        assert backfill_embeddings(store, progress=False) == 0
        assert store.missing_embeddings(EMBEDDER) == []
        # a replaced explanation loses its old embedding and is embedded again by the next search
        store.save_explanations([item("e2", 2, "the closing quote of an f-string", score=0.5)])
        assert store.missing_embeddings(EMBEDDER) == [("e2", "the closing quote of an f-string")]
    assert rows[0]["explanation_id"] == "o1"  # the other model's explanation is this very query
    assert search(db, "closing quote of an f-string", model=M, progress=False)[0]["explanation_id"] == "e2"


def test_the_explain_hook_stores_embeddings_with_the_explanations(tmp_path):
    items = [item("h1", 1, TEXTS[1], score=0.5), item("h2", 1, "candidate", selected=False),
             item("h3", 1, "lookup text", kind="token_lookup")]
    extra = embeddings_for(items)
    assert extra["embedder"] == EMBEDDER and list(extra["embeddings"]) == ["h1"]
    assert embeddings_for(items[1:]) == {}
    path = tmp_path / "c.duckdb"
    with Store.open(path) as store:
        store.save_explanations(items, **extra)
        assert store.missing_embeddings(EMBEDDER) == []
        (row,) = search(store, "the end of a string", progress=False)
    assert row["explanation_id"] == "h1" and row["node"] == nid(1)  # no nodes row: the node id


def test_a_file_held_by_a_writer_is_searched_without_the_unembedded_rows(db):
    fd = os.open(db, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running explain job in another process holds it
    try:
        said = []
        assert search(db, "closing quote", log=said.append) == []
        assert len(said) == 1 and said[0].startswith("6 explanations have no embedding yet")
    finally:
        os.close(fd)
    assert len(search(db, "closing quote")) == 6


@pytest.mark.parametrize("args, message", [
    (["search", "quote"], "no explanations in"),
    (["search", "  "], "the search query is empty"),
])
def test_empty_database_and_empty_query_are_one_line(tmp_path, args, message):
    path = tmp_path / "empty.duckdb"
    Store.open(path).close()
    out = CliRunner().invoke(main, ["--db", str(path), *args])
    assert out.exit_code == 1 and "Traceback" not in out.output
    assert out.output.count("\n") == 1 and message in out.output, out.output


def test_user_mistakes_are_one_line(searched, tmp_path):
    runner = CliRunner()
    for args, message in [(["--model", "nope"], "no model named 'nope'"),
                          (["--task", "nope"], "no circuit for task 'nope'"),
                          (["--model", OTHER, "--task", "quotes"], "no circuit for task 'quotes' in model other"),
                          (["--limit", "0"], "--limit must be at least 1")]:
        out = runner.invoke(main, ["--db", str(searched), "search", "quote", *args])
        assert out.exit_code == 1 and out.output.count("\n") == 1 and message in out.output, out.output
    out = runner.invoke(main, ["--db", str(tmp_path / "none.duckdb"), "search", "quote"])
    assert out.exit_code == 1 and "no database at" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "none.duckdb").exists()
    with pytest.raises(UserError, match="has no explanations yet"):
        with Store.open(tmp_path / "m.duckdb") as store:
            fill(store)
            store.upsert_model({"name": "bare"})
            search(store, "quote", model="bare")
