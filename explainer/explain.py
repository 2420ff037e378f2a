"""The explainer: an LLM reads a node's top windows and writes a one-phrase explanation
(docs/method.md, "Explain"). Best-of-k: k candidates are sampled; the job picks one by its score on
the calibrate split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .llm import PREFILL, LLMClient, LLMOutputError, LLMRequestError, is_fatal
from .prompts import Prompt, explain_request, load_prompt, marked_counts, parse_explanation

DEFAULT_PROMPT = "explain_marked_facts"  # chosen by measurement on the training rules: README, "Best of k"
CANDIDATE_TEMPERATURE = 1.0  # candidates after the first are sampled, for diversity; the first is greedy


@dataclass
class Candidate:
    text: str | None  # None when the reply was unusable
    failure: str | None = None
    raw_text: str | None = None


class Explainer:
    def __init__(self, client: LLMClient, prompts_dir: str | None = None, prompt_name: str = DEFAULT_PROMPT):
        """prompt_name: the explain prompt file: `explain_marked` (zero-shot, marked tokens) or `explain`
        (the paper's token<TAB>value lines with worked examples, for large models); or several joined
        by `+` (views): candidate i is written from view i % n, so best-of-k draws on each view."""
        self.client = client
        self.views: list[Prompt] = [load_prompt(name, prompts_dir) for name in prompt_name.split("+")]

    @property
    def version(self) -> str:
        return "+".join(p.version for p in self.views)

    async def candidate(self, records: Sequence[Any], i: int = 0, seed: int = 0) -> Candidate:
        """Candidate i of the explanations of the node whose `records` (top windows) are shown, from
        view i % n: each view's first candidate is greedy, later ones are sampled (seed + i)."""
        prompt = self.views[i % len(self.views)]
        temperature = 0.0 if i < len(self.views) else CANDIDATE_TEMPERATURE
        request = explain_request(prompt, records, prefill=PREFILL in self.client.capabilities,
                                  temperature=temperature, seed=seed + i)
        try:
            result = await self.client.chat(request)
        except (LLMOutputError, LLMRequestError) as e:
            if is_fatal(e):
                raise
            return Candidate(None, failure=str(e))
        try:
            marked = {t for t, _ in marked_counts(records, int(prompt["threshold"]))} if prompt["format"] == "marked" else set()
            return Candidate(parse_explanation(result.text, prompt, marked))
        except LLMOutputError as e:
            return Candidate(None, failure=str(e), raw_text=result.text)

    def order(self, k: int) -> list[int]:
        """The order in which to write candidates 0..k-1: view by view, so that an in-process model
        keeps one view's prompt in its context for all of that view's candidates."""
        return sorted(range(k), key=lambda i: (i % len(self.views), i))

    async def explain(self, records: Sequence[Any], k: int = 1, seed: int = 0) -> list[Candidate]:
        """k candidate explanations (see `candidate`), written in `order`, returned by candidate number."""
        out = {i: await self.candidate(records, i, seed) for i in self.order(k)}
        return [out[i] for i in range(k)]
