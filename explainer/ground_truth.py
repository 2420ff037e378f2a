"""Ground-truth neurons: synthetic "nodes" whose activation on real Python code is a known rule.

Each `Rule` maps the held-out token stream of a trained run (its validation split, tokenized by
the run's BPE) to one activation per token, e.g. "fires on the closing quote of a string" or "in
proportion to bracket nesting depth". Every rule comes with its correct explanation and several
wrong or partly right ones. The activations replace `records.capture_activations`' output and
then go through exactly the same code path as a real node (`records.sample_records`,
`records.split_records`, the same prompts, simulators and scores), so a simulator that cannot tell
the correct explanation of a rule neuron from a wrong one cannot be trusted on real nodes either.

Rules see the text with its full context and share no code with the embedding simulator: the
whole validation stream is labelled once, file by file, by Python's own `tokenize` and `ast`
(`explainer.code_labels`), while the simulator describes a window with its own small lexer and
sees only the window. A window that starts inside a docstring is therefore labelled correctly
even though its first token does not show it.

    labels = label_stream(token_table(tokenizer), val_tokens)   # once per run
    acts = rule_activations(RULES["close_quote"], labels, starts, window)  # (n_windows, window)

Two families of rules: "token/syntax" (token identity, syntax position, graded) and "meaning"
(what code means: the roles of names, the kinds of text, the kinds of statements; computed from
the parse tree).

Rules are split into a TRAINING set (used to tune prompts and simulators; it contains every rule
that a worked example of `prompts/simulate.json` or `prompts/explain.json` shows) and a HELD_OUT
set (reported), in each family. Graded rules (non-binary activations): nesting_depth, indentation,
return_line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from sparse_model.errors import UserError

from .code_labels import CodeLabels

TOKEN_SYNTAX, MEANING = "token/syntax", "meaning"
FAMILIES = (TOKEN_SYNTAX, MEANING)

# ---- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A ground-truth neuron: `fn(annotations) -> activations` (one float per token, >= 0)."""

    name: str
    kind: str  # token identity | syntax position | graded | meaning
    explanation: str  # the correct explanation
    wrong: tuple[str, ...]  # wrong or partly right explanations (partly right ones first)
    fn: Callable[[CodeLabels], np.ndarray]

    @property
    def family(self) -> str:
        return MEANING if self.kind == "meaning" else TOKEN_SYNTAX


def _words(ann: CodeLabels, words: set[str], code_only: bool = True) -> np.ndarray:
    ok = np.array([w in words for w in ann.word], dtype=bool)
    return (ok & ann.code if code_only else ok).astype(np.float32)


def _after_return(ann: CodeLabels) -> np.ndarray:
    """1 on the first non-space token after the keyword `return` (on the same line)."""
    out = np.zeros(len(ann), np.float32)
    armed = False
    for i, (w, t) in enumerate(zip(ann.word, ann.text)):
        if w:
            if armed:
                out[i] = 1.0
            armed = w == "return" and bool(ann.keyword[i]) and "\n" not in t
        elif "\n" in t:
            armed = False
    return out


def _return_line(ann: CodeLabels) -> np.ndarray:
    """1 at `return`, then 0.5, 0.25, ... on the following tokens of its line (graded)."""
    out = np.zeros(len(ann), np.float32)
    level = 0.0
    for i, (w, t) in enumerate(zip(ann.word, ann.text)):
        if w == "return" and ann.keyword[i]:
            level = 1.0
            out[i] = 1.0
        elif level > 0 and w:
            level /= 2
            out[i] = level
        if "\n" in t:
            level = 0.0
    return out


def _digits(ann: CodeLabels) -> np.ndarray:
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


def _role(name: str) -> Callable[[CodeLabels], np.ndarray]:
    return lambda a: getattr(a, name).astype(np.float32)


def _constant_names(a: CodeLabels) -> np.ndarray:
    """Names in capital letters (MAX_SIZE, DEBUG): the convention for module-level constants."""
    return np.array([bool(n) and w.isupper() and sum(c.isalpha() for c in w) >= 2
                     for w, n in zip(a.word, a.name)], dtype=np.float32)


