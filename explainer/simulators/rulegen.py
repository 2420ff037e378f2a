"""Generated rule neurons: the training data of the trained simulator (`simulators.trained`).

Hundreds of rules, each a known activation per token of a token stream plus several explanations
in varied wording, computed per file by Python's own `tokenize` and `ast` (like the ground-truth
suite's rules, `explainer.code_labels`, but generated from tables instead of written one by one):

- token rules: each keyword, each operator, classes of tokens (numbers, names in CamelCase, ...);
- position rules: the token right after a keyword or a symbol, the last token of a line, ...;
- parse-tree rules: a field of a node type ("the condition of a while loop"), a node type's
  whole span ("a conditional expression"), and their combinations with token classes ("numbers
  inside the arguments of a call");
- word rules: names whose words belong to a family ("names about files and paths").

Each rule's explanations are its table phrases in random frames ("fires on ...", "mostly ..."), plus
paraphrases of its first phrase written once by an LLM and stored as data (`paraphrase_rules`).

The suite's held-out rules stay out. Parse-tree rules of the node types the held-out rules are
about are never generated (`HELD_OUT_TYPES`, the `EXCLUDED` tokens), and `disjoint` drops any
generated rule whose activations correlate with a held-out rule's at `MAX_CORRELATION` or more on
the stream. The generator is deterministic: the same stream gives the same rules, activations and
explanations; GENERATOR_VERSION names it in the simulator's version.

    rules = generate(tokens)             # list[GeneratedRule], activations per token (sparse)
    rules = disjoint(rules, held_out)    # without those that resemble held-out rules
"""

from __future__ import annotations

import ast
import json
import keyword
import random
import re
import tokenize
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..code_labels import CharOffsets, file_ranges, first_characters, parse_file

GENERATOR_VERSION = 1
PARAPHRASES = Path(__file__).resolve().parent / "paraphrases.json"  # written by `paraphrase_rules`
MIN_TOKENS = 40  # a rule active on fewer tokens of the stream is dropped
MAX_CORRELATION = 0.5  # `disjoint`: the most a generated rule may correlate with a held-out rule

# Parse-tree node types the held-out rules are about: no rule is generated from them.
HELD_OUT_TYPES = ("Subscript", "Slice", "Lambda", "JoinedStr", "FormattedValue", "Compare", "Yield", "YieldFrom",
                  "ListComp", "SetComp", "DictComp", "GeneratorExp", "comprehension", "AugAssign", "Attribute",
                  "ExceptHandler")
# Tokens the held-out token rules are about (self; None, True, False; import and from; if, elif, else).
EXCLUDED = frozenset({"self", "None", "True", "False", "import", "from", "if", "elif", "else", "lambda", "yield"})


