"""Binary next-token tasks on Python code, defined as data in ``datasets/tasks/<name>.json``.

A task is a set of contrast pairs (docs/method.md, "Tasks"): two Python prefixes whose
correct next token differs between two candidate tokens A and B. A is correct after the first prefix
of a pair, B after the second. Task loss is binary cross-entropy over the logits of just those two
tokens at the last position: ``softplus(-(logit[correct] - logit[wrong]))``.

JSON format (one task per file; the file name must be ``<name>.json``)::

    {
      "name": "single_double_quote",
      "description": "one line shown in reports",
      "answers": ["')\\n", "\\")\\n"],        # default answer pair [A, B]
      "after": ["{indent}return\\n", ...],    # optional, default "": text that follows the answer
                                             # in real code (a string, or one per variant)
      "slots": {                             # vocabularies shared by both prefixes of a pair
        "indent": ["", "    "],              # a string value fills {indent}
        "depth": [{"ind": "    ", "deeper": "       "}, ...]   # an object fills several linked
      },                                                       # placeholders ({ind}, {deeper}) at once
      "variants": [                          # exactly two: what differs between the two prefixes
        {"q": "'"},                          # a string, or a list of strings to choose from
        {"q": "\\""}
      ],
      "templates": [                         # a string (the prefix), or an object overriding
        "{indent}print({q}{word}",           # the task's answers / after for this template
        {"prefix": "{indent}{var} = {q}{word}", "answers": ["'\\n", "\\"\\n"]}
      ],
      "random_labels": false                 # control: a seeded coin flip per pair decides
    }                                        # which prefix gets A (labels carry no rule)

Placeholders are ``{identifier}``; each must name a string slot, a key of an object slot, or a
variant key. Other braces are literal text (``{1, 2}``); write ``{{`` and ``}}`` for a literal brace
around an identifier (``{{x}}`` is the set ``{x}``). Slot values and variant values may contain
placeholders themselves. Answers and ``after`` are rendered with the fill of their own variant, so an
answer pair may depend on slots (``["{deeper}", "{same}"]``).

Expansion (``build_task``), deterministic in (task name, seed): templates are taken round-robin;
within a template, its space of (variant-0 choice, variant-1 choice, value of every slot it uses) is
walked in a seeded random order without repetition, exhaustively when it is small. A pair is kept
only if neither of its prefixes was seen before, so no prefix occurs twice and train and validation
share none. The first pairs go to train, the next to validation; when the space holds fewer pairs
than asked for, what exists is split in the same proportion.

Checks at build time (``UserError`` naming the task): every answer is a single token; for every
prefix, ``tokenize(prefix + answer + after)`` starts with ``tokenize(prefix) + [answer]`` (otherwise
the model never sees that token in that context); prefixes are shorter than ``MAX_PREFIX_TOKENS``.

Token ids: by default a prefix is the bare ``tokenize(prefix)``, like a training window that begins
there (training windows start anywhere in a file, rarely right after ``<|endoftext|>``; on the demo
model the bare form was measured better, e.g. indent_after_header accuracy 0.95 vs 0.63);
``bos=True`` starts it with ``<|endoftext|>`` as at the start of a file. ``TaskExamples.ids`` holds them left-padded with
``<|endoftext|>``; evaluation re-aligns them to the left of one batch with the padding after the
prefix, which causal attention never sees, so padding never changes a result and a whole split is one
forward pass. Prefixes longer than the model's context keep their last ``n_ctx`` tokens.
"""

from __future__ import annotations

import itertools
import json
from importlib import resources
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Annotated
from pathlib import Path

import torch
import torch.nn.functional as F

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, StringConstraints, field_validator

from sparse_model.errors import UserError
from sparse_model.failpoints import failpoint
from sparse_model.formats import checked
from sparse_model.tokenizer import eot_id, token_strings

DEFAULT_TASK_DIR = Path(str(resources.files("sparse_model.task_files")))  # datasets/tasks (package data)
MAX_PREFIX_TOKENS = 64  # prefixes must be shorter than this (without the leading <|endoftext|>)
DEFAULT_N_TRAIN = 256  # prefixes (= 128 pairs)
DEFAULT_N_VAL = 128  # prefixes (= 64 pairs)

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_DEPTH = 8  # nesting of placeholders inside slot values
_SHUFFLE_LIMIT = 20_000  # template spaces up to this size are shuffled in full


