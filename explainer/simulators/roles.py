"""What a token does in the code around it, guessed from one window's text alone: the role facts of
the embedding simulator (facts version 3).

A window is 64 BPE tokens cut anywhere in a file, so it cannot be parsed; this module reads it the
way a person skimming code does. The window's text is lexed by `explainer.lexer` (strings,
comments, brackets), code is cut into lexemes (names, numbers, operators, whole string literals)
and into statements (a new line outside brackets, or `;`), and each statement is matched against a
few shapes by its first word: `def NAME(PARAMS):`, `class NAME`, `for TARGETS in`, `if/elif/while
CONDITION:`, `raise NAME(MESSAGE)`, `except NAMES`, `import MODULES`, `from MODULE import`, `@...`,
`NAMES = ...`; anywhere, `NAME(` is a call and `NAME=` inside a call's brackets a keyword argument.
Names are also described by their spelling (capitals, CamelCase, a leading underscore, an Error
suffix), which is how programmers signal a name's role.

Every name is one identifier however many BPE pieces it is cut into: each piece of `_Executor`
gets the same facts. A fact applies to a token when the token's first non-space character is in
the fact's span; text facts (docstring, error message) when most of its characters are.

Guesses fail where the window cuts a statement; that is the price of reading a window alone
(the ground-truth rules, computed by Python's parser on whole files, are not guesses).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Sequence

from ..lexer import CODE, COMMENT, STR_BODY, STR_CLOSE, STR_OPEN, lex

DEF_NAME = "the name of a function being defined"
CLASS_NAME = "the name of a class being defined"
CALL = "the name of a function or method being called"
PARAM = "a parameter name in a function signature"
KEYWORD_ARG = "a keyword argument name in a function call"
ASSIGNED = "a variable being assigned a value"
LOOP_VAR = "the loop variable of a for loop"
EXCEPTION = "the name of an exception class"
MODULE = "the name of a module being imported"
CONDITION = "part of the condition of an if or while statement"
DECORATOR = "part of a decorator line"
DOCSTRING = "text of a docstring"
MESSAGE = "text of an error message"
CONSTANT = "a name in capital letters, a constant"
CAMEL = "a CamelCase name, like a class name"
PRIVATE = "a private name starting with an underscore"
TEXT_FACTS = (DOCSTRING, MESSAGE)

_LEXEME = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|\*\*=?|//=?|->|:=|[=!<>]=|[-+*/%&|^@]=|\S")


@dataclass
class _Lexeme:
    text: str
    start: int
    end: int
    depth: int
    kind: str  # name | number | op | string

    @property
    def is_name(self) -> bool:
        return self.kind == "name"


def _lexemes(text: str, kind, depth) -> list[list[_Lexeme]]:
    """The window's code as statements of lexemes (strings whole, comments dropped)."""
    statements: list[list[_Lexeme]] = [[]]
    i, n = 0, len(text)
    while i < n:
        k = kind[i]
        if k == COMMENT or (k != CODE and k not in (STR_OPEN, STR_BODY, STR_CLOSE)):
            if text[i] == "\n" and depth[i] == 0 and statements[-1]:
                statements.append([])
            i += 1
            continue
        if k in (STR_OPEN, STR_BODY, STR_CLOSE):  # a string literal (or the part of it in the window)
            j = i
            while j < n and kind[j] in (STR_OPEN, STR_BODY, STR_CLOSE) and not (j > i and kind[j] == STR_OPEN
                                                                                 and kind[j - 1] == STR_CLOSE):
                j += 1
            statements[-1].append(_Lexeme(text[i:j], i, j, int(depth[i]), "string"))
            i = j
            continue
        m = _LEXEME.match(text, i)
        j = m.end() if m else i + 1
        while j > i + 1 and kind[j - 1] != CODE:  # a lexeme never runs into a string or comment
            j -= 1
        word = text[i:j]
        lk = "name" if word[0].isalpha() or word[0] == "_" else "number" if word[0].isdigit() else "op"
        if word == ";" and depth[i] == 0:
            statements.append([])
        else:
            statements[-1].append(_Lexeme(word, i, j, int(depth[i]), lk))
        i = j
    return [s for s in statements if s]


