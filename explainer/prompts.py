"""Prompt builders. The templates and few-shot examples are data files in `prompts/`; this module
only formats them (docs/method.md, "Explain" and "Simulate").

Every prompt file has a version, the hash of its content, stored with each explanation and
simulation it produced, so a changed example or wording never mixes with earlier results.

    p = load_prompt("explain")
    request = explain_request(p, records, prefill=True)
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from collections import Counter
from typing import Annotated, Any, Collection, Literal, Sequence

from pydantic import BaseModel, Field, StrictStr, model_validator

from sparse_model.errors import UserError
from sparse_model.formats import checked

from .llm import ChatRequest, LLMOutputError
from .replies import FixedText, echo_reason, vague_reason
from .scoring import normalize_activations

PROMPTS_DIR = Path(str(resources.files("explainer.prompt_files")))  # prompts/ (package data)
SPARSE_FRACTION = 0.2  # under this fraction of nonzero values, records are repeated without zeros


class PromptRecord(BaseModel):
    """A worked example's window: its tokens and the node's activation at each."""

    tokens: list[StrictStr]
    activations: list[float]

    @model_validator(mode="after")
    def _aligned(self) -> "PromptRecord":
        if len(self.tokens) != len(self.activations):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.activations)} activations")
        return self


class PromptExample(BaseModel):
    """A worked example: an explanation with its windows (explain) or its one window (simulate)."""

    explanation: StrictStr
    records: list[PromptRecord] | None = None
    record: PromptRecord | None = None


class PromptFile(BaseModel):
    """A prompt file, `prompts/<name>.json`: the explain prompt uses prefix and max_tokens, the
    simulation prompts scale and unknown_fraction (the part of each worked example shown as "unknown")."""

    name: StrictStr | None = None
    about: StrictStr = ""
    system: StrictStr
    prefix: StrictStr | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    scale: Annotated[int, Field(ge=1, le=9)] | None = None
    unknown_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    examples: list[PromptExample]
    # Explain prompts: "records" shows token<TAB>value lines (the paper's format); "marked" shows the
    # code with the tokens at or above `threshold` (of 10) marked <<like this>>, and a count of the
    # most often marked tokens, for small code models that copy worked examples.
    format: Literal["records", "marked"] = "records"
    threshold: Annotated[int, Field(ge=1, le=10)] = 5
    top_tokens: Annotated[int, Field(ge=0)] = 8
    instruction: StrictStr = ""
    strip_leads: list[StrictStr] = []
    max_lines: Annotated[int, Field(ge=0)] = 0  # > 0: show only (at most this many) lines with a marked token
    # The count of each often-marked token also says how often it appears in the shown windows
    # ("'self' (marked 9 of 9 times)"), so the model can tell one token from a position in the code.
    marked_of_seen: bool = False
    # Also count the tokens right before each marked run ("Right before a marked token: 'return' (6)"),
    # so a neuron about a position (the token after X) can be told from one about a token.
    before_counts: bool = False
    # Also list the lexer's descriptions (the embedding simulator's facts) that fit the marked tokens
    # best, each with how many marked tokens it fits and how many tokens it fits at all, so a neuron
    # about a position or a role can be told from one about a token.
    fact_counts: Annotated[int, Field(ge=0)] = 0
    # Excerpt scorers (detect, fuzz) with several excerpts per prompt: the question after the numbered
    # excerpts ({explanation}, {n}); the answer is one "i: 1" or "i: 0" line per excerpt.
    instruction_many: StrictStr = ""
    # Style examples in the system message are not answers: a reply equal to one is refused.
    style_examples: list[StrictStr] = []


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str  # "<name>-<first 10 hex digits of the file's sha256>"
    data: dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        """A field of the prompt file, its default where the file leaves it out."""
        return self.data[key] if key in self.data else PromptFile.model_fields[key].default


@lru_cache(maxsize=None)
def load_prompt(name: str, directory: str | None = None) -> Prompt:
    path = Path(directory or PROMPTS_DIR) / f"{name}.json"
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except FileNotFoundError:
        raise UserError(f"no prompt file {path}; reinstall the package or restore prompts/") from None
    except json.JSONDecodeError as e:
        raise UserError(f"prompt file {path} is not valid JSON (line {e.lineno}): {e.msg}") from None
    checked(PromptFile, data, f"prompt file {path}", "fix it or restore prompts/")
    return Prompt(name=name, version=f"{name}-{hashlib.sha256(raw).hexdigest()[:10]}", data=data)


def show_token(token: str) -> str:
    """A token as one line of a prompt: newlines and tabs written as \\n and \\t."""
    return token.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def _record_block(tokens: Sequence[str], values: Sequence[Any], skip_zeros: bool = False) -> str:
    lines = [f"{show_token(t)}\t{v}" for t, v in zip(tokens, values) if not (skip_zeros and v == 0)]
    return "<start>\n" + "\n".join(lines) + "\n<end>\n"


def _tokens_acts(record: Any) -> tuple[Sequence[str], Sequence[float]]:
    if isinstance(record, dict):
        return record["tokens"], record["activations"]
    return record.tokens, record.activations


def _scaled(records: Sequence[Any]) -> list[tuple[Sequence[str], list[int]]]:
    """Each record's tokens with its values on the 0..10 scale, normalised by the maximum over all
    the records shown together."""
    pairs = [_tokens_acts(r) for r in records]
    top = max((max(a) for _, a in pairs if len(a)), default=0.0)
    return [(t, normalize_activations(a, top)) for t, a in pairs]


def _count_key(token: str) -> str:
    """A token as the counts of marked and seen tokens name it: stripped of surrounding spaces."""
    return token.strip() or token


# ---- explanation -----------------------------------------------------------------------------


def records_text(records: Sequence[Any]) -> str:
    """The explanation prompt's view of a neuron: each window as token<TAB>value lines, values
    normalised to 0..10 by the maximum over all windows shown; if under 20% of the values are
    nonzero, the windows are listed again with the zeros left out."""
    scaled = _scaled(records)
    text = "".join(_record_block(t, v) for t, v in scaled)
    values = [v for _, vs in scaled for v in vs]
    if values and sum(v > 0 for v in values) < SPARSE_FRACTION * len(values):
        text += f"\n{ZEROS_LEFT_OUT}:\n"
        text += "".join(_record_block(t, v, skip_zeros=True) for t, v in scaled)
    return text


MARK_OPEN, MARK_CLOSE = "<<", ">>"
# The labels the prompts print around a node's data (part of their fixed text, see `fixed_text`).
MOST_MARKED = "Most often marked"
BEFORE_MARKED = "Right before a marked token"
FACTS_FIT = "Descriptions that fit the marked tokens"
MARKED_OF_SEEN = "marked {n} of {seen} times"
FACT_FITS = "{m} of {n} marked tokens, {k} tokens in all"
NEURON, ACTIVATIONS = "Neuron", "Activations"
ZEROS_LEFT_OUT = "The same activations, with the zeros left out"


def marked_text(tokens: Sequence[str], values: Sequence[int], threshold: int) -> str:
    """The window's text with every run of tokens at or above `threshold` wrapped in << >>."""
    out, inside = [], False
    for tok, v in zip(tokens, values):
        hot = v >= threshold
        if hot and not inside:
            out.append(MARK_OPEN)
        elif inside and not hot:
            out.append(MARK_CLOSE)
        inside = hot
        out.append(tok)
    if inside:
        out.append(MARK_CLOSE)
    return "".join(out)


