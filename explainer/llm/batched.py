"""Several sampled replies to one prompt, decoded side by side in one llama.cpp context.

Best-of-k asks the explainer for many candidates of the same prompt. One after another, each
candidate pays for its own decode steps at batch size 1, which on a CPU leaves most of the matrix
units idle. Here the prompt is evaluated once into sequence 0 of the KV cache, copied (shared
cells, no recomputation) into sequences 1..n-1, and every decode step feeds one token of each
still-running sequence in a single batch. The sampler is ours, in numpy, with llama-cpp-python's
defaults for `create_completion` (top-k 40, top-p 0.95, min-p 0.05, then the temperature), and
draws every sequence's tokens from one seeded generator, so a request's replies are reproducible.

`evaluate`, which puts a prompt into the context reusing the prefix already there, also serves the
prompt scoring of the all-at-once simulator (`local.LocalBackend.prompt_logprobs`).

The context must allow `n` sequences and a unified KV cache (`local._load` sets both). After the
call, the KV cache holds the prompt in sequence 0 only, so the next request that starts with the
same prompt reuses it.
"""

from __future__ import annotations

from typing import Collection, Iterator, Sequence

import numpy as np

TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05  # llama-cpp-python's create_completion defaults


def pick_token(logits: np.ndarray, rng: np.random.Generator, temperature: float) -> int:
    """One token id drawn from `logits`: greedy at temperature 0; else top-k, top-p and min-p
    filtering on the untempered distribution (llama.cpp's order), then the temperature."""
    if temperature <= 0:
        return int(np.argmax(logits))
    k = min(TOP_K, logits.size)
    top = np.argpartition(-logits, k - 1)[:k]
    top = top[np.argsort(-logits[top], kind="stable")]
    z = logits[top].astype(np.float64)
    p = np.exp(z - z[0])
    p /= p.sum()
    keep = int(np.searchsorted(np.cumsum(p), TOP_P) + 1)  # the smallest prefix reaching top-p
    keep = min(keep, int((p >= MIN_P * p[0]).sum()))
    z = z[:max(1, keep)] / temperature
    q = np.exp(z - z[0])
    return int(top[rng.choice(q.size, p=q / q.sum())])


def _logits(llm, j: int) -> np.ndarray:
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(j), shape=(llm.n_vocab(),))


def _feed(llm, tokens: Sequence[int], positions: Sequence[int], seqs: Sequence[int], want: Sequence[bool]) -> None:
    b = llm._batch.batch
    b.n_tokens = len(tokens)
    for j, (tok, pos, seq, w) in enumerate(zip(tokens, positions, seqs, want)):
        b.token[j], b.pos[j], b.n_seq_id[j], b.logits[j] = tok, pos, 1, w
        b.seq_id[j][0] = seq
    llm._ctx.decode(llm._batch)


def evaluate(llm, ids: Sequence[int], wanted: Collection[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Put `ids` into sequence 0, reusing the longest prefix already in the context up to the first
    wanted position; yield (position, logits after the token there) for each position of `wanted`,
    in order. A logits row is a view that the next decode overwrites: use it before the next item."""
    held = llm.input_ids[:llm.n_tokens]
    n_past, limit = 0, min(min(wanted, default=len(ids) - 1), len(ids) - 1, len(held))
    while n_past < limit and held[n_past] == ids[n_past]:
        n_past += 1
    llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
    llm.n_tokens = n_past
    for lo in range(n_past, len(ids), llm.n_batch):
        chunk = list(ids[lo:lo + llm.n_batch])
        _feed(llm, chunk, range(lo, lo + len(chunk)), [0] * len(chunk), [lo + j in wanted for j in range(len(chunk))])
        llm.input_ids[lo:lo + len(chunk)] = chunk
        llm.n_tokens = lo + len(chunk)
        llm._requires_eval = True  # the context's last logits are not a live decode's: `create_completion`
        # must evaluate the prompt's last token again rather than sample from them
        for j in range(len(chunk)):
            if lo + j in wanted:
                yield lo + j, _logits(llm, j)


def sample_replies(llm, ids: Sequence[int], n: int, max_tokens: int, temperature: float, seed: int,
                   end_ids: set[int], stop: Sequence[str] = ()) -> list[tuple[str, int]]:
    """`n` replies to the prompt `ids`: (text, number of generated tokens) each. A reply ends at an
    id of `end_ids` (not included), at a `stop` string (cut before it), or after `max_tokens`."""
    if len(ids) + max_tokens > llm.n_ctx():
        raise ValueError(f"prompt of {len(ids)} tokens plus {max_tokens} to generate exceeds the context")
    first = next(logits.copy() for _, logits in evaluate(llm, ids, {len(ids) - 1}))
    for s in range(1, n):
        llm._ctx.kv_cache_seq_cp(0, s, -1, -1)
    rng = np.random.default_rng(seed)
    out: list[list[int]] = [[] for _ in range(n)]
    texts = [""] * n
    running = list(range(n))
    logits = {s: first for s in running}
    try:
        for step in range(max_tokens):
            fed = []
            for s in running:
                tok = pick_token(logits[s], rng, temperature)
                if tok in end_ids:
                    continue
                out[s].append(tok)
                texts[s] = llm.detokenize(out[s]).decode("utf-8", errors="ignore")
                cut = min((texts[s].find(x) for x in stop if x in texts[s]), default=-1)
                if cut >= 0:
                    texts[s] = texts[s][:cut]
                    continue
                fed.append(s)
            running = fed
            if not running or step == max_tokens - 1:
                break
            _feed(llm, [out[s][-1] for s in running], [len(ids) + step] * len(running), running,
                  [True] * len(running))
            logits = {s: _logits(llm, j) for j, s in enumerate(running)}
    finally:  # leave the prompt in sequence 0 only, for the next request to reuse
        llm._ctx.kv_cache_seq_rm(-1, len(ids), -1)
        for s in range(1, n):
            llm._ctx.kv_cache_seq_rm(s, -1, -1)
        llm.n_tokens = len(ids)
        llm._requires_eval = True  # the context's last logits are another sequence's (see `evaluate`)
    return [(texts[s], len(out[s])) for s in range(n)]
