"""Activation records, explanations, simulations, scores and the node_scores view (migration 3)."""

import pytest

from explainer.store import schema as store_mod
from explainer.store import MIGRATIONS, Store
from sparse_model.nodes import Node

M = "demo"


def nid(i):
    return f"{M}/L1.mlp.neuron[{i}]"


def record(sampling="top", rank=0, split="explain", **over):
    row = {
        "sampling": sampling, "rank": rank, "split": split, "start": 1000 + rank, "max_activation": 2.5,
        "tokens": ["def", "\t", "\n", "'q\"", "é→🙂", ""],
        "activations": [0.0, -1.25, 3.0e-7, 2.5, 1e300, 0.1],
        "sample_seed": 7,
    }
    row.update(over)
    return row


def explanation(eid, node=1, kind="llm", candidate=0, selected=True, settings_key="k1", **over):
    row = {
        "explanation_id": eid, "node_id": nid(node), "model": M, "kind": kind, "text": f"fires on {eid}",
        "candidate": candidate, "selected": selected, "explainer": "local:SmolLM2-135M-Instruct",
        "explain_prompt": "p1", "simulator": "all_at_once", "simulate_prompt": "s1",
        "settings_key": settings_key, "settings": {"k": 3, "temps": [0.0, 1.0], "name": "x"},
    }
    row.update(over)
    return row


def sims(n=2):
    return [{"sampling": "top", "rank": r, "split": "score", "predicted": [0.5, 1.0 + r], "simulator": "all_at_once"}
            for r in range(n)]


def scores(corr=0.8, r2=0.5, val=0.7):
    return [
        {"split": "score", "method": "correlation", "value": corr, "n_tokens": 64},
        {"split": "score", "method": "r_squared", "value": r2, "n_tokens": 64},
        {"split": "calibrate", "method": "correlation", "value": val, "n_tokens": 32},
    ]


def count(s, table, eid):
    return s.con.execute(f"SELECT count(*) FROM {table} WHERE explanation_id = ?", [eid]).fetchone()[0]


def add_nodes(s, ids=(1, 2, 3)):
    s.save_nodes(M, [{"node": Node("L1.mlp.neuron", i), "layer": 1, "mean": 0.0} for i in ids])


def add_circuit(s, cid, task, node_ids):
    s.save_circuit({"circuit_id": cid, "model": M, "task": task, "status": "ok", "settings": {}},
                   [{"node_id": n, "rank": i, "score": 1.0} for i, n in enumerate(node_ids)], [])


@pytest.fixture
def s(tmp_path):
    with Store.open(tmp_path / "c.duckdb") as store:
        yield store


def test_records_roundtrip_and_replace_per_node(tmp_path):
    db = tmp_path / "c.duckdb"
    rows = [record("quantile", 0, "score"), record("random", 1, "explain"), record("top", 1, "explain"),
            record("top", 0, "explain")]
    with Store.open(db) as s:
        s.save_activation_records(M, nid(1), rows)
        s.save_activation_records(M, nid(2), [record("top", 0)])
    with Store.open(db, read_only=True) as s:  # survives reopen
        got = s.activation_records(nid(1))
        assert [(r["split"], r["sampling"], r["rank"]) for r in got] == [
            ("explain", "top", 0), ("explain", "top", 1), ("explain", "random", 1), ("score", "quantile", 0)]
        for r in got:
            assert r["tokens"] == record()["tokens"]
            assert r["activations"] == record()["activations"]
            assert r["model"] == M and r["sample_seed"] == 7 and r["created_at"] is not None
        assert [r["sampling"] for r in s.activation_records(nid(1), split="score")] == ["quantile"]
        assert s.record_windows(M) == {nid(1): len(record()["tokens"]), nid(2): len(record()["tokens"])}
        assert s.record_windows("other") == {}
    with Store.open(db) as s:
        s.save_activation_records(M, nid(1), [record("random", 5, "holdout")])
        assert [(r["sampling"], r["rank"]) for r in s.activation_records(nid(1))] == [("random", 5)]
        assert len(s.activation_records(nid(2))) == 1  # other node untouched


def test_explanation_roundtrip(s):
    s.save_explanation(explanation("e1"), sims(), scores())
    [got] = s.explanations(node_id=nid(1))
    for k, v in explanation("e1").items():
        assert got[k] == v, k
    assert got["purpose"] == "circuit" and got["created_at"] is not None
    assert got["source_node_id"] is None and got["failure"] is None
    sim = s.simulations("e1")
    assert [(r["sampling"], r["rank"], r["predicted"]) for r in sim] == [("top", 0, [0.5, 1.0]), ("top", 1, [0.5, 2.0])]
    assert all(r["node_id"] == nid(1) and r["explanation_id"] == "e1" for r in sim)
    assert s.scores("e1") == {("score", "correlation"): 0.8, ("score", "r_squared"): 0.5,
                              ("calibrate", "correlation"): 0.7}


