"""The adaptive limit on requests in flight (explainer/llm/limit.py): slow start, additive increase,
multiplicative decrease, and a slow one-slot server that is never sent more than it serves in time.
The server is the FAKE fault server of tests/fault_server.py (our client's handling is what is tested)."""

from __future__ import annotations

import asyncio

from explainer.llm import ChatRequest, LLMClient
from explainer.llm.limit import AdaptiveLimit
from explainer.llm.openai_compat import OpenAIBackend
from fault_server import MODEL, FaultServer

HI = ChatRequest(messages=(("user", "hi"),), max_tokens=4)


def test_slow_start_doubles_then_adds_and_a_slow_answer_or_overload_halves():
    limit = AdaptiveLimit(ceiling=8, timeout=100)
    assert limit.settled == 1  # starts at one request in flight
    for _ in range(3):
        limit._answered(1.0)  # fast: well within the timeout
    assert limit.settled == 4  # slow start: one more per answer
    limit._answered(30.0)  # neither fast nor slow: no change
    assert limit.settled == 4
    limit._answered(60.0)  # more than half the timeout: halved
    assert limit.settled == 2 and limit.cuts == 1
    for _ in range(3):
        limit._answered(1.0)
    assert limit.settled == 3  # after a cut, additive: +1/limit per answer (2 + 1/2 + 1/2.5 + 1/2.9)
    for _ in range(20):
        limit._cut()
    assert limit.limit == 1.0  # never below one
    for _ in range(200):
        limit._answered(1.0)
    assert limit.settled == 8  # never above the ceiling (--concurrency)


def test_a_one_slot_server_that_slows_down_is_never_sent_more_than_it_serves_in_time():
    """Concurrency 4 against a server with one slot: while it answers fast the limit grows to 4;
    when each answer takes 0.3 s (a sixth of the timeout), four queued requests would wait up to
    1.2 s, past half the timeout, so the client cuts to what the server serves: every request is
    answered on its first attempt, none times out (the margin, 0.6 s, absorbs a loaded machine)."""
    with FaultServer(latency=0.01, max_concurrent=1) as server:
        backend = OpenAIBackend(model=MODEL, base_url=server.base_url, api_key="sk-test", timeout=1.8)
        client = LLMClient(backend, concurrency=4)

        async def main():
            try:
                await asyncio.gather(*(client.chat(HI) for _ in range(12)))
                assert client.limit.settled == 4  # answers within a quarter of the timeout: grew to the ceiling
                server.latency = 0.3
                await asyncio.gather(*(client.chat(HI) for _ in range(16)))
            finally:
                await backend.close()

        asyncio.run(main())
        assert server.count() == 28 == client.usage.requests  # one attempt each: nothing timed out or retried
        assert client.limit.cuts >= 1 and client.limit.settled <= 2  # settled at what one slot serves in time
        assert all(r.seconds < 1.8 for r in server.requests)
