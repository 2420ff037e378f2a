"""Byte-level BPE tokenizer for Python code, built on HuggingFace ``tokenizers``.

Design (following the paper's 2048-token BPE whose splitting keeps punctuation runs together with a
trailing newline, so ``')``, ``")``, ``]\\n`` can be single tokens):

- Pre-tokenizer: a regex ``Split`` (behaviour "isolated") with these alternatives, tried in order:

  1. English contractions ``'s 't 're 've 'm 'll 'd`` (as in GPT-2),
  2. `` ?\\p{L}+`` -- a word, with at most one leading space,
  3. `` ?\\p{N}`` -- a SINGLE digit (optionally space-prefixed); numbers are spelled digit by digit
     so a 2048-entry vocabulary is not spent on number chunks,
  4. `` ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*`` -- a run of punctuation plus any newlines right after it
     (this is what lets ``')\\n`` become one token),
  5. ``\\s+(?!\\S)`` -- whitespace except the last character before a non-space (that character
     then prefixes the next word), and
  6. ``\\s+`` -- any remaining whitespace.

  Then ``ByteLevel(add_prefix_space=False, use_regex=False)`` maps bytes to printable characters.
  Every byte of the input lands in exactly one piece, so encoding is lossless.
- No normalizer; decoder ``ByteLevel``. ``decode(encode(text).ids) == text`` exactly.
- ``<|endoftext|>`` is reserved as id 0. It is appended after every file by ``encode_texts`` to
  separate files in the token stream. ``train_from_iterator`` sees each file as its own sequence, so
  no merge ever crosses a file boundary. The tokenizer is configured with
  ``encode_special_tokens = True``, so the literal text ``<|endoftext|>`` inside a file is encoded as
  ordinary text (never as id 0) and still round-trips exactly; this flag is not stored in the JSON
  file, so ``load_tokenizer`` sets it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from sparse_model.errors import UserError

END_OF_TEXT = "<|endoftext|>"

SPLIT_PATTERN = (
    r"'(?:[sdmt]|ll|ve|re)"
    r"| ?\p{L}+"
    r"| ?\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s+(?!\S)"
    r"|\s+"
)

_ENCODE_CHUNK = 64  # texts per encode_batch call; bounds memory held by Encoding objects


def _configure(tok: Tokenizer) -> Tokenizer:
    tok.encode_special_tokens = True
    return tok


def _new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """Train a byte-level BPE with ``vocab_size`` entries (id 0 is ``<|endoftext|>``).

    The vocabulary is smaller than ``vocab_size`` only when the text has too few distinct pairs.
    """
    if not 257 <= vocab_size <= 65536:
        raise UserError(
            f"vocabulary size {vocab_size} is out of range; pass a value between 257 and 65536"
        )
    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(iter(texts), trainer=trainer)
    assert tok.token_to_id(END_OF_TEXT) == 0
    return _configure(tok)


def save_tokenizer(tok: Tokenizer, path: Path | str) -> None:
    """Write the tokenizer as JSON to ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Read a tokenizer written by ``save_tokenizer``; ``UserError`` if missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"tokenizer file {path} does not exist; train one first or pass the right path"
        )
    try:
        text = path.read_text(encoding="utf-8")
        json.loads(text)
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises plain Exception on bad input
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"tokenizer file {path} is corrupt ({detail}); delete it and train the tokenizer again"
        ) from exc
    if tok.token_to_id(END_OF_TEXT) is None:
        raise UserError(
            f"tokenizer file {path} has no {END_OF_TEXT} token; it was not made by this project, "
            "train the tokenizer again"
        )
    return _configure(tok)


def eot_id(tok: Tokenizer) -> int:
    """The id of ``<|endoftext|>``."""
    i = tok.token_to_id(END_OF_TEXT)
    if i is None:
        raise UserError(f"tokenizer has no {END_OF_TEXT} token; train the tokenizer again")
    return i


def encode_texts(tok: Tokenizer, texts: list[str]) -> np.ndarray:
    """Concatenate each text's ids followed by ``<|endoftext|>`` into one uint16 array."""
    if tok.get_vocab_size() > 65536:
        raise ValueError("vocabulary too large for uint16 token ids")
    eot = eot_id(tok)
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    parts: list[np.ndarray] = []
    for start in range(0, len(texts), _ENCODE_CHUNK):
        chunk = list(texts[start : start + _ENCODE_CHUNK])
        for enc in encode(chunk, add_special_tokens=False):
            ids = enc.ids
            arr = np.empty(len(ids) + 1, dtype=np.uint16)
            arr[:-1] = ids
            arr[-1] = eot
            parts.append(arr)
    if not parts:
        return np.empty(0, dtype=np.uint16)
    return np.concatenate(parts)


def token_strings(tok: Tokenizer, ids: Sequence[int] | np.ndarray) -> list[str]:
    """The text of each token, decoded individually (partial UTF-8 shows as U+FFFD)."""
    return [tok.decode([int(i)], skip_special_tokens=False) for i in ids]


def single_token_id(tok: Tokenizer, text: str) -> int | None:
    """The id if ``text`` encodes to exactly one token, else ``None``."""
    if not text:
        return None
    ids = tok.encode(text, add_special_tokens=False).ids
    return ids[0] if len(ids) == 1 else None