def marked_counts(records: Sequence[Any], threshold: int) -> list[tuple[str, int]]:
    """How often each token (its text, stripped of surrounding spaces) is marked, most often first."""
    counts = Counter(_count_key(t) for tokens, values in _scaled(records) for t, v in zip(tokens, values)
                     if v >= threshold)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def before_counts(records: Sequence[Any], threshold: int) -> list[tuple[str, int]]:
    """How often each token (stripped, as in `marked_counts`) comes right before a run of marked
    tokens, most often first; a run at the start of a window has no token before it."""
    counts: Counter = Counter()
    for tokens, values in _scaled(records):
        hot = [v >= threshold for v in values]
        counts.update(_context_name(tokens[i - 1]) for i in range(1, len(tokens)) if hot[i] and not hot[i - 1])
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _context_name(token: str) -> str:
    """A token as counted in `before_counts`: stripped; whitespace by what it holds."""
    if token.strip():
        return token.strip()
    return "(line break)" if "\n" in token else "(spaces)"


def seen_counts(records: Sequence[Any]) -> Counter:
    """How often each token (stripped, as in `marked_counts`) appears in the records at all."""
    return Counter(_count_key(t) for r in records for t in _tokens_acts(r)[0])


def fact_counts(records: Sequence[Any], threshold: int) -> list[tuple[str, int, int]]:
    """The lexer's descriptions of tokens (`simulators.embedding.token_facts`) that fit the marked
    tokens, as (fact, marked tokens it fits, tokens it fits), best first: by the F1 of the fact
    taken as a predictor of "marked" (2 * fits marked / (marked + fits)). A fact repeated on one
    token (nesting depth) counts once; whitespace is left out."""
    from .simulators.embedding import token_facts

    marked_n, on_marked, on_any = 0, Counter(), Counter()
    for tokens, values in _scaled(records):
        for facts, v in zip(token_facts(tokens), values):
            kinds = set(facts) - {"whitespace"}
            on_any.update(kinds)
            if v >= threshold:
                marked_n += 1
                on_marked.update(kinds)
    ranked = sorted(on_marked, key=lambda f: (-2 * on_marked[f] / (marked_n + on_any[f]), f))
    return [(f, on_marked[f], on_any[f]) for f in ranked]


