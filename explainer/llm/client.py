"""The LLM client: the one place every request to a language model passes through.

Two kinds of request cover the method (docs/method.md, "Explain" and "Simulate"):

- `ChatRequest`: messages in, generated text out, optionally with the top log-probabilities of
  each generated token (explanations; the chat and text simulators).
- `PromptLogprobsRequest`: a prompt is scored without generating; at given character offsets
  ("slots") the log-probabilities of a few candidate tokens ("0".."9") are returned (the
  all-at-once simulator).

A `Backend` sends requests: `explainer.llm.local.LocalBackend` runs llama.cpp in process,
`explainer.llm.openai_compat.OpenAIBackend` talks to any OpenAI-compatible server. Code that needs an
LLM holds an `LLMClient`, never a backend, so that limits, retries, caching and accounting sit
in one place (`LLMClient._send`).

    client = LLMClient(LocalBackend(), concurrency=1)
    result = asyncio.run(client.chat(ChatRequest(messages=(("user", "hi"),), max_tokens=8)))
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import tenacity

from sparse_model.errors import UserError

from .limit import AdaptiveLimit

# What a backend can do; simulators and explainers pick their method from these.
CHAT = "chat"  # generate text from messages
TOKEN_LOGPROBS = "token_logprobs"  # ... with top log-probabilities of each generated token
PROMPT_LOGPROBS = "prompt_logprobs"  # log-probabilities of prompt tokens (echo), no generation
PREFILL = "prefill"  # the reply can be started with a given prefix (raw prompt formatting)
SAMPLES = "samples"  # several sampled replies to one prompt in one request (ChatRequest.n)


class LLMError(UserError):
    """A request could not be answered (unreachable server, refused key, unknown model). One line,
    naming the endpoint and model, never the key."""


class LLMRequestError(LLMError):
    """A request failed at the HTTP level. `status` is the HTTP status (None: no answer at all);
    `retryable` says whether trying again later can help (timeouts, dropped connections, 408, 409,
    429, 5xx); `retry_after` is the server's Retry-After in seconds; `unreachable` means nothing
    listens at the address. The original SDK exception is the `__cause__`."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, unreachable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.unreachable = unreachable


def is_fatal(e: BaseException) -> bool:
    """Errors that end a job (every later request would fail the same way): a request the server
    refuses as such (400), a refused key (401/403), an unknown model or endpoint (404), a server
    nothing listens on, any other LLMError (bad set-up). Others (an exhausted retry on 429, 5xx,
    timeouts, dropped connections; unusable output) are recorded as the failure of one explanation
    or simulation, and the job goes on."""
    if isinstance(e, LLMRequestError):
        return e.unreachable or e.status in (400, 401, 403, 404)
    return isinstance(e, LLMError)


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
    n: int = 1  # replies wanted (n > 1 only for backends with SAMPLES)


