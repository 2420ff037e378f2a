"""A small, tolerant lexer for Python source, and per-token annotations built from it.

Used by the embedding simulator (to describe each token of a window by a few facts) and by the
ground-truth suite (to compute rule activations over a whole token stream). It reads the text
with its full context: a stream is lexed file by file (files are separated by `<|endoftext|>`):
strings (with their opening and closing quotes, triple quotes, escapes), comments, bracket depth,
line starts and indentation, the previous code token, function headers.

    ann = annotate(token_table(tokenizer), val_tokens)   # a whole token-id stream
    ann = annotate_tokens(["def", " f", "():"])          # a list of token strings
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Character classes of the lexer.
CODE, STR_OPEN, STR_BODY, STR_CLOSE, COMMENT, SPACE = range(6)
_OPEN, _CLOSE = "([{", ")]}"
KEYWORDS = frozenset(keyword.kwlist)
END_OF_TEXT = "<|endoftext|>"


# ---- the lexer -------------------------------------------------------------------------------


def lex(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Character classes and bracket depths of a piece of Python source.

    Returns (kind, depth), both int arrays of len(text): kind[i] is CODE, STR_OPEN / STR_BODY /
    STR_CLOSE (the opening quote(s), the content and the closing quote(s) of a string literal),
    COMMENT (from # to the end of the line) or SPACE (whitespace in code); depth[i] is the number
    of brackets enclosing character i (an opening or closing bracket has the depth outside it).
    Tolerant: an unterminated single-quoted string ends at the newline, a stray closing bracket
    is ignored (depth never goes below 0).
    """
    n = len(text)
    kind = np.full(n, CODE, dtype=np.int8)
    depth = np.zeros(n, dtype=np.int16)
    d = 0
    i = 0
    while i < n:
        c = text[i]
        if c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            kind[i:j] = COMMENT
            depth[i:j] = d
            i = j
            continue
        if c == "'" or c == '"':
            q = c * 3 if text.startswith(c * 3, i) else c
            kind[i:i + len(q)] = STR_OPEN
            depth[i:i + len(q)] = d
            j = i + len(q)
            while j < n:
                if text[j] == "\\":
                    j += 2
                    continue
                if text.startswith(q, j):
                    break
                if len(q) == 1 and text[j] == "\n":
                    break
                j += 1
            j = min(j, n)
            kind[i + len(q):j] = STR_BODY
            depth[i + len(q):j] = d
            if j < n and text.startswith(q, j):
                kind[j:j + len(q)] = STR_CLOSE
                depth[j:j + len(q)] = d
                j += len(q)
            i = j
            continue
        if c in _OPEN:
            depth[i] = d
            d += 1
        elif c in _CLOSE:
            d = max(0, d - 1)
            depth[i] = d
        else:
            depth[i] = d
            if c.isspace():
                kind[i] = SPACE
        i += 1
    return kind, depth


# ---- per-token annotations -------------------------------------------------------------------


@dataclass
class Annotations:
    """What the rules know about each token of a token stream (arrays of one entry per token).

    text: the token's string; word: stripped of surrounding whitespace. Booleans: code (some
    non-space character is code), string (most non-space characters are string content),
    open_quote / close_quote (holds the opening / closing quote(s) of a string), comment (most
    non-space characters are in a comment), line_start (the first token with a non-space
    character on its line), def_header (inside a `def` line, from `def` to the header's colon),
    after_dot (a name right after a `.`). Integers: depth (bracket depth at the first non-space
    character), indent (the indentation of the token's line in columns). prev: the previous code
    token's word ("" at a file start).
    """

    text: list[str]
    word: list[str]
    code: np.ndarray
    string: np.ndarray
    open_quote: np.ndarray
    close_quote: np.ndarray
    comment: np.ndarray
    line_start: np.ndarray
    def_header: np.ndarray
    after_dot: np.ndarray
    depth: np.ndarray
    indent: np.ndarray
    prev: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.text)


def annotate_tokens(tokens: Sequence[str]) -> Annotations:
    """Annotate one file (or one window) given as token strings; `<|endoftext|>` starts a new file."""
    n = len(tokens)
    out = Annotations(text=list(tokens), word=[t.strip() for t in tokens], code=np.zeros(n, bool),
                      string=np.zeros(n, bool), open_quote=np.zeros(n, bool), close_quote=np.zeros(n, bool),
                      comment=np.zeros(n, bool), line_start=np.zeros(n, bool), def_header=np.zeros(n, bool),
                      after_dot=np.zeros(n, bool), depth=np.zeros(n, np.int16), indent=np.zeros(n, np.int16),
                      prev=[""] * n)
    start = 0
    for end in [i for i, t in enumerate(tokens) if t == END_OF_TEXT] + [n]:
        _annotate_file(tokens, start, end, out)
        start = end + 1
    return out


def _annotate_file(tokens: Sequence[str], lo: int, hi: int, out: Annotations) -> None:
    if hi <= lo:
        return
    text = "".join(tokens[lo:hi])
    kind, depth = lex(text)
    pos = 0  # character offset in `text`
    prev_word, prev_last_char = "", ""
    line_has_code = False  # a non-space character was seen on the current line
    indent = 0  # indentation of the current line
    col = 0  # column of the next character
    in_def = False
    kinds, depths = kind.tolist(), depth.tolist()
    for i in range(lo, hi):
        tok = tokens[i]
        a = pos
        pos += len(tok)
        nonspace = [j for j, ch in enumerate(tok) if not ch.isspace()]
        first = nonspace[0] if nonspace else None
        # line bookkeeping up to the first non-space character
        if first is not None:
            before = tok[:first]
            if "\n" in before:
                line_has_code = False
                col = len(before) - before.rfind("\n") - 1
            else:
                col += len(before)
            if not line_has_code:
                indent = col
                out.line_start[i] = True
            out.indent[i] = indent
            out.depth[i] = depths[a + first]
            kn = [kinds[a + j] for j in nonspace]
            half = len(kn) / 2
            is_code = CODE in kn
            out.code[i] = is_code
            out.string[i] = in_string = kn.count(STR_BODY) > half
            out.comment[i] = in_comment = kn.count(COMMENT) > half
            out.open_quote[i] = STR_OPEN in kn
            out.close_quote[i] = STR_CLOSE in kn
            word = tok.strip()
            code_word = is_code and not in_string and not in_comment
            if code_word and word == "def" and not in_def:
                in_def = True
            out.def_header[i] = in_def
            if in_def:
                # the header ends at a code colon at bracket depth 0
                for j in nonspace:
                    if tok[j] == ":" and kinds[a + j] == CODE and depths[a + j] == 0:
                        in_def = False
                        break
            out.after_dot[i] = code_word and prev_last_char == "." and word[:1].isidentifier()
            out.prev[i] = prev_word
            if is_code:
                prev_word = word
                last_code = [j for j in nonspace if kinds[a + j] == CODE]
                prev_last_char = tok[last_code[-1]]
            line_has_code = True
        # the rest of the token: newlines start new lines
        rest = tok[first:] if first is not None else tok
        if "\n" in rest:
            line_has_code = False
            col = len(rest) - rest.rfind("\n") - 1
        else:
            col += len(rest)


def annotate(table: Sequence[str], token_ids: np.ndarray) -> Annotations:
    """Annotations of a whole token-id array (e.g. a run's validation split), decoded with a
    `records.token_table`."""
    return annotate_tokens([table[int(t)] for t in np.asarray(token_ids)])