def _spelling(name: str) -> list[str]:
    if keyword.iskeyword(name):
        return []
    facts = []
    letters = [c for c in name if c.isalpha()]
    if len(letters) >= 2 and name.isupper():
        facts.append(CONSTANT)
    elif name[:1].isupper() and any(c.islower() for c in name):
        facts.append(CAMEL)
    if name.startswith("_") and not name.startswith("__"):
        facts.append(PRIVATE)
    if name.endswith(("Error", "Exception", "Warning")):
        facts.append(EXCEPTION)
    return facts


def _roles(stmt: list[_Lexeme]) -> list[tuple[_Lexeme, str]]:
    """(lexeme, fact) pairs for one statement."""
    out: list[tuple[_Lexeme, str]] = []
    first = stmt[0].text
    base = stmt[0].depth

    def upto(stop: set[str]) -> list[_Lexeme]:
        """The lexemes after the first one, up to the first of `stop` at the statement's depth."""
        got = []
        for x in stmt[1:]:
            if x.text in stop and x.depth == base:
                break
            got.append(x)
        return got

    if len(stmt) == 1 and stmt[0].kind == "string" and stmt[0].text.lstrip("rRbBuU")[:3] in ('"""', "'''"):
        out.append((stmt[0], DOCSTRING))
    if first in ("def", "class") and len(stmt) > 1 and stmt[1].is_name:
        out.append((stmt[1], DEF_NAME if first == "def" else CLASS_NAME))
        if first == "def":
            for prev, x in zip(stmt[1:], stmt[2:]):
                if x.text == ":" and x.depth == base:
                    break
                if x.is_name and x.depth == base + 1 and prev.text in ("(", ",", "*", "**"):
                    out.append((x, PARAM))
    elif first in ("if", "elif", "while"):
        out += [(x, CONDITION) for x in upto({":"})]
    elif first == "raise":
        callee = upto({"(", "from"})
        names = [x for x in callee if x.is_name]
        if names:
            out.append((names[-1], EXCEPTION))
        out += [(x, MESSAGE) for x in stmt if x.kind == "string"]
    elif first == "except":
        out += [(x, EXCEPTION) for x in upto({":", "as"}) if x.is_name]
    elif first == "import":
        after_as = False
        for x in stmt[1:]:
            if x.text == "as":
                after_as = True
            elif x.text == ",":
                after_as = False
            elif x.is_name and not after_as:
                out.append((x, MODULE))
    elif first == "from":
        out += [(x, MODULE) for x in upto({"import"}) if x.is_name]
    elif first == "@":
        out += [(x, DECORATOR) for x in stmt]
    # assignment: names before a "=" (or augmented assignment) outside brackets
    eq = next((i for i, x in enumerate(stmt) if x.depth == base and
               (x.text == "=" or (x.text.endswith("=") and x.text not in ("==", "!=", "<=", ">=")
                                  and x.kind == "op" and len(x.text) > 1))), None)
    if eq is not None and first not in ("def", "class", "if", "elif", "while", "for", "@"):
        for i, x in enumerate(stmt[:eq]):
            nxt = stmt[i + 1].text if i + 1 < len(stmt) else ""
            if x.is_name and x.depth == base and nxt not in (".", "(", "["):
                out.append((x, ASSIGNED))
    for i, x in enumerate(stmt):
        nxt = stmt[i + 1].text if i + 1 < len(stmt) else ""
        prev = stmt[i - 1].text if i else ""
        if not x.is_name:
            continue
        if x.text == "for":  # a for statement or a comprehension: the targets up to "in"
            for y in stmt[i + 1:]:
                if y.text == "in" and y.depth == x.depth:
                    break
                if y.is_name:
                    out.append((y, LOOP_VAR))
        if nxt == "(" and prev not in ("def", "class") and x.text not in KEYWORD_LIKE:
            out.append((x, CALL))
        if nxt == "=" and x.depth > base and first != "def":
            out.append((x, KEYWORD_ARG))
        out += [(x, f) for f in _spelling(x.text)]
    return out


KEYWORD_LIKE = frozenset({"if", "elif", "while", "for", "in", "not", "and", "or", "return", "yield", "print",
                          "assert", "del", "lambda", "is", "with", "except", "raise", "await", "else"})


