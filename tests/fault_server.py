"""A FAKE OpenAI-compatible server that injects faults, for tests of OUR client (`OpenAIBackend`,
`LLMClient`, the explain jobs). It is not an LLM: its "normal" answers are deterministic
functions of the request, shaped exactly like a correct server's (vLLM, llama.cpp's server) so
that our client accepts them; its faults are scripted by the test.

    with FaultServer(latency=0.01) as server:
        server.script(["429", "ok", "drop"])             # the next three requests, in order
        backend = OpenAIBackend(base_url=server.base_url, api_key="sk-test")

Standard library only: `http.server.ThreadingHTTPServer` in a daemon thread on 127.0.0.1 (a free
port), one daemon thread per connection, so a hanging request blocks nothing and `stop()` never
waits for it. Nothing is written to disk; requests (with their headers, including Authorization)
are kept in memory only.

Endpoints (under `/v1`; the prefix is optional):

- `GET /v1/models`: one model, `MODEL` ("fake-fault-server") unless another name is given.
- `POST /v1/chat/completions`:
  * a numbered simulation request (the last user message has `index<TAB>token` lines, as written by
    `explainer.prompts.numbered_request`) is answered with one `index<TAB>digit` line per numbered
    token, the digit being `digit_for(token)`;
  * an explanation request (the last user message shows "Activations:") is answered with
    "the main thing this neuron does is find tokens like "X" in Y", X the highest-valued token of
    the last `<start>..<end>` block and Y chosen by a hash of the prompt (never a few-shot example);
  * anything else with "OK".
  With `logprobs: true` each generated token carries `top_logprobs` alternatives (the written
  digits: the digits 0..9 around `digit_for(token)`); tokens concatenate exactly to the text.
  `max_tokens` cuts the reply (finish_reason "length"), `stop` strings end it.
- `POST /v1/completions`: with `echo: true` and `logprobs: N`, the prompt's tokens (`tokenize`),
  character `text_offset`s, `token_logprobs` and `top_logprobs` (dicts of up to N entries; the first
  entry None) aligned OpenAI-style (entry i is the distribution of token i), then one generated
  token "\\n". At a value slot (the token after a TAB) the distribution is over the digits, peaked
  at `digit_for(first field of the line)`; elsewhere the actual token is the most likely one, so
  `_detect_shift` finds shift 0.

Every normal answer has `usage` (prompt_tokens, completion_tokens, total_tokens). A request naming
another model than the served one gets 404, as from vLLM.

Faults (`FAULTS`; a name may carry an argument after ":"):

    ok                      the normal answer
    <code>                  that HTTP status (400, 401, 403, 404, 408, 409, 422, 429, 500, 502, 503, ...)
                            with an OpenAI-style error JSON body and no Retry-After header
    <code>-retry-after:S    the same with the header "Retry-After: S" (e.g. "429-retry-after:2")
    hang[:S]                wait S seconds (default: the server's `hang_seconds`, 30) before the
                            normal answer; woken at once by stop()
    slow:S                  wait S more seconds, then answer normally
    drop                    send the status line, headers and half of the body, then close the socket
    disconnect              close the connection without sending anything
    malformed-json          200, Content-Type application/json, a body that is not JSON
    no-choices              a normal-looking answer with "choices": []
    empty-reply             200 with an empty text (chat content "" / completion text "")
    missing-logprobs        a normal answer with "logprobs": null
    truncated-logprobs      log-probability lists cut short: echo `top_logprobs` (and chat `content`)
                            has about half as many entries as there are tokens
    misaligned-text         chat simulation: one numbered line fewer than tokens; echo: text offsets
                            that start at 1 instead of 0; other requests: the normal answer

Which fault applies: the first matching rule (`add_rule`, in the order added); otherwise the first
scripted fault (`script`) whose path filter matches, removed from the script; otherwise "ok".
Every answered request waits for a free slot (`max_concurrent`), then sleeps `latency` seconds in
it: with both set the fake serves at most max_concurrent / latency requests a second, like a server
with a fixed number of batch slots. "hang" and "slow" wait before that, outside the slots (a stuck
request never starves the others); "disconnect" closes at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

MODEL = "fake-fault-server"
DIGITS = tuple(str(d) for d in range(10))
PREFIX = "the main thing this neuron does is find"

# Faults without an argument, and those taking one (":" then a number).
_PLAIN = frozenset({"ok", "hang", "drop", "disconnect", "malformed-json", "no-choices", "empty-reply",
                    "missing-logprobs", "truncated-logprobs", "misaligned-text"})
_WITH_SECONDS = frozenset({"hang", "slow"})
FAULTS = ("ok", "<status>", "<status>-retry-after:S", "hang", "hang:S", "slow:S", "drop", "disconnect",
          "malformed-json", "no-choices", "empty-reply", "missing-logprobs", "truncated-logprobs",
          "misaligned-text")
_STATUS = re.compile(r"^([1-5]\d\d)(?:-retry-after:(\d+(?:\.\d*)?))?$")
_REASONS = {400: "bad request", 401: "invalid api key", 403: "forbidden", 404: "not found",
            408: "request timeout", 409: "conflict", 422: "unprocessable entity", 429: "rate limit exceeded",
            500: "internal server error", 502: "bad gateway", 503: "service unavailable", 504: "gateway timeout"}

# A token: optional space and a run of non-whitespace, or one whitespace character. A TAB is always
# a token of its own, so a token starts right after every TAB (the simulators' value slots).
_TOKEN = re.compile(r" ?[^\s]+|\s")
_NUMBERED = re.compile(r"^(\d+)\t(.*)$", re.M)
_FILLER = (" the", ",", ".", " a", "e", "_", "(", " =", "s", ":")  # alternatives at ordinary positions
_THEMES = ("function definitions", "string literals", "import statements", "comments", "loop headers",
           "arithmetic expressions", "attribute access", "indented blocks", "closing brackets",
           "boolean tests", "dictionary keys", "class names")


def parse_fault(name: str) -> tuple[str, float | int | None]:
    """("ok", None), ("hang", 5.0), ("status", 429), ("status", (429, "2")) ...; ValueError when unknown."""
    if not isinstance(name, str):
        raise ValueError(f"a fault is a string, got {name!r}")
    m = _STATUS.match(name)
    if m:
        return "status", (int(m.group(1)), m.group(2))
    base, _, arg = name.partition(":")
    if base in _WITH_SECONDS and arg:
        try:
            return base, float(arg)
        except ValueError:
            pass
    elif base in _PLAIN and not arg and base != "slow":
        return base, None
    raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


# ---- the deterministic "model" -------------------------------------------------------------------


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def digit_for(field_text: str) -> int:
    """The digit the fake predicts for a token shown as `field_text` (the first field of a
    `token<TAB>value` line, or the token of a numbered `index<TAB>token` line)."""
    return _hash("digit:" + field_text) % 10


def digit_logprobs(best: int) -> dict[str, float]:
    """A distribution over the digits: `best` gets log-prob -0.2, the rest of the mass falls off
    with the distance to `best` (largest first in dict order)."""
    rest = 1.0 - math.exp(-0.2)
    weights = {d: 2.0 ** -abs(d - best) for d in range(10) if d != best}
    z = sum(weights.values())
    out = {str(best): -0.2}
    for d in sorted(weights, key=lambda d: (-weights[d], d)):
        out[str(d)] = math.log(rest * weights[d] / z)
    return out


def tokenize(text: str) -> list[str]:
    """The fake's tokens; they concatenate exactly to `text`."""
    return _TOKEN.findall(text)


