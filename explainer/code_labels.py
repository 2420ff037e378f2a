"""What Python itself says about every token of a token stream: labels from the standard library's
`tokenize` and `ast`, for the ground-truth rules (`explainer.ground_truth`).

This module shares no code with the embedding simulator, which describes a window's tokens with its
own small lexer (`explainer.lexer`) and sees only the window. The rules are computed here, from the
whole file, by Python's own tokenizer and parser, so a rule phrased in the simulator's terms is no
easier for it than a real node is.

A stream is cut into files at `<|endoftext|>`; each file's text is the concatenation of its token
strings. Labels are computed per character and read per token:

- from `tokenize`: the token type under the token's first non-space character (`code`: NAME,
  NUMBER or OP), string content / opening quote / closing quote (STRING tokens split into prefix
  and quotes, body, closing quotes), comments, bracket depth, the first token of a line, the
  indentation of the token's line, names right after a `.`, function headers (from `def` to the
  colon at the same bracket depth);
- from `ast`, the roles of code (`ROLES`): names of functions and classes being defined, called
  functions, parameters, keyword-argument names, variables assigned to, loop variables, exception
  classes in raise/except, module names in imports (only the NAME characters of each of these),
  docstrings and messages passed to a raised exception (the text between the quotes), conditions
  of if/elif/while, decorators; and the spans of the held-out meaning rules written later, in rounds
  (the rest of `ROLES`).

A file that `tokenize` or `ast` rejects (a syntax error, a truncated file) gets no labels at all:
every label is False/0 there, and `parsed` says so.

    labels = label_stream(token_table(tokenizer), val_tokens)   # once per run
    labels = label_tokens(["def", " f", "():", "\\n", "    ", "pass"])
"""

from __future__ import annotations

import ast
import io
import keyword
import tokenize
from dataclasses import dataclass
from typing import Sequence

import numpy as np

END_OF_TEXT = "<|endoftext|>"
ROLES = ("def_name", "class_name", "call_name", "param", "keyword_arg", "assigned_name", "loop_var",
         "exception_name", "import_name", "docstring", "condition", "error_message", "decorator",
         # written after the embedding simulator's role facts were frozen (the held-out meaning rules)
         "return_value", "default_value", "annotation", "base_class", "iterable", "dict_key", "imported_object",
         "assert_condition", "call_args", "with_item",
         # written after facts version 4 was frozen (the held-out meaning rules since then)
         "self_attribute", "method_name", "exception_var", "subscript_index", "lambda_expr", "fstring",
         "compared_value", "yield_value", "comprehension", "augmented_value",
         # written blind to the trained simulator while it was built, never tuned on (the latest
         # held-out meaning rules)
         "method_receiver", "keyword_value", "bool_operand", "conditional_expr", "unpacked_arg", "with_target",
         "except_body", "binary_operation",
         # round 5: written after the trained simulator was frozen, blind to it, never tuned on
         "subscripted_value", "try_body", "decorator_args", "free_name", "class_attribute", "percent_format")
_FLAGS = ("parsed", "code", "string", "open_quote", "close_quote", "comment", "line_start", "after_dot",
          "def_header", "name", "keyword") + ROLES
_COUNTS = ("depth", "indent")


@dataclass
class CodeLabels:
    """One entry per token. text / word: the token's string, stripped. Booleans (see the module
    docstring): parsed, code, string, open_quote, close_quote, comment, line_start, after_dot,
    def_header, name (a NAME token that is not a keyword), keyword, and one per role in ROLES.
    Integers: depth (brackets around the first non-space character), indent (columns)."""

    text: list[str]
    word: list[str]
    arrays: dict[str, np.ndarray]

    def __getattr__(self, key: str) -> np.ndarray:
        try:
            return self.__dict__["arrays"][key]
        except KeyError:
            raise AttributeError(key) from None

    def __len__(self) -> int:
        return len(self.text)


def label_stream(table: Sequence[str], token_ids: np.ndarray) -> CodeLabels:
    """Labels of a token-id array (a run's validation split), decoded with `records.token_table`."""
    return label_tokens([table[int(t)] for t in np.asarray(token_ids)])


