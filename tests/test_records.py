"""Activation records: one-pass capture, sampling by kind, interleaved disjoint splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explainer.records import (
    ActivationRecord,
    capture_activations,
    sample_records,
    split_records,
    token_table,
    window_starts,
)
from sparse_model.errors import UserError
from sparse_model.model import ModelConfig, SparseGPT
from sparse_model.tokenizer import token_strings, train_tokenizer



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run faster on one thread; restore the setting for the other test modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CFG = ModelConfig(vocab_size=320, n_layer=2, d_model=32, n_head=2, d_head=16, d_mlp=64, n_ctx=32)
WINDOW = 16
NODES = [("L1.mlp.neuron", 5), ("L0.attn.q", 3), ("L1.mlp.neuron", 17), ("final.resid_read", 2),
         ("L0.mlp.neuron", 40), ("L1.mlp.neuron", 5)]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"def f{i}(x, y):\n    return x + {i} * y  # sum\n" for i in range(200)]
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = SparseGPT(CFG)
    with torch.no_grad():  # larger weights than the init, so activations differ clearly between windows
        for p in m.parameters():
            p.mul_(20)
    return m


@pytest.fixture(scope="module")
def tokens(tokenizer):
    rng = np.random.default_rng(1)
    return rng.integers(0, tokenizer.get_vocab_size(), size=150 * WINDOW + 7).astype(np.uint16)


@pytest.fixture(scope="module")
def captured(model, tokens):
    return capture_activations(model, tokens, NODES, window=WINDOW, n_windows=120, batch_size=16)


def count_forwards(model, monkeypatch) -> list[int]:
    calls = [0]
    original = model.forward

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    return calls


def direct(model, tokens, loc, idx, start):
    """The activation of one node over one window, read with a plain recording hook."""
    seen = {}
    with torch.no_grad(), model.hooked({loc: lambda x: seen.__setitem__("x", x[0, :, idx].clone())}):
        model(torch.from_numpy(tokens[start:start + WINDOW].astype(np.int64))[None])
    return seen["x"].numpy()


# ---- capture ---------------------------------------------------------------------------------


def test_window_starts_are_non_overlapping_and_spread_over_the_split():
    assert window_starts(100, 10).tolist() == list(range(0, 100, 10))
    starts = window_starts(1000, 10, 4)
    assert starts.tolist() == [0, 250, 500, 750]
    assert np.all(np.diff(window_starts(10_000, 7, 333)) >= 7)
    assert len(window_starts(64 * 5000, 64)) == 1024  # default cap
    with pytest.raises(UserError):
        window_starts(100, 10, 11)


def test_capture_many_nodes_in_one_pass_equals_each_node_alone(model, tokens, captured, monkeypatch):
    acts, starts = captured
    assert acts.shape == (len(NODES), 120, WINDOW) and acts.dtype == np.float32
    assert starts.shape == (120,)

    calls = count_forwards(model, monkeypatch)
    again, _ = capture_activations(model, tokens, NODES, window=WINDOW, n_windows=120, batch_size=16)
    assert calls[0] == 8, "one forward pass per batch of 16 windows, whatever the number of nodes"
    np.testing.assert_array_equal(again, acts)

    for i, node in enumerate(NODES):
        calls[0] = 0
        alone, alone_starts = capture_activations(model, tokens, [node], window=WINDOW, n_windows=120, batch_size=16)
        assert calls[0] == 8
        np.testing.assert_array_equal(alone_starts, starts)
        np.testing.assert_allclose(alone[0], acts[i], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(acts[0], acts[5])  # the same node twice


def test_capture_matches_a_plain_hooked_forward(model, tokens, captured):
    acts, starts = captured
    assert np.abs(acts).max() > 0
    for w in (0, 37, 119):
        for i, (loc, idx) in enumerate(NODES):
            np.testing.assert_allclose(acts[i, w], direct(model, tokens, loc, idx, int(starts[w])), rtol=1e-5, atol=1e-6)


def test_capture_leaves_the_model_as_it_was(model, tokens):
    model.train()
    before = {k: list(v) for k, v in model.hooks._fns.items()}
    capture_activations(model, tokens, NODES[:2], window=WINDOW, n_windows=3)
    assert model.training and model.hooks._fns == before
    model.eval()


def test_capture_refuses_bad_input(model, tokens):
    with pytest.raises(UserError, match="context"):
        capture_activations(model, tokens, NODES, window=CFG.n_ctx + 1)
    with pytest.raises(UserError, match="unknown node location"):
        capture_activations(model, tokens, [("L7.mlp.neuron", 0)], window=WINDOW)
    with pytest.raises(UserError, match="out of range"):
        capture_activations(model, tokens, [("L0.mlp.neuron", CFG.d_mlp)], window=WINDOW)
    acts, starts = capture_activations(model, tokens, [], window=WINDOW, n_windows=5)
    assert acts.shape == (0, 5, WINDOW)


# ---- sample ----------------------------------------------------------------------------------


def test_top_records_are_the_windows_with_the_largest_maxima(captured, tokens, tokenizer):
    acts, starts = captured
    node = acts[0]
    recs = sample_records(node, starts, tokens, tokenizer, n_top=40, n_random=20, n_quantile=20, seed=0)
    maxima = node.max(axis=1)
    expected = {int(starts[w]) for w in np.argsort(-maxima, kind="stable")[:40]}
    assert {r.start for r in recs["top"]} == expected
    top_max = [r.max_activation for r in recs["top"]]
    assert top_max == sorted(top_max, reverse=True)
    assert [r.rank for r in recs["top"]] == list(range(40))
    assert min(top_max) >= max(maxima[[w for w in range(120) if int(starts[w]) not in expected]])


def test_records_are_traceable_to_their_text(captured, tokens, tokenizer):
    acts, starts = captured
    recs = sample_records(acts[1], starts, tokens, tokenizer, seed=0)
    table = token_table(tokenizer)
    for kind, rs in recs.items():
        for r in rs:
            assert isinstance(r, ActivationRecord) and r.sampling == kind
            assert r.tokens == token_strings(tokenizer, tokens[r.start:r.start + WINDOW])
            assert r.tokens == [table[i] for i in tokens[r.start:r.start + WINDOW]]
            w = int(np.flatnonzero(starts == r.start)[0])
            assert r.activations == pytest.approx(acts[1, w].tolist())
    # a precomputed token table gives the same records as the tokenizer
    assert sample_records(acts[1], starts, tokens, table, seed=0) == recs


def test_default_sampling_gives_enough_windows_of_each_kind_and_never_repeats_one(captured, tokens, tokenizer):
    acts, starts = captured
    recs = sample_records(acts[2], starts, tokens, tokenizer, seed=3)
    assert len(recs["top"]) >= 20 and len(recs["random"]) >= 20 and len(recs["quantile"]) == 20
    all_starts = [r.start for rs in recs.values() for r in rs]
    assert len(all_starts) == len(set(all_starts))
    assert [r.rank for r in recs["random"]] == list(range(len(recs["random"])))


def test_quantile_records_spread_over_the_range_of_maxima():
    rng = np.random.default_rng(0)
    acts = rng.random((100, 4)) + np.arange(100)[:, None]  # window w's maximum grows with w
    starts = np.arange(100) * 4
    tokens = np.zeros(400, dtype=np.int64)
    recs = sample_records(acts, starts, tokens, ["t"], n_top=10, n_random=10, n_quantile=10, n_quantile_bins=5)
    assert {r.start // 4 for r in recs["top"]} == set(range(90, 100))
    left = sorted(set(range(90)) - {r.start // 4 for r in recs["random"]})  # 80 windows, 16 per bin
    by_bin = [[r.start // 4 for r in recs["quantile"] if r.rank // 2 == b] for b in range(5)]
    for b, windows in enumerate(by_bin):
        assert len(windows) == 2
        assert all(w in left[16 * b:16 * (b + 1)] for w in windows), (b, windows)


def test_sampling_is_deterministic_per_seed(captured, tokens, tokenizer):
    acts, starts = captured
    a = sample_records(acts[0], starts, tokens, tokenizer, seed=7)
    b = sample_records(acts[0], starts, tokens, tokenizer, seed=7)
    c = sample_records(acts[0], starts, tokens, tokenizer, seed=8)
    assert a == b
    assert [r.start for r in a["top"]] == [r.start for r in c["top"]]
    assert [r.start for r in a["random"]] != [r.start for r in c["random"]]


def test_small_captures_give_fewer_records():
    acts = np.arange(30, dtype=float).reshape(10, 3)
    recs = sample_records(acts, np.arange(10) * 3, np.zeros(30, dtype=np.int64), ["t"], n_top=6, n_random=6, n_quantile=5)
    assert len(recs["top"]) == 6 and len(recs["random"]) == 4 and recs["quantile"] == []


# ---- split -----------------------------------------------------------------------------------


def test_default_split_is_interleaved_and_balanced(captured, tokens, tokenizer):
    acts, starts = captured
    splits = split_records(sample_records(acts[0], starts, tokens, tokenizer, seed=0))
    assert set(splits) == {"explain", "score", "calibrate", "holdout"}
    assert [r.rank for r in splits["explain"]] == list(range(0, 40, 2))
    assert all(r.sampling == "top" for r in splits["explain"])
    score_top = [r.rank for r in splits["score"] if r.sampling == "top"]
    score_random = [r.rank for r in splits["score"] if r.sampling == "random"]
    assert score_top == list(range(1, 40, 4)) and score_random == list(range(0, 20, 2))
    cal = splits["calibrate"]
    assert [r.rank for r in cal if r.sampling == "top"] == list(range(3, 40, 4))
    assert [r.rank for r in cal if r.sampling == "random"] == list(range(1, 20, 2))
    assert len(splits["holdout"]) == 20 and all(r.sampling == "quantile" for r in splits["holdout"])


@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_no_explained_window_is_scored_or_calibrated_on(captured, tokens, tokenizer, seed):
    acts, starts = captured
    splits = split_records(sample_records(acts[3], starts, tokens, tokenizer, seed=5), seed=seed)
    explain = {r.start for r in splits["explain"]}
    score = {r.start for r in splits["score"]}
    calibrate = {r.start for r in splits["calibrate"]}
    holdout = {r.start for r in splits["holdout"]}
    assert explain and score and calibrate
    assert not explain & score and not explain & calibrate and not explain & holdout
    assert not score & calibrate
    kinds = [r.sampling for r in splits["score"]]
    assert kinds.count("top") == kinds.count("random") == 10
    assert len(splits["explain"]) == 20


def test_split_drops_windows_shared_with_explain():
    def rec(kind, rank, start):
        return ActivationRecord(["t"], [float(rank)], kind, rank, start)

    top = [rec("top", i, 10 * i) for i in range(4)]  # explain: ranks 0, 2 (starts 0, 20)
    random = [rec("random", 0, 20), rec("random", 1, 50)]  # the first repeats an explained window
    splits = split_records({"top": top, "random": random, "quantile": [rec("quantile", 0, 0)]})
    assert [r.start for r in splits["explain"]] == [0, 20]
    assert all(r.start not in (0, 20) for s in ("score", "calibrate", "holdout") for r in splits[s])


def test_seeded_split_is_deterministic_and_still_interleaved(captured, tokens, tokenizer):
    acts, starts = captured
    recs = sample_records(acts[0], starts, tokens, tokenizer, seed=0)
    a, b, c = split_records(recs, seed=4), split_records(recs, seed=4), split_records(recs, seed=5)
    assert a == b
    assert [r.rank for r in a["explain"]] != [r.rank for r in c["explain"]]
    for block in range(10):  # two explain ranks in every block of four
        assert sum(4 * block <= r.rank < 4 * block + 4 for r in a["explain"]) == 2