# ----------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class Template:
    prefix: str
    answers: tuple[str, str]
    after: tuple[str, str]


@dataclass(frozen=True)
class TaskSpec:
    """A parsed, validated task file."""

    name: str
    description: str
    path: Path
    slots: dict[str, list]  # slot -> list of str, or list of dict[str, str]
    variants: tuple[dict[str, list[str]], dict[str, list[str]]]
    templates: tuple[Template, ...]
    random_labels: bool = False

    def owners(self) -> dict[str, str]:
        """Placeholder -> the slot that fills it ("" for a variant key)."""
        owner: dict[str, str] = {}
        for slot, values in self.slots.items():
            if isinstance(values[0], dict):
                for key in values[0]:
                    owner[key] = slot
            else:
                owner[slot] = slot
        for key in self.variants[0]:
            owner[key] = ""
        return owner

    def used_slots(self, template: Template) -> list[str]:
        """The slots whose values can appear in this template's texts, sorted."""
        owner = self.owners()
        todo = [template.prefix, *template.answers, *template.after]
        for v in self.variants:
            for choices in v.values():
                todo.extend(choices)
        used: set[str] = set()
        while todo:
            for name in _placeholders(todo.pop()):
                slot = owner[name]
                if slot and slot not in used:
                    used.add(slot)
                    for value in self.slots[slot]:
                        todo.extend(value.values() if isinstance(value, dict) else [value])
        return sorted(used)


def _placeholders(text: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(text) if m.group(1)]


def _render(text: str, fill: dict[str, str], depth: int = 0) -> str:
    if depth > _MAX_DEPTH:
        raise RecursionError("placeholders nested too deeply")

    def sub(m: re.Match) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        return _render(fill[m.group(1)], fill, depth + 1)

    return _PLACEHOLDER.sub(sub, text)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


Ident = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Answer = Annotated[StrictStr, StringConstraints(min_length=1)]


class TemplateEntry(BaseModel):
    """One template written as an object: its prefix, and answers / after overriding the task's."""

    model_config = ConfigDict(extra="forbid")

    prefix: Annotated[StrictStr, StringConstraints(min_length=1)]
    answers: tuple[Answer, Answer] | None = None
    after: StrictStr | tuple[StrictStr, StrictStr] | None = None