def label_tokens(tokens: Sequence[str]) -> CodeLabels:
    n = len(tokens)
    arrays = {k: np.zeros(n, bool) for k in _FLAGS} | {k: np.zeros(n, np.int16) for k in _COUNTS}
    out = CodeLabels(text=list(tokens), word=[t.strip() for t in tokens], arrays=arrays)
    for lo, hi in file_ranges(tokens):
        _label_file(tokens, lo, hi, out)
    return out


def file_ranges(tokens: Sequence[str]) -> list[tuple[int, int]]:
    """(first, end) token index of each non-empty file of a stream cut at END_OF_TEXT."""
    out, start = [], 0
    for end in [i for i, t in enumerate(tokens) if t == END_OF_TEXT] + [len(tokens)]:
        if end > start:
            out.append((start, end))
        start = end + 1
    return out


def parse_file(text: str) -> tuple[list[tokenize.TokenInfo], ast.AST] | None:
    """Python's tokens and parse tree of one file's text; None when Python cannot parse it."""
    try:
        return list(tokenize.generate_tokens(io.StringIO(text).readline)), ast.parse(text)
    except (SyntaxError, tokenize.TokenError, ValueError, IndentationError, MemoryError, RecursionError):
        return None


def first_characters(pieces: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the tokens of one file: the offset where each starts in the file's text, whether it has a
    non-space character, and the offset of that first non-space character (tokens that have one)."""
    lengths = np.array([len(t) for t in pieces])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    lead = np.array([len(t) - len(t.lstrip()) for t in pieces])
    has = lead < lengths
    return starts, has, (starts + lead)[has]


# ---- one file ----------------------------------------------------------------------------------


class _Chars:
    """Per-character label arrays of one file's text, and (row, col) -> offset conversion."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")  # the rows of tokenize and ast (only "\n" ends a row for both here)
        self.lines = [x + "\n" for x in self.lines[:-1]] + [self.lines[-1]]
        self.line_start = np.cumsum([0] + [len(x) for x in self.lines])
        n = len(text)
        self.flag = {k: np.zeros(n, bool) for k in _FLAGS}
        self.count = {k: np.zeros(n, np.int16) for k in _COUNTS}

    def offset(self, row: int, col: int) -> int:
        """tokenize positions: 1-based row, column in characters."""
        return int(self.line_start[row - 1]) + col

    def ast_offset(self, row: int, col_bytes: int) -> int:
        """ast positions: 1-based row, column in UTF-8 bytes."""
        line = self.lines[row - 1]
        return int(self.line_start[row - 1]) + len(line.encode()[:col_bytes].decode(errors="ignore"))

    def mark(self, key: str, a: int, b: int) -> None:
        self.flag[key][max(a, 0):max(b, 0)] = True

    def mark_node(self, key: str, node: ast.AST, length: int | None = None) -> None:
        """Mark an ast node's span, or only its first `length` characters."""
        a = self.ast_offset(node.lineno, node.col_offset)
        b = a + length if length is not None else self.ast_offset(node.end_lineno, node.end_col_offset)
        self.mark(key, a, b)

    def mark_tail(self, key: str, node: ast.AST, length: int) -> None:
        """Mark the last `length` characters of a node's span (an attribute's name)."""
        b = self.ast_offset(node.end_lineno, node.end_col_offset)
        self.mark(key, b - length, b)


CharOffsets = _Chars  # (row, col) -> character offsets of one file's text, for the rule generator


def _label_file(tokens: Sequence[str], lo: int, hi: int, out: CodeLabels) -> None:
    text = "".join(tokens[lo:hi])
    parsed = parse_file(text)
    if parsed is None:
        return  # not Python we can parse: no labels (`parsed` stays False)
    toks, tree = parsed
    ch = _Chars(text)
    ch.flag["parsed"][:] = True
    _from_tokens(ch, toks)
    _from_ast(ch, tree)
    # read the character labels per token: at its first non-space character, or over all of its
    # non-space characters (quotes: any of them; string, comment: most of them)
    starts, has, first = first_characters(tokens[lo:hi])
    idx = np.arange(lo, hi)[has]
    nonspace = ~np.isin(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), _SPACES)
    n_nonspace = np.add.reduceat(nonspace.astype(np.int32), starts)[has]
    out.arrays["parsed"][lo:hi] = True
    for key, arr in ch.flag.items():
        if key in ("open_quote", "close_quote", "string", "comment", "docstring"):
            inside = np.add.reduceat((arr & nonspace).astype(np.int32), starts)[has]
            out.arrays[key][idx] = inside > 0 if key.endswith("quote") else inside * 2 > n_nonspace
        elif key != "parsed":
            out.arrays[key][idx] = arr[first]
    for key, arr in ch.count.items():
        out.arrays[key][idx] = arr[first]
    # kinds of text: the text between the quotes
    for key in ("docstring", "error_message", "fstring", "percent_format"):
        out.arrays[key][lo:hi] &= out.arrays["string"][lo:hi]