def _label(record: Any) -> str:
    """' (what the window is)' for a record that says (in-task records: its variant), else ''."""
    label = getattr(record, "label", None)
    return f" ({label})" if label else ""


def marked_request(prompt: Prompt, records: Sequence[Any], prefill: bool, temperature: float = 0.0,
                   seed: int | None = None) -> ChatRequest:
    """Zero-shot chat for small code models: the excerpts as code with the active tokens marked,
    then the most often marked tokens with their counts, then the instruction."""
    threshold = int(prompt["threshold"])
    texts = [marked_text(t, v, threshold) for t, v in _scaled(records)]
    if prompt["max_lines"]:  # only the lines with a marked token, each on its own
        lines = [line.strip() for text in texts for line in text.split("\n") if MARK_OPEN in line]
        blocks = ["\n".join(f"{i}. {line}" for i, line in enumerate(lines[:int(prompt["max_lines"])], start=1))]
    else:
        blocks = [f"Excerpt {i}{_label(r)}:\n```python\n{text}\n```" for i, (r, text) in enumerate(zip(records, texts), start=1)]
    counts = marked_counts(records, threshold)[:int(prompt["top_tokens"])]
    seen = seen_counts(records) if prompt["marked_of_seen"] else None
    summary = (f"{MOST_MARKED}: " + ", ".join(
        f"{show_token(t)!r} ({MARKED_OF_SEEN.format(n=n, seen=seen[t]) if seen else n})" for t, n in counts)) if counts else ""
    if prompt["before_counts"] and counts:
        before = before_counts(records, threshold)[:int(prompt["top_tokens"])]
        summary += f"\n{BEFORE_MARKED}: " + ", ".join(
            f"{t if t.startswith('(') else repr(show_token(t))} ({n})" for t, n in before)
    if prompt["fact_counts"] and counts:
        n_marked = sum(n for _, n in marked_counts(records, threshold))
        summary += f"\n{FACTS_FIT}: " + "; ".join(
            f"{f} ({FACT_FITS.format(m=m, n=n_marked, k=n)})"
            for f, m, n in fact_counts(records, threshold)[:int(prompt["fact_counts"])])
    user = "\n\n".join([*blocks, summary, prompt["instruction"]]).strip()
    prefix = prompt["prefix"] or ""
    return ChatRequest(messages=(("system", prompt["system"]), ("user", user)), max_tokens=int(prompt["max_tokens"]),
                       temperature=temperature, assistant_prefix=prefix if prefill else "", stop=("\n",), seed=seed)