@dataclass
class GeneratedRule:
    name: str  # e.g. "keyword:while", "field:While.test", "in:Call.args:number", "word:files"
    kind: str  # token | position | tree | word
    explanations: tuple[str, ...]
    index: np.ndarray = field(repr=False)  # int64: the active tokens of the stream
    value: np.ndarray = field(repr=False)  # float32: their activations (> 0)

    def activations(self, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        out[self.index] = self.value
        return out


# ---- wording -----------------------------------------------------------------------------------

_FRAMES = ("{x}", "{x}.", "fires on {x}.", "activates on {x}", "{X}", "this neuron responds to {x}.",
           "mostly {x}.", "{X}, and little else.")


def _wordings(rng: random.Random, phrases: Sequence[str], n: int = 4) -> tuple[str, ...]:
    """n explanations: each phrase once in a random frame, then more frames of random phrases."""
    out: list[str] = []
    for i in range(max(n, len(phrases))):
        x = phrases[i] if i < len(phrases) else rng.choice(phrases)
        frame = "{x}" if i == 0 else rng.choice(_FRAMES)
        text = frame.format(x=x, X=x[:1].upper() + x[1:])
        if text not in out:
            out.append(text)
    return tuple(out)


_OP_NAMES = {
    "(": ("opening parentheses (", "the ( character"), ")": ("closing parentheses )", "the ) character"),
    "[": ("opening square brackets [",), "]": ("closing square brackets ]",), "{": ("opening braces {",),
    "}": ("closing braces }",), ":": ("colons", "the : character"), ",": ("commas", "the comma separator"),
    ".": ("dots", "the . character between names"), "=": ("the assignment sign =", "equals signs that assign"),
    "+": ("plus signs +", "the addition operator"), "-": ("minus signs -", "the subtraction operator"),
    "*": ("asterisks *", "the * operator"), "**": ("double asterisks **", "the power operator **"),
    "/": ("slashes /", "the division operator /"), "%": ("percent signs %", "the % operator"),
    "->": ("the arrow -> of a return annotation",), "@": ("at signs @", "the @ of decorators"),
    "|": ("vertical bars |",), "&": ("ampersands &",), "~": ("tildes ~",), ";": ("semicolons",),
    "//": ("floor division //",), "...": ("ellipsis ...",), "^": ("carets ^",),
}
_CLASSES = {  # token classes: (test on the token's word and tokenize type, phrases)
    "number": (lambda w, t: t == tokenize.NUMBER, ("numbers", "numeric literals", "tokens made of digits")),
    "name": (lambda w, t: t == tokenize.NAME and not keyword.iskeyword(w),
             ("names: identifiers of variables, functions and classes", "identifiers", "any name")),
    "camel": (lambda w, t: t == tokenize.NAME and bool(re.fullmatch(r"_?[A-Z][a-z0-9]+[A-Z]\w*", w)),
              ("names in CamelCase", "CamelCase identifiers such as class names", "capitalised names with humps")),
    "underscore": (lambda w, t: t == tokenize.NAME and w.startswith("_") and not w.startswith("__"),
                   ("private names starting with an underscore", "names with a leading underscore, like _cache")),
    "dunder": (lambda w, t: t == tokenize.NAME and w.startswith("__") and w.endswith("__") and len(w) > 4,
               ("special dunder names such as __init__", "names wrapped in double underscores")),
    "snake": (lambda w, t: t == tokenize.NAME and "_" in w.strip("_") and w.lower() == w,
              ("snake_case names with an underscore inside", "lower-case names joined by underscores")),
    "short": (lambda w, t: t == tokenize.NAME and len(w) == 1,
              ("single-letter names such as i, x or n", "one-character variable names")),
    "digit_name": (lambda w, t: t == tokenize.NAME and any(c.isdigit() for c in w),
                   ("names that contain a digit, like x1 or utf8",)),
    "keyword": (lambda w, t: t == tokenize.NAME and keyword.iskeyword(w),
                ("Python keywords", "reserved words of the language", "any keyword")),
    "bracket": (lambda w, t: t == tokenize.OP and w in "()[]{}", ("brackets and parentheses", "any bracket")),
    "operator": (lambda w, t: t == tokenize.OP and w not in "()[]{},.:",
                 ("operators such as + - * and =", "operator symbols")),
    "comma": (lambda w, t: t == tokenize.OP and w == ",", ("commas",)),
    "string": (lambda w, t: t == tokenize.STRING, ("string literals", "strings, quotes included")),
    "comment": (lambda w, t: False, ("comments", "the text after a # sign", "comment text")),  # marked apart
}
_AFTER = ("for", "in", "def", "class", "while", "with", "as", "raise", "except", "not", "and", "or", "assert", "del",
          "return", "await", "is", "global", "pass", "try", "finally", "break", "continue")
_AFTER_SYMBOL = {"(": "an opening parenthesis", ",": "a comma", "=": "the assignment sign =", ".": "a dot",
                 "[": "an opening square bracket", ":": "a colon", "@": "the @ of a decorator", "->": "the arrow ->",
                 "*": "an asterisk", "**": "a double asterisk"}

# Fields of parse-tree nodes: (node type, field) -> phrases.
FIELDS = {
    ("FunctionDef", "name"): ("the name of a function being defined", "function names right after def"),
    ("FunctionDef", "returns"): ("the return type annotation after the arrow ->",),
    ("FunctionDef", "decorator_list"): ("decorators: the expression after @ above a function",),
    ("FunctionDef", "body"): ("the body of a function definition", "every line inside a function"),
    ("ClassDef", "name"): ("the name of a class being defined", "class names right after class"),
    ("ClassDef", "bases"): ("base classes in a class statement's parentheses",),
    ("ClassDef", "body"): ("the body of a class definition", "everything indented under a class line"),
    ("Return", "value"): ("the value a function returns, after return", "the returned expression"),
    ("Delete", "targets"): ("what a del statement deletes", "the names after del"),
    ("Assign", "targets"): ("the variables being assigned, left of the =", "assignment targets"),
    ("Assign", "value"): ("the value being assigned, right of the =", "the right-hand side of an assignment"),
    ("AnnAssign", "annotation"): ("the type annotation of an annotated variable",),
    ("For", "target"): ("the loop variable of a for loop", "the name between for and in"),
    ("For", "iter"): ("what a for loop iterates over, after in", "the iterable of a for statement"),
    ("For", "body"): ("the body of a for loop", "the statements repeated by a for loop"),
    ("While", "test"): ("the condition of a while loop", "the test after while"),
    ("While", "body"): ("the body of a while loop",),
    ("If", "test"): ("the condition of an if statement", "the test between if and the colon"),
    ("If", "body"): ("the block run when an if condition holds", "the body of an if statement"),
    ("If", "orelse"): ("the else branch of an if statement",),
    ("With", "items"): ("the context manager after with", "the expression of a with statement"),
    ("With", "body"): ("the body of a with block",),
    ("withitem", "optional_vars"): ("the name after as in a with statement",),
    ("Raise", "exc"): ("the exception being raised, after raise", "what a raise statement throws"),
    ("Raise", "cause"): ("the cause of an exception, after raise ... from",),
    ("Try", "body"): ("the body of a try block", "the code protected by try"),
    ("Try", "finalbody"): ("the finally block of a try statement",),
    ("Assert", "test"): ("the condition an assert checks",),
    ("Assert", "msg"): ("the message of an assert statement, after the comma",),
    ("alias", "asname"): ("the alias after as in an import",),
    ("Global", "names"): ("names declared global or nonlocal",),
    ("BoolOp", "values"): ("the operands of and / or", "conditions joined by and or or"),
    ("BinOp", "left"): ("the left operand of an arithmetic operator",),
    ("BinOp", "right"): ("the right operand of an arithmetic operator", "what is added, subtracted or multiplied"),
    ("UnaryOp", "operand"): ("the operand of not or a unary minus",),
    ("IfExp", "test"): ("the condition of a conditional expression a if c else b",),
    ("IfExp", "orelse"): ("the value after else in a conditional expression",),
    ("Call", "func"): ("the function being called, before its parentheses", "names of called functions"),
    ("Call", "args"): ("positional arguments of a function call", "the arguments inside a call's parentheses"),
    ("keyword", "arg"): ("names of keyword arguments in a call, before the =",),
    ("keyword", "value"): ("values of keyword arguments in a call, after the =", "what is passed as name=value"),
    ("Dict", "keys"): ("keys of a dictionary literal", "the keys before each colon in a dict"),
    ("Dict", "values"): ("values of a dictionary literal, after each colon", "dict values"),
    ("List", "elts"): ("elements of a list literal", "items between square brackets"),
    ("Tuple", "elts"): ("items of a tuple", "elements separated by commas in a tuple"),
    ("Set", "elts"): ("elements of a set literal",),
    ("Starred", "value"): ("what is unpacked by a star, as in *args",),
    ("Await", "value"): ("the expression being awaited, after await",),
    ("arguments", "args"): ("parameters of a function definition", "the names in a def's parentheses"),
    ("arguments", "defaults"): ("default values of parameters, after the =",),
    ("arguments", "vararg"): ("the *args parameter of a function",),
    ("arguments", "kwarg"): ("the **kwargs parameter of a function",),
    ("arg", "annotation"): ("type annotations of parameters, after the colon",),
    ("Expr", "value"): ("expression statements whose value is discarded, like a bare call",),
}
# Whole spans of node types: type -> phrases.
SPANS = {
    "Call": ("function calls, from the name to the closing parenthesis", "every token of a call expression"),
    "BinOp": ("arithmetic expressions such as a + b", "binary operations"),
    "BoolOp": ("boolean expressions with and / or",),
    "IfExp": ("conditional expressions: a if c else b",),
    "Dict": ("dictionary literals, brace to brace",),
    "List": ("list literals, bracket to bracket",),
    "Tuple": ("tuples", "comma-separated tuples of values"),
    "Raise": ("raise statements", "the whole line of a raise"),
    "Assert": ("assert statements",),
    "Import": ("import statements", "lines that import modules"),
    "Return": ("return statements, the keyword and its value",),
    "Assign": ("assignment statements", "whole lines that assign a value"),
    "Expr": ("statements that are only an expression, such as a call on its own line",),
    "Try": ("try statements with their except and finally blocks",),
    "With": ("with statements and their blocks",),
    "While": ("while loops, head and body",),
    "For": ("for loops, head and body",),
    "ClassDef": ("class definitions, the class line and its body",),
    "Delete": ("del statements",),
    "Starred": ("starred expressions like *args or **kwargs",),
    "keyword": ("keyword arguments in calls, name=value",),
    "Constant": ("literal constants: numbers and strings",),
    "docstring": ("docstrings: the string right under a def or class line", "documentation strings"),
}
# Word families: names containing one of the words (split at underscores and capitals).
WORDS = {
    "files": ("files and paths", ("file", "files", "path", "paths", "dir", "dirs", "dirname", "filename", "fname",
                                  "folder", "ext", "fp", "basename")),
    "time": ("time and dates", ("time", "date", "datetime", "timeout", "delay", "seconds", "sec", "clock", "timestamp",
                                "now", "tz", "day", "year", "hour", "minutes")),
    "errors": ("errors and failures", ("error", "err", "errors", "exc", "exception", "fail", "failed", "failure", "warn",
                                       "warning", "warnings")),
    "counting": ("counts and sizes", ("count", "counter", "num", "size", "length", "len", "total", "max", "min",
                                      "limit", "n")),
    "text": ("text, lines and characters", ("text", "string", "str", "line", "lines", "char", "chars", "word", "words",
                                            "msg", "message")),
    "network": ("networking", ("url", "host", "port", "socket", "sock", "addr", "address", "http", "server", "client",
                               "request", "response", "proxy")),
    "mapping": ("keys, values and items", ("key", "keys", "value", "values", "item", "items", "dict", "map",
                                           "mapping", "entry")),
    "io": ("reading and writing", ("read", "write", "open", "close", "load", "save", "dump", "flush", "readline",
                                   "stream")),
    "threads": ("threads, locks and waiting", ("thread", "threads", "lock", "queue", "wait", "event", "mutex",
                                               "threading", "task", "tasks", "worker", "sleep")),
    "tests": ("testing", ("test", "tests", "assert", "check", "expected", "mock", "verify", "case")),
    "parsing": ("parsing and syntax trees", ("parse", "parser", "token", "tokens", "lexer", "ast", "node", "nodes",
                                             "tree", "grammar")),
    "bounds": ("starts and ends", ("start", "end", "begin", "stop", "first", "last", "finish", "head", "tail")),
    "config": ("settings and options", ("config", "conf", "settings", "option", "options", "opts", "flag", "flags",
                                        "env", "setting")),
    "encoding": ("encodings and bytes", ("encode", "decode", "encoding", "bytes", "utf8", "codec", "buffer", "buf",
                                         "charset", "ascii")),
    "logging": ("logging and printing", ("log", "logger", "logging", "print", "debug", "info", "verbose", "trace")),
    "copying": ("copying and creating", ("copy", "new", "create", "make", "build", "clone", "init", "setup")),
}
_WORD_ROLES = {"any": "names", "call": "names of called functions", "def": "names of functions being defined",
               "arg": "parameter names", "assign": "names of variables being assigned"}
_IN_CLASSES = ("number", "name", "string", "keyword", "comma", "bracket", "operator")
_IN_PHRASE = {"number": "numbers", "name": "names", "string": "strings", "keyword": "keywords", "comma": "commas",
              "bracket": "brackets", "operator": "operators"}


def _split_words(name: str) -> list[str]:
    parts = re.findall(r"[A-Z]+(?=[A-Z][a-z]|\d|\b|_)|[A-Z]?[a-z]+|[A-Z]+|\d+", name)
    return [p.lower() for p in parts]


# ---- labelling a stream ------------------------------------------------------------------------

_ALIASES = {"AsyncFunctionDef": "FunctionDef", "AsyncFor": "For", "AsyncWith": "With", "TryStar": "Try",
            "Nonlocal": "Global"}
_SKIP = (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.COMMENT)


class _File:
    """One file's character spans per rule key, read per token at the token's first non-space character."""

    def __init__(self, text: str):
        self.text, self.ch = text, CharOffsets(text)
        self.spans: dict[str, list[tuple[int, int]]] = {}
        self.graded: dict[str, list[tuple[int, int, float]]] = {}

    def add(self, key: str, a: int, b: int) -> None:
        if b > a:
            self.spans.setdefault(key, []).append((a, b))

    def node_span(self, node: ast.AST) -> tuple[int, int] | None:
        if getattr(node, "lineno", None) is None or getattr(node, "end_lineno", None) is None:
            return None
        return (self.ch.ast_offset(node.lineno, node.col_offset),
                self.ch.ast_offset(node.end_lineno, node.end_col_offset))

    def find_after(self, node: ast.AST, word: str, name: str) -> tuple[int, int] | None:
        span = self.node_span(node)
        if span is None:
            return None
        k = self.text.find(word, span[0], span[1])
        j = self.text.find(name, k + len(word), span[1]) if k >= 0 else -1
        return (j, j + len(name)) if j >= 0 else None


def _label_tokens(f: _File, toks: list[tokenize.TokenInfo]) -> list[tuple[int, int, str, int]]:
    """Token and position rules; returns the significant tokens as (start, end, string, type)."""
    sig: list[tuple[int, int, str, int]] = []
    depth, row = 0, 0
    for t in toks:
        if t.type == tokenize.NEWLINE and sig:
            f.add("position:line_end", sig[-1][0], sig[-1][1])
        if t.type == tokenize.COMMENT:
            f.add("class:comment", f.ch.offset(*t.start), f.ch.offset(*t.end))
        if t.type in _SKIP:
            continue
        a, b = f.ch.offset(*t.start), f.ch.offset(*t.end)
        w, typ = t.string, t.type
        if t.start[0] != row:
            f.add("position:line_start", a, a + 1)
        row = t.end[0]
        if typ == tokenize.OP and w in ")]}":
            depth = max(depth - 1, 0)
        if depth:
            f.graded.setdefault("graded:depth", []).append((a, b, min(depth, 5) / 5))
        if typ == tokenize.OP and w in "([{":
            depth += 1
        if typ == tokenize.STRING:
            body = w.lstrip("rRbBuUfF")
            q = 3 if body[:3] in ('"""', "'''") else 1
            f.add("position:open_quote", a, a + len(w) - len(body) + q)
            f.add("position:close_quote", b - q, b)
        if typ == tokenize.NAME and keyword.iskeyword(w) or w in ("self", "cls"):
            f.add(f"keyword:{w}", a, b)
        elif typ == tokenize.OP and w in _OP_NAMES:
            f.add(f"op:{w}", a, b)
        for cls, (test, _) in _CLASSES.items():
            if test(w, typ):
                f.add(f"class:{cls}", a, b)
        if typ == tokenize.NAME and not keyword.iskeyword(w):
            f.graded.setdefault("graded:long_names", []).append((a, b, min(len(w), 20) / 20))
            words = set(_split_words(w))
            for fam, (_, members) in WORDS.items():
                if words & set(members):
                    f.add(f"wordtok:{fam}", a, b)
        if sig:
            pw, ptyp = sig[-1][2], sig[-1][3]
            if ptyp == tokenize.NAME and pw in _AFTER:
                f.add(f"after:{pw}", a, b)
            elif ptyp == tokenize.OP and pw in _AFTER_SYMBOL:
                f.add(f"after:{pw}", a, b)
        if typ == tokenize.OP and w in ("(", "[", "{") and sig and sig[-1][3] == tokenize.NAME:
            f.add("position:before_open", sig[-1][0], sig[-1][1])
        sig.append((a, b, w, typ))
    return sig


def _label_tree(f: _File, tree: ast.AST) -> None:
    for node in ast.walk(tree):
        t = _ALIASES.get(type(node).__name__, type(node).__name__)
        if t in HELD_OUT_TYPES:
            continue
        if t in SPANS and (span := f.node_span(node)):
            f.add(f"span:{t}", *span)
        for (ft, fname) in FIELDS:
            if ft != t:
                continue
            val = getattr(node, fname, None)
            for v in val if isinstance(val, list) else [val]:
                span = None
                if isinstance(v, ast.AST):
                    span = f.node_span(v)
                    if isinstance(v, ast.arg):  # a parameter: its name only
                        span = (span[0], span[0] + len(v.arg)) if span else None
                elif isinstance(v, str) and fname == "name":
                    span = f.find_after(node, "class" if t == "ClassDef" else "def", v)
                elif isinstance(v, str) and t == "keyword":
                    s0 = f.node_span(node)
                    span = (s0[0], s0[0] + len(v)) if s0 else None
                elif isinstance(v, str) and t == "alias":
                    span = f.find_after(node, " as ", v)
                elif isinstance(v, str) and t == "Global":
                    span = f.find_after(node, "al", v)  # after global / nonlocal
                if span:
                    f.add(f"field:{ft}.{fname}", *span)
        body = getattr(node, "body", None)
        if t in ("Module", "FunctionDef", "ClassDef") and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str) \
                and (span := f.node_span(body[0])):
            f.add("span:docstring", *span)
        if t == "Call" and (span := f.node_span(node.func)):
            f.add("role:call", *span)
        elif t == "FunctionDef" and (span := f.find_after(node, "def", node.name)):
            f.add("role:def", *span)
        elif t == "arg" and (span := f.node_span(node)):
            f.add("role:arg", span[0], span[0] + len(node.arg))
        elif t == "Assign":
            for target in node.targets:
                if isinstance(target, ast.Name) and (span := f.node_span(target)):
                    f.add("role:assign", *span)


