"""The LLM layer: one client (`LLMClient`, the gate every request passes) over two backends.

    from explainer.llm import make_client
    client = make_client("local")                                  # llama.cpp in process
    client = make_client("openai", base_url="http://localhost:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
"""

from __future__ import annotations

from sparse_model.errors import UserError

from .client import (CHAT, TOKEN_LOGPROBS, PREFILL, PROMPT_LOGPROBS, SAMPLES, Backend, ChatRequest, ChatResult, LLMClient,
                     LLMError, LLMOutputError, LLMRequestError, PromptLogprobsRequest, PromptLogprobsResult,
                     RetryPolicy, Usage, is_fatal)
from .local import LocalBackend
from .openai_compat import OpenAIBackend

__all__ = ["CHAT", "TOKEN_LOGPROBS", "PREFILL", "PROMPT_LOGPROBS", "SAMPLES", "Backend", "ChatRequest", "ChatResult", "LLMClient",
           "LLMError", "LLMOutputError", "LLMRequestError", "LocalBackend", "OpenAIBackend", "PromptLogprobsRequest",
           "PromptLogprobsResult", "RetryPolicy", "Usage", "is_fatal", "make_client"]


def make_client(backend: str = "local", model: str | None = None, base_url: str | None = None,
                concurrency: int | None = None, retry: RetryPolicy | None = None) -> LLMClient:
    """An `LLMClient` for `--backend local|openai` (the openai key comes from $OPENAI_API_KEY)."""
    retry = retry or RetryPolicy()
    retry.check()
    if backend == "local":
        return LLMClient(LocalBackend(model_path=model), concurrency=1 if concurrency is None else concurrency,
                         retry=retry)
    if backend == "openai":
        return LLMClient(OpenAIBackend(model=model, base_url=base_url, timeout=retry.timeout),
                         concurrency=4 if concurrency is None else concurrency, retry=retry)
    raise UserError(f"unknown backend {backend!r}; choose local or openai")
