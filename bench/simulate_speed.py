"""Seconds per simulated window with the embedded LLM, three ways side by side, on the same prompts.

    python bench/simulate_speed.py [--windows 6] [--window 64]

1. ours: `LocalBackend.prompt_logprobs`, logits computed only at the slots, and the prompt prefix
   shared by the windows of one explanation (few-shot examples + explanation) kept in the context;
2. ours without prefix reuse (the context cleared before every window);
3. llama-cpp-python's own path, `create_completion(echo=True, logprobs=10, max_tokens=1)`, which
   keeps the logits of every prompt token (what `python -m llama_cpp.server` does for echo requests).

Windows are real text: 64-token windows of this Python's standard library, cut with the tokenizer of
a trained run if given (--run), else split on whitespace. Prints seconds per window and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path


def windows_of_text(n: int, size: int, run: str | None) -> list[list[str]]:
    import json as _json
    src = (Path(_json.__file__).parent / "decoder.py").read_text()
    if run:
        from sparse_model.run import Run
        from sparse_model.tokenizer import token_strings
        tok = Run(run).tokenizer
        toks = token_strings(tok, tok.encode(src).ids)
    else:
        toks = src.split()
    return [toks[i * size:(i + 1) * size] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", type=int, default=6)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--run", default=None, help="a run folder whose tokenizer cuts the windows")
    ap.add_argument("--model", default="smollm2-135m", help="local model: a short name or a GGUF path")
    args = ap.parse_args()

    import llama_cpp

    from explainer.llm import PromptLogprobsRequest
    from explainer.llm.local import N_CTX, LocalBackend
    from explainer.prompts import all_at_once_prompt, load_prompt

    prompt = load_prompt("simulate")
    wins = windows_of_text(args.windows, args.window, args.run)
    requests = []
    for w in wins:
        text, slots = all_at_once_prompt(prompt, "string quotes and the characters inside strings", w)
        requests.append(PromptLogprobsRequest(prompt=text, slots=tuple(slots), candidates=tuple("0123456789")))

    backend = LocalBackend(args.model)
    llm = backend.llm

    def ours(reuse: bool) -> float:
        llm.reset()
        asyncio.run(backend.prompt_logprobs(requests[0]))  # warm-up: the first window pays for the prefix in both
        t0 = time.perf_counter()
        for r in requests[1:]:
            if not reuse:
                llm.reset()
            asyncio.run(backend.prompt_logprobs(r))
        return (time.perf_counter() - t0) / (len(requests) - 1)

    t_ours = ours(True)
    t_no_reuse = ours(False)
    full = llama_cpp.Llama(model_path=str(backend.path), n_ctx=N_CTX, n_threads=2, n_threads_batch=2,
                           logits_all=True, verbose=False)
    t0 = time.perf_counter()
    for r in requests[1:]:
        full.create_completion(r.prompt, max_tokens=1, echo=True, logprobs=10, temperature=0.0)
    t_full = (time.perf_counter() - t0) / (len(requests) - 1)

    n_tokens = len(full.tokenize(requests[1].prompt.encode(), add_bos=False))
    print(f"{len(requests) - 1} windows of {args.window} tokens, prompt about {n_tokens} llama tokens")
    print(f"{'method':<44} {'s/window':>9} {'ratio':>7}")
    for name, t in (("ours: slot logits + prefix reuse", t_ours), ("ours without prefix reuse", t_no_reuse),
                    ("create_completion echo+logprobs (server path)", t_full)):
        print(f"{name:<44} {t:9.2f} {t / t_ours:7.1f}x")


if __name__ == "__main__":
    main()