def explain_request(prompt: Prompt, records: Sequence[Any], prefill: bool, temperature: float = 0.0,
                    seed: int | None = None) -> ChatRequest:
    """The explanation request in the prompt file's format (see `PromptFile.format`)."""
    if prompt["format"] == "marked":
        return marked_request(prompt, records, prefill, temperature, seed)
    return records_request(prompt, records, prefill, temperature, seed)


def records_request(prompt: Prompt, records: Sequence[Any], prefill: bool, temperature: float = 0.0,
                    seed: int | None = None) -> ChatRequest:
    """Few-shot chat: each example's records, then its explanation after the fixed prefix; the
    target's records last. With `prefill` the reply is started with the prefix (as in the paper);
    otherwise the prefix is asked for in words and stripped by `parse_explanation`."""
    prefix = prompt["prefix"]
    messages: list[tuple[str, str]] = [("system", prompt["system"])]
    for i, ex in enumerate(prompt["examples"], start=1):
        messages.append(("user", f"{NEURON} {i}\n{ACTIVATIONS}:\n{records_text(ex['records'])}"))
        messages.append(("assistant", f"{prefix} {ex['explanation']}"))
    target = f"{NEURON} {len(prompt['examples']) + 1}\n{ACTIVATIONS}:\n{records_text(records)}"
    if not prefill:
        target += f'\nAnswer with one short phrase that completes "{prefix} ...".'
    messages.append(("user", target))
    return ChatRequest(messages=tuple(messages), max_tokens=int(prompt["max_tokens"]), temperature=temperature,
                       assistant_prefix=prefix if prefill else "", stop=("\n",), seed=seed)


# Replies that say the marked tokens have nothing in common. Small models give them (the literal
# "None" was 23 of 608 candidates on the held-out rules); simulated as an explanation, they are noise.
NO_ANSWER = {"none", "nothing", "n/a", "na", "unknown", "no", "not sure", "nothing in common",
             "none of the above", "no common pattern", "there is no common pattern", "i dont know"}


# The counts the marked prompts print after a token or a description, which small models copy into
# their reply: "(marked 9 of 9 times)", "(5 of 6 marked tokens, 5 tokens in all)", or cut off "(marked".
COPIED_COUNT = re.compile(r"\s*\((?:marked\s*)?(?:\d+\s+of\s+\d+[^)]*)?(?:\)|$)")


def parse_explanation(text: str, prompt: Prompt, marked: Collection[str] = ()) -> str:
    """The explanation phrase from a reply: the prefix removed if repeated, first line only, the
    marker syntax and wrapping quotes removed. `marked`: the tokens marked in the prompt (stripped);
    a bare reply that is one of them names that token (a reply of `None` when `None` is marked)."""
    prefix = prompt["prefix"] or ""
    out = text.strip().strip('"').strip()
    if prefix and out.lower().startswith(prefix.lower()):
        out = out[len(prefix):].strip()
    out = out.splitlines()[0].strip() if out else ""
    out = out.replace(MARK_OPEN, "").replace(MARK_CLOSE, "").strip().strip('"').strip()
    out = COPIED_COUNT.sub("", out).strip(" ,;")
    for lead in prompt["strip_leads"]:
        if out.lower().startswith(lead.lower()):
            out = out[len(lead):].strip(" :")
    if len(_norm(out)) > 3 and _norm(out) in _norm(f'{prompt["system"]} {prompt["instruction"]}'):
        raise LLMOutputError("the explainer repeated part of its instructions")
    bare = out[:-1] if len(out) > 1 and out.endswith(".") else out
    bare = bare.strip("`'\" ") or bare
    if prompt["format"] == "marked" and bare and (bare in marked or (len(out) <= 4 and not any(c.isalpha() for c in out))):
        out = f"the token {bare}"  # a code model often answers with the token itself, e.g. "="
    elif _norm(out) in NO_ANSWER:
        raise LLMOutputError(f"the explainer found nothing in common: {text!r}")
    if sum(c.isalpha() for c in out) < 3:
        raise LLMOutputError(f"the explainer returned no usable explanation: {text!r}")
    if _norm(out) in {_norm(x) for x in prompt["style_examples"]}:
        raise LLMOutputError("the explainer repeated a style example of its instructions")
    if _norm(out) in {_norm(ex["explanation"]) for ex in prompt["examples"]}:
        # Small models often repeat the last worked example verbatim; that says nothing about the node.
        raise LLMOutputError("the explainer repeated a few-shot example's explanation")
    fixed = fixed_text(prompt)
    reason = echo_reason(out, fixed) or vague_reason(out, fixed)
    if reason:
        raise LLMOutputError(reason)
    return out