def _file_labels(tokens: Sequence[str], lo: int, hi: int, out: dict[str, dict[int, float]]) -> None:
    text = "".join(tokens[lo:hi])
    parsed = parse_file(text)
    if parsed is None:
        return  # not Python we can parse: no rule is active in it
    f = _File(text)
    _label_tokens(f, parsed[0])
    _label_tree(f, parsed[1])
    _, has, first = first_characters(tokens[lo:hi])
    idx = np.arange(lo, hi)[has]

    def covered(spans: list[tuple[int, int]]) -> np.ndarray:
        mask = np.zeros(len(first), bool)
        for a, b in spans:
            mask[np.searchsorted(first, a):np.searchsorted(first, b)] = True
        return mask

    masks = {key: covered(spans) for key, spans in f.spans.items()}
    for key, mask in masks.items():
        out.setdefault(key, {}).update(dict.fromkeys(idx[mask].tolist(), 1.0))
    for key, spans in f.graded.items():
        for a, b, v in spans:
            i, j = np.searchsorted(first, a), np.searchsorted(first, b)
            out.setdefault(key, {}).update(dict.fromkeys(idx[i:j].tolist(), v))
    # combinations: a class of tokens inside a field or span; a word family in a role
    for key, mask in masks.items():
        if key.startswith(("field:", "span:")):
            for cls in _IN_CLASSES:
                of_class = masks.get(f"class:{cls}")
                if of_class is not None and (both := mask & of_class).any():
                    out.setdefault(f"in:{key[key.index(':') + 1:]}:{cls}", {}).update(
                        dict.fromkeys(idx[both].tolist(), 1.0))
    for fam in WORDS:
        w = masks.get(f"wordtok:{fam}")
        if w is None:
            continue
        for role in ("call", "def", "arg", "assign"):
            if f"role:{role}" in masks and (both := w & masks[f"role:{role}"]).any():
                out.setdefault(f"word:{fam}:{role}", {}).update(dict.fromkeys(idx[both].tolist(), 1.0))