# Rules about what code means. These were written together with the embedding simulator's role
# facts (version 3), so all of them are training rules.
MEANING_TRAINING: list[Rule] = [
    Rule("def_name", "meaning", "the name of a function being defined, right after def.",
         ("the keyword def.", "names of functions being called.", "parameter names in a function's signature."),
         _role("def_name")),
    Rule("call_name", "meaning", "the name of a function or method being called, just before its parenthesis.",
         ("the name of a function being defined, right after def.", "opening parentheses.",
          "attribute and method names right after a dot."),
         _role("call_name")),
    Rule("docstring", "meaning", "docstrings: the string under a def or class line that documents it.",
         ("comments: the text after a # sign.", "the text of error messages.", "the keyword def."),
         _role("docstring")),
    Rule("condition", "meaning", "the condition of an if, elif or while statement, between the keyword and the colon.",
         ("the keywords if, elif and else.", "comparison operators such as == and <.", "the body of a loop."),
         _role("condition")),
    Rule("keyword_arg", "meaning", "names of keyword arguments in a function call, right before the =.",
         ("the assignment sign =.", "names of variables being assigned.", "parameter names in a function's signature."),
         _role("keyword_arg")),
    Rule("class_name", "meaning", "the name of a class being defined, right after class.",
         ("the keyword class.", "names of exception classes such as ValueError.", "the name of a function being defined."),
         _role("class_name")),
    Rule("param", "meaning", "parameter names in a function's signature.",
         ("the keyword def.", "names of keyword arguments in a call.", "names of variables being assigned."),
         _role("param")),
    Rule("assigned_name", "meaning", "names of variables being assigned a value, left of the =.",
         ("the assignment sign =.", "the value on the right of the =.", "names of functions being called."),
         _role("assigned_name")),
    Rule("loop_var", "meaning", "the loop variable of a for loop, between for and in.",
         ("the keyword for.", "the keyword in.", "the name of the list being looped over."),
         _role("loop_var")),
    Rule("exception_name", "meaning", "names of exception classes in raise and except statements.",
         ("the keywords raise and except.", "names of classes being defined.", "the text of error messages."),
         _role("exception_name")),
    Rule("import_name", "meaning", "names of the modules being imported.",
         ("the keywords import and from.", "names of functions being called.", "attribute names after a dot."),
         _role("import_name")),
    Rule("error_message", "meaning", "the text of an error message given to an exception that is raised.",
         ("the text inside string literals, between the quotes.", "docstrings.", "names of exception classes."),
         _role("error_message")),
    Rule("constant_name", "meaning", "names written in capital letters, used as constants.",
         ("names of classes.", "numbers: tokens made of digits.", "the constants None, True and False."),
         _constant_names),
]
# Written after the simulator's facts version 3 were frozen: held-out for version 3 (see
# docs/evaluation.md for its numbers on them); version 4's slot facts were then written looking at
# them, so they are training rules now. Each is about a whole expression's role, not only a name's.
MEANING_TRAINING += [
    Rule("return_value", "meaning", "the value a function returns: the expression after return.",
         ("the keyword return.", "the last line of a function.", "the name of a function being defined."),
         _role("return_value")),
    Rule("default_value", "meaning", "default values of parameters in a function signature, after the =.",
         ("parameter names in a function's signature.", "the assignment sign =.", "the constants None, True and False."),
         _role("default_value")),
    Rule("annotation", "meaning", "type annotations: the types written after a colon or an arrow in a signature.",
         ("parameter names in a function's signature.", "the return annotation arrow ->.", "names of classes being defined."),
         _role("annotation")),
    Rule("base_class", "meaning", "the base classes of a class, in the parentheses after the class name.",
         ("the name of a class being defined.", "the keyword class.", "arguments of a function call."),
         _role("base_class")),
    Rule("iterable", "meaning", "what a for loop iterates over: the expression after in.",
         ("the loop variable of a for loop.", "the keyword in.", "the body of a loop."),
         _role("iterable")),
    Rule("dict_key", "meaning", "keys of a dictionary literal, before each colon.",
         ("values of a dictionary literal.", "colons.", "the text inside string literals."),
         _role("dict_key")),
    Rule("imported_object", "meaning", "the names imported from a module, after from ... import.",
         ("names of the modules being imported.", "the keywords import and from.", "names of classes being defined."),
         _role("imported_object")),
    Rule("assert_condition", "meaning", "the condition an assert statement checks.",
         ("the keyword assert.", "the condition of an if statement.", "names of exception classes."),
         _role("assert_condition")),
    Rule("call_args", "meaning", "the arguments passed to a function call, inside its parentheses.",
         ("the name of the function being called.", "parameter names in a function's signature.", "commas."),
         _role("call_args")),
    Rule("with_item", "meaning", "the context manager of a with statement: the expression after with.",
         ("the keyword with.", "the name after as.", "the body of a with statement."),
         _role("with_item")),
]
# Written after facts version 4 was frozen, and never tuned on: the held-out meaning rules.
MEANING_HELD_OUT: list[Rule] = [
    Rule("self_attribute", "meaning", "attributes of self: the names right after self.",
         ("the word self.", "method names after a dot.", "parameter names in a function's signature."),
         _role("self_attribute")),
    Rule("method_name", "meaning", "names of methods being defined in a class body.",
         ("the keyword def.", "the name of a class being defined.", "names of methods being called."),
         _role("method_name")),
    Rule("exception_var", "meaning", "the variable an exception is bound to, after except ... as.",
         ("the keyword as.", "names of exception classes in except clauses.", "the keyword except."),
         _role("exception_var")),
    Rule("subscript_index", "meaning", "the index or key inside square brackets when a value is indexed, like x[i].",
         ("opening square brackets.", "list literals.", "numbers: tokens made of digits."),
         _role("subscript_index")),
    Rule("lambda_expr", "meaning", "lambda functions: the keyword lambda, its parameters and its body.",
         ("the keyword def.", "the keyword lambda only.", "arguments of function calls."),
         _role("lambda_expr")),
    Rule("fstring", "meaning", "the text of f-strings, the formatted string literals.",
         ("the text inside string literals, between the quotes.", "docstrings.", "comments: the text after a # sign."),
         _role("fstring")),
    Rule("compared_value", "meaning", "the value something is compared with: the right side of ==, <, in or is.",
         ("comparison operators such as == and <.", "the condition of an if statement.", "the keyword is."),
         _role("compared_value")),
    Rule("yield_value", "meaning", "the value a generator produces: the expression after yield.",
         ("the keyword yield.", "the value a function returns.", "the keyword return."),
         _role("yield_value")),
    Rule("comprehension", "meaning", "list, set and dict comprehensions and generator expressions, bracket to bracket.",
         ("the keyword for.", "list literals.", "the body of a for loop."),
         _role("comprehension")),
    Rule("augmented_value", "meaning", "the value on the right of an augmented assignment such as += or -=.",
         ("the augmented assignment operators += and -=.", "names of variables being assigned.",
          "numbers: tokens made of digits."),
         _role("augmented_value")),
]
# Written for the trained simulator (explainer.simulators.trained) by a second engineer in a separate
# checkout, blind to its code and data, while it was built; never tuned on, and no simulator's numbers
# on them were looked at before it was frozen: the latest held-out meaning rules (docs/method.md,
# "Ground-truth suite", round 4).
MEANING_ROUND_4: list[Rule] = [
    Rule("method_receiver", "meaning",
         "the object whose method is called: the part before the dot, like x in x.append(y).",
         ("the word self.", "the name of a function or method being called, just before its parenthesis.",
          "attribute and method names right after a dot."),
         _role("method_receiver")),
    Rule("keyword_value", "meaning", "the value passed to a keyword argument in a call: the expression after name=.",
         ("the arguments passed to a function call, inside its parentheses.",
          "names of keyword arguments in a function call, right before the =.",
          "default values of parameters in a function signature, after the =."),
         _role("keyword_value")),
    Rule("bool_operand", "meaning", "the operands of the boolean operators and and or, on both sides of the operator.",
         ("the condition of an if, elif or while statement.", "the keywords and, or and not.",
          "comparison operators such as == and <."),
         _role("bool_operand")),
    Rule("conditional_expr", "meaning",
         "conditional expressions (ternaries) written inline: a if condition else b, all of it.",
         ("the keywords if and else.", "the condition of an if statement.", "the body of an else block."),
         _role("conditional_expr")),
    Rule("unpacked_arg", "meaning", "values unpacked with * or **, star included, like *args and **kwargs in a call.",
         ("the *args and **kwargs parameters in a function signature.", "the multiplication operator *.",
          "the arguments passed to a function call, inside its parentheses."),
         _role("unpacked_arg")),
    Rule("with_target", "meaning", "the name a with statement binds its context manager to, after as.",
         ("the context manager of a with statement: the expression after with.", "the keyword as.",
          "the variable an exception is bound to, after except ... as."),
         _role("with_target")),
    Rule("except_body", "meaning", "the code that handles a caught exception: the statements inside an except block.",
         ("the code inside a try block, before except.", "names of exception classes in except clauses.",
          "the keywords raise and except."),
         _role("except_body")),
    Rule("binary_operation", "meaning",
         "binary operations: both operands and the operator of +, -, *, /, % and the like, e.g. a + b.",
         ("arithmetic operators such as + and *.", "the value on the right of an augmented assignment such as +=.",
          "numbers: tokens made of digits."),
         _role("binary_operation")),
]
# Written after the trained simulator (explainer.simulators.trained) was frozen, by someone who did not
# read its code or data; never tuned on: the fifth round of held-out meaning rules. Each was checked on
# the demo run's validation stream to fire on at least 100 tokens in at least 10 files and to correlate
# below 0.5 (absolute Pearson) with every earlier rule.
MEANING_ROUND_5: list[Rule] = [
    Rule("subscripted_value", "meaning", "the value being indexed or sliced: the x in x[i], before the square bracket.",
         ("the index or key inside square brackets when a value is indexed, like x[i].", "opening square brackets.",
          "list literals."),
         _role("subscripted_value")),
    Rule("try_body", "meaning", "the code inside a try block: the statements between try and its except or finally.",
         ("the code that handles a caught exception: the statements inside an except block.", "the keyword try.",
          "the code inside a with block."),
         _role("try_body")),
    Rule("decorator_args", "meaning",
         "the arguments passed to a decorator: what is inside the parentheses of @name(...) above a def or class.",
         ("decorators: the lines starting with @ above a def or class.",
          "the arguments passed to a function call, inside its parentheses.",
          "default values of parameters in a function signature, after the =."),
         _role("decorator_args")),
    Rule("free_name", "meaning",
         "names a function reads without defining them itself (not its parameters nor its local variables): "
         "globals, builtins and imported modules used inside a function body.",
         ("names of variables used inside a function body.", "names of the modules being imported.",
          "parameter names in a function's signature."),
         _role("free_name")),
    Rule("class_attribute", "meaning",
         "names of class attributes: variables assigned or declared directly in a class body, outside its methods.",
         ("names of variables being assigned a value, left of the =.",
          "attributes of self: the names right after self.", "names of methods being defined in a class body."),
         _role("class_attribute")),
    Rule("percent_format", "meaning",
         "the text of a format string used with the % operator, like the text of '%s items' in '%s items' % n.",
         ("the text inside string literals, between the quotes.",
          "the text of f-strings, the formatted string literals.", "the modulo operator %."),
         _role("percent_format")),
]
RULES_LIST += MEANING_TRAINING + MEANING_HELD_OUT + MEANING_ROUND_4 + MEANING_ROUND_5
RULES: dict[str, Rule] = {r.name: r for r in RULES_LIST}
TRAINING = tuple(r.name for r in RULES_LIST[:8] + MEANING_TRAINING)
HELD_OUT = tuple(r.name for r in RULES_LIST[8:17] + MEANING_HELD_OUT + MEANING_ROUND_4 + MEANING_ROUND_5)
HELD_OUT_ROUND_4 = tuple(r.name for r in MEANING_ROUND_4)
HELD_OUT_ROUND_5 = tuple(r.name for r in MEANING_ROUND_5)
N_OTHER_WRONG = 2  # wrong explanations taken from other rules (the next ones in the list)


def wrong_explanations(rule: Rule) -> list[str]:
    """The rule's own wrong or partly right explanations, then the correct explanations of the
    next N_OTHER_WRONG rules of its own set (training, held-out, or one of the later rounds of
    held-out meaning rules, rounds 4 and 5, each on its own, so that adding a round left the earlier
    rules' wrong explanations as they were) and family, without duplicates."""
    rounds = (HELD_OUT_ROUND_4, HELD_OUT_ROUND_5)
    names = TRAINING if rule.name in TRAINING else next((r for r in rounds if rule.name in r), None) \
        or tuple(n for n in HELD_OUT if not any(n in r for r in rounds))
    group = [n for n in names if RULES[n].family == rule.family]
    i = group.index(rule.name)
    others = [RULES[group[(i + k) % len(group)]].explanation for k in range(1, N_OTHER_WRONG + 1)]
    return [w for w in dict.fromkeys([*rule.wrong, *others]) if w != rule.explanation]


def rule_activations(rule: Rule, ann: CodeLabels, starts: np.ndarray, window: int) -> np.ndarray:
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