_SPACES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def _from_tokens(ch: _Chars, toks: list[tokenize.TokenInfo]) -> None:
    f, depth = ch.flag, 0
    last_row = 0  # the row of the last token that started a line
    prev: tokenize.TokenInfo | None = None  # previous significant token
    in_def, def_depth = False, 0
    for t in toks:
        if t.type in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        a, b = ch.offset(*t.start), ch.offset(*t.end)
        if t.type == tokenize.OP and t.string in ")]}":
            depth = max(depth - 1, 0)  # a bracket has the depth outside it
        ch.count["depth"][a:b] = depth
        line = ch.lines[t.start[0] - 1]
        ch.count["indent"][a:b] = len(line) - len(line.lstrip(" \t"))
        if t.type == tokenize.COMMENT:
            ch.mark("comment", a, b)
            continue
        if t.start[0] != last_row:
            ch.mark("line_start", a, a + 1)  # only the first token of a line, not every piece of a long name
        last_row = t.end[0]
        if t.type == tokenize.STRING:
            body = t.string.lstrip("rRbBuUfF")
            q = 3 if body[:3] in ('"""', "'''") else 1
            quote_end = a + len(t.string) - len(body) + q
            ch.mark("open_quote", a, quote_end)
            ch.mark("string", quote_end, b - q)
            ch.mark("close_quote", b - q, b)
        else:
            ch.mark("code", a, b)
        if t.type == tokenize.NAME:
            ch.mark("keyword" if keyword.iskeyword(t.string) else "name", a, b)
            if prev is not None and prev.type == tokenize.OP and prev.string == ".":
                ch.mark("after_dot", a, b)
            if t.string == "def" and not in_def:
                in_def, def_depth = True, depth
        if in_def:
            ch.mark("def_header", a, b)
            if t.type == tokenize.OP and t.string == ":" and depth == def_depth:
                in_def = False
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        prev = t


def _names(node: ast.AST) -> list[ast.AST]:
    """The Name / Attribute nodes of a target or exception expression (tuples unpacked)."""
    if isinstance(node, (ast.Tuple, ast.List)):
        return [n for e in node.elts for n in _names(e)]
    if isinstance(node, ast.Starred):
        return _names(node.value)
    return [node] if isinstance(node, (ast.Name, ast.Attribute)) else []


def _mark_name(ch: _Chars, key: str, node: ast.AST) -> None:
    if isinstance(node, ast.Name):
        ch.mark_node(key, node, len(node.id))
    elif isinstance(node, ast.Attribute):
        ch.mark_tail(key, node, len(node.attr))


def _name_after(ch: _Chars, key: str, node: ast.AST, word: str, name: str) -> None:
    """Mark `name`, the first occurrence after the keyword `word` on the node's first line."""
    a = ch.ast_offset(node.lineno, node.col_offset)
    k = ch.text.find(word, a)
    j = ch.text.find(name, k + len(word)) if k >= 0 else -1
    if j >= 0:
        ch.mark(key, j, j + len(name))


