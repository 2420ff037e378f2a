"""Simulators: predict a node's activation at each token of a window from an explanation alone
(docs/method.md, "Simulate").

- `all_at_once`: one scoring pass over a prompt whose target values read "unknown"; at each token
  the expected value of the digits 0..9, renormalised over those ten. Needs prompt log-probabilities
  (the embedded model in process; vLLM or llama.cpp servers through `echo` + `logprobs`).
- `chat_logprobs`: for chat endpoints that return log-probabilities of generated tokens only
  (OpenAI's chat API): the model writes one `index<TAB>value` line per token and the expected value
  is read from the top alternatives of each written digit.
- `text`: no log-probabilities at all; the written digits are parsed.
- `trained`: no LLM either: a small head trained on generated rule neurons reads the explanation
  against frozen MiniLM features of each token (`simulators.trained`, weights shipped as package
  data, rebuilt by `simulators.train_simulator`).
- `embedding`: no LLM at all: a small sentence-embedding model matches the explanation against a
  description of each token (`simulators.embedding`). The default for the embedded (local)
  backend, because SmolLM2-135M ignores the explanation and this one reads it (measured by the
  ground-truth suite, `circuits eval`); LLM simulators stay the default for servers.

Output that does not line up with the window's tokens is a failed `Simulation` carrying the reason
and the raw text, never an exception and never zeros.

    sim = make_simulator(client, "auto")
    sims = asyncio.run(sim.simulate_windows("the keyword return", [tokens_1, tokens_2]))
"""

from __future__ import annotations

import importlib.util

from sparse_model.errors import UserError

from ..llm import CHAT, PROMPT_LOGPROBS, TOKEN_LOGPROBS, LLMClient
from .base import (ALL_AT_ONCE, CHAT_LOGPROBS, EMBEDDING, LLM_SIMULATORS, NO_LLM, SIMULATORS, TEXT, TRAINED,
                   Simulation, Simulator)
from .embedding import MODEL_PACKAGE, EmbeddingSimulator
from .llm import LLMSimulator, expected_value
from .trained import TrainedSimulator

LOCAL_DEFAULT = EMBEDDING  # `auto` on the embedded backend (chosen by `circuits eval`, see the README)
# The endpoint capability each simulator needs (None: no LLM at all).
_NEEDS = {ALL_AT_ONCE: PROMPT_LOGPROBS, CHAT_LOGPROBS: TOKEN_LOGPROBS, TEXT: CHAT, EMBEDDING: None, TRAINED: None}

__all__ = ["ALL_AT_ONCE", "CHAT_LOGPROBS", "EMBEDDING", "LLM_SIMULATORS", "NO_LLM", "SIMULATORS", "TEXT", "TRAINED",
           "EmbeddingSimulator", "LLMSimulator", "Simulation", "Simulator", "TrainedSimulator", "choose_simulator", "embedding_available", "expected_value",
           "make_simulator"]


def embedding_available() -> bool:
    """Whether the embedding simulator's model package is installed."""
    return importlib.util.find_spec(MODEL_PACKAGE) is not None


def choose_simulator(capabilities: frozenset[str], requested: str = "auto", backend: str | None = None) -> str:
    """The requested simulator if the endpoint supports it; for `auto`, on the embedded backend
    (backend "local") the embedding simulator when its model is installed, else the best LLM
    simulator the endpoint supports (in the order of LLM_SIMULATORS)."""
    if requested == "auto":
        if backend == "local" and embedding_available():
            return LOCAL_DEFAULT
        for name in LLM_SIMULATORS:
            if _NEEDS[name] in capabilities:
                return name
        raise UserError("the LLM endpoint supports neither prompt log-probabilities nor chat; check --base-url")
    if requested not in SIMULATORS:
        raise UserError(f"unknown simulator {requested!r}; choose one of auto, {', '.join(SIMULATORS)}")
    if _NEEDS[requested] is None or _NEEDS[requested] in capabilities:
        return requested
    raise UserError(f"the LLM endpoint cannot run the {requested} simulator (it lacks {_NEEDS[requested]}); "
                    f"use --simulator auto")


def _backend_name(client: LLMClient | None) -> str | None:
    try:
        return client.settings().get("backend") if client is not None else None
    except Exception:  # a test double without settings
        return None


def make_simulator(client: LLMClient | None, method: str = "auto", prompts_dir: str | None = None,
                   prompt_name: str | None = None) -> Simulator:
    """The simulator for `method` ("auto": the best the client's endpoint supports, see
    `choose_simulator`). The embedding and trained simulators need no client."""
    caps = client.capabilities if client is not None else frozenset()
    chosen = choose_simulator(caps, method, _backend_name(client))
    if chosen == EMBEDDING:
        return EmbeddingSimulator()
    if chosen == TRAINED:
        return TrainedSimulator()
    return LLMSimulator(client, chosen, prompts_dir, prompt_name)
