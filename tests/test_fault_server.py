"""The fake fault-injecting server (tests/fault_server.py), checked through our real client: its normal
answers are accepted like a correct server's, and each fault reaches the client as it claims."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from explainer.explain import Explainer
from explainer.llm import (CHAT, TOKEN_LOGPROBS, PROMPT_LOGPROBS, ChatRequest, LLMClient, LLMError, LLMOutputError,
                           PromptLogprobsRequest)
from explainer.llm import LLMRequestError
from explainer.llm.openai_compat import OpenAIBackend
from explainer.prompts import all_at_once_prompt, load_prompt, show_token
from explainer.simulators import make_simulator
from fault_server import MODEL, FaultServer, digit_for, tokenize

KEY = "sk-fake-test-key-0123"
DIGITS = tuple("0123456789")
TOKENS = ["a", " b", "\n", "def", " return", "(", "x", "'):\n", " 42", "\t"]
HI = ChatRequest(messages=(("user", "hi"),), max_tokens=4)


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


def backend_for(server: FaultServer, timeout: float = 5.0, model: str | None = MODEL) -> OpenAIBackend:
    return OpenAIBackend(model=model, base_url=server.base_url, api_key=KEY, timeout=timeout)


def run(backend: OpenAIBackend, coro_fn):
    """`coro_fn()` in a fresh event loop, closing the backend's HTTP client in that loop."""
    async def main():
        try:
            return await coro_fn()
        finally:
            await backend.close()
    return asyncio.run(main())


def echo_request(tokens=("a", " b", "\n")) -> PromptLogprobsRequest:
    text, slots = all_at_once_prompt(load_prompt("simulate"), "x", list(tokens))
    return PromptLogprobsRequest(prompt=text, slots=tuple(slots), candidates=DIGITS)


def failure(backend: OpenAIBackend, coro_fn) -> BaseException:
    async def go():
        try:
            await coro_fn()
        except Exception as e:  # noqa: BLE001
            return e
        raise AssertionError("the request succeeded despite the fault")
    return run(backend, go)


# ---- normal answers ------------------------------------------------------------------------------


def test_probe_detects_all_capabilities_and_records_the_key(server):
    backend = backend_for(server, model=None)
    caps = run(backend, backend.probe)
    assert caps == {CHAT, TOKEN_LOGPROBS, PROMPT_LOGPROBS}
    assert backend.model == MODEL and backend._shift == 0
    assert server.count("/v1/models") == 1 and server.count("chat/completions") == 2
    assert server.count("/completions") == 1 and server.count(kind="echo") == 1
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
    assert all(r.status == 200 and r.fault == "ok" for r in server.requests)
    posted = [r for r in server.requests if r.method == "POST"]
    assert all(json.loads(r.raw_body) == r.body for r in posted)


def test_tokens_start_after_every_tab():
    text = "x\tunknown\n  a b\t7\n"
    toks = tokenize(text)
    assert "".join(toks) == text
    starts = {sum(map(len, toks[:i])) for i in range(len(toks))}
    assert {i + 1 for i, c in enumerate(text) if c == "\t"} <= starts


def test_echo_gives_digit_dicts_at_every_slot(server):
    backend = backend_for(server)
    req = echo_request()
    result = run(backend, lambda: backend.prompt_logprobs(req))
    assert len(result.logprobs) == 3 and result.prompt_tokens > 100
    for tok, dist in zip(["a", " b", "\n"], result.logprobs):
        assert dist is not None and set(dist) == set(DIGITS)
        assert max(dist, key=dist.get) == str(digit_for(show_token(tok)))
    body = server.requests[-1].body
    assert body["echo"] is True and body["logprobs"] == 20


def test_simulators_and_explainer_accept_normal_answers(server):
    backend = backend_for(server)
    client = LLMClient(backend)
    records = [{"tokens": ["x", " =", " 'a'", "\n"], "activations": [0.0, 0.0, 3.0, 0.0]}]

    async def go():
        await client.probe()
        sims = {m: await make_simulator(client, m).simulate("quotes", TOKENS)
                for m in ("all_at_once", "chat_logprobs", "text")}
        explained = await Explainer(client, prompt_name="explain").explain(records, k=2)
        chat = await client.chat(ChatRequest(messages=(("user", "1\ta\n2\tb"),), max_tokens=50, top_logprobs=5))
        return sims, explained, chat

    sims, explained, chat = run(backend, go)
    want = [digit_for(show_token(t)) for t in TOKENS]
    assert len(set(want)) > 1  # the fake's predictions are not constant
    for method, sim in sims.items():
        assert sim.failure is None, (method, sim.failure)
        assert [round(v) for v in sim.predicted] == want, method
    assert "".join(chat.tokens) == chat.text == f"1\t{digit_for('a')}\n2\t{digit_for('b')}"
    assert chat.completion_tokens == len(chat.tokens) and chat.prompt_tokens
    assert set(chat.top_logprobs[2]) <= set(DIGITS) and len(chat.top_logprobs[2]) == 5
    examples = {ex["explanation"] for ex in load_prompt("explain")["examples"]}
    for cand in explained:
        assert cand.failure is None and cand.text.startswith('tokens like "\'a\'"') and cand.text not in examples
    assert server.count(kind="explain") == 2
    assert server.count(kind="simulate-chat") == 3  # two simulators and the direct chat


