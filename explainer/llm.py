"""The LLM client: the one place every request to a language model passes through.

Two kinds of request cover the method (REFERENCE §2, §4):

- `ChatRequest`: messages in, generated text out, optionally with the top log-probabilities of
  each generated token (explanations; the chat and text simulators).
- `PromptLogprobsRequest`: a prompt is scored without generating; at given character offsets
  ("slots") the log-probabilities of a few candidate tokens ("0".."9") are returned (the
  all-at-once simulator).

A `Backend` sends requests: `explainer.llm_local.LocalBackend` runs llama.cpp in process,
`explainer.llm_openai.OpenAIBackend` talks to any OpenAI-compatible server. Code that needs an
LLM holds an `LLMClient`, never a backend, so that limits, retries, caching and accounting sit
in one place (`LLMClient._send`).

    client = LLMClient(LocalBackend(), concurrency=1)
    result = asyncio.run(client.chat(ChatRequest(messages=(("user", "hi"),), max_tokens=8)))
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from sparse_model.errors import UserError

# What a backend can do; simulators and explainers pick their method from these.
CHAT = "chat"  # generate text from messages
CHAT_LOGPROBS = "chat_logprobs"  # ... with top log-probabilities of each generated token
PROMPT_LOGPROBS = "prompt_logprobs"  # log-probabilities of prompt tokens (echo), no generation
PREFILL = "prefill"  # the reply can be started with a given prefix (raw prompt formatting)


class LLMError(UserError):
    """A request could not be answered (unreachable server, refused key, unknown model). One line,
    naming the endpoint and model, never the key."""


class LLMOutputError(Exception):
    """The LLM answered, but the answer cannot be used (malformed, misaligned, missing log-probs).
    Recorded as a failure of the one explanation or simulation, never a crash."""


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content), role in system|user|assistant
    max_tokens: int
    temperature: float = 0.0
    assistant_prefix: str = ""  # the reply starts with this text (backends with PREFILL only)
    stop: tuple[str, ...] = ()
    top_logprobs: int = 0  # > 0: return that many alternatives per generated token
    seed: int | None = None


@dataclass
class ChatResult:
    text: str  # the generated text, without the assistant_prefix
    tokens: list[str] | None = None  # generated tokens, when top_logprobs was asked
    top_logprobs: list[dict[str, float]] | None = None  # per generated token: alternative -> log-prob
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class PromptLogprobsRequest:
    prompt: str
    slots: tuple[int, ...]  # character offsets in `prompt`, increasing
    candidates: tuple[str, ...]  # the tokens whose log-probabilities are wanted at each slot
    top_logprobs: int = 20  # servers return only the top alternatives; the embedded model returns all candidates


@dataclass
class PromptLogprobsResult:
    # Per slot: candidate -> log-probability of that token starting at the slot (normalised over the
    # whole vocabulary); candidates outside the server's top alternatives are absent. None where the
    # slot does not fall on a token boundary.
    logprobs: list[dict[str, float] | None]
    prompt_tokens: int | None = None


class Backend:
    """Sends requests to one LLM. Subclasses set `name`, `model` and `capabilities`."""

    name: str = ""
    model: str = ""
    capabilities: frozenset[str] = frozenset()
    max_concurrency: int | None = None  # a hard limit of the backend itself (in-process: 1)

    def settings(self) -> dict[str, Any]:
        """What identifies this backend's answers (stored with every explanation; never a key)."""
        return {"backend": self.name, "model": self.model}

    async def probe(self) -> frozenset[str]:
        """Find out what the endpoint supports (servers override this); called once before a job."""
        return self.capabilities

    async def chat(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    async def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResult:
        raise NotImplementedError(f"the {self.name} backend cannot score prompt log-probabilities")

    async def close(self) -> None:
        pass


@dataclass
class Usage:
    """Running totals over one client's requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def add(self, prompt: int | None, completion: int | None, seconds: float) -> None:
        self.requests += 1
        self.prompt_tokens += prompt or 0
        self.completion_tokens += completion or 0
        self.seconds += seconds


@dataclass
class LLMClient:
    """Every LLM request goes through `_send`: the concurrency limit and accounting live here."""

    backend: Backend
    concurrency: int = 4
    usage: Usage = field(default_factory=Usage)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UserError(f"--concurrency must be at least 1, got {self.concurrency}")
        self._limit = self.concurrency if self.backend.max_concurrency is None else \
            min(self.concurrency, self.backend.max_concurrency)
        self._semaphore: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        return self.backend.capabilities

    def settings(self) -> dict[str, Any]:
        return self.backend.settings()

    async def _send(self, method: str, request: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:  # one semaphore per event loop
            self._semaphore, self._loop = asyncio.Semaphore(self._limit), loop
        async with self._semaphore:
            t0 = time.perf_counter()
            result = await getattr(self.backend, method)(request)
            completion = getattr(result, "completion_tokens", None)
            self.usage.add(result.prompt_tokens, completion, time.perf_counter() - t0)
            return result

    async def probe(self) -> frozenset[str]:
        return await self.backend.probe()

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self._send("chat", request)

    async def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResult:
        return await self._send("prompt_logprobs", request)

    async def close(self) -> None:
        await self.backend.close()


def make_client(backend: str = "local", model: str | None = None, base_url: str | None = None,
                concurrency: int | None = None, timeout: float = 120.0) -> LLMClient:
    """An `LLMClient` for `--backend local|openai` (the openai key comes from $OPENAI_API_KEY)."""
    if backend == "local":
        from .llm_local import LocalBackend
        return LLMClient(LocalBackend(model_path=model), concurrency=1 if concurrency is None else concurrency)
    if backend == "openai":
        from .llm_openai import OpenAIBackend
        return LLMClient(OpenAIBackend(model=model, base_url=base_url, timeout=timeout), concurrency=4 if concurrency is None else concurrency)
    raise UserError(f"unknown backend {backend!r}; choose local or openai")