# ---- rules -------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _paraphrases() -> dict[str, list[str]]:
    return json.loads(PARAPHRASES.read_text())["paraphrases"]


def _phrases(key: str, rng: random.Random | None) -> tuple[str, ...] | None:
    """The phrases that describe a rule key, then the LLM's paraphrases of its first phrase (stored
    in PARAPHRASES), None for keys that are not rules."""
    phrases = _table_phrases(key, rng)
    if phrases is None or rng is None:
        return phrases
    return (*phrases, *_paraphrases().get(phrases[0], ()))


def _table_phrases(key: str, rng: random.Random | None) -> tuple[str, ...] | None:
    kind, _, rest = key.partition(":")
    if kind == "keyword":
        if rest in EXCLUDED:
            return None
        word = "word" if rest in ("self", "cls") else "keyword"
        return (f"the {word} {rest}", f"the `{rest}` {word}", f"the token {rest}", f"occurrences of {rest}")
    if kind == "op":
        return (*_OP_NAMES[rest], f"the token `{rest}`")
    if kind == "class":
        return _CLASSES[rest][1]
    if kind == "after":
        if rest in EXCLUDED:
            return None
        if rest in _AFTER_SYMBOL:
            return (f"the token right after {_AFTER_SYMBOL[rest]}", f"the first token after `{rest}`")
        return (f"the first token after the keyword {rest}", f"whatever comes right after {rest}",
                f"the token following `{rest}`")
    if kind == "position":
        return {"line_end": ("the last token of each line", "tokens at the end of a line"),
                "line_start": ("the first token of each line", "tokens that start a line of code"),
                "open_quote": ("the opening quote of a string literal", "quote characters that start a string"),
                "close_quote": ("the closing quote of a string literal", "the quote that ends a string"),
                "before_open": ("the name right before an opening bracket", "the token just before ( or [")}[rest]
    if kind == "graded":
        return {"long_names": ("names, more strongly the longer they are", "long identifiers most, short ones less"),
                "depth": ("tokens inside brackets, more strongly the deeper they are nested",
                          "bracket nesting depth: deeper tokens fire more")}[rest]
    if kind == "field":
        return FIELDS[tuple(rest.split("."))]  # type: ignore[index]
    if kind == "span":
        return SPANS[rest]
    if kind == "in":
        where, cls = rest.rsplit(":", 1)
        phrase = FIELDS[tuple(where.split("."))][0] if "." in where else SPANS[where][0]  # type: ignore[index]
        c = _IN_PHRASE[cls]
        return (f"{c} in {phrase}", f"{c} inside {phrase}", f"{c} that appear in {phrase}")
    if kind in ("wordtok", "word"):
        fam, _, role = rest.partition(":")
        topic, members = WORDS[fam]
        ex = rng.sample(members, 3) if rng else members[:3]
        who = _WORD_ROLES[role or "any"]
        return (f"{who} about {topic}", f"{who} that mention {topic}, like {ex[0]} or {ex[1]}",
                f"{who} containing words such as {ex[0]}, {ex[1]} and {ex[2]}")
    return None