@dataclass
class ChatResult:
    text: str  # the generated text, without the assistant_prefix (the first reply when n > 1)
    choices: list[str] | None = None  # every reply, when the request asked for n > 1
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
    max_samples: int = 1  # replies one request may ask for (ChatRequest.n), with SAMPLES

    def settings(self) -> dict[str, Any]:
        """What identifies this backend's answers (stored with every explanation; never a key)."""
        return {"backend": self.name, "model": self.model}

    async def probe(self, attempt=None) -> frozenset[str]:
        """Find out what the endpoint supports (servers override this); called once before a job.
        `attempt(f)`: how to run each request `f()` of the probe (the client's retry gate)."""
        return self.capabilities

    def probe_state(self) -> dict[str, Any]:
        """What `probe` found, to be cached (servers override this with more)."""
        return {"capabilities": sorted(self.capabilities)}

    def restore_probe(self, state: dict[str, Any]) -> None:
        self.capabilities = frozenset(state["capabilities"])

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
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a request is tried: at most `max_attempts` tries, each with `timeout` seconds; between
    tries the server's Retry-After if it sent one, else a random wait in [0, min(max_backoff,
    backoff·2^(n-1))] (exponential backoff with full jitter)."""

    max_attempts: int = 5
    timeout: float = 120.0
    backoff: float = 1.0
    max_backoff: float = 60.0

    def check(self) -> None:
        if self.max_attempts < 1:
            raise UserError(f"--max-attempts must be at least 1, got {self.max_attempts}")
        if not self.timeout > 0:
            raise UserError(f"--timeout must be a positive number of seconds, got {self.timeout:g}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise UserError("backoff times must not be negative")


def _retryable(e: BaseException) -> bool:
    if isinstance(e, LLMRequestError):
        return e.retryable
    return isinstance(e, LLMOutputError)  # garbage from the transport (non-JSON, truncated log-probs)


def estimate_tokens(text: str) -> int:
    """About 4 characters per token: used only when a server reports no usage."""
    return max(1, -(-len(text) // 4)) if text else 0


def _request_text(request: Any) -> str:
    if isinstance(request, ChatRequest):
        return "".join(c for _, c in request.messages) + request.assistant_prefix
    return getattr(request, "prompt", "")


@dataclass
class LLMClient:
    """Every LLM request goes through `_send`: the response cache, the concurrency limit, retries
    and accounting live here and nowhere else.

    cache: an `explainer.jobs.accounting.ResponseCache` (or None); ledger: an `accounting.Ledger`
    (or None) that records every request of a job.
    """

    backend: Backend
    concurrency: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache: Any = None
    ledger: Any = None
    usage: Usage = field(default_factory=Usage)
    sleep: Any = asyncio.sleep  # replaced in tests that check the waits

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise UserError(f"--concurrency must be at least 1, got {self.concurrency}")
        self.retry.check()
        ceiling = self.concurrency if self.backend.max_concurrency is None else \
            min(self.concurrency, self.backend.max_concurrency)
        timeout = getattr(self.backend, "timeout", None) or self.retry.timeout  # what a request may take
        self.limit = AdaptiveLimit(ceiling, timeout)  # requests in flight: adapts to the server

    @property
    def capabilities(self) -> frozenset[str]:
        return self.backend.capabilities

    @property
    def max_samples(self) -> int:
        return self.backend.max_samples

    def settings(self) -> dict[str, Any]:
        return self.backend.settings()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        e = state.outcome.exception() if state.outcome else None
        after = getattr(e, "retry_after", None)
        if after is not None:
            return float(after)
        cap = min(self.retry.max_backoff, self.retry.backoff * 2 ** (state.attempt_number - 1))
        return random.uniform(0, cap)

    def _account(self, method: str, request: Any, result: Any, seconds: float, cache_hit: bool, attempts: int,
                 error: str | None = None) -> None:
        prompt = getattr(result, "prompt_tokens", None)
        completion = getattr(result, "completion_tokens", None)
        estimated = False
        if result is not None and not cache_hit and prompt is None:
            prompt, estimated = estimate_tokens(_request_text(request)), True
        if result is not None and not cache_hit and completion is None and method == "chat":
            completion, estimated = estimate_tokens(result.text), True
        u = self.usage
        u.requests += 1
        u.cache_hits += cache_hit
        u.seconds += seconds
        if not cache_hit:
            u.prompt_tokens += prompt or 0
            u.completion_tokens += completion or 0
        if self.ledger is not None:
            self.ledger.record(method, cache_hit=cache_hit, prompt_tokens=prompt, completion_tokens=completion,
                               tokens_estimated=estimated, seconds=seconds, attempts=attempts, error=error)

    async def _send(self, method: str, request: Any) -> Any:
        endpoint = self.backend.settings()
        key = None
        if self.cache is not None:
            key = self.cache.key(endpoint, method, request)
            hit = self.cache.get(key, method)
            if hit is not None:
                self._account(method, request, hit, 0.0, True, 0)
                return hit
        result = await self._attempts(method, request, lambda: self._in_flight(getattr(self.backend, method), request))
        if self.cache is not None:
            self.cache.put(key, endpoint, method, result)
        return result

    async def _in_flight(self, send, request: Any) -> Any:
        """One attempt, in a slot of the adaptive limit (`limit.AdaptiveLimit`): at most `concurrency`
        requests in flight, fewer while the server answers slowly. A timeout, a 429 or a 5xx halves
        the limit; the wait before a retry holds no slot."""
        async with self.limit.slot() as slot:
            t0 = time.perf_counter()
            try:
                result = await send(request)
            except LLMRequestError as e:
                if e.retryable and not e.unreachable and (e.status is None or e.status == 429 or e.status >= 500):
                    slot.overloaded()
                raise
            slot.answered(time.perf_counter() - t0)
            return result

    async def _attempts(self, method: str, request: Any, call) -> Any:
        """`call()` under the retry policy, accounted once with its number of attempts."""
        attempts = 0
        t0 = time.perf_counter()
        try:
            async for attempt in tenacity.AsyncRetrying(
                    stop=tenacity.stop_after_attempt(self.retry.max_attempts), wait=self._wait,
                    retry=tenacity.retry_if_exception(_retryable), sleep=self.sleep, reraise=True):
                with attempt:
                    attempts += 1
                    result = await call()
        except (LLMError, LLMOutputError) as e:
            self._account(method, request, None, time.perf_counter() - t0, False, attempts, error=str(e))
            if isinstance(e, LLMOutputError) and method == "probe":  # garbage on every attempt: one line, stop
                raise LLMRequestError(f"the LLM server gave no usable answer to the capability probe after "
                                      f"{attempts} attempts ({e}); check the server, or raise --max-attempts") from e
            raise
        self._account(method, request, result, time.perf_counter() - t0, False, attempts)
        return result

    async def probe(self) -> frozenset[str]:
        """The backend's capabilities, each of the probe's requests through the same retry policy and
        accounting as every request: a transient fault (429, 5xx, a dropped connection, a malformed
        answer) is retried and can never change the capabilities. A cached probe of the same endpoint costs no request; only a
        completed (definite) probe is cached."""
        key = None
        if self.cache is not None:
            key = self.cache.key(self.backend.settings(), "probe", {})
            state = self.cache.get(key, "probe")
            if state is not None:
                self.backend.restore_probe(state)
                self._account("probe", {}, None, 0.0, True, 0)
                return self.backend.capabilities
        caps = await self.backend.probe(lambda call: self._attempts("probe", {}, call))
        if self.cache is not None:
            self.cache.put(key, self.backend.settings(), "probe", self.backend.probe_state())
        return caps

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await self._send("chat", request)

    async def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResult:
        return await self._send("prompt_logprobs", request)

    async def close(self) -> None:
        await self.backend.close()
