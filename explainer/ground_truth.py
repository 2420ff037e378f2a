"""Ground-truth neurons: synthetic "nodes" whose activation on real Python code is a known rule.

Each `Rule` maps the held-out token stream of a trained run (its validation split, tokenized by
the run's BPE) to one activation per token, e.g. "fires on the closing quote of a string" or "in
proportion to bracket nesting depth". Every rule comes with its correct explanation and several
wrong or partly right ones. The activations replace `records.capture_activations`' output and
then go through exactly the same code path as a real node (`records.sample_records`,
`records.split_records`, the same prompts, simulators and scores), so a simulator that cannot tell
the correct explanation of a rule neuron from a wrong one cannot be trusted on real nodes either.

Rules see the text with its full context: the whole validation stream is lexed once, file by file
(files are separated by `<|endoftext|>`), by a small Python lexer (`lex`): strings (with their
opening and closing quotes, triple quotes, escapes), comments, bracket depth, line starts and
indentation, the previous code token, function headers. A window that starts inside a docstring
is therefore labelled correctly even though its first token does not show it.

    ann = annotate(token_table(tokenizer), val_tokens)   # once per run
    acts = rule_activations(RULES["close_quote"], ann, starts, window)  # (n_windows, window)

Rules are split into a TRAINING set (used to tune prompts and simulators; it contains every rule
that a worked example of `prompts/simulate.json` or `prompts/explain.json` shows) and a HELD_OUT
set (reported). Graded rules (non-binary activations): nesting_depth, indentation, return_line.
"""

from __future__ import annotations

import keyword
from dataclasses import dataclass, field
from typing import Callable, Sequence

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


# ---- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A ground-truth neuron: `fn(annotations) -> activations` (one float per token, >= 0)."""

    name: str
    kind: str  # token identity | syntax position | graded
    explanation: str  # the correct explanation
    wrong: tuple[str, ...]  # wrong or partly right explanations (partly right ones first)
    fn: Callable[[Annotations], np.ndarray]


def _words(ann: Annotations, words: set[str], code_only: bool = True) -> np.ndarray:
    ok = np.array([w in words for w in ann.word], dtype=bool)
    return (ok & ann.code if code_only else ok).astype(np.float32)


def _after_return(ann: Annotations) -> np.ndarray:
    """1 on the first non-space token after the keyword `return` (on the same line)."""
    out = np.zeros(len(ann), np.float32)
    armed = False
    for i, (w, t) in enumerate(zip(ann.word, ann.text)):
        if w:
            if armed:
                out[i] = 1.0
            armed = w == "return" and bool(ann.code[i]) and "\n" not in t
        elif "\n" in t:
            armed = False
    return out


def _return_line(ann: Annotations) -> np.ndarray:
    """1 at `return`, then 0.5, 0.25, ... on the following tokens of its line (graded)."""
    out = np.zeros(len(ann), np.float32)
    level = 0.0
    for i, (w, t) in enumerate(zip(ann.word, ann.text)):
        if w == "return" and ann.code[i]:
            level = 1.0
            out[i] = 1.0
        elif level > 0 and w:
            level /= 2
            out[i] = level
        if "\n" in t:
            level = 0.0
    return out


def _digits(ann: Annotations) -> np.ndarray:
    return np.array([w.isdigit() for w in ann.word], dtype=np.float32)


