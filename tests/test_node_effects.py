"""Node effects, what a node writes, and in-task records on plain arrays (no database): a
hand-made model in which one known node carries the task, the unembedding computed by hand, and
the dealing of pairs into splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainer.records import CALIBRATE, EXPLAIN, SCORE
from explainer.task_records import deal_pairs, task_records, task_windows, variant_label
from sparse_model.model import ModelConfig, SparseGPT, node_locations
from sparse_model.node_effects import node_effects, task_activations, vocab_projection
from sparse_model.tasks import TaskExamples

A, B, QA, QB = 5, 6, 3, 4  # answer tokens, and the two "quote" tokens that decide them


def _carrier_model() -> SparseGPT:
    """Every weight zero except: token QA writes +1 to residual channel 0, QB writes -1; the
    unembedding reads channel 0 into +logit A and -logit B. Only final.resid_read[0] carries the
    task (every block adds nothing)."""
    cfg = ModelConfig(vocab_size=16, n_layer=1, d_model=8, n_head=1, d_head=4, d_mlp=8, n_ctx=8, afrac=1.0,
                      bigram=False)
    model = SparseGPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.ln_f.weight.fill_(1.0)
        model.wte.weight[QA, 0], model.wte.weight[QB, 0] = 1.0, -1.0
        model.lm_head.weight[A, 0], model.lm_head.weight[B, 0] = 2.0, -2.0
    return model.eval()


def _examples() -> TaskExamples:
    ids = torch.tensor([[1, QA], [1, QB]] * 4)  # pair i: rows 2i (answer A) and 2i + 1 (answer B)
    return TaskExamples(ids=ids, lengths=torch.full((8,), 2), correct=torch.tensor([A, B] * 4),
                        wrong=torch.tensor([B, A] * 4), pair=torch.arange(8) // 2)


def test_the_one_node_that_carries_the_task_has_the_whole_effect():
    model = _carrier_model()
    means = {loc: torch.zeros(n) for loc, n in node_locations(model.cfg).items()}
    kept = [("final.resid_read", 0), ("L0.mlp.neuron", 1), ("L0.attn.resid_write", 0)]
    base, effects = node_effects(model, _examples(), means, kept)
    carrier, neuron, write = effects
    # the model alone: logit diff (2 - -2) * sqrt(8) (the RMS norm of a one-hot channel), loss small
    assert base["model_logit_diff"] == pytest.approx(4 * np.sqrt(8), rel=1e-4)
    assert base["circuit_loss"] == pytest.approx(base["model_loss"], abs=1e-6)
    # ablating the carrier: logit diff 0, loss log 2, from the circuit and from the model
    for effect, diff in ((carrier.effect_in_circuit, carrier.logit_diff_in_circuit),
                         (carrier.effect_in_model, carrier.logit_diff_in_model)):
        assert effect == pytest.approx(np.log(2) - base["model_loss"], abs=1e-5)
        assert diff == pytest.approx(-base["model_logit_diff"], rel=1e-4)
    assert carrier.direct_logit_diff == pytest.approx(base["model_logit_diff"], rel=1e-4)
    for other in (neuron, write):  # nodes that do nothing here
        assert abs(other.effect_in_circuit) < 1e-6 and abs(other.effect_in_model) < 1e-6
        assert abs(other.direct_logit_diff) < 1e-6
    assert base["necessity_loss"] == pytest.approx(np.log(2), abs=1e-5)


def test_nodes_that_only_read_have_no_direct_effect_and_write_nothing():
    model = _carrier_model()
    means = {loc: torch.zeros(n) for loc, n in node_locations(model.cfg).items()}
    _, (q,) = node_effects(model, _examples(), means, [("L0.attn.q", 2)])
    assert q.direct_logit_diff is None
    assert vocab_projection(model, "L0.mlp.resid_read", 0) is None


def test_promoted_tokens_are_the_unembedding_of_the_nodes_output_direction():
    torch.manual_seed(0)
    model = SparseGPT(ModelConfig(vocab_size=64, n_layer=2, d_model=16, n_head=2, d_head=4, d_mlp=32, n_ctx=8))
    with torch.no_grad():
        model.ln_f.weight.uniform_(0.5, 1.5)
    w_u, g = model.lm_head.weight.detach(), model.ln_f.weight.detach()
    for loc, i, direction in (("L1.mlp.neuron", 7, model.blocks[1].mlp.proj.weight[:, 7].detach() * g),
                              ("L0.attn.resid_write", 3, torch.eye(16)[3] * g),
                              ("final.resid_read", 5, torch.eye(16)[5])):
        logits = w_u @ direction
        up, down = vocab_projection(model, loc, i, top=5)
        assert [t for t, _ in up] == torch.argsort(logits, descending=True)[:5].tolist()
        assert [t for t, _ in down] == torch.argsort(logits)[:5].tolist()
        assert up[0][1] == pytest.approx(float(logits.max()), rel=1e-5)
        assert down[0][1] == pytest.approx(float(logits.min()), rel=1e-5)


def test_task_activations_are_each_prefixs_own_tokens():
    model = _carrier_model()
    ex = _examples()
    acts = task_activations(model, ex, [("final.resid_read", 0), ("final.resid_read", 1)])
    assert len(acts) == 8 and all(a.shape == (2, 2) for a in acts)
    assert acts[0][1, 0] > 0 > acts[1][1, 0]  # QA pushes channel 0 up, QB down
    assert np.all(np.array([a[:, 1] for a in acts]) == 0)


def test_pairs_are_dealt_whole_and_without_overlap():
    split_of = deal_pairs(50, seed=3)
    assert split_of == deal_pairs(50, seed=3) and split_of != deal_pairs(50, seed=4)
    counts = {s: sum(1 for v in split_of.values() if v == s) for s in (EXPLAIN, CALIBRATE, SCORE)}
    assert counts == {EXPLAIN: 20, CALIBRATE: 10, SCORE: 20}
    tokens = [["x", "="] for _ in range(100)]
    acts = [[0.0, float(p)] for p in range(100)]  # prefix r peaks at r
    recs = task_records(tokens, acts, [r // 2 for r in range(100)], [r % 2 for r in range(100)],
                        [variant_label(r % 2, "'") for r in range(100)])
    windows = task_windows(recs, split_of, explain_pairs=3)
    pairs = {name: {r.rank // 2 for r in windows.split(name)} for name in (EXPLAIN, CALIBRATE, SCORE)}
    assert not (pairs[EXPLAIN] & pairs[SCORE]) and not (pairs[EXPLAIN] & pairs[CALIBRATE])
    assert not (pairs[CALIBRATE] & pairs[SCORE])
    assert len(windows.explain) == 6  # both prefixes of the 3 explain pairs where the node peaks highest
    explain_pairs = sorted((p for p, s in split_of.items() if s == EXPLAIN), reverse=True)[:3]
    assert [r.rank for r in windows.explain] == [r for p in explain_pairs for r in (2 * p, 2 * p + 1)]
    assert windows.explain[0].label == "variant A, the next token is \"'\""
    assert len(windows.score) == 40 and len(windows.calibrate) == 20


def test_records_with_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 tokens but 3 activations"):
        task_records([["a", "b"]], [[1.0, 2.0, 3.0]], [0], [0], ["variant A"])


def test_a_node_silent_on_every_pair_is_undefined_never_zero():
    from explainer.pipeline import token_lookup

    tokens = [["x", "=", "'"] for _ in range(20)]
    recs = task_records(tokens, [[0.0, 0.0, 0.0]] * 20, [r // 2 for r in range(20)], [r % 2 for r in range(20)],
                        [variant_label(r % 2, "'") for r in range(20)])
    scored = token_lookup(task_windows(recs, deal_pairs(10)))
    assert scored.score is None