def test_rerun_with_same_id_replaces(s):
    s.save_explanation(explanation("e1"), sims(3), scores(corr=0.1))
    s.save_explanation(explanation("e1", text="new"), sims(2), scores(corr=0.9)[:1])
    assert [e["text"] for e in s.explanations()] == ["new"]
    assert count(s, "explanations", "e1") == 1
    assert count(s, "simulations", "e1") == 2
    assert s.scores("e1") == {("score", "correlation"): 0.9}


def test_failed_batch_rolls_back_everything(s):
    s.save_explanation(explanation("e0", node=1), sims(), scores(corr=0.3))
    bad_sims = sims() + [sims()[0]]  # duplicate (kind, rank) -> primary key violation inside the insert
    with pytest.raises(Exception):
        s.save_explanations([
            (explanation("e0", node=1, text="replacement"), sims(), scores()),
            (explanation("e2", node=2), sims(), scores()),
            (explanation("e3", node=3), bad_sims, scores()),
        ])
    assert [e["explanation_id"] for e in s.explanations()] == ["e0"]
    assert s.explanations()[0]["text"] == "fires on e0"
    assert count(s, "simulations", "e0") == 2 and s.scores("e0")[("score", "correlation")] == 0.3
    for eid in ("e2", "e3"):
        assert count(s, "simulations", eid) == 0 and s.scores(eid) == {}
    s.save_explanation(explanation("e4"), sims(), scores())  # the connection is usable afterwards
    assert count(s, "explanations", "e4") == 1


def test_undefined_scores_are_null_not_nan(s):
    add_nodes(s)
    s.save_explanation(explanation("none", node=1), sims(), scores(corr=None))
    s.save_explanation(explanation("nan", node=2), sims(), scores(corr=float("nan"), r2=float("nan")))
    assert s.scores("none")[("score", "correlation")] is None
    assert s.scores("nan")[("score", "correlation")] is None
    assert s.query("SELECT count(*) FROM scores WHERE isnan(value)")[1] == [(0,)]
    assert s.query("SELECT count(*) FROM scores WHERE value IS NULL")[1] == [(3,)]
    cols, rows = s.query("SELECT explanation_id, score, r_squared, calibrate_score FROM node_scores "
                         "ORDER BY explanation_id")
    assert rows == [("nan", None, None, 0.7), ("none", None, 0.5, 0.7)]


def test_failed_explanation_keeps_raw_text(s):
    s.save_explanation(explanation("f", text=None, failure="unparseable", raw_text="```\n?"), [
        {"sampling": "top", "rank": 0, "split": "score", "predicted": None, "failure": "parse", "raw_text": "zz"}], [])
    [got] = s.explanations()
    assert got["text"] is None and got["failure"] == "unparseable" and got["raw_text"] == "```\n?"
    [sim] = s.simulations("f")
    assert sim["predicted"] is None and sim["failure"] == "parse" and sim["raw_text"] == "zz"
    assert sim["simulator"] == "all_at_once"  # defaults to the explanation's simulator