_OP_NAMES = {"=": "the = sign", ":": "a colon", "->": "the arrow ->", ",": "a comma"}
_BRACKETS = {"(": "parentheses", "[": "square brackets", "{": "braces"}


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def slot_facts(stmt: list[_Lexeme]) -> list[tuple[_Lexeme, str]]:
    """Facts version 4: generic templates of where a lexeme sits, the same for every keyword,
    bracket and operator (nothing here names one rule): the kind of statement ("part of a return
    statement"), the last keyword before it in its statement at its bracket depth ("after the
    keyword in in its statement"), the innermost bracket around it and what opened it ("inside
    the parentheses of a call to open", "inside the parentheses of a def line"), and the last of
    = : -> , before it at its depth within those brackets ("after the = sign")."""
    out: list[tuple[_Lexeme, str]] = []
    first = stmt[0].text
    if keyword.iskeyword(first) and first not in ("True", "False", "None"):
        kind = f"{_article(first)} {first} statement"
    elif first == "@":
        kind = "a decorator line"
    elif any(x.text == "=" and x.depth == stmt[0].depth for x in stmt):
        kind = "an assignment statement"
    else:
        kind = "an expression statement"
    opened: list[tuple[str, str]] = []  # (bracket, what opened it), innermost last
    last_kw: dict[int, str] = {}  # depth -> last keyword seen at that depth
    last_op: dict[int, str] = {}
    for i, x in enumerate(stmt):
        if x.text in (")", "]", "}"):
            if opened:
                opened.pop()
            last_op.pop(x.depth + 1, None)
            last_kw.pop(x.depth + 1, None)
        facts = [f"part of {kind}"]
        if x.depth in last_kw:
            facts.append(f"after the keyword {last_kw[x.depth]} in its statement")
        if opened and x.text not in (")", "]", "}"):
            bracket, owner = opened[-1]
            facts.append(f"inside the {_BRACKETS[bracket]} {owner}".rstrip())
        if x.depth in last_op and x.text not in (")", "]", "}"):
            facts.append(f"after {_OP_NAMES[last_op[x.depth]]}")
        out += [(x, f) for f in facts]
        if x.is_name and keyword.iskeyword(x.text) and x.text not in ("True", "False", "None"):
            last_kw[x.depth] = x.text
            last_op.pop(x.depth, None)
        elif x.text in _OP_NAMES:
            last_op[x.depth] = x.text
        elif x.text in _BRACKETS:
            prev = stmt[i - 1] if i else None
            if prev is not None and prev.is_name and not keyword.iskeyword(prev.text):
                owner = f"of a call to {prev.text}" if first not in ("def", "class") or i > 2 else \
                    f"of a {first} line"
            else:
                owner = ""
            opened.append((x.text, owner))
    return out


def role_facts(tokens: Sequence[str], slots: bool = False) -> tuple[list[list[str]], list[str | None]]:
    """The role facts of each token of one window (see the module docstring), and the whole
    identifier each token is a piece of (None for a token that is not part of a name)."""
    text = "".join(tokens)
    kind, depth = lex(text)
    statements = _lexemes(text, kind, depth)
    spans = [(x.start, x.end, f) for stmt in statements for x, f in _roles(stmt) + (slot_facts(stmt) if slots else [])]
    names = [(x.start, x.end, x.text) for stmt in statements for x in stmt if x.is_name]
    body = kind == STR_BODY
    facts_out: list[list[str]] = []
    names_out: list[str | None] = []
    pos = 0
    for tok in tokens:
        a, pos = pos, pos + len(tok)
        lead = len(tok) - len(tok.lstrip())
        if lead == len(tok):
            facts_out.append([])
            names_out.append(None)
            continue
        first = a + lead
        n_chars = len(tok.strip())
        facts = []
        for s, e, f in spans:
            if f in TEXT_FACTS:
                if int(body[max(s, a):min(e, pos)].sum()) * 2 > n_chars:
                    facts.append(f)
            elif s <= first < e:
                facts.append(f)
        facts_out.append(list(dict.fromkeys(facts)))
        names_out.append(next((w for s, e, w in names if s <= first < e), None))
    return facts_out, names_out
