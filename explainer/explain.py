"""The explainer: an LLM reads a node's top windows and writes a one-phrase explanation
(docs/method.md, "Explain"). Best-of-k: k candidates are sampled; the job picks one by its score on
the calibrate split.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from .llm import PREFILL, SAMPLES, LLMClient, LLMOutputError, LLMRequestError, is_fatal
from .prompts import Prompt, explain_request, fixed_text, load_prompt, marked_counts, parse_explanation
from .writers import Candidate

DEFAULT_PROMPT = "explain_marked_facts"  # chosen by measurement on the training rules: README, "Best of k"
CANDIDATE_TEMPERATURE = 1.0  # candidates after the first are sampled, for diversity; the first is greedy


class Explainer:
    def __init__(self, client: LLMClient, prompts_dir: str | None = None, prompt_name: str = DEFAULT_PROMPT):
        """prompt_name: the explain prompt file: `explain_marked` (zero-shot, marked tokens) or `explain`
        (the paper's token<TAB>value lines with worked examples, for large models); or several joined
        by `+` (views): candidate i is written from view i % n, so best-of-k draws on each view."""
        self.client = client
        self.views: list[Prompt] = [load_prompt(name, prompts_dir) for name in prompt_name.split("+")]
        for view in self.views:
            fixed_text(view)  # a prompt whose replies cannot be checked is one error line now, not mid-job

    @property
    def threshold(self) -> int:
        """The level (0..10) at or above which a token counts as marked, by the first view."""
        return int(self.views[0]["threshold"])

    @property
    def version(self) -> str:
        return "+".join(p.version for p in self.views)

    async def candidate(self, records: Sequence[Any], i: int = 0, seed: int = 0) -> Candidate:
        """Candidate i of the explanations of the node whose `records` (top windows) are shown, from
        view i % n: each view's first candidate is greedy, later ones are sampled (seed + i)."""
        return (await self.candidates(records, [i], seed))[0]

    async def candidates(self, records: Sequence[Any], batch: Sequence[int], seed: int = 0) -> list[Candidate]:
        """The candidates numbered `batch`, one of `batches`: all from one view, and either one
        greedy candidate or sampled ones. Several sampled candidates are one request for n replies
        (seed + batch[0]) when the backend can sample side by side (SAMPLES), else one request each."""
        prompt = self.views[batch[0] % len(self.views)]
        temperature = 0.0 if batch[0] < len(self.views) else CANDIDATE_TEMPERATURE
        request = explain_request(prompt, records, prefill=PREFILL in self.client.capabilities,
                                  temperature=temperature, seed=seed + batch[0])
        if len(batch) > 1:
            request = replace(request, n=len(batch))
        try:
            result = await self.client.chat(request)
        except (LLMOutputError, LLMRequestError) as e:
            if is_fatal(e):
                raise
            return [Candidate(None, failure=str(e)) for _ in batch]
        marked = {t for t, _ in marked_counts(records, int(prompt["threshold"]))} if prompt["format"] == "marked" else set()
        return [self._parsed(text, prompt, marked) for text in (result.choices or [result.text])]

    @staticmethod
    def _parsed(text: str, prompt: Prompt, marked: set[str]) -> Candidate:
        try:
            return Candidate(parse_explanation(text, prompt, marked))
        except LLMOutputError as e:
            return Candidate(None, failure=str(e), raw_text=text)

    def batches(self, k: int) -> list[list[int]]:
        """Candidates 0..k-1 in the order they are written, grouped by request: view by view (so an
        in-process model keeps one view's prompt in its context for all of that view's candidates),
        the view's greedy candidate alone, then its sampled ones, together (at most the backend's
        `max_samples` per request) when the backend has SAMPLES and one by one otherwise."""
        n = len(self.views)
        size = self.client.max_samples if SAMPLES in self.client.capabilities else 1
        out: list[list[int]] = []
        for view in range(min(n, k)):
            sampled = list(range(view + n, k, n))
            out += [[view]] + [sampled[lo:lo + size] for lo in range(0, len(sampled), size)]
        return out

    def order(self, k: int) -> list[int]:
        """The order in which candidates 0..k-1 are written (`batches`, flattened)."""
        return [i for batch in self.batches(k) for i in batch]

    async def explain(self, records: Sequence[Any], k: int = 1, seed: int = 0) -> list[Candidate]:
        """k candidate explanations (see `candidates`), written in `batches`, returned by candidate number."""
        out: dict[int, Candidate] = {}
        for batch in self.batches(k):
            out.update(zip(batch, await self.candidates(records, batch, seed)))
        return [out[i] for i in range(k)]
