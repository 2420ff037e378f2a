"""A FAKE fault-injecting loopback proxy in front of a REAL OpenAI-compatible server (llama.cpp's
server in the tests). It is not an LLM: every answer that gets through comes from the real server.

The first attempt of every distinct request (method, path and body) gets one fault, taken in turn
from `faults`; the retry of that request, and every later copy of it, goes through to the real
server. The first faulted request may instead hang (`hang_first` seconds, longer than the client's
timeout) to check timeouts. Standard library only; nothing written to disk.

    with FaultProxy(upstream="http://127.0.0.1:PORT/v1") as proxy:
        backend = OpenAIBackend(base_url=proxy.base_url, model="smollm2")
        ...
        proxy.applied        # {"429-retry-after": 3, "429": 3, ...}
        proxy.retry_gaps     # seconds between a Retry-After fault and its retry
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

FAULTS = ("429-retry-after", "429", "500", "503", "drop", "malformed-json")
RETRY_AFTER = 1  # seconds, in the Retry-After header


class FaultProxy:
    def __init__(self, upstream: str, faults: tuple[str, ...] = FAULTS, hang_first: float | None = None):
        self.upstream = upstream.rstrip("/").removesuffix("/v1")
        self.faults, self.hang_first = faults, hang_first
        self._hang = hang_first or 0.0
        self.applied: Counter[str] = Counter()
        self.requests = 0  # every request that reached the proxy
        self.forwarded = 0
        self.retry_gaps: list[float] = []
        self._seen: dict[str, tuple[str, float]] = {}  # request key -> (fault, time)
        self._lock = threading.Lock()
        self._n = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                proxy._handle(self, b"")

            def do_POST(self):
                proxy._handle(self, self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a client that gave up: not our business
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def off(self) -> None:
        """Let every request through from now on (a fault-free run through the same address)."""
        self.faults, self.hang_first = (), None

    def reset_counts(self) -> None:
        with self._lock:
            self.applied.clear()
            self.requests = self.forwarded = 0

    def _choose(self, key: str) -> str:
        with self._lock:
            self.requests += 1
            now = time.monotonic()
            if key in self._seen:  # faulted once already: through, now and later
                fault, at = self._seen[key]
                if fault == "429-retry-after" and at is not None:
                    self.retry_gaps.append(now - at)
                    self._seen[key] = (fault, None)
                return "ok"
            if not self.faults:
                return "ok"
            if self.hang_first is not None:
                fault, self.hang_first = "hang", None
            else:
                fault = self.faults[self._n % len(self.faults)]
                self._n += 1
            self._seen[key] = (fault, now)
            self.applied[fault] += 1
            return fault

    def _handle(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        key = hashlib.sha256(h.command.encode() + h.path.encode() + body).hexdigest()
        fault = self._choose(key)
        if fault == "ok":
            return self._forward(h, body)
        if fault == "hang":
            time.sleep(self._hang)  # past the client's timeout; the client gives up and retries
            h.close_connection = True
            return
        if fault == "drop":
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", "400")
            h.end_headers()
            h.wfile.write(b'{"id": "cut')
            h.close_connection = True
            return
        if fault == "malformed-json":
            return self._send(h, 200, b"{this is not json", {})
        status = int(fault.split("-")[0])
        headers = {"Retry-After": str(RETRY_AFTER)} if fault == "429-retry-after" else {}
        err = json.dumps({"error": {"message": f"injected {fault}", "type": "fault", "code": status}}).encode()
        self._send(h, status, err, headers)

    def _forward(self, h: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        req = urllib.request.Request(self.upstream + h.path, data=body if h.command == "POST" else None,
                                     method=h.command)
        for name in ("Content-Type", "Authorization", "Accept"):
            if h.headers.get(name):
                req.add_header(name, h.headers[name])
        try:
            with urllib.request.urlopen(req, timeout=600) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        with self._lock:
            self.forwarded += 1
        self._send(h, status, data, {})

    @staticmethod
    def _send(h: http.server.BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
