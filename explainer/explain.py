"""The explainer: an LLM reads a node's top windows and writes a one-phrase explanation
(REFERENCE §2, "Explain"). Best-of-k: k candidates are sampled; the job picks one by its score on
the validation (calibrate) split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .llm import PREFILL, LLMClient, LLMOutputError
from .prompts import Prompt, explain_request, load_prompt, parse_explanation

CANDIDATE_TEMPERATURE = 1.0  # candidates after the first are sampled, for diversity; the first is greedy


@dataclass
class Candidate:
    text: str | None  # None when the reply was unusable
    failure: str | None = None
    raw_text: str | None = None


class Explainer:
    def __init__(self, client: LLMClient, prompts_dir: str | None = None):
        self.client = client
        self.prompt: Prompt = load_prompt("explain", prompts_dir)

    @property
    def version(self) -> str:
        return self.prompt.version

    async def explain(self, records: Sequence[Any], k: int = 1, seed: int = 0) -> list[Candidate]:
        """k candidate explanations of the node whose `records` (top windows) are shown."""
        prefill = PREFILL in self.client.capabilities
        out = []
        for i in range(k):
            temperature = 0.0 if i == 0 else CANDIDATE_TEMPERATURE
            request = explain_request(self.prompt, records, prefill=prefill, temperature=temperature, seed=seed + i)
            result = await self.client.chat(request)
            try:
                out.append(Candidate(parse_explanation(result.text, self.prompt)))
            except LLMOutputError as e:
                out.append(Candidate(None, failure=str(e), raw_text=result.text))
        return out