def generate(tokens: Sequence[str], n_explanations: int = 4) -> list[GeneratedRule]:
    """Every generated rule active on at least MIN_TOKENS tokens of the stream, sorted by name."""
    acts: dict[str, dict[int, float]] = {}
    for lo, hi in file_ranges(tokens):
        _file_labels(tokens, lo, hi, acts)
    out = []
    for key in sorted(acts):
        rng = random.Random(f"{GENERATOR_VERSION}:{key}")
        phrases = _phrases(key, rng)
        if phrases is None or len(acts[key]) < MIN_TOKENS:
            continue
        idx = np.fromiter(acts[key].keys(), np.int64, len(acts[key]))
        val = np.fromiter(acts[key].values(), np.float32, len(acts[key]))
        order = np.argsort(idx)
        kind = {"keyword": "token", "op": "token", "class": "token", "after": "position", "position": "position",
                "graded": "position", "wordtok": "word", "word": "word"}.get(key.split(":")[0], "tree")
        out.append(GeneratedRule(key, kind, _wordings(rng, phrases, n_explanations), idx[order], val[order]))
    return out


def correlations(rules: Sequence[GeneratedRule], others: dict[str, np.ndarray]) -> np.ndarray:
    """Pearson correlation of every rule's activations with every array of `others` (rules x others)."""
    if not others or not rules:
        return np.zeros((len(rules), len(others)), np.float32)
    n = len(next(iter(others.values())))
    m = np.stack([np.asarray(v, np.float64) for v in others.values()])
    m = m - m.mean(1, keepdims=True)
    m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    out = np.zeros((len(rules), len(others)), np.float32)
    for i, r in enumerate(rules):
        a = r.activations(n).astype(np.float64)
        a -= a.mean()
        out[i] = m @ a / max(np.linalg.norm(a), 1e-12)
    return out


def disjoint(rules: Sequence[GeneratedRule], held_out: dict[str, np.ndarray],
             held_out_texts: Sequence[str] = ()) -> tuple[list[GeneratedRule], list[tuple[str, str, float]]]:
    """The rules whose activations correlate below MAX_CORRELATION with every held-out rule's (same
    stream) and none of whose explanations is one of `held_out_texts` (the held-out rules' correct
    explanations); and the dropped ones as (rule, nearest held-out rule, correlation)."""
    corr = correlations(rules, held_out)
    names = list(held_out)
    texts = {t.lower().rstrip(". ") for t in held_out_texts}
    kept, dropped = [], []
    for r, row in zip(rules, corr):
        j = int(np.argmax(np.abs(row))) if len(names) else 0
        same_text = any(e.lower().rstrip(". ") in texts for e in r.explanations)
        if len(names) and abs(row[j]) >= MAX_CORRELATION or same_text:
            dropped.append((r.name, names[j] if len(names) else "", float(row[j]) if len(names) else 0.0))
        else:
            kept.append(r)
    return kept, dropped
