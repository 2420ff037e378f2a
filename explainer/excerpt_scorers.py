"""Detection and fuzzing scorers: an LLM judges an explanation on whole excerpts (the pure parts,
metrics and test sets, are in `excerpt_scores`). One request per excerpt through the job's one LLM
client (its retries, cache and accounting); prompts are the versioned files prompts/detect.json
and prompts/fuzz.json.

    scorer = DetectionScorer(make_client("local"))
    result = asyncio.run(scorer.judge("the keyword return", excerpts))
    result.balanced_accuracy, result.auroc   # auroc None when the endpoint gives no log-probabilities
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Sequence

from .excerpt_scores import (NO, YES, Excerpt, activity_threshold, balanced_accuracy, excerpt_sets, marked_excerpt, p_yes,
                             parse_numbered,
                             parse_answer, probability_auroc)
from .llm import (PREFILL, PROMPT_LOGPROBS, TOKEN_LOGPROBS, ChatRequest, LLMClient, LLMOutputError, LLMRequestError,
                  PromptLogprobsRequest, is_fatal)
from .llm.client import estimate_tokens
from .prompts import load_prompt

DETECTION, FUZZING = "detection", "fuzzing"
SEVERAL = "several excerpts per prompt are judged from the written answers: balanced accuracy only"
NO_LOGPROBS = "AUROC needs log-probabilities of the answer, which this endpoint does not give; balanced accuracy only"


@dataclass
class ExcerptScore:
    method: str  # detection | fuzzing
    balanced_accuracy: float | None
    auroc: float | None
    answers: list[bool | None]  # per excerpt; None: unusable (its raw text is in failures)
    labels: list[bool]
    failures: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    note: str | None = None  # why auroc is missing


class ExcerptScorer:
    """Asks, per excerpt, whether it fits the explanation; scores the answers (see the module docstring)."""

    method = ""
    prompt_name = ""

    def __init__(self, client: LLMClient, prompts_dir: str | None = None, per_prompt: int = 1):
        """per_prompt: excerpts shown in one prompt. 1 (the default) reads P(1) where the endpoint
        gives probabilities; more share the prompt's fixed text among excerpts (fewer prompt tokens)
        and are judged from the written answers only."""
        if per_prompt < 1:
            raise ValueError(f"per_prompt must be at least 1, got {per_prompt}")
        self.client, self.per_prompt = client, per_prompt
        self.prompt = load_prompt(self.prompt_name, prompts_dir)

    @property
    def version(self) -> str:
        return self.prompt.version

    def text(self, excerpt: Excerpt) -> str:
        return "".join(excerpt.tokens)

    def request(self, explanation: str, excerpt: Excerpt) -> ChatRequest:
        user = self.prompt["instruction"].format(explanation=explanation, excerpt=self.text(excerpt))
        logprobs = TOKEN_LOGPROBS in self.client.capabilities and not self.reads_logits
        return ChatRequest(messages=(("system", self.prompt["system"]), ("user", user)),
                           max_tokens=int(self.prompt["max_tokens"]), temperature=0.0, stop=("\n",),
                           top_logprobs=5 if logprobs else 0)

    @property
    def reads_logits(self) -> bool:
        """The embedded model: P(1) and P(0) are read in one pass over the prompt, nothing generated."""
        return {PROMPT_LOGPROBS, PREFILL} <= self.client.capabilities

    @property
    def has_probabilities(self) -> bool:
        return self.per_prompt == 1 and (self.reads_logits or TOKEN_LOGPROBS in self.client.capabilities)

    def request_many(self, explanation: str, excerpts: Sequence[Excerpt]) -> ChatRequest:
        """Several excerpts, numbered, and one question about all of them."""
        blocks = [f"Excerpt {i}:\n```python\n{self.text(e)}\n```" for i, e in enumerate(excerpts, start=1)]
        user = "\n\n".join([*blocks, self.prompt["instruction_many"].format(explanation=explanation, n=len(excerpts))])
        return ChatRequest(messages=(("system", self.prompt["system"]), ("user", user)),
                           max_tokens=8 * len(excerpts), temperature=0.0)

    async def _several(self, explanation: str, excerpts: Sequence[Excerpt]) -> list[tuple]:
        request = self.request_many(explanation, excerpts)
        try:
            result = await self.client.chat(request)
        except (LLMOutputError, LLMRequestError) as e:
            if is_fatal(e):
                raise
            return [(None, None, f"request failed: {e}", 0)] * len(excerpts)
        answers = parse_numbered(result.text, len(excerpts))
        tokens = _prompt_tokens(request, result)
        return [(a, None, None if a is not None else f"no 1 or 0 for excerpt {i + 1} in {result.text!r}",
                 tokens if i == 0 else 0) for i, a in enumerate(answers)]

    async def _read(self, request: ChatRequest) -> tuple[bool | None, float | None, str | None, int]:
        from .llm.local import chatml  # the format the embedded models were trained on

        text = chatml(request.messages)
        result = await self.client.prompt_logprobs(PromptLogprobsRequest(text + YES, (len(text),), (YES, NO)))
        prob = p_yes(result.logprobs[0])
        if prob is None:
            return None, None, "neither 1 nor 0 could be read at the answer", result.prompt_tokens or 0
        return prob >= 0.5, prob, None, result.prompt_tokens or 0

    async def _one(self, explanation: str, excerpt: Excerpt) -> tuple[bool | None, float | None, str | None, int]:
        request = self.request(explanation, excerpt)
        try:
            if self.reads_logits:
                return await self._read(request)
            result = await self.client.chat(request)
        except (LLMOutputError, LLMRequestError) as e:
            if is_fatal(e):
                raise
            return None, None, f"request failed: {e}", 0
        answer = parse_answer(result.text)
        prob = p_yes(result.top_logprobs[0]) if result.top_logprobs else None
        return answer, prob, None if answer is not None else f"not 1 or 0: {result.text!r}", _prompt_tokens(request, result)

    async def judge(self, explanation: str, excerpts: Sequence[Excerpt]) -> ExcerptScore:
        """One explanation judged on every excerpt."""
        return (await self.judge_many([explanation], excerpts))[0]

    async def judge_many(self, explanations: Sequence[str], excerpts: Sequence[Excerpt]) -> list[ExcerptScore]:
        """Several explanations on the same excerpts, asked excerpt by excerpt (the prompt starts with the
        excerpt, so an in-process model reuses it from its context for every explanation)."""
        n = len(explanations)
        if self.per_prompt > 1:
            groups = [list(excerpts[lo:lo + self.per_prompt]) for lo in range(0, len(excerpts), self.per_prompt)]
            got_many = await asyncio.gather(*(self._several(x, g) for x in explanations for g in groups))
            per_x = [[r for g in got_many[j * len(groups):(j + 1) * len(groups)] for r in g] for j in range(n)]
            return [self._scored(per_x[j], excerpts) for j in range(n)]
        got = await asyncio.gather(*(self._one(x, e) for e in excerpts for x in explanations))
        return [self._scored([got[i * n + j] for i in range(len(excerpts))], excerpts) for j in range(n)]

    def _scored(self, got: list[tuple[bool | None, float | None, str | None, int]],
                excerpts: Sequence[Excerpt]) -> ExcerptScore:
        answers = [a for a, _, _, _ in got]
        labels = [e.label for e in excerpts]
        probs = [p for _, p, _, _ in got]
        has_logprobs = self.has_probabilities
        return ExcerptScore(self.method, balanced_accuracy(answers, labels),
                            probability_auroc(probs, labels) if has_logprobs else None, answers, labels,
                            [f for _, _, f, _ in got if f], sum(t for *_, t in got),
                            None if has_logprobs else NO_LOGPROBS if self.per_prompt == 1 else SEVERAL)


def _prompt_tokens(request: ChatRequest, result) -> int:
    """The prompt tokens the server counted, else the client's estimate (as its accounting does)."""
    return result.prompt_tokens or estimate_tokens("".join(c for _, c in request.messages))


