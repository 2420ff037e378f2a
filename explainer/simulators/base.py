"""What every simulator is: a method name, a version, and predictions for windows of tokens."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Sequence

# Simulator methods (the `simulator` column of the store, `--simulator` on the command line).
ALL_AT_ONCE = "all_at_once"  # one scoring pass, needs prompt log-probabilities
CHAT_LOGPROBS = "chat_logprobs"  # numbered lines, expected values from chat log-probabilities
TEXT = "text"  # numbered lines, the written digits
EMBEDDING = "embedding"  # no LLM: a sentence-embedding model matches facts about each token
TRAINED = "trained"  # no LLM: a head trained on generated rule neurons reads the explanation
LLM_SIMULATORS = (ALL_AT_ONCE, CHAT_LOGPROBS, TEXT)
SIMULATORS = (*LLM_SIMULATORS, EMBEDDING, TRAINED)
NO_LLM = (EMBEDDING, TRAINED)  # simulators that run without an LLM (cheap enough for best of 32)


@dataclass
class Simulation:
    predicted: list[float] | None  # one expected value per token, None if the simulation failed
    failure: str | None = None
    raw_text: str | None = None


class Simulator:
    """Predicts a node's activation at each token of a window from an explanation alone.

    Subclasses set `method` and `version` and implement `simulate`; `simulate_windows` runs many
    windows (all at once: the LLM client's concurrency limit decides how many are in flight)."""

    method: str
    version: str

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        raise NotImplementedError

    async def simulate_windows(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[Simulation]:
        return list(await asyncio.gather(*(self.simulate(explanation, tokens) for tokens in windows)))