def test_unknown_model_and_fault_names(server):
    backend = backend_for(server, model="other-model")
    with pytest.raises(LLMError, match="not found"):
        run(backend, backend.probe)
    err = failure(backend, lambda: backend.chat(HI))
    assert isinstance(err, LLMRequestError) and err.status == 404
    with pytest.raises(ValueError, match="unknown fault"):
        server.script(["ok", "explode"])
    with pytest.raises(ValueError):
        server.add_rule("hang:soon")
    assert server.scripted == []


# ---- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault,status,retryable", [
    ("429", 429, True), ("500", 500, True), ("503", 503, True),
    ("401", 401, False), ("404", 404, False), ("400", 400, False),
])
def test_status_faults(server, fault, status, retryable):
    backend = backend_for(server)
    server.script([fault])
    err = failure(backend, lambda: backend.chat(HI))
    assert isinstance(err, LLMRequestError) and (err.status, err.retryable) == (status, retryable)
    assert KEY not in str(err) and "\n" not in str(err)
    assert [(r.fault, r.status) for r in server.requests] == [(fault, status)]
    assert run(backend, lambda: backend.chat(HI)).text == "OK"  # the script is used up


def test_retry_after_header(server):
    backend = backend_for(server)
    server.script(["429-retry-after:2", "429"])
    first = failure(backend, lambda: backend.chat(HI))
    second = failure(backend, lambda: backend.chat(HI))
    assert first.status == second.status == 429 and first.retryable
    assert first.__cause__.response.headers.get("retry-after") == "2"
    assert second.__cause__.response.headers.get("retry-after") is None


@pytest.mark.parametrize("fault,status", [("drop", 200), ("disconnect", None)])
def test_connection_faults(server, fault, status):
    backend = backend_for(server)
    server.script([fault])
    err = failure(backend, lambda: backend.chat(HI))
    assert isinstance(err, LLMRequestError) and err.status is None and err.retryable
    assert [(r.fault, r.status) for r in server.requests] == [(fault, status)]


def test_hang_times_out_without_blocking_others_or_stop():
    with FaultServer(hang_seconds=30, max_concurrent=1) as server:  # a hang holds no slot
        server.add_rule("hang", contains="HANG")
        backend = backend_for(server, timeout=1.0)

        async def go():
            async def timed(req):
                t0 = time.monotonic()
                try:
                    return await backend.chat(req), time.monotonic() - t0
                except Exception as e:  # noqa: BLE001
                    return e, time.monotonic() - t0
            return await asyncio.gather(timed(ChatRequest(messages=(("user", "HANG"),), max_tokens=4)), timed(HI))

        (err, hang_s), (ok, ok_s) = run(backend, go)
        assert isinstance(err, LLMRequestError) and err.status is None and err.retryable
        assert "did not answer" in str(err) and 0.9 < hang_s < 4
        assert ok.text == "OK" and ok_s < 0.9  # answered while the other request hangs
        assert server.in_flight == 1  # the fake still hangs on that request
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 2  # stopping does not wait for the hang
    hung = [r for r in server.requests if r.fault == "hang"]
    assert len(hung) == 1 and hung[0].status is None


