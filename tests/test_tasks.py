"""Tests for sparse_model.tasks: task files, deterministic expansion, token checks, losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sparse_model.corpus import default_corpus_dir
from sparse_model.errors import UserError
from sparse_model.model import ModelConfig, SparseGPT
from sparse_model.tasks import (
    DEFAULT_TASK_DIR,
    MAX_PREFIX_TOKENS,
    build_task,
    evaluate_tasks,
    get_task_specs,
    load_task_specs,
    load_tasks,
    task_accuracy,
    task_logit_diff,
    task_loss,
    task_loss_tensor,
)
from sparse_model.tokenizer import eot_id, train_tokenizer

REQUIRED = {"single_double_quote", "bracket_counting", "set_or_string", "random_control"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny forward passes are dominated by thread hand-offs on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    """A BPE trained on 40 top-level stdlib modules (~1 MB, ~0.5 s)."""
    files = sorted(default_corpus_dir().glob("*.py"))
    step = max(1, len(files) // 40)
    return train_tokenizer([p.read_bytes().decode("utf-8") for p in files[::step][:40]])


@pytest.fixture(scope="module")
def tasks(tok):
    return {t.name: t for t in load_tasks(tok)}


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = SparseGPT(ModelConfig(vocab_size=tok.get_vocab_size(), n_layer=1, d_model=32, n_head=2, d_head=16,
                              d_mlp=64, n_ctx=64))
    with torch.no_grad():  # make the two candidate logits differ visibly
        m.bigram.normal_(0.0, 1.0)
        m.lm_head.weight.normal_(0.0, 0.5)
    m.eval()
    return m


def write_task(folder: Path, stem: str, **overrides) -> Path:
    spec = {
        "name": stem,
        "description": "test task",
        "answers": ["]", "]\n"],
        "after": ["]\n", ""],
        "slots": {"var": ["x", "y", "data", "rows"], "a": ["1", "2", "3", "4", "5"]},
        "variants": [{"open": "[["}, {"open": "["}],
        "templates": ["{var} = {open}{a}, {a}"],
    }
    spec.update(overrides)
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- files


def test_default_folder_has_required_tasks() -> None:
    assert DEFAULT_TASK_DIR == Path(__file__).resolve().parent.parent / "datasets" / "tasks"
    specs = load_task_specs()
    names = [s.name for s in specs]
    assert REQUIRED <= set(names)
    assert len(names) >= 9 and len(set(names)) == len(names)
    assert sum(s.random_labels for s in specs) == 1
    for s in specs:
        assert s.description and "\n" not in s.description


def test_json_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    write_task(tmp_path, "good")
    lines = ['{', '  "name": "foo",', '  "description": "x"', '  "templates": ["a"]', '}']
    (tmp_path / "foo.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        load_task_specs(tmp_path)
    msg = str(e.value)
    assert "foo.json line 4: Expecting ',' delimiter" in msg
    assert "\n" not in msg


def test_unknown_task_lists_known_ones(tok) -> None:
    with pytest.raises(UserError) as e:
        load_tasks(tok, ["no_such_task"])
    msg = str(e.value)
    assert "no_such_task" in msg
    for name in REQUIRED:
        assert name in msg


def test_bad_specs_rejected(tmp_path: Path) -> None:
    write_task(tmp_path, "typo", templates=["{var} = {opne}{a}"])
    with pytest.raises(UserError, match=r"typo.json \(task typo\): unknown placeholder \{opne\}"):
        load_task_specs(tmp_path)
    (tmp_path / "typo.json").unlink()
    write_task(tmp_path, "three", variants=[{"open": "["}, {"open": "("}, {"open": "{"}])
    with pytest.raises(UserError, match="exactly two"):
        load_task_specs(tmp_path)
    (tmp_path / "three.json").unlink()
    write_task(tmp_path, "other_name", name="mismatch")
    with pytest.raises(UserError, match="rename"):
        load_task_specs(tmp_path)


def test_multi_token_answer_rejected_with_split(tmp_path: Path, tok) -> None:
    write_task(tmp_path, "double_close", answers=["]]\n", "]\n"], after="")
    (spec,) = load_task_specs(tmp_path)
    with pytest.raises(UserError) as e:
        build_task(spec, tok)
    assert str(e.value) == 'task double_close: answer "]]\\n" is 2 tokens under this tokenizer: "]" "]\\n"'


def test_answer_that_merges_with_following_text_rejected(tmp_path: Path, tok) -> None:
    # "]" is one token, but in "x = [1, 2]\n" the model sees "]\n", never "]" then "\n".
    write_task(tmp_path, "merged", answers=["]", ")"], after="\n", variants=[{"open": "["}, {"open": "f("}])
    (spec,) = load_task_specs(tmp_path)
    with pytest.raises(UserError) as e:
        build_task(spec, tok)
    msg = str(e.value)
    assert msg.startswith('task merged: answer "]" is not its own token after prefix')
    assert '"]\\n"' in msg  # the split shows the merged token


def test_small_template_space_used_without_duplicates(tmp_path: Path, tok) -> None:
    write_task(tmp_path, "small", slots={"var": ["x", "y"], "a": ["1", "2", "3"]})
    (spec,) = load_task_specs(tmp_path)
    task = build_task(spec, tok, n_train=256, n_val=128)
    assert len(task.pairs) == 6  # 2 names x 3 values
    prefixes = task.train.prefixes + task.val.prefixes
    assert len(prefixes) == len(set(prefixes)) == 12
    assert len(task.val) == 4 and len(task.train) == 8


# --------------------------------------------------------------------------- expansion


def test_expansion_is_deterministic(tok) -> None:
    for spec in get_task_specs(["single_double_quote", "bracket_counting", "set_or_string"]):
        a = build_task(spec, tok, seed=0)
        b = build_task(spec, tok, seed=0)
        c = build_task(spec, tok, seed=1)
        assert a.pairs == b.pairs
        assert torch.equal(a.train.ids, b.train.ids) and torch.equal(a.val.correct, b.val.correct)
        assert [p.prefixes for p in a.pairs] != [p.prefixes for p in c.pairs]


def test_splits_disjoint_sized_and_paired(tasks, tok) -> None:
    eot = eot_id(tok)
    for t in tasks.values():
        assert (len(t.train), len(t.val)) == (256, 128), t.name
        train, val = set(t.train.prefixes), set(t.val.prefixes)
        assert len(train) == len(t.train) and len(val) == len(t.val), t.name
        assert not train & val, t.name
        for ex in (t.train, t.val):
            # rows 2i and 2i+1 are one contrast pair: the candidates are swapped
            assert torch.equal(ex.correct[0::2], ex.wrong[1::2]) and torch.equal(ex.correct[1::2], ex.wrong[0::2])
            assert torch.equal(ex.pair, torch.arange(len(ex)) // 2)
            assert bool((ex.correct != ex.wrong).all())
            assert int(ex.lengths.max()) == ex.ids.shape[1]
            short = ex.lengths < ex.ids.shape[1]
            assert bool((ex.ids[short, 0] == eot).all())  # left padding is <|endoftext|>


def test_answers_single_tokens_consistent_with_full_text(tasks, tok) -> None:
    eot = eot_id(tok)
    for t in tasks.values():
        assert t.answers, t.name
        for split, ex in (("train", t.train), ("val", t.val)):
            pairs = [p for p in t.pairs if p.split == split]
            assert len(pairs) * 2 == len(ex)
            for k, p in enumerate(pairs):
                natural = (p.answers[1], p.answers[0]) if p.flipped else p.answers
                for i in range(2):
                    row = 2 * k + i
                    prefix_ids = tok.encode(p.prefixes[i], add_special_tokens=False).ids
                    assert len(prefix_ids) < MAX_PREFIX_TOKENS
                    n = int(ex.lengths[row])
                    assert ex.ids[row, -n:].tolist() == prefix_ids  # bare prefix (bos=False default)
                    for answer in natural:
                        assert len(tok.encode(answer, add_special_tokens=False).ids) == 1, (t.name, answer)
                    full = tok.encode(p.prefixes[i] + natural[i], add_special_tokens=False).ids
                    answer_id = tok.encode(natural[i], add_special_tokens=False).ids[0]
                    assert full == prefix_ids + [answer_id], (t.name, p.prefixes[i], natural[i])
                    assert int(ex.correct[row]) == tok.encode(p.answers[i], add_special_tokens=False).ids[0]


def test_random_control_labels_balanced_and_ruleless(tasks) -> None:
    ctrl = tasks["random_control"]
    assert all(not p.flipped for t in tasks.values() if t.name != "random_control" for p in t.pairs)
    flips = [p.flipped for p in ctrl.pairs]
    # Agreement with the real rule (close with the opening quote) is a coin flip, not 0 or 1.
    assert 0.35 < sum(flips) / len(flips) < 0.65
    for split in ("train", "val"):
        f = [p.flipped for p in ctrl.pairs if p.split == split]
        assert 0.25 < sum(f) / len(f) < 0.75
    # Not a rule of the template or of the pair order either.
    for template in {p.template for p in ctrl.pairs}:
        f = {p.flipped for p in ctrl.pairs if p.template == template}
        assert f == {True, False}
    assert len({tuple(flips[i:i + 8]) for i in range(0, len(flips) - 8, 8)}) > 4


# --------------------------------------------------------------------------- evaluation


def hand_diffs(model, ex) -> torch.Tensor:
    out = []
    for row in range(len(ex)):
        n = int(ex.lengths[row])
        logits = model(ex.ids[row:row + 1, -n:])[0, -1]
        out.append(logits[ex.correct[row]] - logits[ex.wrong[row]])
    return torch.stack(out)


def test_task_loss_matches_hand_computation(model, tasks) -> None:
    ex = tasks["single_double_quote"].val.subset(range(24))
    with torch.no_grad():
        expected = hand_diffs(model, ex)
        diff = task_logit_diff(model, ex, batch_size=7)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(diff, expected, rtol=1e-4, atol=1e-5)
    assert task_loss(model, ex) == pytest.approx(F.softplus(-expected).mean().item(), rel=1e-5)
    assert task_accuracy(model, ex) == pytest.approx((expected > 0).float().mean().item())


def test_long_prefixes_truncated_to_context(tok, tasks) -> None:
    torch.manual_seed(1)
    short = SparseGPT(ModelConfig(vocab_size=tok.get_vocab_size(), n_layer=1, d_model=32, n_head=2, d_head=16,
                                  d_mlp=64, n_ctx=16))
    ex = tasks["set_or_string"].val.subset(range(6))
    assert int(ex.lengths.max()) > 16
    with torch.no_grad():
        diff = task_logit_diff(short, ex)
        logits = short(ex.ids[:1, -16:])[0, -1]
    assert diff.shape == (6,)
    assert diff[0].item() == pytest.approx((logits[ex.correct[0]] - logits[ex.wrong[0]]).item(), abs=1e-5)


def test_task_loss_is_differentiable(model, tasks) -> None:
    ex = tasks["bracket_counting"].train.subset(torch.arange(0, 64))
    model.zero_grad()
    loss = task_loss_tensor(model, ex)
    assert loss.requires_grad
    loss.backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    # A node mask in a hook receives a gradient too (what the pruner needs).
    mask = torch.ones(model.cfg.d_mlp, requires_grad=True)
    with model.hooked({"L0.mlp.neuron": lambda x: x * mask}):
        task_loss_tensor(model, ex).backward()
    assert mask.grad is not None and mask.grad.abs().sum() > 0
    model.zero_grad()


def test_evaluate_tasks(model, tasks) -> None:
    chosen = [tasks["single_double_quote"], tasks["random_control"]]
    rows = evaluate_tasks(model, chosen)
    assert [r["name"] for r in rows] == ["single_double_quote", "random_control"]
    for r, t in zip(rows, chosen):
        assert r["n_val"] == len(t.val) == 128
        assert 0.0 <= r["accuracy"] <= 1.0
        assert r["loss"] == pytest.approx(task_loss(model, t.val), rel=1e-5)


def test_with_bos(tok, tasks) -> None:
    (spec,) = get_task_specs(["bracket_counting"])
    with_bos = build_task(spec, tok, bos=True)
    bare = tasks["bracket_counting"]
    assert bare.pairs == with_bos.pairs
    assert torch.equal(bare.val.lengths + 1, with_bos.val.lengths)
    row = 0
    n = int(bare.val.lengths[row])
    assert bare.val.ids[row, -n:].tolist() == with_bos.val.ids[row, -n:].tolist()