def _ordinary(token: str) -> dict[str, float]:
    """The distribution at an ordinary position: the actual token first, then fillers."""
    out = {token: -0.1}
    for i, alt in enumerate(a for a in _FILLER if a != token):
        out[alt] = -3.0 - 0.5 * i
    return out


def _top(dist: dict[str, float], n: int) -> dict[str, float]:
    return dict(sorted(dist.items(), key=lambda kv: -kv[1])[:max(0, n)])


def _echo_logprobs(text: str, n: int) -> tuple[list[str], list[int], list[float | None], list[dict | None]]:
    tokens = tokenize(text)
    offsets, token_lps, tops = [], [], []
    pos, line_start = 0, 0
    for i, tok in enumerate(tokens):
        offsets.append(pos)
        if i > 0 and tokens[i - 1] == "\t":  # a value slot
            first_field = text[line_start:text.index("\t", line_start)]
            dist = digit_logprobs(digit_for(first_field))
        else:
            dist = _ordinary(tok)
        if i == 0:
            token_lps.append(None)
            tops.append(None)
        else:
            token_lps.append(dist.get(tok, -9.0))
            tops.append(_top(dist, n))
        pos += len(tok)
        if tok == "\n":
            line_start = pos
    return tokens, offsets, token_lps, tops


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _top_record_token(user: str) -> str:
    """The highest-valued token of the last <start>..<end> block of an explanation prompt."""
    block = user.rsplit("<start>\n", 1)[-1].split("<end>", 1)[0]
    best, best_value = "", -1.0
    for line in block.splitlines():
        tok, tab, value = line.rpartition("\t")
        if not tab:
            continue
        try:
            v = float(value)
        except ValueError:
            continue
        if v > best_value:
            best, best_value = tok, v
    return best.strip() or "tokens"