RULES_LIST: list[Rule] = [
    # -- training rules (prompt and simulator tuning) --
    Rule("return_keyword", "token identity", "the keyword return.",
         ("the keyword return and every token on the rest of its line.", "the keyword yield.",
          "the keywords def and class."),
         lambda a: _words(a, {"return"})),
    Rule("after_return", "syntax position", "the first token after the keyword return.",
         ("the keyword return.", "names of variables.", "the first token of each line."),
         _after_return),
    Rule("close_quote", "syntax position", "the closing quote of a string literal.",
         ("quote characters that open a string literal.", "the text inside string literals.",
          "parentheses and brackets."),
         lambda a: a.close_quote.astype(np.float32)),
    Rule("nesting_depth", "graded", "tokens inside brackets or parentheses, more strongly the deeper they are nested.",
         ("opening parentheses.", "commas that separate arguments.", "tokens on deeply indented lines."),
         lambda a: np.minimum(a.depth, 5).astype(np.float32) * ~a.comment),
    Rule("digits", "token identity", "numbers: tokens made of digits.",
         ("the letters of variable names.", "arithmetic operators such as + and *.", "the keyword for."),
         _digits),
    Rule("comment", "syntax position", "comments: the text after a # sign.",
         ("the text inside string literals.", "the first token of each line.", "the keyword import."),
         lambda a: a.comment.astype(np.float32)),
    Rule("assign", "token identity", "the assignment sign =.",
         ("the comparison operator ==.", "names of variables being assigned.", "commas."),
         lambda a: _words(a, {"="})),
    Rule("line_start", "syntax position", "the first token of each line of code.",
         ("the indentation whitespace at the start of lines.", "the last token of each line.",
          "the keyword if."),
         lambda a: (a.line_start & ~a.string & ~a.comment).astype(np.float32)),
    # -- held-out rules (reported) --
    Rule("self", "token identity", "the word self.",
         ("the word cls.", "method names after a dot.", "the keyword def."),
         lambda a: _words(a, {"self"})),
    Rule("constants", "token identity", "the constants None, True and False.",
         ("the keyword is.", "numbers: tokens made of digits.", "names of functions."),
         lambda a: _words(a, {"None", "True", "False"})),
    Rule("import", "token identity", "the keywords import and from.",
         ("names of modules.", "the keyword as.", "the keyword return."),
         lambda a: _words(a, {"import", "from"})),
    Rule("if_keywords", "token identity", "the keywords if, elif and else.",
         ("the keywords for and while.", "comparison operators such as == and <.", "colons at the end of lines."),
         lambda a: _words(a, {"if", "elif", "else"})),
    Rule("in_string", "syntax position", "the text inside string literals, between the quotes.",
         ("the closing quote of a string literal.", "comments: the text after a # sign.", "names of variables."),
         lambda a: a.string.astype(np.float32)),
    Rule("def_header", "syntax position", "tokens inside a function signature, from def to the colon.",
         ("the keyword def.", "tokens inside a class definition line.", "arguments of function calls."),
         lambda a: (a.def_header & ~a.comment).astype(np.float32)),
    Rule("attribute", "syntax position", "attribute and method names right after a dot.",
         ("the dot character.", "the word self.", "names of modules in import statements."),
         lambda a: a.after_dot.astype(np.float32)),
    Rule("indentation", "graded", "tokens on indented lines, more strongly the deeper the indentation.",
         ("tokens inside brackets or parentheses, more strongly the deeper they are nested.",
          "the first token of each line.", "the keyword else."),
         lambda a: (np.minimum(a.indent // 4, 5) * (np.array([bool(w) for w in a.word]) & ~a.string
                                                       & ~a.comment)).astype(np.float32)),
    Rule("return_line", "graded", "the keyword return most strongly, then the rest of its line, fading out.",
         ("the first token after the keyword return.", "the keyword yield.", "the last token of each line."),
         _return_line),
]
RULES: dict[str, Rule] = {r.name: r for r in RULES_LIST}
TRAINING = tuple(r.name for r in RULES_LIST[:8])
HELD_OUT = tuple(r.name for r in RULES_LIST[8:])
N_OTHER_WRONG = 2  # wrong explanations taken from other rules (the next ones in the list)


def wrong_explanations(rule: Rule) -> list[str]:
    """The rule's own wrong or partly right explanations, then the correct explanations of the
    next N_OTHER_WRONG rules of its own set (training or held-out), without duplicates."""
    group = TRAINING if rule.name in TRAINING else HELD_OUT
    i = group.index(rule.name)
    others = [RULES[group[(i + k) % len(group)]].explanation for k in range(1, N_OTHER_WRONG + 1)]
    return [w for w in dict.fromkeys([*rule.wrong, *others]) if w != rule.explanation]


def rule_activations(rule: Rule, ann: Annotations, starts: np.ndarray, window: int) -> np.ndarray:
    """The rule's activations over windows of the annotated stream: (len(starts), window) float32,
    the drop-in replacement of one row of `records.capture_activations`."""
    acts = np.asarray(rule.fn(ann), dtype=np.float32)
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(window)
    return acts[idx]


def resolve_rules(names: Sequence[str] | None) -> list[Rule]:
    """Rules by name (all when none given); an unknown name is a UserError listing the known ones."""
    from sparse_model.errors import UserError

    if not names:
        return list(RULES_LIST)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise UserError(f"unknown rule {unknown[0]!r}; known rules: {', '.join(RULES)}")
    return [RULES[n] for n in dict.fromkeys(names)]