class TaskFile(BaseModel):
    """A task file, `datasets/tasks/<name>.json` (see the module docstring for the meaning)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[StrictStr, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]
    description: StrictStr = ""
    random_labels: StrictBool = False
    answers: tuple[Answer, Answer] | None = None  # the default for templates that give none
    after: StrictStr | tuple[StrictStr, StrictStr] = ""
    slots: dict[Ident, Annotated[list[StrictStr] | list[dict[Ident, StrictStr]], Field(min_length=1)]] = {}
    variants: list[dict[StrictStr, StrictStr | Annotated[list[StrictStr], Field(min_length=1)]]]
    templates: Annotated[list[Annotated[StrictStr, StringConstraints(min_length=1)] | TemplateEntry],
                         Field(min_length=1)]

    @field_validator("slots")
    @classmethod
    def _same_keys(cls, slots: dict) -> dict:
        for slot, values in slots.items():
            if isinstance(values[0], dict) and (not values[0] or any(set(v) != set(values[0]) for v in values)):
                raise ValueError(f"the objects of slot {slot} must all have the same identifier keys")
        return slots

    @field_validator("variants")
    @classmethod
    def _two_sides(cls, variants: list) -> list:
        if len(variants) != 2:
            raise ValueError("must be a list of exactly two objects (the two sides of a pair)")
        if set(variants[0]) != set(variants[1]):
            raise ValueError("both variants must set the same keys")
        return variants


def _pair(value: str | tuple[str, str]) -> tuple[str, str]:
    return (value, value) if isinstance(value, str) else (value[0], value[1])


def parse_task_spec(data, path: Path) -> TaskSpec:
    """Validate one task file's JSON value; ``UserError`` naming the file on any problem."""
    where = _display(path)
    if isinstance(data, dict) and isinstance(data.get("name"), str) and data["name"] != path.stem:
        raise UserError(f"{where}: \"name\" is {_q(data['name'])} but the file is {path.name}; rename one to match")
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        where = f"{where} (task {data['name']})"
    f = checked(TaskFile, data, where, "the format is described at the top of sparse_model/tasks.py")
    name, description, random_labels = f.name, f.description, f.random_labels
    slots: dict[str, list] = {k: list(v) for k, v in f.slots.items()}
    variants = [{k: [v] if isinstance(v, str) else list(v) for k, v in side.items()} for side in f.variants]
    templates: list[Template] = []
    for i, t in enumerate(f.templates):
        t = TemplateEntry(prefix=t) if isinstance(t, str) else t
        answers = t.answers or f.answers
        if answers is None:
            raise UserError(f"{where}: template {i} needs \"answers\": a list of two non-empty strings "
                            f"(here or for the task)")
        templates.append(Template(t.prefix, (answers[0], answers[1]), _pair(t.after if t.after is not None else f.after)))

    spec = TaskSpec(name, description, path, slots, (variants[0], variants[1]), tuple(templates), random_labels)

    # Every placeholder must be fillable and nothing may be filled twice.
    seen: dict[str, str] = {}
    for slot, values in slots.items():
        for key in (values[0] if isinstance(values[0], dict) else [slot]):
            if key in seen:
                raise UserError(f"{where}: placeholder {{{key}}} is filled by both {seen[key]} and {slot}")
            seen[key] = f"slot {slot}"
    for key in variants[0]:
        if key in seen:
            raise UserError(f"{where}: placeholder {{{key}}} is filled by both {seen[key]} and the variants")
    owner = spec.owners()
    texts = [x for t in templates for x in (t.prefix, *t.answers, *t.after)]
    texts += [c for v in variants for cs in v.values() for c in cs]
    texts += [x for vs in slots.values() for v in vs for x in (v.values() if isinstance(v, dict) else [v])]
    for text in texts:
        for ph in _placeholders(text):
            if ph not in owner:
                raise UserError(
                    f"{where}: unknown placeholder {{{ph}}} in {_q(text)}; declare it as a slot or variant key "
                    f"(write {{{{{ph}}}}} for literal braces)"
                )
    try:
        for t in templates:
            _render(t.prefix, _first_fill(spec, 0))
    except RecursionError:
        raise UserError(f"{where}: slot values refer to each other in a loop") from None
    return spec


def _first_fill(spec: TaskSpec, variant: int) -> dict[str, str]:
    fill: dict[str, str] = {}
    for slot, values in spec.slots.items():
        v = values[0]
        fill.update(v if isinstance(v, dict) else {slot: v})
    fill.update({k: cs[0] for k, cs in spec.variants[variant].items()})
    return fill


def load_task_specs(folder: Path | str | None = None) -> list[TaskSpec]:
    """Parse every ``*.json`` task file in ``folder`` (default: the repo's ``datasets/tasks``), by name."""
    folder = Path(folder) if folder is not None else DEFAULT_TASK_DIR
    if not folder.is_dir():
        raise UserError(f"task folder {_display(folder)} does not exist")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise UserError(f"task folder {_display(folder)} holds no *.json task files")
    specs = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{_display(path)} line {e.lineno}: {e.msg}") from None
        except UnicodeDecodeError:
            raise UserError(f"{_display(path)} is not UTF-8 text") from None
        specs.append(parse_task_spec(data, path))
    return specs


def get_task_specs(names: Sequence[str] | None = None, folder: Path | str | None = None) -> list[TaskSpec]:
    """The specs with these names, in the given order (all when ``names`` is None)."""
    specs = load_task_specs(folder)
    if names is None:
        return specs
    by_name = {s.name: s for s in specs}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(
            f"unknown task {', '.join(repr(n) for n in unknown)}; known tasks: {', '.join(sorted(by_name))}"
        )
    return [by_name[n] for n in names]


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Pair:
    """Two prefixes; ``answers[i]`` is the correct next token after ``prefixes[i]`` (the other one is wrong)."""

    prefixes: tuple[str, str]
    answers: tuple[str, str]
    template: int
    split: str  # "train" or "val"
    flipped: bool = False  # random_labels: answers were swapped by the coin flip


