"""The capability probe goes through the one retry gate: a transient fault on any of its requests is
retried and never changes which capabilities (so which simulator) a job gets; only a definite
answer is cached. Against the FAKE fault server (tests/fault_server.py): these tests are about our
client's handling of faults, not about an LLM."""

from __future__ import annotations

import asyncio

import pytest

from explainer.jobs.accounting import ResponseCache
from explainer.llm import CHAT, PROMPT_LOGPROBS, TOKEN_LOGPROBS, LLMClient, LLMError
from explainer.llm.client import RetryPolicy
from explainer.llm.openai_compat import OpenAIBackend
from explainer.store import Store
from fault_server import MODEL, FaultServer

ALL = {CHAT, TOKEN_LOGPROBS, PROMPT_LOGPROBS}
TARGETS = {  # which of the probe's requests gets the fault
    "model list": dict(path="/v1/models"),
    "chat": dict(path="/chat/completions", when=lambda r: not r.body.get("logprobs")),
    "chat log-probabilities": dict(path="/chat/completions", when=lambda r: bool(r.body.get("logprobs"))),
    "echo": dict(path="/v1/completions", when=lambda r: "chat" not in r.path),
}


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


async def _no_wait(_seconds: float) -> None:
    return None


def client_for(server: FaultServer, cache=None, attempts: int = 5) -> LLMClient:
    backend = OpenAIBackend(model=MODEL, base_url=server.base_url, api_key="sk-test", timeout=2.0)
    return LLMClient(backend, cache=cache, retry=RetryPolicy(max_attempts=attempts), sleep=_no_wait)


def probe(client: LLMClient) -> frozenset[str]:
    async def go():
        try:
            return await client.probe()
        finally:
            await client.close()
    return asyncio.run(go())


@pytest.mark.parametrize("fault", ["429", "429-retry-after:0", "500", "503", "drop", "disconnect", "malformed-json"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_a_transient_fault_on_any_probe_request_never_changes_the_capabilities(server, fault, target):
    rule = server.add_rule(fault, times=1, **TARGETS[target])
    assert probe(client_for(server)) == ALL
    assert rule.applied == 1  # the fault did happen, and the retry went through


def test_a_definite_unsupported_status_is_a_clear_no_and_is_cached(server, tmp_path):
    server.add_rule("501", **TARGETS["echo"])  # the server says it does not do echo log-probs
    with Store.open(tmp_path / "c.duckdb") as store:
        assert probe(client_for(server, ResponseCache(store))) == {CHAT, TOKEN_LOGPROBS}
        server.reset()
        assert probe(client_for(server, ResponseCache(store))) == {CHAT, TOKEN_LOGPROBS}
        assert server.count() == 0  # the cached definite answer costs no request


def test_garbage_on_every_attempt_stops_in_one_line_and_caches_nothing(server, tmp_path):
    server.add_rule("malformed-json", **TARGETS["echo"])
    with Store.open(tmp_path / "c.duckdb") as store:
        with pytest.raises(LLMError) as err:
            probe(client_for(server, ResponseCache(store), attempts=3))
        assert "capability probe after 3 attempts" in str(err.value) and "\n" not in str(err.value)
        assert server.count(path="/v1/completions") == 3
        assert store.query("SELECT count(*) FROM llm_cache")[1][0][0] == 0  # nothing half-known is kept