def test_node_scores_view(s):
    add_nodes(s, ids=(1, 2))  # node 3 has no nodes row
    add_circuit(s, "c_a", "task_a", [nid(1), nid(2)])
    add_circuit(s, "c_b", "task_b", [nid(1)])
    add_circuit(s, "c_b2", "task_b", [nid(1)])  # task_b pruned again with other settings: still one row
    s.save_explanations([
        (explanation("n1_c0", node=1, candidate=0, selected=False), sims(), scores(corr=0.1)),
        (explanation("n1_c1", node=1, candidate=1, selected=True), sims(),
         scores(corr=0.8, r2=0.5, val=0.7) + [
             {"split": "score", "method": "mean_window_correlation", "value": 0.6, "n_tokens": 64},
             {"split": "score", "method": "absolute_deviation_explained", "value": 0.4, "n_tokens": 64},
             {"split": "calibrate", "method": "r_squared", "value": -9.0, "n_tokens": 32}]),
        (explanation("n1_tl", node=1, kind="token_lookup", explainer="token_lookup", simulator="token_lookup",
                     explain_prompt=None, simulate_prompt=None), sims(), scores(corr=0.3)),
        (explanation("n3", node=3), sims(), scores(corr=0.2)),
    ])
    cols, rows = s.query("SELECT * FROM node_scores ORDER BY node_id, kind, task")
    assert cols == ["model", "task", "node_id", "name", "layer", "location", "site", "kind", "explanation", "writer",
                    "explainer", "simulator", "score", "mean_window_correlation", "r_squared",
                    "absolute_deviation_explained", "calibrate_score", "detection", "fuzzing", "detection_auroc",
                    "fuzzing_auroc", "failure", "purpose", "settings_key",
                    "explanation_id", "created_at"]
    got = [dict(zip(cols, r)) for r in rows]
    assert [(r["node_id"], r["kind"], r["task"]) for r in got] == [
        (nid(1), "llm", "task_a"), (nid(1), "llm", "task_b"),
        (nid(1), "token_lookup", "task_a"), (nid(1), "token_lookup", "task_b"),
        (nid(3), "llm", None)]
    assert "n1_c0" not in {r["explanation_id"] for r in got}  # unselected candidates hidden
    best = got[0]
    assert best["explanation_id"] == "n1_c1" and best["name"] == "L1.mlp.neuron[1]" and best["layer"] == 1
    assert (best["score"], best["mean_window_correlation"], best["r_squared"],
            best["absolute_deviation_explained"], best["calibrate_score"]) == (0.8, 0.6, 0.5, 0.4, 0.7)
    assert best["explanation"] == "fires on n1_c1" and best["purpose"] == "circuit"
    assert got[2]["score"] == 0.3
    assert got[4]["name"] is None and got[4]["score"] == 0.2  # node row missing: still listed


def test_filters_and_done_nodes(s):
    s.save_explanations([
        (explanation("a0", node=1, candidate=0, selected=False), [], []),
        (explanation("a1", node=1, candidate=1, selected=True), [], []),
        (explanation("b", node=2, settings_key="k2"), [], []),
        (explanation("c", node=3, kind="token_lookup"), [], []),
        (explanation("d", node=4, selected=False), [], []),
        (explanation("e", node=5, purpose="eval", model="other"), [], []),
    ])
    assert s.done_nodes("k1", "llm") == {nid(1), nid(5)}
    assert s.done_nodes("k2", "llm") == {nid(2)}
    assert s.done_nodes("k1", "token_lookup") == {nid(3)}
    assert s.done_nodes("k3", "llm") == set()
    assert [e["explanation_id"] for e in s.explanations(node_id=nid(1))] == ["a0", "a1"]
    assert [e["explanation_id"] for e in s.explanations(selected=False)] == ["a0", "d"]
    assert [e["explanation_id"] for e in s.explanations(settings_key="k1", kind="llm", selected=True,
                                                        model=M)] == ["a1"]
    assert s.explanations(model="other")[0]["purpose"] == "eval"
    assert s.explanations()[0]["settings"] == {"k": 3, "temps": [0.0, 1.0], "name": "x"}


def test_unknown_explanation_column_rejected(s):
    with pytest.raises(ValueError, match="unknown explanations columns"):
        s.save_explanation(explanation("x", bogus=1), [], [])
    assert s.explanations() == []


def test_migrates_schema_2_file(tmp_path, monkeypatch):
    db = tmp_path / "c.duckdb"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 2])
    with Store.open(db) as s:
        assert s.schema_version() == 2
        # a node as schema 2 stored it: `location` without the layer
        s.con.execute("INSERT INTO nodes VALUES (?, ?, 1, 'mlp.neuron', 1, 'L1.mlp.neuron[1]', 0.0)", [nid(1), M])
        add_circuit(s, "c_a", "task_a", [nid(1)])
        tables = {r[0] for r in s.query("SHOW TABLES")[1]}
        assert "explanations" not in tables
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with Store.open(db) as s:
        assert s.schema_version() == MIGRATIONS[-1][0]
        tables = {r[0] for r in s.query("SHOW TABLES")[1]}
        assert {"activation_records", "explanations", "simulations", "scores", "node_scores",
                "jobs", "llm_requests", "llm_cache", "job_summary"} <= tables
        assert s.has_nodes(M) and [c["circuit_id"] for c in s.list_circuits(M)] == ["c_a"]
        s.save_explanation(explanation("e1", node=1), sims(), scores())
        assert s.query("SELECT task, name, score FROM node_scores")[1] == [("task_a", "L1.mlp.neuron[1]", 0.8)]
        assert s.query("SELECT location, site FROM nodes")[1] == [("L1.mlp.neuron", "mlp.neuron")]
