"""Sampled replies decoded side by side (`explainer.llm.batched`): the sampler's filters, and on the
real embedded model (SmolLM2, fast) that side-by-side decoding gives the same greedy reply as
llama.cpp's own path, reproducible samples, and a context left holding only the prompt."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from test_llm_backends import local_backend

from explainer.llm import SAMPLES, ChatRequest
from explainer.llm.batched import MIN_P, TOP_K, pick_token

MESSAGES = (("system", "You are a helpful assistant."),
            ("user", "Name one Python keyword. Answer with one word."))
# A prompt whose greedy reply has no near-tie: a batch of several tokens goes through other matrix
# kernels than one token, and where two tokens' logits differ in the second decimal, either can win.
UNAMBIGUOUS = (("system", "You are a helpful assistant."), ("user", "What is 2 + 3? Answer with the number only."))


def test_pick_token_is_greedy_at_temperature_zero():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert pick_token(logits, np.random.default_rng(0), 0.0) == 1


def test_pick_token_draws_only_from_the_filtered_tokens():
    rng = np.random.default_rng(0)
    logits = np.full(1000, -30.0, dtype=np.float32)
    logits[:60] = np.linspace(5.0, 4.0, 60)  # 60 likely tokens: top-k keeps the first 40
    logits[7] = 5.0 + np.log(1 / MIN_P) + 1.0  # dominant: min-p drops everything under 5% of it ...
    logits[8] = logits[7] - np.log(1 / MIN_P) + 0.5  # ... but keeps this one
    drawn = {pick_token(logits, rng, 1.0) for _ in range(400)}
    assert drawn == {7, 8}
    logits[7] = logits[8] = 4.5  # no dominant token: the top-k 40 are all drawn from, none beyond
    drawn = {pick_token(logits, rng, 1.0) for _ in range(3000)}
    assert drawn <= set(range(TOP_K)) and len(drawn) > 30


def test_pick_token_is_reproducible_with_a_seed():
    logits = np.random.default_rng(1).normal(size=5000).astype(np.float32)
    a = [pick_token(logits, np.random.default_rng(3), 1.0) for _ in range(5)]
    b = [pick_token(logits, np.random.default_rng(3), 1.0) for _ in range(5)]
    assert a == b


def test_side_by_side_replies_on_the_embedded_model():
    backend = local_backend()
    assert SAMPLES in backend.capabilities

    def chat(messages=MESSAGES, **kw):
        return asyncio.run(backend.chat(ChatRequest(messages=messages, max_tokens=12, **kw)))

    greedy = chat(UNAMBIGUOUS).text  # llama.cpp's own path, one reply
    assert "5" in greedy
    # Three sequences decoded at once, each seeing the whole prompt through the copied KV cells.
    assert chat(UNAMBIGUOUS, n=3, temperature=0.0).choices == [greedy] * 3
    greedy = chat().text

    sampled = chat(n=6, temperature=1.0, seed=5)
    assert len(sampled.choices) == 6 and sampled.text == sampled.choices[0]
    assert len(set(sampled.choices)) > 1  # independent draws, not one reply copied
    assert chat(n=6, temperature=1.0, seed=5).choices == sampled.choices  # reproducible by seed
    assert sampled.completion_tokens > 0 and sampled.prompt_tokens > 0

    # The other sequences are gone from the KV cache: the prompt's next reply is unaffected.
    assert backend.llm.n_tokens == sampled.prompt_tokens
    assert chat().text == greedy