@dataclass
class TaskExamples:
    """One split as tensors. Rows 2i and 2i+1 are the two prefixes of pair i of the split.

    ``ids`` (N, T): ``[<|endoftext|>] + tokens(prefix)``, left-padded with ``<|endoftext|>``;
    ``lengths`` (N,): unpadded lengths; ``correct`` / ``wrong`` (N,): candidate token ids;
    ``pair`` (N,): pair index within the split.
    """

    ids: torch.Tensor
    lengths: torch.Tensor
    correct: torch.Tensor
    wrong: torch.Tensor
    pair: torch.Tensor
    prefixes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def subset(self, index: torch.Tensor | Sequence[int]) -> "TaskExamples":
        """The rows at ``index`` (e.g. a minibatch), trimmed to their longest length."""
        index = torch.as_tensor(index, dtype=torch.long)
        lengths = self.lengths[index]
        width = int(lengths.max()) if len(index) else 0
        return TaskExamples(
            ids=self.ids[index][:, self.ids.shape[1] - width:],
            lengths=lengths,
            correct=self.correct[index],
            wrong=self.wrong[index],
            pair=self.pair[index],
            prefixes=[self.prefixes[i] for i in index.tolist()],
        )


@dataclass
class Task:
    name: str
    description: str
    answers: list[tuple[str, str]]  # distinct answer pairs (A, B) in order of first use (before any coin flip)
    pairs: list[Pair]  # train pairs, then val pairs
    train: TaskExamples
    val: TaskExamples
    random_labels: bool = False
    seed: int = 0


def _variant_choices(variant: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = sorted(variant)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(variant[k] for k in keys))]


def _index_stream(size: int, rng: random.Random) -> Iterator[int]:
    """Distinct indices in ``range(size)`` in random order: all of them if ``size`` is small."""
    if size <= _SHUFFLE_LIMIT:
        order = list(range(size))
        rng.shuffle(order)
        yield from order
    else:
        seen: set[int] = set()
        while len(seen) < size:
            i = rng.randrange(size)
            if i not in seen:
                seen.add(i)
                yield i


def _expand(spec: TaskSpec, seed: int, n_pairs: int) -> list[tuple[int, tuple[str, str], tuple[str, str], tuple[str, str]]]:
    """Up to ``n_pairs`` pairs (template, prefixes, answers, afters) with no prefix used twice."""
    rng = random.Random(f"tasks:{spec.name}:{seed}")
    choices = [_variant_choices(v) for v in spec.variants]
    streams = []
    for t_index, template in enumerate(spec.templates):
        used = spec.used_slots(template)
        dims = [len(choices[0]), len(choices[1])] + [len(spec.slots[s]) for s in used]
        streams.append((t_index, template, used, dims, _index_stream(math.prod(dims), rng)))
    seen: set[str] = set()
    out = []
    live = list(range(len(streams)))
    # Give up on a template after many rejections in a row (its prefixes keep colliding).
    misses = [0] * len(streams)
    max_misses = 50 * n_pairs + 1000
    while live and len(out) < n_pairs:
        for s in list(live):
            if len(out) >= n_pairs:
                break
            t_index, template, used, dims, stream = streams[s]
            while True:
                code = next(stream, None)
                if code is None or misses[s] > max_misses:
                    live.remove(s)
                    break
                digits = []
                for d in reversed(dims):
                    code, r = divmod(code, d)
                    digits.append(r)
                digits.reverse()
                base: dict[str, str] = {}
                for slot, k in zip(used, digits[2:]):
                    value = spec.slots[slot][k]
                    base.update(value if isinstance(value, dict) else {slot: value})
                fills = [{**base, **choices[0][digits[0]]}, {**base, **choices[1][digits[1]]}]
                prefixes = (_render(template.prefix, fills[0]), _render(template.prefix, fills[1]))
                if prefixes[0] == prefixes[1] or prefixes[0] in seen or prefixes[1] in seen:
                    misses[s] += 1
                    continue
                misses[s] = 0
                seen.update(prefixes)
                answers = (_render(template.answers[0], fills[0]), _render(template.answers[1], fills[1]))
                afters = (_render(template.after[0], fills[0]), _render(template.after[1], fills[1]))
                out.append((t_index, prefixes, answers, afters))
                break
    return out


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    if not texts:
        return []
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [e.ids for e in encode(texts, add_special_tokens=False)]


