"""Pruning: the surrogate gradient, mean ablation, a planted circuit, stored circuits and edges, the search
over settings, honest labels, bad input."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from click.testing import CliRunner

from explainer.jobs.circuits import save_circuit
from explainer.cli import main
from explainer.store import Store
from sparse_model.errors import UserError
from sparse_model.model import ModelConfig, SparseGPT, node_locations
from sparse_model.nodes import Node
from sparse_model.prune import (NO_SMALL_CIRCUIT, PruneSettings, ablation_hooks, circuit_loss, compute_means,
                                grow_to_held_out, heaviside, keep_masks, label, loss_with, prune, rank_nodes, shrink,
                                split_val, Trial)
from sparse_model.prune_search import SearchSettings, search
from sparse_model.tasks import Pair, Task, TaskExamples

A, B, X, Y = 1, 2, 3, 4  # last token A -> answer X, last token B -> answer Y
PLANTED = {("L0.mlp.resid_read", 0), ("L0.mlp.neuron", 0), ("L0.mlp.neuron", 1), ("L0.mlp.resid_write", 1), ("final.resid_read", 1)}


def planted_model() -> SparseGPT:
    """A 1-layer model whose task runs through exactly the nodes in PLANTED: embedding channel 0
    carries +1 for A and -1 for B; two MLP neurons rectify it; their difference is written to
    channel 1, which the unembedding reads. Everything else is zero."""
    cfg = ModelConfig(vocab_size=16, n_layer=1, d_model=8, n_head=1, d_head=16, d_mlp=8, n_ctx=16, afrac=1.0, bigram=False)
    model = SparseGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for norm in (model.blocks[0].ln_attn, model.blocks[0].ln_mlp, model.ln_f):
            norm.weight.fill_(1.0)
        model.wte.weight[A, 0], model.wte.weight[B, 0] = 1.0, -1.0
        fc, proj = model.blocks[0].mlp.fc.weight, model.blocks[0].mlp.proj.weight
        fc[0, 0], fc[1, 0] = 1.0, -1.0
        proj[1, 0], proj[1, 1] = 1.0, -1.0
        model.lm_head.weight[X, 1], model.lm_head.weight[Y, 1] = 5.0, -5.0
    return model.eval()


def planted_task(n_train: int = 64, n_val: int = 32) -> Task:
    gen = torch.Generator().manual_seed(0)

    def split(n_pairs: int, name: str) -> TaskExamples:
        filler = torch.randint(5, 16, (n_pairs, 6), generator=gen)
        rows = [torch.cat([f, torch.tensor([last])]) for f in filler for last in (A, B)]
        ids = torch.stack(rows)
        correct = torch.tensor([X, Y] * n_pairs)
        return TaskExamples(ids=ids, lengths=torch.full((len(rows),), 7), correct=correct, wrong=torch.tensor([Y, X] * n_pairs),
                            pair=torch.arange(n_pairs).repeat_interleave(2), prefixes=[name] * len(rows))

    return Task("planted", "last token A or B", [("x", "y")], [Pair(("a", "b"), ("x", "y"), 0, "train")],
                split(n_train, "train"), split(n_val, "val"))


def planted_means(model):
    return compute_means(model, torch.randint(5, 16, (4000,)).numpy(), n_windows=32)


def test_heaviside_forward_is_a_step_and_its_gradient_is_the_sigmoid_derivative():
    tau = torch.tensor([-1.0, -0.2, 0.0, 0.3, 1.0], requires_grad=True)
    h = heaviside(tau)
    assert h.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    h.sum().backward()
    s = torch.sigmoid(tau.detach())
    torch.testing.assert_close(tau.grad, s * (1 - s))


def test_mean_ablation_replaces_a_node_with_exactly_its_mean():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layer=1, d_model=16, n_head=1, d_head=16, d_mlp=32, n_ctx=8)
    model = SparseGPT(cfg)
    means = {loc: torch.randn(units) for loc, units in node_locations(cfg).items()}
    keep = {"L0.mlp.neuron": torch.ones(32)}
    keep["L0.mlp.neuron"][[3, 7]] = 0
    seen = {}
    hooks = ablation_hooks(means, keep)
    hooks_then_record = {"L0.mlp.neuron": lambda x: seen.setdefault("x", hooks["L0.mlp.neuron"](x))}
    with model.hooked(hooks_then_record):
        model(torch.randint(0, 64, (2, 8)))
    x = seen["x"]
    assert torch.equal(x[..., 3], means["L0.mlp.neuron"][3].expand(2, 8))
    assert torch.equal(x[..., 7], means["L0.mlp.neuron"][7].expand(2, 8))


def test_means_are_the_average_activation_over_pretraining_text():
    model = planted_model()
    tokens = torch.tensor([A] * 50 + [5] * 50).numpy()
    means = compute_means(model, tokens, n_windows=64, batch_size=8)
    assert means["L0.mlp.resid_write"][0].item() == 0.0  # never written
    assert 0 < means["L0.mlp.neuron"][0].item() < 2.83  # on for A, off for filler


def test_planted_circuit_is_recovered_and_verified():
    model, task = planted_model(), planted_task()
    means = planted_means(model)
    circuit = prune(model, task, means, PruneSettings(steps=300))
    assert circuit.status == "circuit"
    assert {(loc, i) for loc, i, _ in circuit.nodes} == PLANTED
    assert circuit.sufficiency_loss <= 0.15 and circuit.sufficient
    assert circuit.grown_nodes == 0 and circuit.selected_nodes == len(PLANTED) and circuit.note is None
    assert circuit.necessity_loss == pytest.approx(math.log(2), abs=0.05)
    edges = {(s, si, d, di) for s, si, d, di, _, _ in circuit.edges}
    assert ("L0.mlp.resid_read", 0, "L0.mlp.neuron", 0) in edges
    assert ("L0.mlp.neuron", 1, "L0.mlp.resid_write", 1) in edges
    assert ("L0.mlp.resid_write", 1, "final.resid_read", 1) in edges


def test_a_circuit_that_misses_held_out_grows_by_score_within_its_bound():
    model, task = planted_model(), planted_task()
    means = planted_means(model)
    _, held = split_val(task)
    # a ranking whose first 4 nodes are not the circuit: 4 kept nodes miss the target on held-out pairs
    others = [(loc, i) for loc, n in node_locations(model.cfg).items() for i in range(n) if (loc, i) not in PLANTED]
    ranked = [(loc, i, 1.0) for loc, i in others[:4]] + [(loc, i, 0.9) for loc, i in sorted(PLANTED)] + \
        [(loc, i, 0.0) for loc, i in others[4:]]
    start = loss_with(model, held, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:4]]))
    assert start[0] > 0.15
    k, loss, _ = grow_to_held_out(model, ranked, held, means, PruneSettings(max_growth=2.0), 4, *start)
    assert k == 9 and loss <= 0.15  # one node at a time (5% of 4, at least 1) until all of PLANTED is in
    k, loss, _ = grow_to_held_out(model, ranked, held, means, PruneSettings(), 4, *start)
    assert k == 8 and loss > 0.15  # the default bound: at most the selected size again


def test_a_task_the_model_has_not_learned_gets_no_circuit():
    model, task = planted_model(), planted_task()
    with torch.no_grad():
        model.lm_head.weight.mul_(0.01)  # the model still leans the right way, but not below the target
    circuit = prune(model, task, planted_means(model), PruneSettings(steps=10))
    assert circuit.status == "not_learned" and circuit.nodes == [] and circuit.full_loss > 0.15


def test_stored_circuit_reproduces_its_sufficiency_loss_and_edges_join_kept_nodes(tmp_path):
    model, task = planted_model(), planted_task()
    means = planted_means(model)
    circuit = prune(model, task, means, PruneSettings(steps=300))
    with Store.open(tmp_path / "c.duckdb") as store:
        store.save_nodes("planted", [{"node": Node(loc, i), "layer": 0, "mean": float(means[loc][i])}
                                     for loc, units in node_locations(model.cfg).items() for i in range(units)])
        other = save_circuit(store, "planted", dataclasses.replace(circuit, settings=PruneSettings(steps=300, seed=1)))
        other_edges = store.circuit_edges(other["circuit_id"])
        row = save_circuit(store, "planted", circuit)
        save_circuit(store, "planted", circuit)  # same settings: replaced, not duplicated
        assert len(store.list_circuits("planted")) == 2
        assert store.circuit_edges(other["circuit_id"]) == other_edges  # other circuits untouched
        store.con.execute("DELETE FROM circuits WHERE circuit_id = ?", [other["circuit_id"]])
        nodes = store.circuit_nodes(row["circuit_id"])
        edges = store.circuit_edges(row["circuit_id"])
        stored = store.list_circuits("planted")[0]
    kept = [Node.parse(n["name"]) for n in nodes]
    assert circuit_loss(model, task, means, kept) == pytest.approx(stored["sufficiency_loss"], abs=1e-6)
    kept_ids = {n["node_id"] for n in nodes}
    weights = {"L0.mlp.neuron": model.blocks[0].mlp.fc.weight, "L0.mlp.resid_write": model.blocks[0].mlp.proj.weight}
    assert edges and stored["n_edges"] == len(edges)
    for e in edges:
        assert e["source"] in kept_ids and e["target"] in kept_ids
        assert e["weight"] != 0
        dst_loc, dst_i = Node.from_id(e["target"])[1]
        src_loc, src_i = Node.from_id(e["source"])[1]
        if e["kind"] == "weight":
            assert e["weight"] == float(weights[dst_loc].detach()[dst_i, src_i])
        else:
            assert src_i == dst_i


@pytest.mark.parametrize("target", [0.0, -0.1, 0.7, 1.0])
def test_target_loss_outside_zero_ln2_is_refused(target):
    with pytest.raises(UserError, match="outside"):
        PruneSettings(target_loss=target)


def _cli(db, *args):
    r = CliRunner().invoke(main, ["--db", str(db), *args])
    return r.exit_code, r.stdout, r.stderr


def test_cli_tasks_and_prune_on_a_real_run(tmp_path, tiny_run):
    db = tmp_path / "c.duckdb"
    code, out, err = _cli(db, "tasks", str(tiny_run), "--json")
    assert code == 0, err
    import json
    rows = json.loads(out)
    assert {r["task"] for r in rows} >= {"single_double_quote", "bracket_counting", "set_or_string", "random_control"}
    # The tiny model has learned nothing: every task is stored as not learned, with its loss.
    code, out, err = _cli(db, "prune", str(tiny_run), "--task", "single_double_quote", "--json")
    assert code == 0, err
    (row,) = json.loads(out)
    assert row["status"] == "not_learned" and row["nodes"] == 0 and row["full_loss"] > 0.15
    with Store.open(db, read_only=True) as store:
        assert store.query("SELECT count(*) FROM nodes")[1][0][0] == sum(node_locations(ModelConfig(n_layer=1, d_model=32, n_head=2, d_head=16, d_mlp=128, n_ctx=32)).values())
        assert store.query("SELECT count(*) FROM task_evals WHERE NOT learned")[1][0][0] == len(rows)


@pytest.mark.parametrize("args,needle", [
    (["--task", "no_such_task"], "no_such_task"),
    (["--task", "single_double_quote", "--target-loss", "0.9"], "outside"),
])
def test_cli_prune_bad_input_is_one_line(tmp_path, tiny_run, args, needle):
    code, _, err = _cli(tmp_path / "c.duckdb", "prune", str(tiny_run), *args)
    assert code == 1 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_unknown_run_name(tmp_path):
    code, _, err = _cli(tmp_path / "c.duckdb", "prune", "nonexistent", "--all")
    assert code == 1 and "nonexistent" in err and len(err.strip().splitlines()) == 1


def test_random_label_control_is_pruned_and_gets_no_sufficient_circuit():
    model, task = planted_model(), planted_task()
    gen = torch.Generator().manual_seed(1)
    for ex in (task.train, task.val):  # a coin flip per pair decides which answer counts as correct
        flip = torch.rand(len(ex) // 2, generator=gen).repeat_interleave(2) < 0.5
        ex.correct, ex.wrong = torch.where(flip, ex.wrong, ex.correct), torch.where(flip, ex.correct, ex.wrong)
    task.random_labels = True
    circuit = prune(model, task, planted_means(model), PruneSettings(steps=100))
    assert circuit.status == "control"
    assert circuit.full_loss > 0.15
    assert circuit.sufficiency_loss > 0.15 and not circuit.sufficient


# ---- pruning that searches, honest labels --------------------------------------------------------


def test_the_search_keeps_the_smallest_sufficient_point_it_tried_and_stores_every_point(tmp_path):
    model, task = planted_model(), planted_task()
    means = planted_means(model)
    circuit = search(model, task, means, SearchSettings(PruneSettings(steps=300), budget_s=None, points=3))
    points = circuit.search
    assert len(points) >= 3 and sum(p.chosen for p in points) == 1
    sufficient = [p for p in points if p.sufficient]
    chosen = next(p for p in points if p.chosen)
    assert chosen.nodes == min(p.nodes for p in sufficient) == len(circuit.nodes)
    assert {(loc, i) for loc, i, _ in circuit.nodes} == PLANTED and circuit.status == "circuit"
    assert circuit.baseline_nodes > len(PLANTED)  # a random order needs more than the planted five
    with Store.open(tmp_path / "c.duckdb") as store:
        store.save_nodes("planted", [{"node": Node(loc, i), "layer": 0, "mean": float(means[loc][i])}
                                     for loc, units in node_locations(model.cfg).items() for i in range(units)])
        row = save_circuit(store, "planted", circuit)
        stored = store.prune_points(row["circuit_id"])
        summary = store.query("SELECT status, baseline_nodes FROM circuit_summary")[1]
    assert [(p["nodes"], p["chosen"]) for p in stored] == [(p.nodes, p.chosen) for p in points]
    assert stored[0]["settings"]["steps"] == 300 and row["search_points"] == len(points)
    assert summary == [("circuit", circuit.baseline_nodes)]


def test_a_budget_too_small_for_one_point_is_one_clear_error():
    model, task = planted_model(), planted_task()
    with pytest.raises(UserError, match="too small for one search point.*--budget"):
        search(model, task, planted_means(model), SearchSettings(PruneSettings(steps=300), budget_s=0.01))


def test_ties_at_the_clamp_are_ordered_by_evidence_not_by_position_in_the_model():
    scores = {"L0.attn.q": torch.tensor([1.0, 1.0, -1.0]), "L0.mlp.neuron": torch.tensor([1.0, 0.3])}
    evidence = {"L0.attn.q": torch.tensor([0.1, 5.0, 9.0]), "L0.mlp.neuron": torch.tensor([3.0, 0.0])}
    top = [(loc, i) for loc, i, _ in rank_nodes(scores, evidence)[:3]]
    assert top == [("L0.attn.q", 1), ("L0.mlp.neuron", 0), ("L0.attn.q", 0)]
    reversed_model = {loc: scores[loc] for loc in reversed(list(scores))}  # the other forward order
    assert [(loc, i) for loc, i, _ in rank_nodes(reversed_model, evidence)[:3]] == top
    assert [(loc, i) for loc, i, _ in rank_nodes(scores)[:3]][:2] == [("L0.attn.q", 0), ("L0.attn.q", 1)]  # without: position


@pytest.mark.parametrize("nodes, candidates, baseline, status", [
    (50, 4352, 4254, "circuit"), (4090, 4352, 4300, NO_SMALL_CIRCUIT),  # most of the model
    (1200, 4352, 4300, NO_SMALL_CIRCUIT),  # over a quarter
    (300, 4352, 500, NO_SMALL_CIRCUIT),  # not at most half of what a random order needs
])
def test_a_set_that_is_most_of_the_model_or_no_better_than_chance_is_not_a_circuit(nodes, candidates, baseline, status):
    found, why = label(nodes, candidates, baseline)
    assert found == status and (why is None) == (status == "circuit")


def test_a_near_whole_model_set_is_stored_and_printed_as_no_small_circuit(tmp_path):
    model, task = planted_model(), planted_task()
    means = planted_means(model)
    circuit = prune(model, task, means, PruneSettings(steps=300))
    status, why = label(90, circuit.n_candidates, 95)
    whole = dataclasses.replace(circuit, status=status, note=why, baseline_nodes=95)
    db = tmp_path / "c.duckdb"
    with Store.open(db) as store:
        store.save_nodes("planted", [{"node": Node(loc, i), "layer": 0, "mean": float(means[loc][i])}
                                     for loc, units in node_locations(model.cfg).items() for i in range(units)])
        save_circuit(store, "planted", whole)
    code, out, err = _cli(db, "circuits", "--csv")
    assert code == 0, err
    line = out.strip().splitlines()[1].split(",")
    assert line[2] == NO_SMALL_CIRCUIT and line[4] == "95"


def test_shrinking_leaves_out_every_node_the_task_does_not_need():
    model, task = planted_model(), planted_task()
    means = planted_means(model)
    others = [(loc, i) for loc, n in node_locations(model.cfg).items() for i in range(n) if (loc, i) not in PLANTED]
    ranked = [(loc, i, 1.0) for loc, i in sorted(PLANTED)] + [(loc, i, 0.5) for loc, i in others]
    sel, held = split_val(task)
    k = len(PLANTED) + 6  # six nodes too many, kept by a bisection that ranked them high
    loss, acc = loss_with(model, held, means, keep_masks(model.cfg, [(l, i) for l, i, _ in ranked[:k]]))
    trial = Trial(ranked, k, k, loss, loss, acc)
    shrunk = shrink(model, trial, task, means, PruneSettings())
    assert {(l, i) for l, i, _ in shrunk.ranked[:shrunk.k]} == PLANTED and shrunk.sufficiency_loss <= 0.15
    assert {(l, i) for l, i, _ in shrunk.ranked} == {(l, i) for l, i, _ in ranked}  # a reordering, nothing lost
