"""Tests for sparse_model.tokenizer: exact round trip, vocabulary, punctuation tokens, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparse_model.corpus import default_corpus_dir
from sparse_model.errors import UserError
from sparse_model.tokenizer import (
    END_OF_TEXT,
    encode_texts,
    load_tokenizer,
    save_tokenizer,
    single_token_id,
    token_strings,
    train_tokenizer,
)

TRICKY = [
    "",
    " ",
    "\n",
    "\t\tx = 1\t\n",
    "a = 1\r\nb = 2\r\n",
    "line\r",
    "trailing spaces   \n   \n",
    "s = 'h\u00e9llo w\u00f6rld \u4e2d\u6587 \u0645\u0631\u062d\u0628\u0627'\n",
    "emoji = '\U0001f600\U0001f44d\U0001f3fd'  # \u2764\ufe0f\n",
    "\ufeffbom = True\n",
    "x = [[1, 2]]\nprint('hello')\nprint(\"hi\")\n",
    "don't    it's   we'll\n\n\n",
    "<|endoftext|> inside a file\n",
    "\x00\x01\x7f weird control chars \u200b\n",
    "12345678901234567890 3.14e-10 0xFF\n",
]


@pytest.fixture(scope="module")
def sample_texts() -> list[str]:
    """40 top-level stdlib modules (~1 MB), chosen deterministically."""
    files = sorted(default_corpus_dir().glob("*.py"))
    step = max(1, len(files) // 40)
    texts = [p.read_bytes().decode("utf-8") for p in files[::step][:40]]
    assert len(texts) >= 20
    return texts


@pytest.fixture(scope="module")
def tok(sample_texts: list[str]):
    return train_tokenizer(sample_texts, vocab_size=2048)


def test_vocab_size_and_eot_id(tok) -> None:
    assert tok.get_vocab_size() == 2048
    assert tok.token_to_id(END_OF_TEXT) == 0


def test_exact_round_trip_on_sample(tok, sample_texts: list[str]) -> None:
    for text in sample_texts:
        assert tok.decode(tok.encode(text).ids) == text


@pytest.mark.parametrize("text", TRICKY)
def test_exact_round_trip_on_tricky_strings(tok, text: str) -> None:
    ids = tok.encode(text).ids
    assert 0 not in ids  # the literal "<|endoftext|>" is ordinary text
    assert tok.decode(ids) == text


def test_punctuation_with_newline_is_single_token(tok) -> None:
    for text in ["')\n", "')", '")']:
        assert single_token_id(tok, text) is not None, text
    assert "')\n" in token_strings(tok, tok.encode("print('hello')\n").ids)


def test_single_token_id(tok) -> None:
    i = single_token_id(tok, "')")
    assert i is not None and tok.encode("')").ids == [i]
    assert single_token_id(tok, "") is None
    assert single_token_id(tok, "def very_long_identifier_that_is_not_one_token():") is None


def test_token_strings_are_exact(tok) -> None:
    text = "for i in range(10):\n    print(i, 'x')\n"
    ids = tok.encode(text).ids
    assert "".join(token_strings(tok, ids)) == text
    assert token_strings(tok, [0]) == [END_OF_TEXT]
    assert token_strings(tok, np.array(ids[:2], dtype=np.uint16)) == token_strings(tok, ids[:2])


def test_encode_texts(tok) -> None:
    texts = ["a = 1\n", "", "print('x')\n"]
    arr = encode_texts(tok, texts)
    assert arr.dtype == np.uint16
    expected = []
    for t in texts:
        expected += tok.encode(t).ids + [0]
    assert arr.tolist() == expected
    assert encode_texts(tok, []).shape == (0,)


def test_save_load_round_trip(tok, sample_texts: list[str], tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tok.json"
    save_tokenizer(tok, path)
    loaded = load_tokenizer(path)
    texts = sample_texts[:5] + TRICKY
    assert np.array_equal(encode_texts(loaded, texts), encode_texts(tok, texts))
    assert loaded.encode("<|endoftext|>").ids == tok.encode("<|endoftext|>").ids
    assert 0 not in loaded.encode("<|endoftext|>").ids


def test_load_missing_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    with pytest.raises(UserError, match="does not exist") as info:
        load_tokenizer(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", ["{not json", '{"model": 3}', "", "[]"])
def test_load_corrupt_tokenizer(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tok.json"
    path.write_text(content)
    with pytest.raises(UserError, match="corrupt|no <") as info:
        load_tokenizer(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


def test_small_text_gives_smaller_vocab() -> None:
    tok = train_tokenizer(["x = 1\n"], vocab_size=2048)
    assert 257 <= tok.get_vocab_size() < 2048
    assert tok.decode(tok.encode("y = 'z'\n").ids) == "y = 'z'\n"


def test_bad_vocab_size() -> None:
    with pytest.raises(UserError, match="vocabulary size"):
        train_tokenizer(["x"], vocab_size=10)