def _answer_ids(spec: TaskSpec, tokenizer, answers: set[str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for a in sorted(answers):
        toks = tokenizer.encode(a, add_special_tokens=False).ids
        if len(toks) != 1:
            split = " ".join(_q(t) for t in token_strings(tokenizer, toks))
            raise UserError(f"task {spec.name}: answer {_q(a)} is {len(toks)} tokens under this tokenizer: {split}")
        ids[a] = toks[0]
    return ids


def _tensors(rows: list[tuple[list[int], int, int, int, str]], eot: int) -> TaskExamples:
    width = max((len(r[0]) for r in rows), default=0)
    ids = torch.full((len(rows), width), eot, dtype=torch.long)
    for i, (toks, *_rest) in enumerate(rows):
        ids[i, width - len(toks):] = torch.tensor(toks, dtype=torch.long)
    return TaskExamples(
        ids=ids,
        lengths=torch.tensor([len(r[0]) for r in rows], dtype=torch.long),
        correct=torch.tensor([r[1] for r in rows], dtype=torch.long),
        wrong=torch.tensor([r[2] for r in rows], dtype=torch.long),
        pair=torch.tensor([r[3] for r in rows], dtype=torch.long),
        prefixes=[r[4] for r in rows],
    )


def build_task(spec: TaskSpec, tokenizer, seed: int = 0, n_train: int = DEFAULT_N_TRAIN,
               n_val: int = DEFAULT_N_VAL, bos: bool = False) -> Task:
    """Expand ``spec`` into ``n_train`` train and ``n_val`` validation prefixes (two per pair).

    ``bos``: start every prefix with ``<|endoftext|>`` (a file start); False gives the bare prefix
    (a training window that happens to begin there).

    Deterministic in (spec, seed). Raises ``UserError`` if an answer is not a single token, or does
    not follow its prefix as its own token, or a prefix is too long.
    """
    if n_train < 2 or n_val < 2:
        raise UserError(f"task {spec.name}: need at least 2 train and 2 validation prefixes (one pair each)")
    want_train, want_val = n_train // 2, n_val // 2
    found = _expand(spec, seed, want_train + want_val)
    if len(found) < want_train + want_val:
        if len(found) < 2:
            raise UserError(f"task {spec.name}: its templates make only {len(found)} distinct pair(s); add slot values")
        want_val = min(len(found) - 1, max(1, round(len(found) * want_val / (want_train + want_val))))
        want_train = len(found) - want_val

    answer_ids = _answer_ids(spec, tokenizer, {a for _, _, answers, _ in found for a in answers})
    prefixes = [p for _, ps, _, _ in found for p in ps]
    fulls = [p + a + x for _, ps, answers, afters in found for p, a, x in zip(ps, answers, afters)]
    prefix_ids = _encode(tokenizer, prefixes)
    full_ids = _encode(tokenizer, fulls)
    for k, (p, toks, full) in enumerate(zip(prefixes, prefix_ids, full_ids)):
        answer = found[k // 2][2][k % 2]
        if len(toks) >= MAX_PREFIX_TOKENS:
            raise UserError(
                f"task {spec.name}: prefix {_q(p)} is {len(toks)} tokens; keep prefixes under {MAX_PREFIX_TOKENS}"
            )
        if full[: len(toks) + 1] != toks + [answer_ids[answer]]:
            lo = max(0, len(toks) - 3)
            split = " ".join(_q(t) for t in token_strings(tokenizer, full[lo: len(toks) + 3]))
            raise UserError(
                f"task {spec.name}: answer {_q(answer)} is not its own token after prefix {_q(p[-40:])}: "
                f"the full text splits as ... {split} ..."
            )

    rng = random.Random(f"labels:{spec.name}:{seed}")
    eot = eot_id(tokenizer)
    pairs: list[Pair] = []
    rows: dict[str, list] = {"train": [], "val": []}
    distinct: list[tuple[str, str]] = []
    for k, (t_index, ps, answers, _afters) in enumerate(found[: want_train + want_val]):
        split = "train" if k < want_train else "val"
        if answers not in distinct:
            distinct.append(answers)
        flipped = spec.random_labels and rng.random() < 0.5
        if flipped:
            answers = (answers[1], answers[0])
        pairs.append(Pair(ps, answers, t_index, split, flipped))
        n = len(rows[split]) // 2
        for i in range(2):
            rows[split].append(([eot] * bos + prefix_ids[2 * k + i], answer_ids[answers[i]], answer_ids[answers[1 - i]], n, ps[i]))
    return Task(spec.name, spec.description, distinct, pairs, _tensors(rows["train"], eot), _tensors(rows["val"], eot),
                spec.random_labels, seed)


def load_tasks(tokenizer, names: Sequence[str] | None = None, seed: int = 0, *,
               n_train: int = DEFAULT_N_TRAIN, n_val: int = DEFAULT_N_VAL,
               folder: Path | str | None = None, bos: bool = False) -> list[Task]:
    """Build the named tasks (all tasks in the folder when ``names`` is None)."""
    return [build_task(s, tokenizer, seed, n_train, n_val, bos) for s in get_task_specs(names, folder)]


# ----------------------------------------------------------------------------- evaluation


def left_aligned(examples: TaskExamples, n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, lengths): row r holds its prefix at columns 0 .. lengths[r] - 1 (read from the
    left-padded ids; padding after it), prefixes longer than `n_ctx` cut to their last n_ctx tokens.
    How evaluation, node effects and in-task records all read a split."""
    width = examples.ids.shape[1]
    lengths = examples.lengths.clamp(max=n_ctx)
    span = int(lengths.max()) if len(lengths) else 0
    cols = torch.arange(span)[None, :] + (width - lengths)[:, None]
    return examples.ids.gather(1, cols.clamp(max=width - 1)), lengths


def task_logit_diff(model, examples: TaskExamples, batch_size: int = 512) -> torch.Tensor:
    """``logit[correct] - logit[wrong]`` at each prefix's last position, shape (N,).

    Differentiable (gradients flow to the model and to anything its hooks use, e.g. node masks);
    wrap in ``torch.no_grad()`` for plain evaluation. Prefixes are right-aligned into one batch
    (padding after the prefix): attention is causal, so what follows the last position cannot change
    it, and the result equals running each prefix alone. Prefixes longer than the model's context
    keep their last ``n_ctx`` tokens.
    """
    device = next(model.parameters()).device
    n = len(examples)
    if n == 0:
        return torch.zeros(0, device=device)
    ids, lengths = left_aligned(examples, model.cfg.n_ctx)
    ids = ids.to(device)
    last_pos = (lengths - 1).to(device)
    correct, wrong = examples.correct.to(device), examples.wrong.to(device)
    diffs = []
    for chunk in torch.arange(n, device=device).split(batch_size):
        c_len = int(lengths[chunk.cpu()].max())
        last = model(ids[chunk, :c_len], last=last_pos[chunk])  # (chunk, vocab)
        diffs.append(last.gather(1, correct[chunk, None]).squeeze(1) - last.gather(1, wrong[chunk, None]).squeeze(1))
    return torch.cat(diffs)


def task_loss_tensor(model, examples: TaskExamples, batch_size: int = 512) -> torch.Tensor:
    """Differentiable mean binary cross-entropy over the two candidates: mean softplus(-diff)."""
    return F.softplus(-task_logit_diff(model, examples, batch_size)).mean()


def task_loss(model, examples: TaskExamples, batch_size: int = 512) -> float:
    """Mean softplus(-diff) as a float, without gradients."""
    with torch.no_grad():
        return float(task_loss_tensor(model, examples, batch_size))


def task_accuracy(model, examples: TaskExamples, batch_size: int = 512) -> float:
    """Fraction of prefixes where the correct candidate has the larger logit."""
    with torch.no_grad():
        return float((task_logit_diff(model, examples, batch_size) > 0).float().mean())


def evaluate_tasks(model, tasks: Sequence[Task], batch_size: int = 512) -> list[dict]:
    """Validation metrics per task: name, loss, accuracy, n_val (prefixes), mean_logit_diff."""
    results = []
    with torch.no_grad():
        for task in tasks:
            diff = task_logit_diff(model, task.val, batch_size)
            results.append({
                "name": task.name,
                "loss": float(F.softplus(-diff).mean()),
                "accuracy": float((diff > 0).float().mean()),
                "n_val": len(task.val),
                "mean_logit_diff": float(diff.mean()),
            })
            failpoint("tasks.task")
    return results