def _from_ast(ch: _Chars, tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            is_class = isinstance(node, ast.ClassDef)
            _name_after(ch, "class_name" if is_class else "def_name", node, "class" if is_class else "def",
                        node.name)
            for d in node.decorator_list:
                ch.mark_node("decorator", d)
                at = ch.text.rfind("@", 0, ch.ast_offset(d.lineno, d.col_offset))
                ch.mark("decorator", at, at + 1)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                ch.mark_node("docstring", first.value)
        _more_roles(ch, node)
        _held_out_roles(ch, node)
        _round4_roles(ch, node)
        _round5_roles(ch, node)
        if isinstance(node, ast.arg):
            ch.mark_node("param", node, len(node.arg))
        elif isinstance(node, ast.Call):
            _mark_name(ch, "call_name", node.func)
            for kw in node.keywords:
                if kw.arg is not None:
                    ch.mark_node("keyword_arg", kw, len(kw.arg))
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for n in _names(target):
                    _mark_name(ch, "assigned_name", n)
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            for n in _names(node.target):
                _mark_name(ch, "loop_var", n)
        elif isinstance(node, (ast.If, ast.While)):
            ch.mark_node("condition", node.test)
        elif isinstance(node, ast.Raise) and node.exc is not None:
            exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            for n in _names(exc):
                _mark_name(ch, "exception_name", n)
            if isinstance(node.exc, ast.Call):
                for arg in node.exc.args:
                    for s in ast.walk(arg):
                        if isinstance(s, ast.Constant) and isinstance(s.value, str):
                            ch.mark_node("error_message", s)
        elif isinstance(node, ast.ExceptHandler) and node.type is not None:
            for n in _names(node.type):
                _mark_name(ch, "exception_name", n)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                ch.mark_node("import_name", alias, len(alias.name))
        elif isinstance(node, ast.ImportFrom) and node.module:
            _name_after(ch, "import_name", node, "from", node.module)
    # roles name names: only the NAME characters count (not the dots of a dotted import, not spaces)
    for key in ("def_name", "class_name", "call_name", "param", "keyword_arg", "assigned_name", "loop_var",
                "exception_name", "import_name", "imported_object", "self_attribute", "method_name", "exception_var",
                "with_target", "free_name", "class_attribute"):
        ch.flag[key] &= ch.flag["name"]


def _held_out_roles(ch: _Chars, node: ast.AST) -> None:
    """The spans of the meaning rules written after facts version 4."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        ch.mark_tail("self_attribute", node, len(node.attr))
    elif isinstance(node, ast.ClassDef):
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _name_after(ch, "method_name", item, "def", item.name)
    elif isinstance(node, ast.ExceptHandler) and node.name:
        a = ch.ast_offset(node.lineno, node.col_offset)
        k = ch.text.find(" as ", a)
        j = ch.text.find(node.name, k) if k >= 0 else -1
        if j >= 0:
            ch.mark("exception_var", j, j + len(node.name))
    elif isinstance(node, ast.Subscript):
        ch.mark_node("subscript_index", node.slice)
    elif isinstance(node, ast.Lambda):
        ch.mark_node("lambda_expr", node)
    elif isinstance(node, ast.JoinedStr):
        ch.mark_node("fstring", node)
    elif isinstance(node, ast.Compare):
        for c in node.comparators:
            ch.mark_node("compared_value", c)
    elif isinstance(node, (ast.Yield, ast.YieldFrom)) and node.value is not None:
        ch.mark_node("yield_value", node.value)
    elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
        ch.mark_node("comprehension", node)
    elif isinstance(node, ast.AugAssign):
        ch.mark_node("augmented_value", node.value)


def _more_roles(ch: _Chars, node: ast.AST) -> None:
    """The spans of the held-out meaning rules: whole expressions, not only names."""
    if isinstance(node, ast.Return) and node.value is not None:
        ch.mark_node("return_value", node.value)
    elif isinstance(node, ast.arguments):
        for d in [*node.defaults, *node.kw_defaults]:
            if d is not None:
                ch.mark_node("default_value", d)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
        ch.mark_node("annotation", node.returns)
    elif isinstance(node, ast.arg) and node.annotation is not None:
        ch.mark_node("annotation", node.annotation)
    elif isinstance(node, ast.AnnAssign):
        ch.mark_node("annotation", node.annotation)
    elif isinstance(node, ast.ClassDef):
        for b in node.bases:
            ch.mark_node("base_class", b)
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
        ch.mark_node("iterable", node.iter)
    elif isinstance(node, ast.Dict):
        for k in node.keys:
            if k is not None:
                ch.mark_node("dict_key", k)
    elif isinstance(node, ast.ImportFrom):
        for alias in node.names:
            if alias.name != "*":
                ch.mark_node("imported_object", alias, len(alias.name))
    elif isinstance(node, ast.Assert):
        ch.mark_node("assert_condition", node.test)
    elif isinstance(node, ast.Call):
        for a in [*node.args, *(k.value for k in node.keywords)]:
            ch.mark_node("call_args", a)
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        for item in node.items:
            ch.mark_node("with_item", item.context_expr)


def _round4_roles(ch: _Chars, node: ast.AST) -> None:
    """The spans of the latest held-out meaning rules (written blind to the trained simulator)."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            ch.mark_node("method_receiver", node.func.value)
        for kw in node.keywords:  # a keyword's span starts at its name, or at the ** of **kwargs
            ch.mark_node("keyword_value" if kw.arg is not None else "unpacked_arg",
                         kw.value if kw.arg is not None else kw)
    elif isinstance(node, ast.Starred) and isinstance(node.ctx, ast.Load):
        ch.mark_node("unpacked_arg", node)
    elif isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if k is None:  # {**other}: from the ** to the end of the value
                at = ch.text.rfind("**", 0, ch.ast_offset(v.lineno, v.col_offset))
                ch.mark("unpacked_arg", at, ch.ast_offset(v.end_lineno, v.end_col_offset))
    elif isinstance(node, ast.BoolOp):
        for v in node.values:
            ch.mark_node("bool_operand", v)
    elif isinstance(node, ast.IfExp):
        ch.mark_node("conditional_expr", node)
    elif isinstance(node, (ast.With, ast.AsyncWith)):
        for item in node.items:
            for n in _names(item.optional_vars) if item.optional_vars is not None else []:
                _mark_name(ch, "with_target", n)
    elif isinstance(node, ast.ExceptHandler):
        for st in node.body:
            ch.mark_node("except_body", st)
    elif isinstance(node, ast.BinOp):
        ch.mark_node("binary_operation", node)


def _round5_roles(ch: _Chars, node: ast.AST) -> None:
    """The spans of the fifth round of held-out meaning rules (written after the trained simulator
    was frozen, blind to it)."""
    if isinstance(node, ast.Subscript):
        ch.mark_node("subscripted_value", node.value)  # x in x[i], a.b in a.b[1:], f() in f()[0]
    elif isinstance(node, (ast.Try, ast.TryStar)):
        for st in node.body:  # not the except, else or finally blocks
            ch.mark_node("try_body", st)
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for d in node.decorator_list:
            if isinstance(d, ast.Call):
                for a in [*d.args, *d.keywords]:
                    ch.mark_node("decorator_args", a)
        if isinstance(node, ast.ClassDef):
            for st in node.body:  # assigned or declared in the class body itself, not in its methods
                targets = st.targets if isinstance(st, ast.Assign) else [st.target] \
                    if isinstance(st, (ast.AnnAssign, ast.AugAssign)) else []
                for t in targets:
                    for n in _names(t):
                        _mark_name(ch, "class_attribute", n)
        else:
            _free_names(ch, node)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
            and isinstance(node.left.value, str):
        ch.mark_node("percent_format", node.left)  # '%s items' % n: the format string's text


def _free_names(ch: _Chars, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    """Names read in a function's body that the function does not bind anywhere inside it: not a
    parameter (its own, a nested function's or a lambda's), not a name stored or deleted, imported,
    defined by def or class, or bound by except ... as or a match pattern. So globals, builtins,
    imported modules and variables of an enclosing function. A nested function gets its own pass
    (its reads of the outer function's variables are free in it)."""
    bound = set()
    for n in ast.walk(fn):
        if isinstance(n, ast.arg):
            bound.add(n.arg)
        elif n is fn:
            continue
        elif isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            bound.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in n.names)
        elif isinstance(n, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and n.name:
            bound.add(n.name)
    for st in fn.body:
        for n in ast.walk(st):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in bound:
                ch.mark_node("free_name", n)
