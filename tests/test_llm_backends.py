"""The LLM backends against real components: the in-process llama.cpp model (LocalBackend) and a real
OpenAI-compatible server (llama_cpp.server with the same GGUF file) for OpenAIBackend."""

from __future__ import annotations

import asyncio
import math
import socket
import threading

import openai
import pytest
from openai.types import Completion

from explainer.llm import (CHAT, TOKEN_LOGPROBS, PREFILL, PROMPT_LOGPROBS, ChatRequest, LLMError, LLMOutputError,
                           PromptLogprobsRequest)
from explainer.llm import LLMRequestError
from explainer.llm.openai_compat import OpenAIBackend
from llama_server import MODEL_ALIAS, free_port, server_available, skip_or_fail

DIGITS = tuple("0123456789")
COUNT = "Count:\none\t1\ntwo\t2\nthree\t3\n"
TAB_SLOTS = tuple(i + 1 for i, c in enumerate(COUNT) if c == "\t")  # right after each tab: the digit
TRUE_DIGITS = ("1", "2", "3")
MID_WORD = COUNT.index("three") + 2  # "th|ree": not a token boundary
TOLERANCE = 0.3  # nats, server vs in-process on the same GGUF file

def run(coro_fn, backend):
    """Run `coro_fn(backend)` in a fresh event loop and close the backend's HTTP client in that loop."""
    async def main():
        try:
            return await coro_fn(backend)
        finally:
            await backend.close()
    return asyncio.run(main())


def local_backend():
    why = server_available()
    if why:
        skip_or_fail(why)
    from explainer.llm.local import SMOLLM2, LocalBackend
    # The same GGUF file as the test server; llama.cpp threads spin-wait: on a busy 2-core machine 1 is faster.
    return LocalBackend(SMOLLM2, n_threads=1)


def one_line_llm_error(err: BaseException, *must_contain: str) -> str:
    msg = str(err)
    assert isinstance(err, LLMError)
    assert "\n" not in msg and "Traceback" not in msg
    for s in must_contain:
        assert s in msg, (s, msg)
    return msg


# ---- OpenAIBackend against llama_cpp.server -------------------------------------------------------


@pytest.mark.slow
def test_probe_and_chat(llama_server):
    async def go(b: OpenAIBackend):
        plain = await b.chat(ChatRequest(messages=(("user", "Name a colour."),), max_tokens=6, seed=1))
        with_lp = await b.chat(ChatRequest(messages=(("system", "Be brief."), ("user", "Say hello.")), max_tokens=4,
                                           top_logprobs=3, stop=("\n",)))
        return plain, with_lp

    b = OpenAIBackend(base_url=llama_server)  # no model: the server lists exactly one
    caps = asyncio.run(b.probe())  # probe in one event loop, chat in another (as a CLI would)
    plain, with_lp = run(go, b)
    # llama_cpp.server offers chat log-probs (of generated tokens) and echo log-probs; no prefill.
    assert caps == {CHAT, TOKEN_LOGPROBS, PROMPT_LOGPROBS} and PREFILL not in caps
    assert b.capabilities == caps and b.model == MODEL_ALIAS
    # For SmolLM2 (no BOS token) the server's echoed log-probs are shifted by one token; probe measured it.
    assert b._shift == 1
    assert b.settings() == {"backend": "openai", "model": MODEL_ALIAS, "base_url": llama_server}

    assert plain.text.strip() and plain.tokens is None and plain.top_logprobs is None
    assert plain.prompt_tokens > 0 and 0 < plain.completion_tokens <= 6

    assert with_lp.text.strip()
    assert len(with_lp.tokens) == len(with_lp.top_logprobs) == with_lp.completion_tokens
    assert "".join(with_lp.tokens) == with_lp.text
    for tok, alts in zip(with_lp.tokens, with_lp.top_logprobs):
        assert 0 < len(alts) <= 3 and all(v <= 0 for v in alts.values())
        assert max(alts, key=alts.get) == tok  # temperature 0: the most likely token was chosen


@pytest.mark.slow
def test_prompt_logprobs_server_matches_local(llama_server):
    slots = (*TAB_SLOTS, MID_WORD, len(COUNT))
    req = PromptLogprobsRequest(prompt=COUNT, slots=slots, candidates=DIGITS, top_logprobs=20)
    remote = run(lambda b: b.prompt_logprobs(req), OpenAIBackend(model=MODEL_ALIAS, base_url=llama_server))
    # The in-process backend cuts the prompt at every slot ("th" + "ree": 17 tokens instead of 15), which
    # changes the context of later slots; compare it on the same slots without the mid-word one.
    local_req = PromptLogprobsRequest(prompt=COUNT, slots=(*TAB_SLOTS, len(COUNT)), candidates=DIGITS)
    local = asyncio.run(local_backend().prompt_logprobs(local_req))
    assert remote.prompt_tokens == local.prompt_tokens == 15

    *tabs, mid, end = remote.logprobs
    assert mid is None  # "th|ree" is inside a token
    for i, (dist, truth) in enumerate(zip(tabs, TRUE_DIGITS)):
        assert dist and set(dist) <= set(DIGITS) and all(v <= 0 for v in dist.values()), dist
        if i > 0:  # after one example line the model continues the count
            assert max(dist, key=dist.get) == truth, dist
    assert end is not None and set(end) <= set(DIGITS)  # after the last newline: "four" (no digit in the top 20)

    # Same GGUF: the server's and the in-process log-probabilities agree wherever the server reports one.
    for slot, r, l in zip(local_req.slots, [*tabs, end], local.logprobs):
        assert set(l) == set(DIGITS)
        for c, v in r.items():
            assert abs(v - l[c]) < TOLERANCE, (slot, c, v, l[c])
        if r:
            assert max(r, key=r.get) == max(l, key=l.get), (slot, r, l)


