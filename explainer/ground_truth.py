"""Ground-truth neurons: synthetic "nodes" whose activation on real Python code is a known rule.

Each `Rule` maps the held-out token stream of a trained run (its validation split, tokenized by
the run's BPE) to one activation per token, e.g. "fires on the closing quote of a string" or "in
proportion to bracket nesting depth". Every rule comes with its correct explanation and several
wrong or partly right ones. The activations replace `records.capture_activations`' output and
then go through exactly the same code path as a real node (`records.sample_records`,
`records.split_records`, the same prompts, simulators and scores), so a simulator that cannot tell
the correct explanation of a rule neuron from a wrong one cannot be trusted on real nodes either.

Rules see the text with its full context: the whole validation stream is lexed once, file by file
(files are separated by `<|endoftext|>`), by a small Python lexer (`explainer.lexer`): strings (with their
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

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sparse_model.errors import UserError

from .lexer import Annotations

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
    if not names:
        return list(RULES_LIST)
    unknown = [n for n in names if n not in RULES]
    if unknown:
        raise UserError(f"unknown rule {unknown[0]!r}; known rules: {', '.join(RULES)}")
    return [RULES[n] for n in dict.fromkeys(names)]
