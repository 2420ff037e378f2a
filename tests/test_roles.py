"""`circuits explain --task T --in-task` on the tiny model's circuit, with the real embedded LLM:
effects for every circuit node, in-task records dealt by pair without overlap, in-task explanations
stored beside (never instead of) the general ones, a rerun that redoes nothing, and one-line errors."""

from __future__ import annotations

import json
import re

import duckdb
import pytest
from click.testing import CliRunner

from explainer.cli import main

TASK = "random_control"  # the tiny model learns no real task; a control circuit is pruned whatever it does


def _cli(db, *args):
    return CliRunner().invoke(main, ["--db", str(db), *args])


def _q(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def roles_db(tmp_path_factory, tiny_run, embedded_llm):
    db = tmp_path_factory.mktemp("roles") / "c.duckdb"
    r = _cli(db, "prune", str(tiny_run), "--task", TASK, "--no-search", "--steps", "20")
    assert r.exit_code == 0, r.output
    r = _cli(db, "explain", str(tiny_run), "--task", TASK, "--in-task", "--max-nodes", "2",
             "--explanations-per-node", "2", "--json")
    assert r.exit_code == 0, r.stderr
    return db, r


def test_every_circuit_node_gets_effects_and_the_top_ones_an_in_task_explanation(roles_db):
    db, r = roles_db
    n_nodes = _q(db, f"SELECT n_nodes FROM circuits WHERE task = '{TASK}'")[0][0]
    roles = json.loads(r.stdout)
    assert len(roles) == n_nodes > 2
    effects = [x["effect_in_circuit"] for x in roles]
    assert effects == sorted(effects, reverse=True)  # largest effect first
    explained = [x for x in roles if x["task_score"] is not None or x["task_explanation"] is not None]
    assert [x["name"] for x in explained] == [x["name"] for x in roles[:2]]
    assert all(x["task_token_lookup_score"] is not None or x["task_score"] is None for x in explained)
    assert "sum of single-node effects" in r.stderr
    kinds = _q(db, "SELECT DISTINCT purpose, task, kind FROM explanations ORDER BY ALL")
    assert kinds == [("task", TASK, "llm"), ("task", TASK, "token_lookup")]  # no shuffled control, all in-task
    assert _q(db, "SELECT count(*) FROM explanations WHERE task IS NULL") == [(0,)]


def test_in_task_records_cover_every_prefix_and_scores_use_held_out_pairs_only(roles_db):
    db, _ = roles_db
    (nid,) = _q(db, "SELECT node_id FROM task_records LIMIT 1")[0]
    rows = _q(db, f"SELECT rank, pair, variant, split, len(tokens), len(activations) FROM task_records "
                  f"WHERE node_id = '{nid}' ORDER BY rank")
    assert all(rank == 2 * pair + variant and nt == na for rank, pair, variant, _, nt, na in rows)
    split_of_pair = {}
    for _, pair, _, split, _, _ in rows:
        assert split_of_pair.setdefault(pair, split) == split  # both prefixes of a pair in one split
    assert set(split_of_pair.values()) == {"explain", "calibrate", "score"}
    # the simulations scored on the score split are of score-split pairs only
    sims = _q(db, f"SELECT DISTINCT s.split, s.rank // 2 FROM simulations s JOIN explanations e USING "
                  f"(explanation_id) WHERE e.node_id = '{nid}' AND e.purpose = 'task'")
    assert sims and all(split_of_pair[pair] == split for split, pair in sims)


def test_a_rerun_redoes_nothing(roles_db, tiny_run):
    db, _ = roles_db
    before = _q(db, "SELECT count(*), max(created_at) FROM explanations")
    effects = _q(db, "SELECT max(created_at) FROM node_effects")
    r = _cli(db, "explain", str(tiny_run), "--task", TASK, "--in-task", "--max-nodes", "2",
             "--explanations-per-node", "2")
    assert r.exit_code == 0, r.stderr
    assert "0 nodes explained, 2 already done" in r.stderr
    assert _q(db, "SELECT count(*), max(created_at) FROM explanations") == before
    assert _q(db, "SELECT max(created_at) FROM node_effects") == effects


def test_bad_input_is_one_line(roles_db, tiny_run):
    db, _ = roles_db
    outside = _q(db, "SELECT n.name FROM nodes n WHERE n.node_id NOT IN (SELECT node_id FROM circuit_nodes) LIMIT 1")[0][0]
    r = _cli(db, "explain", str(tiny_run), "--task", TASK, "--in-task", "--node", outside)
    assert r.exit_code == 1 and f"{outside} is not in the {TASK} circuit" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = _cli(db, "explain", str(tiny_run), "--in-task")
    assert r.exit_code == 2 and "exactly one --task" in r.stderr
    r = _cli(db, "explain", str(tiny_run), "--task", "single_double_quote", "--in-task")
    assert r.exit_code == 1 and "no circuit for single_double_quote" in r.stderr


def test_the_report_shows_each_nodes_role_in_headless_chromium(roles_db, tmp_path):
    from test_report import _browser

    db, r = roles_db
    roles = json.loads(r.stdout)
    out = tmp_path / "report.html"
    made = _cli(db, "report", "-o", str(out))
    assert made.exit_code == 0, made.stderr
    dom = _browser(tmp_path, "--dump-dom", out.resolve().as_uri()).stdout
    assert "</html>" in dom and "What each node does for the task" in dom
    section = dom[dom.index("What each node does for the task"):]
    table = section[:section.index("</table>")]
    for header in ("effect in circuit", "effect in model", "in-task explanation", "token lookup (task)",
                   "general explanation (score)", "promotes", "suppresses"):
        assert header in table, header
    assert table.count("<tr>") == len(roles) + 1  # a row per circuit node, under the header
    first = next(x for x in roles if x["task_explanation"])
    assert first["task_explanation"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in table
    radii = {float(x) for x in re.findall(r'<circle class="node [^"]*"[^>]* r="([0-9.]+)"', dom)}
    assert len(radii) > 1  # nodes are sized by their effect