def chat_reply(messages: list[dict]) -> tuple[str, str]:
    """(kind, text) of the fake's answer: kind "simulate-chat", "explain" or "chat"."""
    users = [_message_text(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = users[-1] if users else ""
    numbered = _NUMBERED.findall(last)
    if numbered:
        return "simulate-chat", "\n".join(f"{i}\t{digit_for(tok)}" for i, tok in numbered)
    if "Activations:" in last:
        h = _hash("explain:" + json.dumps(messages, sort_keys=True))
        return "explain", f'{PREFIX} tokens like "{_top_record_token(last)}" in {_THEMES[h % len(_THEMES)]}'
    return "chat", "OK"


def _chat_token_logprobs(tokens: list[str], n: int) -> list[dict]:
    content = []
    for i, tok in enumerate(tokens):
        if i > 0 and tokens[i - 1] == "\t" and tok.isdigit():
            dist = digit_logprobs(int(tok))
        else:
            dist = _ordinary(tok)
        content.append({"token": tok, "logprob": dist.get(tok, -9.0), "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode())}
                                         for t, v in _top(dist, n).items()]})
    return content


# ---- records and rules ---------------------------------------------------------------------------


@dataclass
class RequestRecord:
    """One request as the fake saw it. `received`/`finished` are `time.monotonic()` values;
    `headers` has lower-case names (e.g. headers["authorization"] == "Bearer sk-...")."""

    index: int  # 1, 2, ... in order of arrival
    received: float
    method: str
    path: str  # as sent, e.g. "/v1/chat/completions"
    headers: dict[str, str]
    body: Any  # the parsed JSON body (None: no body or not JSON)
    kind: str  # models | chat | explain | simulate-chat | echo | completions | other
    fault: str = "ok"
    status: int | None = None  # the status sent (None: none, e.g. "disconnect" or stopped while hanging)
    finished: float | None = None
    raw_body: bytes = b""  # the body as received

    @property
    def prompt_text(self) -> str:
        """The prompt (completions) or all message contents (chat), joined by newlines."""
        if not isinstance(self.body, dict):
            return ""
        if "messages" in self.body:
            return "\n".join(_message_text(m.get("content")) for m in self.body["messages"] if isinstance(m, dict))
        prompt = self.body.get("prompt", "")
        return prompt if isinstance(prompt, str) else json.dumps(prompt)

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.received


def _path_matches(filter_path: str | None, path: str) -> bool:
    """"/v1/chat/completions", "/chat/completions" and "chat/completions" all name the same path."""
    if filter_path is None:
        return True
    norm = lambda p: "/" + p.split("?", 1)[0].strip("/").removeprefix("v1/").removeprefix("v1")  # noqa: E731
    return norm(filter_path) == norm(path)


@dataclass
class Rule:
    fault: str
    path: str | None = None
    kind: str | None = None
    contains: str | None = None
    every: int | None = None
    when: Callable[[RequestRecord], bool] | None = None
    times: int | None = None  # applications left (None: forever)
    seen: int = 0  # matching requests so far (for `every`)
    applied: int = 0

    def matches(self, rec: RequestRecord) -> bool:
        if self.times is not None and self.applied >= self.times:
            return False
        if not _path_matches(self.path, rec.path) or (self.kind is not None and rec.kind != self.kind):
            return False
        if self.contains is not None and self.contains not in rec.prompt_text:
            return False
        if self.when is not None and not self.when(rec):
            return False
        self.seen += 1
        if self.every is not None and self.seen % self.every:
            return False
        self.applied += 1
        return True


# ---- the server ----------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hanging handler never keeps the process (or stop()) waiting
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256  # listen backlog: the default 5 drops connections under a benchmark's burst
    fake: "FaultServer"


class FaultServer:
    """A fake OpenAI-compatible server on 127.0.0.1 with scriptable faults (see the module docstring).

    model: the one served model name. latency: seconds added to every request. max_concurrent:
    requests handled at once (None: no limit; the others wait their turn, counted in flight).
    hang_seconds: how long "hang" waits by default. check_model: answer 404 to other model names.
    """

    def __init__(self, model: str = MODEL, latency: float = 0.0, max_concurrent: int | None = None,
                 hang_seconds: float = 30.0, check_model: bool = True, port: int = 0):
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be None or at least 1")
        self.model = model
        self.latency = float(latency)
        self.max_concurrent = max_concurrent
        self.hang_seconds = float(hang_seconds)
        self.check_model = check_model
        self._port = port
        self._lock = threading.RLock()  # reentrant: a rule's `when` may call count()
        self._slots = threading.Semaphore(max_concurrent) if max_concurrent else None
        self._stopping = threading.Event()
        self._script: deque[tuple[str, str | None]] = deque()
        self._rules: list[Rule] = []
        self._records: list[RequestRecord] = []
        self._next_index = 1
        self._in_flight = 0
        self._active = 0
        self.max_in_flight = 0  # most requests received and not yet answered at one time
        self.max_active = 0  # most requests past the max_concurrent gate at one time
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- life cycle

    def start(self) -> "FaultServer":
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fault-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop at once: hanging and waiting requests are woken and their connections closed."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the fault server is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    # ---- faults

    def script(self, faults: Iterable[str], path: str | None = None) -> None:
        """Queue faults for the next requests (to `path` only, when given), one each, in order."""
        faults = list(faults)
        for f in faults:
            parse_fault(f)
        with self._lock:
            self._script.extend((f, path) for f in faults)

    def add_rule(self, fault: str, *, path: str | None = None, kind: str | None = None, contains: str | None = None,
                 every: int | None = None, when: Callable[[RequestRecord], bool] | None = None,
                 times: int | None = None) -> Rule:
        """Apply `fault` to every request matching all the given conditions: `path`; `kind` (see
        RequestRecord.kind); `contains`: a substring of the prompt text; `when(record)`; `every`:
        only every N-th matching request; `times`: at most that many times. Rules beat the script."""
        parse_fault(fault)
        if every is not None and every < 1:
            raise ValueError("every must be at least 1")
        rule = Rule(fault, path=path, kind=kind, contains=contains, every=every, when=when, times=times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove_rule(self, rule: Rule) -> None:
        with self._lock:
            self._rules.remove(rule)

    def clear_faults(self) -> None:
        """Forget the script and all rules."""
        with self._lock:
            self._script.clear()
            self._rules.clear()

    @property
    def scripted(self) -> list[str]:
        """The scripted faults not yet applied."""
        with self._lock:
            return [f for f, _ in self._script]

    def _choose_fault(self, rec: RequestRecord) -> str:
        with self._lock:
            for rule in self._rules:
                if rule.matches(rec):
                    return rule.fault
            for i, (fault, path) in enumerate(self._script):
                if _path_matches(path, rec.path):
                    del self._script[i]
                    return fault
        return "ok"

    # ---- accounting

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def count(self, path: str | None = None, *, kind: str | None = None, fault: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self._records if _path_matches(path, r.path)
                       and (kind is None or r.kind == kind) and (fault is None or r.fault == fault))

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def reset(self) -> None:
        """Forget the recorded requests and the in-flight maxima (not the script or rules)."""
        with self._lock:
            self._records.clear()
            self.max_in_flight = self._in_flight
            self.max_active = self._active

    def _arrive(self, rec_args: dict) -> RequestRecord:
        with self._lock:
            rec = RequestRecord(index=self._next_index, **rec_args)
            self._next_index += 1
            self._records.append(rec)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        return rec

    def _leave(self, rec: RequestRecord) -> None:
        with self._lock:
            self._in_flight -= 1
            rec.finished = time.monotonic()

    def _wait(self, seconds: float) -> bool:
        """Sleep; False when the server stopped meanwhile."""
        if seconds > 0:
            return not self._stopping.wait(seconds)
        return not self._stopping.is_set()

    def _enter_slot(self) -> bool:
        if self._slots is not None:
            while not self._slots.acquire(timeout=0.05):
                if self._stopping.is_set():
                    return False
        with self._lock:
            self._active += 1
            self.max_active = max(self.max_active, self._active)
        return True

    def _leave_slot(self) -> None:
        with self._lock:
            self._active -= 1
        if self._slots is not None:
            self._slots.release()

    # ---- answers

    def answer(self, rec: RequestRecord, fault: str) -> tuple[int, dict[str, str], Any]:
        """(status, extra headers, JSON body) of a request under a fault that only changes the
        content (ok, status codes, no-choices, empty-reply, *-logprobs, misaligned-text)."""
        kind, arg = parse_fault(fault)
        if kind == "status":
            code, retry_after = arg
            headers = {"Retry-After": retry_after} if retry_after is not None else {}
            return code, headers, _error(code, f"fake fault server: injected HTTP {code} "
                                               f"({_REASONS.get(code, 'error')})")
        body = rec.body if isinstance(rec.body, dict) else {}
        route = _route(rec.method, rec.path)
        if route is None:
            return 404, {}, _error(404, f"fake fault server: no route {rec.method} {rec.path}")
        if route == "models":
            return 200, {}, {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                                         "owned_by": "fake"}]}
        if not isinstance(rec.body, dict):
            return 400, {}, _error(400, "fake fault server: the request body is not a JSON object")
        if self.check_model and body.get("model") != self.model:
            return 404, {}, _error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
        if body.get("stream"):
            return 400, {}, _error(400, "fake fault server: streaming is not supported")
        if route == "chat":
            return 200, {}, self._chat(body, fault)
        return 200, {}, self._completion(body, fault)

    def _chat(self, body: dict, fault: str) -> dict:
        messages = body.get("messages") or []
        what, text = chat_reply(messages)
        if fault == "misaligned-text" and what == "simulate-chat":
            text = "\n".join(text.split("\n")[:-1])
        if fault == "empty-reply":
            text = ""
        text, tokens, finish = _limit(text, body.get("max_tokens") or body.get("max_completion_tokens"),
                                      body.get("stop"))
        logprobs = None
        if body.get("logprobs") and fault != "missing-logprobs":
            content = _chat_token_logprobs(tokens, min(int(body.get("top_logprobs") or 0), 20))
            if fault == "truncated-logprobs":
                content = content[:len(content) // 2]
            logprobs = {"content": content, "refusal": None}
        prompt_tokens = sum(len(tokenize(_message_text(m.get("content")))) + 4 for m in messages if isinstance(m, dict))
        choices = [] if fault == "no-choices" else [{
            "index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
            "finish_reason": finish}]
        return {"id": f"chatcmpl-fake-{_hash(text) % 10**12}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model, "choices": choices, "usage": _usage(prompt_tokens, len(tokens))}

    def _completion(self, body: dict, fault: str) -> dict:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt and isinstance(prompt[0], str) else ""
        prompt = str(prompt)
        n = body.get("logprobs")
        n = None if n is None or n is False else min(int(n), 20)
        max_tokens = body.get("max_tokens", 16)
        generated = [] if max_tokens == 0 else ["\n"]  # one generated token is enough for our client
        text, lp = "".join(generated), None
        echo = bool(body.get("echo"))
        prompt_toks = tokenize(prompt)
        if echo:
            text = prompt + text
        if n is not None and fault != "missing-logprobs":
            if echo:
                tokens, offsets, token_lps, tops = _echo_logprobs(prompt, n)
            else:
                tokens, offsets, token_lps, tops = [], [], [], []
            for tok in generated:
                dist = _ordinary(tok)
                offsets.append(len(prompt) if echo else 0)
                tokens.append(tok)
                token_lps.append(dist[tok])
                tops.append(_top(dist, n))
            if fault == "truncated-logprobs":
                tops = tops[:len(tops) // 2]
            if fault == "misaligned-text":
                offsets = [o + 1 for o in offsets]
            lp = {"tokens": tokens, "text_offset": offsets, "token_logprobs": token_lps, "top_logprobs": tops}
        if fault == "empty-reply":
            text, lp = "", None
        choices = [] if fault == "no-choices" else [{"index": 0, "text": text, "logprobs": lp,
                                                     "finish_reason": "length"}]
        return {"id": f"cmpl-fake-{_hash(prompt) % 10**12}", "object": "text_completion", "created": int(time.time()),
                "model": self.model, "choices": choices, "usage": _usage(len(prompt_toks), len(generated))}


def _error(code: int, message: str, type_: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_ or _REASONS.get(code, "error").replace(" ", "_"),
                      "param": None, "code": code}}


def _usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _limit(text: str, max_tokens: Any, stop: Any) -> tuple[str, list[str], str]:
    """The reply cut at the first stop string and at max_tokens tokens: (text, tokens, finish_reason)."""
    finish = "stop"
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    for s in stops:
        if s and s in text:
            text = text[:text.index(s)]
    tokens = tokenize(text)
    if isinstance(max_tokens, int) and 0 <= max_tokens < len(tokens):
        tokens, finish = tokens[:max_tokens], "length"
        text = "".join(tokens)
    return text, tokens, finish


def _route(method: str, path: str) -> str | None:
    p = "/" + path.split("?", 1)[0].strip("/").removeprefix("v1/").removeprefix("v1")
    if method == "GET" and p == "/models":
        return "models"
    if method == "POST" and p == "/chat/completions":
        return "chat"
    if method == "POST" and p == "/completions":
        return "completions"
    return None


def _kind(method: str, path: str, body: Any) -> str:
    route = _route(method, path)
    if route is None:
        return "other"
    if route == "models" or not isinstance(body, dict):
        return route
    if route == "chat":
        return chat_reply(body.get("messages") or [])[0] if isinstance(body.get("messages"), list) else "chat"
    return "echo" if body.get("echo") else "completions"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers (the SDK pools connections)
    server: _HTTPServer
    server_version = "FakeFaultServer/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: nothing to stderr or disk
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.fake._lock:
            self.server.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.server.fake._lock:
            self.server.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = fake._arrive(dict(received=time.monotonic(), method=self.command, path=self.path,
                                headers={k.lower(): v for k, v in self.headers.items()}, body=body, raw_body=raw,
                                kind=_kind(self.command, self.path, body)))
        try:
            self._respond(fake, rec)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away (e.g. it timed out)
        finally:
            fake._leave(rec)

    def _respond(self, fake: FaultServer, rec: RequestRecord) -> None:
        fault = fake._choose_fault(rec)
        rec.fault = fault
        kind, arg = parse_fault(fault)
        # hang and slow wait outside the max_concurrent slots: a stuck request never starves the others
        if kind == "hang" and not fake._wait(fake.hang_seconds if arg is None else arg):
            return self._abort()
        if kind == "slow" and not fake._wait(arg):
            return self._abort()
        if kind == "disconnect":
            return self._abort()
        if not fake._enter_slot():
            return self._abort()
        try:
            if not fake._wait(fake.latency):
                return self._abort()
            if kind == "malformed-json":
                return self._send(rec, 200, {}, b'{"id": "cmpl-fake", "choices": [{"text": "unterminated')
            status, headers, payload = fake.answer(rec, "ok" if kind in ("hang", "slow", "drop") else fault)
            data = json.dumps(payload).encode()
            if kind == "drop":
                return self._send(rec, status, headers, data, cut=len(data) // 2)
            self._send(rec, status, headers, data)
        finally:
            fake._leave_slot()

    def _send(self, rec: RequestRecord, status: int, headers: dict[str, str], data: bytes,
              cut: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        rec.status = status
        if cut is None:
            self.wfile.write(data)
            return
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self._abort()

    def _abort(self) -> None:
        """Close the connection now, whatever was sent."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
