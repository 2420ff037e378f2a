"""The explainer: an LLM reads a node's top windows and writes a one-phrase explanation
(docs/method.md, "Explain"). Best-of-k: k candidates are sampled; the job picks one by its score on
the calibrate split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .llm import PREFILL, LLMClient, LLMOutputError, LLMRequestError, is_fatal
from .prompts import Prompt, explain_request, load_prompt, parse_explanation

DEFAULT_PROMPT = "explain_marked_seen"  # chosen by measurement on the training rules: README, "Explainer recovery"
CANDIDATE_TEMPERATURE = 1.0  # candidates after the first are sampled, for diversity; the first is greedy


@dataclass
class Candidate:
    text: str | None  # None when the reply was unusable
    failure: str | None = None
    raw_text: str | None = None


class Explainer:
    def __init__(self, client: LLMClient, prompts_dir: str | None = None, prompt_name: str = DEFAULT_PROMPT):
        """prompt_name: the explain prompt file: `explain_marked` (zero-shot, marked tokens) or `explain`
        (the paper's token<TAB>value lines with worked examples, for large models)."""
        self.client = client
        self.prompt: Prompt = load_prompt(prompt_name, prompts_dir)

    @property
    def version(self) -> str:
        return self.prompt.version

    async def candidate(self, records: Sequence[Any], i: int = 0, seed: int = 0) -> Candidate:
        """Candidate i of the explanations of the node whose `records` (top windows) are shown:
        candidate 0 is greedy, later ones are sampled (seed + i)."""
        temperature = 0.0 if i == 0 else CANDIDATE_TEMPERATURE
        request = explain_request(self.prompt, records, prefill=PREFILL in self.client.capabilities,
                                  temperature=temperature, seed=seed + i)
        try:
            result = await self.client.chat(request)
        except (LLMOutputError, LLMRequestError) as e:
            if is_fatal(e):
                raise
            return Candidate(None, failure=str(e))
        try:
            return Candidate(parse_explanation(result.text, self.prompt))
        except LLMOutputError as e:
            return Candidate(None, failure=str(e), raw_text=result.text)

    async def explain(self, records: Sequence[Any], k: int = 1, seed: int = 0) -> list[Candidate]:
        """k candidate explanations (see `candidate`)."""
        return [await self.candidate(records, i, seed) for i in range(k)]
