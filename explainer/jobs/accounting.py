"""What LLM work costs and what it already answered: the response cache, per-request accounting,
jobs, and prices. All of it lives in the project's DuckDB file (tables `llm_cache`, `llm_requests`,
`jobs`; see `explainer/store/schema.py`); `LLMClient` calls into this module for every request.

The cache key is a hash of the endpoint, the model, the method and the full request; the API key is
never part of a key, a row or a message, so the database can be shared.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Iterator

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from sparse_model.errors import UserError
from sparse_model.formats import checked

from ..llm import ChatResult, PromptLogprobsResult
from ..store import Store

CACHE_VERSION = 1  # bump when the stored response format changes

# (explanation_id, node_id) the current asyncio task is working on: requests are attributed to it.
_current_work: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "current_work", default=(None, None))


@contextlib.contextmanager
def working_on(explanation_id: str | None, node_id: str | None) -> Iterator[None]:
    """Attribute the LLM requests made inside the block (in this task) to one explanation of a node."""
    token = _current_work.set((explanation_id, node_id))
    try:
        yield
    finally:
        _current_work.reset(token)


# ---- the response cache -----------------------------------------------------------------------

# The stored answer's format per request method (the result dataclasses, checked by pydantic).
_RESULT_TYPES = {"chat": TypeAdapter(ChatResult), "prompt_logprobs": TypeAdapter(PromptLogprobsResult)}


class ResponseCache:
    """Successful LLM answers, keyed by what was asked. `read=False` (--no-cache, --retry-failed)
    asks the LLM again but still stores the fresh answers."""

    def __init__(self, store: Store, read: bool = True):
        self.store, self.read = store, read

    @staticmethod
    def key(endpoint: dict[str, Any], method: str, request: Any) -> str:
        payload = {"endpoint": endpoint, "method": method,
                   "request": asdict(request) if hasattr(request, "__dataclass_fields__") else request}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, key: str, method: str) -> Any | None:
        if not self.read:
            return None
        found = self.store.cache_get(key)
        if found is None:
            return None
        response, version = found
        if version is not None and version > CACHE_VERSION:
            raise UserError(f"the response cache in {self.store.path} was written by a newer version of this tool "
                            f"(cache format {version}, this one reads {CACHE_VERSION}); upgrade, or run with --no-cache")
        adapter = _RESULT_TYPES.get(method)
        if adapter is None:
            return response
        try:
            return adapter.validate_python(response)
        except ValidationError:  # an answer this version cannot read: ask again (and overwrite it)
            return None

    def put(self, key: str, endpoint: dict[str, Any], method: str, result: Any) -> None:
        response = asdict(result) if hasattr(result, "__dataclass_fields__") else result
        self.store.cache_put(key, str(endpoint.get("base_url") or endpoint.get("backend")), str(endpoint.get("model")),
                             method, response, CACHE_VERSION)


# ---- prices -----------------------------------------------------------------------------------


class Price(BaseModel):
    """One model's price in US dollars per million tokens (an entry of the price table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_per_million: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    completion_per_million: Annotated[float, Field(ge=0, allow_inf_nan=False)]

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_million + completion_tokens * self.completion_per_million) / 1e6


PriceTable = TypeAdapter(dict[str, Price])  # model name -> price


def load_price(path: str | Path, model: str) -> Price:
    """The price of `model` from a JSON price table:
    {"gpt-4o-mini": {"prompt_per_million": 0.15, "completion_per_million": 0.60}, ...} (US dollars)."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise UserError(f"no price table at {p}") from None
    except json.JSONDecodeError as e:
        raise UserError(f"price table {p} is not valid JSON (line {e.lineno}): {e.msg}") from None
    example = f'{{"{model}": {{"prompt_per_million": 0.15, "completion_per_million": 0.6}}}}'
    table = checked(PriceTable, raw, f"price table {p}", f"prices are numbers of dollars per million tokens, e.g. {example}")
    if model not in table:
        names = ", ".join(sorted(table)[:8]) or "none"
        raise UserError(f"price table {p} has no price for model {model!r} (it names: {names}); add it or drop --prices")
    return table[model]


# ---- per-request accounting -------------------------------------------------------------------


class Ledger:
    """Writes one `llm_requests` row per request of one job, attributed to the explanation and node
    the requesting task is working on (`working_on`)."""

    def __init__(self, store: Store, job_id: str, price: Price | None = None):
        self.store, self.job_id, self.price = store, job_id, price
        self.seq = 0

    def record(self, method: str, *, cache_hit: bool, prompt_tokens: int | None, completion_tokens: int | None,
               tokens_estimated: bool, seconds: float, attempts: int, error: str | None = None) -> None:
        self.seq += 1
        explanation_id, node_id = _current_work.get()
        cost = None
        if self.price is not None and not cache_hit and error is None:
            cost = self.price.cost(prompt_tokens or 0, completion_tokens or 0)
        self.store.record_request({
            "job_id": self.job_id, "seq": self.seq, "explanation_id": explanation_id, "node_id": node_id,
            "method": method, "cache_hit": cache_hit, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "tokens_estimated": tokens_estimated, "seconds": seconds,
            "attempts": attempts, "status": "ok" if error is None else "error", "error": error, "cost": cost})


def new_job_id() -> str:
    return uuid.uuid4().hex[:12]
