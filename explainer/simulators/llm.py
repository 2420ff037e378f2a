"""The LLM simulators (all_at_once, chat_logprobs, text; see the package docstring): one
`LLMSimulator` per client and method, each window one request through the client.

Output that does not line up with the window's tokens is a failed `Simulation` carrying the reason
and the raw text, never an exception and never zeros.

Scale: 0..9 rather than the paper's 0..10, because SmolLM2's tokenizer has no single token for
"10" (docs/method.md, "Deviations from the papers"). Correlation, the headline score, does not
depend on the scale.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

from ..llm import LLMClient, LLMOutputError, LLMRequestError, PromptLogprobsRequest, is_fatal
from ..prompts import Prompt, all_at_once_prompt, load_prompt, numbered_request
from .base import ALL_AT_ONCE, CHAT_LOGPROBS, LLM_SIMULATORS, Simulation, Simulator


def expected_value(logprobs: dict[str, float], scale: int) -> float | None:
    """Σ d·p(d) over the digits 0..scale, with p renormalised over the digits present; None if none is."""
    digits = {int(k.strip()): v for k, v in logprobs.items() if k.strip().isdigit() and int(k.strip()) <= scale}
    if not digits:
        return None
    top = max(digits.values())
    weights = {d: math.exp(lp - top) for d, lp in digits.items()}
    z = sum(weights.values())
    return sum(d * w for d, w in weights.items()) / z


_LINE = re.compile(r"^\s*(\d+)\s*[\t:]\s*(\d+)\s*$")


class LLMSimulator(Simulator):
    """Simulates windows for explanations with one LLM client and one LLM simulator method.

    prompt_name: the prompt file to use (default `simulate` for all_at_once, `simulate_text` for
    the others), e.g. another version kept beside it in prompts/."""

    def __init__(self, client: LLMClient, method: str, prompts_dir: str | None = None,
                 prompt_name: str | None = None):
        if method not in LLM_SIMULATORS:
            raise ValueError(f"not an LLM simulator: {method!r}")
        self.client, self.method = client, method
        name = prompt_name or ("simulate" if self.method == ALL_AT_ONCE else "simulate_text")
        self.prompt: Prompt = load_prompt(name, prompts_dir)
        self.scale = int(self.prompt["scale"])

    @property
    def version(self) -> str:
        return self.prompt.version

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        try:
            if self.method == ALL_AT_ONCE:
                return await self._all_at_once(explanation, tokens)
            return await self._numbered(explanation, tokens)
        except (LLMOutputError, LLMRequestError) as e:
            if is_fatal(e):
                raise
            return Simulation(predicted=None, failure=str(e), raw_text=getattr(e, "raw_text", None))

    async def _all_at_once(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        text, slots = all_at_once_prompt(self.prompt, explanation, tokens)
        digits = tuple(str(d) for d in range(self.scale + 1))
        result = await self.client.prompt_logprobs(PromptLogprobsRequest(prompt=text, slots=tuple(slots), candidates=digits))
        predicted = []
        for i, lp in enumerate(result.logprobs):
            value = expected_value(lp, self.scale) if lp else None
            if value is None:
                return Simulation(None, failure=f"no log-probabilities for the digits at token {i} ({tokens[i]!r}); "
                                                f"the server may return too few top log-probabilities")
            predicted.append(value)
        return Simulation(predicted)

    async def _numbered(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        use_logprobs = self.method == CHAT_LOGPROBS
        request = numbered_request(self.prompt, explanation, tokens, top_logprobs=5 if use_logprobs else 0)
        result = await self.client.chat(request)
        text = result.text
        values: list[float] = []
        offsets: list[int] = []  # character offset of each written value in `text`
        pos = 0
        for line in text.splitlines(keepends=True):
            m = _LINE.match(line.rstrip("\n"))
            if m:
                if int(m.group(1)) != len(values) + 1:
                    break
                values.append(float(min(int(m.group(2)), self.scale)))
                offsets.append(pos + m.start(2))
            elif line.strip():
                break
            pos += len(line)
        if len(values) != len(tokens):
            return Simulation(None, failure=f"the simulator's answer does not line up with the {len(tokens)} tokens "
                                            f"({len(values)} numbered lines read)", raw_text=text)
        if use_logprobs and result.tokens and result.top_logprobs:
            values = _read_expected_values(values, offsets, result.tokens, result.top_logprobs, self.scale)
        return Simulation(values)


def _read_expected_values(written: list[float], offsets: list[int], tokens: list[str],
                          top_logprobs: list[dict[str, float]], scale: int) -> list[float]:
    """At each written value, the expected digit under the token's top alternatives; where that
    token cannot be located (the server's tokens do not spell the text), the written value."""
    starts, pos = [], 0
    for tok in tokens:
        starts.append(pos)
        pos += len(tok)
    out = []
    j = 0
    for value, off in zip(written, offsets):
        while j + 1 < len(starts) and starts[j + 1] <= off:
            j += 1
        ev = expected_value(top_logprobs[j], scale) if j < len(top_logprobs) and top_logprobs[j] else None
        out.append(value if ev is None else ev)
    return out