class DetectionScorer(ExcerptScorer):
    """Is the node active somewhere in this excerpt?"""

    method, prompt_name = DETECTION, "detect"


class FuzzingScorer(ExcerptScorer):
    """Are the marked tokens of this excerpt the ones the node fires on?"""

    method, prompt_name = FUZZING, "fuzz"

    def text(self, excerpt: Excerpt) -> str:
        return marked_excerpt(excerpt)


SCORERS = {DETECTION: DetectionScorer, FUZZING: FuzzingScorer}  # the scorers beside simulation, by name
EXCERPTS = 5  # activating and as many silent excerpts per scorer and explanation (delphi: 5 per prompt)
EXCERPT_TOKENS = 32  # tokens per excerpt (delphi's default)


async def score_rows(scorers: Sequence[ExcerptScorer], explanation: str,
                     records: Sequence[tuple[Sequence[str], Sequence[float]]], seed: int = 0) -> list[dict]:
    """`scores` rows (split 'score') of one explanation by each scorer, on excerpts of the held-out
    records given: method `detection` / `fuzzing` (balanced accuracy) and `..._auroc` (None where the
    endpoint gives no probabilities); n_tokens is the number of excerpts."""
    detection, fuzzing = excerpt_sets(records, EXCERPTS, EXCERPT_TOKENS, seed,
                                      threshold=activity_threshold([a for _, a in records]))
    rows = []
    for scorer in scorers:
        excerpts = detection if scorer.method == DETECTION else fuzzing
        result = await scorer.judge(explanation, excerpts)
        rows += [{"split": "score", "method": scorer.method, "value": result.balanced_accuracy, "n_tokens": len(excerpts)},
                 {"split": "score", "method": f"{scorer.method}_auroc", "value": result.auroc, "n_tokens": len(excerpts)}]
    return rows