_FIXED: dict[str, FixedText] = {}


def fixed_text(prompt: Prompt) -> FixedText:
    """The prompt's fixed text, the pieces its replies are checked against (`replies`): its system
    message, its instruction, the leads it strips, and the labels it prints around the data."""
    if prompt.version not in _FIXED:
        if not (prompt["system"].strip() or prompt["instruction"].strip()):
            raise UserError(f"prompt file {prompt.name}.json has no fixed text (system, instruction) to check the "
                            f"explainer's replies against; fix it or restore prompts/")
        labels = [MOST_MARKED, MARKED_OF_SEEN, BEFORE_MARKED, FACTS_FIT, FACT_FITS] if prompt["format"] == "marked" \
            else [NEURON, ACTIVATIONS, ZEROS_LEFT_OUT]
        _FIXED[prompt.version] = FixedText([prompt["system"], prompt["instruction"], " / ".join(prompt["strip_leads"]),
                                            " / ".join(labels)])
    return _FIXED[prompt.version]


def _norm(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


# ---- simulation --------------------------------------------------------------------------------


def _explanation_line(prompt: Prompt, explanation: str) -> str:
    return f"Explanation of the neuron: the main thing this neuron does is find {explanation}\n"


def all_at_once_prompt(prompt: Prompt, explanation: str, tokens: Sequence[str]) -> tuple[str, list[int]]:
    """The all-at-once simulation prompt (docs/method.md, "Simulate") and its slots: the character offset of
    each target token's value, written "unknown"; the simulator reads the digits' probabilities
    there. Everything before the target's first token depends only on the explanation, so an
    in-process model reuses it across the windows of one explanation."""
    parts = [prompt["system"], "\n\n"]
    for i, ex in enumerate(prompt["examples"], start=1):
        rec = ex["record"]
        # The worked examples switch from "unknown" to real values partway, so that after
        # "unknown" lines the model still expects a number.
        known_from = int(len(rec["tokens"]) * float(prompt.data.get("unknown_fraction", 0.0)))
        values = ["unknown" if j < known_from else v for j, v in enumerate(rec["activations"])]
        parts += [f"Neuron {i}\n", _explanation_line(prompt, ex["explanation"]), "Activations:\n",
                  _record_block(rec["tokens"], values), "\n"]
    parts += [f"Neuron {len(prompt['examples']) + 1}\n", _explanation_line(prompt, explanation), "Activations:\n<start>\n"]
    text = "".join(parts)
    slots = []
    for tok in tokens:
        text += show_token(tok) + "\t"
        slots.append(len(text))
        text += "unknown\n"
    return text + "<end>\n", slots


def numbered_request(prompt: Prompt, explanation: str, tokens: Sequence[str], top_logprobs: int = 0) -> ChatRequest:
    """Chat simulation by writing numbers: tokens numbered 1..n, one `index<TAB>value` reply line
    each (the chat_logprobs and text simulators)."""
    def listing(toks: Sequence[str]) -> str:
        return "\n".join(f"{i}\t{show_token(t)}" for i, t in enumerate(toks, start=1))

    messages: list[tuple[str, str]] = [("system", prompt["system"])]
    for ex in prompt["examples"]:
        rec = ex["record"]
        messages.append(("user", _explanation_line(prompt, ex["explanation"]) + "Tokens:\n" + listing(rec["tokens"])))
        messages.append(("assistant", "\n".join(f"{i}\t{v}" for i, v in enumerate(rec["activations"], start=1))))
    messages.append(("user", _explanation_line(prompt, explanation) + "Tokens:\n" + listing(tokens)))
    return ChatRequest(messages=tuple(messages), max_tokens=6 * len(tokens) + 16, temperature=0.0,
                       top_logprobs=top_logprobs)