def test_malformed_json_is_sent(server):
    server.script(["malformed-json"])
    req = urllib.request.Request(server.base_url + "/chat/completions", method="POST",
                                 data=json.dumps({"model": MODEL, "messages": []}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "application/json"
        raw = resp.read()
    with pytest.raises(ValueError):
        json.loads(raw)


def test_malformed_json_reaches_the_client_as_output_error(server):
    backend = backend_for(server)
    server.script(["malformed-json"])
    err = failure(backend, lambda: backend.chat(HI))
    assert isinstance(err, LLMOutputError), repr(err)


def test_logprob_and_text_faults(server):
    backend = backend_for(server)
    run(backend, backend.probe)  # measures the alignment once, so scripted faults hit the real requests
    server.reset()
    logprob_chat = ChatRequest(messages=(("user", "1\ta\n2\tb\n3\tc"),), max_tokens=50, top_logprobs=5)
    client = LLMClient(backend)
    client_caps = backend.capabilities

    async def go():
        out = {}
        for fault in ("missing-logprobs", "truncated-logprobs", "misaligned-text", "no-choices"):
            server.script([fault, fault])
            for name, call in (("echo", lambda: backend.prompt_logprobs(echo_request())),
                               ("chat", lambda: backend.chat(logprob_chat))):
                try:
                    out[fault, name] = await call()
                except Exception as e:  # noqa: BLE001
                    out[fault, name] = e
        server.script(["misaligned-text"])
        out["sim"] = await make_simulator(client, "text").simulate("x", ["a", "b", "c"])
        return out

    out = run(backend, go)
    assert client_caps == {CHAT, TOKEN_LOGPROBS, PROMPT_LOGPROBS}
    for fault in ("missing-logprobs", "truncated-logprobs", "misaligned-text", "no-choices"):
        assert isinstance(out[fault, "echo"], LLMOutputError), (fault, out[fault, "echo"])
    assert "misaligned" in str(out["truncated-logprobs", "echo"])
    assert isinstance(out["missing-logprobs", "chat"], LLMOutputError)
    assert isinstance(out["no-choices", "chat"], LLMOutputError)
    truncated = out["truncated-logprobs", "chat"]
    assert len(truncated.tokens) < len(tokenize(truncated.text))
    assert out["misaligned-text", "chat"].text.count("\n") == 1  # two lines for three tokens
    assert out["sim"].predicted is None and "line up" in out["sim"].failure
    assert [r.fault for r in server.requests][-1] == "misaligned-text"


def test_rules_and_script_order(server):
    backend = backend_for(server)
    marked = ChatRequest(messages=(("user", "NODE-7 please"),), max_tokens=4)
    server.add_rule("500", contains="NODE-7")
    every = server.add_rule("503", path="/chat/completions", every=3)
    server.script(["429"], path="/v1/completions")  # not consumed by chat requests
    server.script(["401"])

    async def go():
        results = []
        for req in (marked, HI, HI, marked, HI, HI, HI):
            try:
                results.append((await backend.chat(req)).text)
            except LLMRequestError as e:
                results.append(e.status)
        return results

    # every=3 counts the chat requests the marker rule left over: HI, HI, HI(3rd -> 503), HI, HI
    assert run(backend, go) == [500, 401, "OK", 500, 503, "OK", "OK"]
    assert server.scripted == ["429"] and every.applied == 1
    server.remove_rule(every)
    server.clear_faults()
    assert server.scripted == [] and run(backend, lambda: backend.chat(marked)).text == "OK"
    assert server.count(fault="500") == 2 and server.count() == 8
    server.reset()
    assert server.count() == 0 and server.requests == [] and server.max_in_flight == 0


def test_counts_concurrency_and_latency():
    with FaultServer(latency=0.15) as server:
        backend = backend_for(server)
        client = LLMClient(backend, concurrency=3)
        t0 = time.monotonic()
        run(backend, lambda: asyncio.gather(*(client.chat(HI) for _ in range(9))))
        elapsed = time.monotonic() - t0
        assert server.count("/v1/chat/completions") == 9 == client.usage.requests
        assert server.max_in_flight == 3  # the client's limit, reached and respected
        assert all(r.seconds >= 0.15 for r in server.requests)
        assert elapsed >= 0.45  # three rounds of three


def test_server_side_concurrency_limit():
    with FaultServer(latency=0.1, max_concurrent=2) as server:
        backend = backend_for(server)
        client = LLMClient(backend, concurrency=6)
        t0 = time.monotonic()
        # the client's limit starts at 1 and grows while answers come fast (explainer/llm/limit.py)
        run(backend, lambda: asyncio.gather(*(client.chat(HI) for _ in range(24))))
        elapsed = time.monotonic() - t0
        assert server.max_in_flight == 6 and server.max_active == 2
        assert elapsed >= 1.2  # 24 requests through 2 slots of 0.1 s


def test_burst_of_many_connections():
    """A benchmark-sized burst: every request gets through (no listen-backlog drops)."""
    with FaultServer(latency=0.05, max_concurrent=8) as server:
        backend = backend_for(server)
        client = LLMClient(backend, concurrency=32)
        t0 = time.monotonic()
        results = run(backend, lambda: asyncio.gather(*(client.chat(HI) for _ in range(32))))
        elapsed = time.monotonic() - t0
        assert [r.text for r in results] == ["OK"] * 32 and server.count() == 32
        assert server.max_active == 8 and elapsed >= 0.2  # 32 requests through 8 slots of 0.05 s