def test_local_prompt_logprobs_are_valid():
    req = PromptLogprobsRequest(prompt=COUNT, slots=(*TAB_SLOTS, len(COUNT)), candidates=DIGITS)
    out = asyncio.run(local_backend().prompt_logprobs(req))
    assert out.prompt_tokens == 15 and len(out.logprobs) == len(req.slots)
    for i, dist in enumerate(out.logprobs):
        assert dist is not None and set(dist) == set(DIGITS)
        assert all(v <= 0 for v in dist.values())
        total = sum(math.exp(v) for v in dist.values())
        assert 0 < total <= 1 + 1e-9  # the digits share the vocabulary's probability mass
        renorm = {c: math.exp(v) / total for c, v in dist.items()}
        assert abs(sum(renorm.values()) - 1) < 1e-9 and all(0 <= p <= 1 for p in renorm.values())
        if 0 < i < len(TRUE_DIGITS):
            assert max(dist, key=dist.get) == TRUE_DIGITS[i]


@pytest.mark.slow
def test_unknown_model_name(llama_server):
    """llama_cpp.server answers any model name with its default model (no error); probe() catches it."""
    req = ChatRequest(messages=(("user", "Say hi."),), max_tokens=2)
    reply = run(lambda b: b.chat(req), OpenAIBackend(model="no-such-model", base_url=llama_server))
    assert reply.text and reply.completion_tokens

    with pytest.raises(LLMError) as info:
        run(lambda b: b.probe(), OpenAIBackend(model="no-such-model", base_url=llama_server))
    one_line_llm_error(info.value, "no-such-model", llama_server, MODEL_ALIAS, "--model")


@pytest.mark.slow
def test_http_error_status_is_kept(llama_server):
    """A request the server rejects (unknown role) is one line with the HTTP status. llama_cpp.server
    answers request validation errors with 500, not 422, so the error counts as retryable (5xx)."""
    req = ChatRequest(messages=(("wizard", "hi"),), max_tokens=1)
    with pytest.raises(LLMRequestError) as info:
        run(lambda b: b.chat(req), OpenAIBackend(model=MODEL_ALIAS, base_url=llama_server))
    msg = one_line_llm_error(info.value, llama_server, MODEL_ALIAS, "HTTP 500", "validation error")
    assert info.value.status == 500 and info.value.retryable and len(msg) < 450
    assert isinstance(info.value.__cause__, openai.APIStatusError)


# ---- errors without a server ----------------------------------------------------------------------

SECRET = "sk-test-SECRET-123"


def test_unreachable_server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    base_url = f"http://127.0.0.1:{free_port()}/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    b = OpenAIBackend(model="m")
    assert b.base_url == base_url
    assert SECRET not in repr(b) and SECRET not in str(b.settings())
    for call in (lambda b: b.probe(),
                 lambda b: b.chat(ChatRequest(messages=(("user", "hi"),), max_tokens=1)),
                 lambda b: b.prompt_logprobs(PromptLogprobsRequest(COUNT, TAB_SLOTS, DIGITS))):
        with pytest.raises(LLMError) as info:
            run(call, OpenAIBackend(model="m"))
        msg = one_line_llm_error(info.value, base_url, "--base-url")
        assert SECRET not in msg
        assert info.value.status is None and info.value.retryable
        assert isinstance(info.value.__cause__, openai.APIConnectionError)


def test_probe_without_model_or_server(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert b.model == "" and b.settings()["base_url"].startswith("http://127.0.0.1:")
    with pytest.raises(LLMError):
        run(lambda b: b.probe(), b)


def test_timeout_is_one_line_and_retryable():
    """A server that accepts the connection but never answers."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        base_url = f"http://127.0.0.1:{srv.getsockname()[1]}/v1"
        held: list[socket.socket] = []
        stop = threading.Event()

        def accept():
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    held.append(srv.accept()[0])
                except OSError:
                    pass

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        try:
            with pytest.raises(LLMRequestError) as info:
                run(lambda b: b.chat(ChatRequest(messages=(("user", "hi"),), max_tokens=1)),
                    OpenAIBackend(model="m", base_url=base_url, api_key=SECRET, timeout=0.5))
        finally:
            stop.set()
            t.join()
            for c in held:
                c.close()
    msg = one_line_llm_error(info.value, base_url, "0.5 s")
    assert SECRET not in msg and info.value.retryable and isinstance(info.value.__cause__, openai.APITimeoutError)


def test_missing_echo_logprobs_is_an_output_error():
    """A server that ignores echo/logprobs (answers with plain text) cannot score prompts."""
    b = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1")
    plain = Completion.model_validate({"id": "x", "object": "text_completion", "created": 0, "model": "m",
                                       "choices": [{"index": 0, "text": "four", "finish_reason": "length",
                                                    "logprobs": None}]})
    with pytest.raises(LLMOutputError, match="no prompt log-probabilities"):
        b._echo_logprobs(plain, COUNT)
    no_echo = Completion.model_validate({"id": "x", "object": "text_completion", "created": 0, "model": "m",
                                         "choices": [{"index": 0, "text": "four", "finish_reason": "length",
                                                      "logprobs": {"tokens": ["four"], "text_offset": [len(COUNT)],
                                                                   "token_logprobs": [-0.5],
                                                                   "top_logprobs": [{"four": -0.5}]}}]})
    with pytest.raises(LLMOutputError, match="did not echo"):
        b._echo_logprobs(no_echo, COUNT)
    asyncio.run(b.close())
