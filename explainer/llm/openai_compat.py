"""An LLM behind any OpenAI-compatible HTTP API: OpenAI itself, vLLM, llama.cpp's server
(`python -m llama_cpp.server`), and the like.

Chat goes through `chat.completions`. Chat APIs return log-probabilities only for generated tokens
(TOKEN_LOGPROBS), never for the prompt, and cannot start the reply with a given prefix (no PREFILL).
Prompt scoring (PROMPT_LOGPROBS) uses the legacy `completions` endpoint with `echo=True` and
`logprobs=N`, which vLLM and llama.cpp's server support and OpenAI's current models do not.
`probe()` finds out which of these the server offers.

    backend = OpenAIBackend(base_url="http://127.0.0.1:8000/v1")
    await backend.probe()          # resolves the model, sets backend.capabilities
    client = LLMClient(backend)

What llama_cpp.server (llama-cpp-python 0.3.36) returns for `echo=True, logprobs=N`, measured:

- `text_offset` counts characters of the decoded text (Python `len` of the detokenized prefix, bytes
  of an incomplete UTF-8 character dropped), not bytes: offsets agree with `str` indices of the
  prompt for ASCII and whole characters.
- `top_logprobs[0]` (and `token_logprobs[0]`) is None, as in OpenAI's API.
- For a model that adds no BOS token (SmolLM2), entry i holds the distribution that predicts token
  i + 1 rather than token i: the server pairs token i with the logits computed *after* token i. Each
  dict is still a correct distribution (its extra entry `tokens[i]` is the log-probability of that
  text as the *next* token), only shifted by one; the real distribution of token 1 is lost (set to
  None) and the generated token is missing. Models with a BOS token are aligned as in OpenAI's API.
  `probe()` therefore measures the alignment on a short repetitive prompt (`_detect_shift`), and
  `prompt_logprobs` reads the entry of token j - shift for the token j that starts at a slot.
- The echo path is slow (it sorts the whole vocabulary in Python for every prompt token: about
  60 ms per token here), so prompts should be short.
- `max_tokens=0` with echo makes the server generate until the context is full; we send 1.
- Unknown model names are served by the default model without an error (the reply's `model` field
  just echoes the name); `probe()` therefore checks the name against the server's model list.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import openai  # imported where it is used: the SDK takes about a second to import, and most commands never need it

from .client import (CHAT, PROMPT_LOGPROBS, TOKEN_LOGPROBS, Backend, ChatRequest, ChatResult, LLMError, LLMRequestError,
                  LLMOutputError, PromptLogprobsRequest, PromptLogprobsResult)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"  # local servers need no key, but the SDK insists on one

# Statuses with which a server says "I do not offer this" to an optional feature during probe().
# Statuses that say "this server does not offer that" for certain. A 500 is not one of them: it is a
# server error, retried like any other, so a transient fault can never switch a capability off.
_UNSUPPORTED = frozenset({400, 404, 405, 422, 501})


async def _once(call):
    return await call()
# Statuses worth retrying (LLMClient's retry policy reads `LLMRequestError.retryable`).
_RETRYABLE = frozenset({408, 409, 429})

# A short prompt that even a tiny model predicts well token by token, to measure how the server aligns
# echoed log-probabilities with tokens (SmolLM2-135M: the best guess of 7 of 13 entries is the next
# letter, none is the letter itself; a repeated list of colour words did not work).
_CALIBRATION = "A B C D E F G H I J K L M N"


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0):
        self.model = model or ""
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self._secret = api_key or os.environ.get("OPENAI_API_KEY") or ""  # never shown; "" -> NO_KEY
        self.timeout = timeout
        self.capabilities = frozenset()
        self._shift: int | None = None  # alignment of echoed log-probs, see the module docstring
        self._sdk: openai.AsyncOpenAI | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shift_lock: asyncio.Lock | None = None

    @property
    def _client(self) -> openai.AsyncOpenAI:
        """The SDK client of the running event loop. Its HTTP connections belong to one loop, so a
        backend used from several `asyncio.run` calls (probe, then a job) gets a new client per loop."""
        import openai

        loop = asyncio.get_running_loop()
        if self._sdk is None or self._loop is not loop:
            self._sdk = openai.AsyncOpenAI(api_key=self._secret or NO_KEY, base_url=self.base_url,
                                           timeout=self.timeout, max_retries=0)
            self._loop, self._shift_lock = loop, asyncio.Lock()
        return self._sdk

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}

    # ---- errors ------------------------------------------------------------------------------

    def _clean(self, text: str) -> str:
        text = " ".join(str(text).split())  # one line
        if self._secret:
            text = text.replace(self._secret, "***")
        return text[:300]

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn the SDK's exceptions into one-line `LLMRequestError`s naming the endpoint and model."""
        import openai

        where = f"{self.base_url} (model {self.model or '?'})"
        try:
            yield
        except openai.APITimeoutError as e:
            raise LLMRequestError(f"the LLM server at {where} did not answer the {what} request within "
                                  f"{self.timeout:g} s: check that it is running, or raise --timeout",
                                  None, True) from e
        except openai.APIConnectionError as e:
            cause = e.__cause__
            if cause is not None and type(cause).__name__ in ("ConnectError", "ConnectTimeout"):
                raise LLMRequestError(f"cannot reach the LLM server at {self.base_url}: start it or pass --base-url "
                                      f"({self._clean(cause)})", None, True, unreachable=True) from e
            raise LLMRequestError(f"the LLM server at {where} dropped the connection during the {what} request "
                                  f"({self._clean(cause or e)})", None, True) from e
        except (openai.AuthenticationError, openai.PermissionDeniedError) as e:
            raise LLMRequestError(f"the LLM server at {where} refused the API key (HTTP {e.status_code}): "
                                  f"check OPENAI_API_KEY", e.status_code, False) from e
        except openai.NotFoundError as e:
            raise LLMRequestError(f"model {self.model or '?'} not found at {self.base_url} ({what}: "
                                  f"{self._status_message(e)}): pass a served name with --model, or check --base-url",
                                  404, False) from e
        except openai.APIStatusError as e:
            status = e.status_code
            raise LLMRequestError(f"the LLM server at {where} answered the {what} request with HTTP {status}: "
                                  f"{self._status_message(e)}", status,
                                  status in _RETRYABLE or status >= 500,
                                  retry_after=_retry_after(e.response.headers.get("retry-after"))) from e
        except openai.APIResponseValidationError as e:
            raise LLMOutputError(f"the LLM server at {where} sent an unreadable {what} response: "
                                 f"{self._clean(e)}") from e
        except ValueError as e:  # a 200 answer whose body is not JSON (json.JSONDecodeError)
            raise LLMOutputError(f"the LLM server at {where} sent a {what} response that is not JSON: "
                                 f"{self._clean(e)}") from e

    def _status_message(self, e: openai.APIStatusError) -> str:
        body = e.body
        msg: Any = None
        if isinstance(body, dict):
            err = body.get("error", body)
            msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        return self._clean(msg or e.message)

    # ---- probing -----------------------------------------------------------------------------

    async def _list_models(self) -> list[str] | None:
        """The server's model ids, or None when it has no model list."""
        try:
            with self._errors("model list"):
                page = await self._client.models.list()
        except LLMRequestError as e:
            if e.status in _UNSUPPORTED:
                return None
            raise
        return [m.id for m in page.data]

    async def _resolve_model(self) -> None:
        names = await self._list_models()
        if not self.model:
            if names is not None and len(names) == 1:
                self.model = names[0]
                return
            offered = f"it offers {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}" if names \
                else "it lists no models"
            raise LLMError(f"pass --model to choose the model at {self.base_url} ({offered})")
        # Some servers (llama_cpp.server) silently answer unknown names with their default model,
        # which would store results under the wrong name: check the name when the server lists models.
        if names and self.model not in names:
            raise LLMError(f"model {self.model} not found at {self.base_url}; it offers "
                           f"{', '.join(names[:5])}{', ...' if len(names) > 5 else ''}: pass one with --model")

    async def _optional(self, what: str, call) -> Any:
        """Run a probe request for an optional feature; None only when the server definitely rejects
        the feature (an "unsupported" status). Anything else (a transient status, a dropped
        connection, an answer that is not JSON) raises, so `LLMClient.probe` retries the probe."""
        try:
            with self._errors(what):
                return await call
        except LLMRequestError as e:
            if e.status in _UNSUPPORTED:
                return None
            raise

    def probe_state(self) -> dict[str, Any]:
        return {"model": self.model, "capabilities": sorted(self.capabilities), "shift": self._shift}

    def restore_probe(self, state: dict[str, Any]) -> None:
        # Probes cached before the capability was renamed say "chat_logprobs" (now a simulator's name only).
        caps = {TOKEN_LOGPROBS if c == "chat_logprobs" else c for c in state["capabilities"]}
        self.model, self.capabilities, self._shift = state["model"], frozenset(caps), state["shift"]

    async def probe(self, attempt=None) -> frozenset[str]:
        """Resolve the model and find out what the server can do (a few tiny requests). `attempt(f)`
        runs each request `f()` (`LLMClient.probe` passes its retry gate, so every request of the
        probe is retried on its own); without it each runs once."""
        attempt = attempt or _once
        await attempt(self._resolve_model)
        messages = [{"role": "user", "content": "Say OK."}]

        async def plain() -> None:
            with self._errors("chat"):
                await self._client.chat.completions.create(model=self.model, messages=messages, max_tokens=1,
                                                           temperature=0)

        async def chat_logprobs() -> bool:
            reply = await self._optional("chat log-probabilities", self._client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=1, temperature=0, logprobs=True, top_logprobs=2))
            if reply is None or not reply.choices:
                return False
            lp = reply.choices[0].logprobs
            content = getattr(lp, "content", None) if lp is not None else None
            return bool(content and content[0].top_logprobs)

        async def echo():
            echoed = await self._optional("prompt log-probabilities", self._echo(_CALIBRATION, 1))
            lp = echoed.choices[0].logprobs if echoed is not None and echoed.choices else None
            if lp is None or lp.top_logprobs is None:  # a well-formed answer without them is a clear no
                return None
            tokens, _, tops = self._echo_logprobs(echoed, _CALIBRATION)  # misaligned: raises, retried
            return (tokens, tops) if any(t for t in tops) else None

        await attempt(plain)
        caps = {CHAT}
        if await attempt(chat_logprobs):
            caps.add(TOKEN_LOGPROBS)
        found = await attempt(echo)
        if found is not None:
            caps.add(PROMPT_LOGPROBS)
            self._shift = _detect_shift(*found)
        self.capabilities = frozenset(caps)
        # probe() usually runs in an event loop of its own (before a job's): drop its connections now
        # rather than leave them to a loop that is about to close; the next request opens new ones.
        await self.close()
        return self.capabilities

    # ---- chat ----------------------------------------------------------------------------------

    async def chat(self, req: ChatRequest) -> ChatResult:
        # req.assistant_prefix is ignored: chat APIs cannot start the reply (no PREFILL); callers that
        # lack PREFILL ask for the prefix in words.
        if not self.model:
            await self._resolve_model()
        kwargs: dict[str, Any] = dict(model=self.model, messages=[{"role": r, "content": c} for r, c in req.messages],
                                      max_tokens=req.max_tokens, temperature=req.temperature)
        if req.stop:
            kwargs["stop"] = list(req.stop)
        if req.seed is not None:
            kwargs["seed"] = req.seed
        if req.top_logprobs > 0:
            kwargs.update(logprobs=True, top_logprobs=req.top_logprobs)
        with self._errors("chat"):
            out = await self._client.chat.completions.create(**kwargs)
        if not out.choices:
            raise LLMOutputError(f"the LLM server at {self.base_url} returned no choices for a chat request")
        choice = out.choices[0]
        tokens = tops = None
        if req.top_logprobs > 0:
            content = choice.logprobs.content if choice.logprobs is not None else None
            if content is None:
                raise LLMOutputError(f"the LLM server at {self.base_url} (model {self.model}) returned no "
                                     f"log-probabilities for a chat reply")
            tokens = [t.token for t in content]
            tops = [{alt.token: alt.logprob for alt in (t.top_logprobs or [])} for t in content]
        usage = out.usage
        return ChatResult(text=choice.message.content or "", tokens=tokens, top_logprobs=tops,
                          prompt_tokens=usage.prompt_tokens if usage else None,
                          completion_tokens=usage.completion_tokens if usage else None)

    # ---- prompt scoring ------------------------------------------------------------------------

    def _echo(self, prompt: str, top: int):
        # max_tokens=1: llama_cpp.server treats 0 as "until the context is full".
        return self._client.completions.create(model=self.model, prompt=prompt, echo=True, logprobs=top,
                                               max_tokens=1, temperature=0)

    def _echo_logprobs(self, out, prompt: str) -> tuple[list[str], list[int], list[dict[str, float] | None]]:
        """tokens, text offsets and top log-prob dicts of an echoed completion."""
        where = f"the LLM server at {self.base_url} (model {self.model})"
        lp = out.choices[0].logprobs if out.choices else None
        if lp is None or lp.top_logprobs is None or lp.text_offset is None or lp.tokens is None:
            raise LLMOutputError(f"{where} returned no prompt log-probabilities (needs echo with logprobs, "
                                 f"which vLLM and llama.cpp's server support)")
        tokens, offsets, tops = list(lp.tokens), list(lp.text_offset), list(lp.top_logprobs)
        if not (len(tokens) == len(offsets) == len(tops)):
            raise LLMOutputError(f"{where} returned misaligned prompt log-probabilities "
                                 f"({len(tokens)} tokens, {len(offsets)} offsets, {len(tops)} log-prob entries)")
        if prompt and (not offsets or offsets[0] != 0):
            raise LLMOutputError(f"{where} did not echo the prompt with its log-probabilities")
        return tokens, offsets, tops

    async def _alignment(self) -> int:
        if self._shift is None:
            self._client  # noqa: B018  (binds the lock to this loop)
            assert self._shift_lock is not None
            async with self._shift_lock:
                if self._shift is None:
                    with self._errors("prompt log-probabilities"):
                        out = await self._echo(_CALIBRATION, 1)
                    tokens, _, tops = self._echo_logprobs(out, _CALIBRATION)
                    self._shift = _detect_shift(tokens, tops)
        return self._shift

    async def prompt_logprobs(self, req: PromptLogprobsRequest) -> PromptLogprobsResult:
        if not self.model:
            await self._resolve_model()
        shift = await self._alignment()
        with self._errors("prompt log-probabilities"):
            out = await self._echo(req.prompt, req.top_logprobs)
        tokens, offsets, tops = self._echo_logprobs(out, req.prompt)
        # offset -> the distribution of the token that starts there (first token at that offset wins:
        # a character split over several tokens gives later pieces the same offset).
        at: dict[int, dict[str, float] | None] = {}
        for j, off in enumerate(offsets):
            if off > len(req.prompt):
                break
            if j - shift >= 0:
                at.setdefault(off, tops[j - shift])
        if shift and offsets and offsets[-1] < len(req.prompt):
            # the last entry predicts the token after the echoed ones (the generated one, not listed)
            at.setdefault(offsets[-1] + len(tokens[-1]), tops[-1])
        wanted = set(req.candidates)
        result: list[dict[str, float] | None] = []
        for slot in req.slots:
            dist = at.get(slot)
            result.append(None if dist is None else {t: float(v) for t, v in dist.items() if t in wanted})
        usage = out.usage
        return PromptLogprobsResult(logprobs=result, prompt_tokens=usage.prompt_tokens if usage else None)

    async def close(self) -> None:
        sdk, loop, self._sdk, self._loop = self._sdk, self._loop, None, None
        if sdk is not None and loop is asyncio.get_running_loop():  # another loop's connections died with it
            await sdk.close()


def _detect_shift(tokens: list[str], tops: list[dict[str, float] | None]) -> int:
    """0 when entry i of the echoed log-probs is the distribution of token i (OpenAI's convention),
    1 when it predicts token i + 1 (llama_cpp.server with a model that has no BOS token). Counts on
    the calibration prompt how often each entry's most likely token is token i, or token i + 1."""
    hits = [0, 0]
    for i, dist in enumerate(tops):
        if not dist:
            continue
        best = max(dist, key=dist.get)
        for s in (0, 1):
            if i + s < len(tokens) and best == tokens[i + s]:
                hits[s] += 1
    return 1 if hits[1] > hits[0] else 0


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds; HTTP dates are not used by LLM servers)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
