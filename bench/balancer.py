"""A least-busy HTTP load balancer over several OpenAI-compatible servers (standard library only).

llama_cpp.server answers one request at a time, so "a server with N parallel slots" is N server
processes behind this balancer, each request going to the upstream with the fewest requests in
flight (what nginx's `least_conn` or a vLLM router does in front of replicas). Used by
`bench/llm_throughput.py --real`.

    with Balancer(["http://127.0.0.1:8001/v1", "http://127.0.0.1:8002/v1"]) as lb:
        client = make_client("openai", base_url=lb.base_url, concurrency=4)
        lb.served            # requests answered by each upstream
        lb.max_in_flight     # the most requests that were in flight at once, over all upstreams
"""

from __future__ import annotations

import http.server
import threading
import urllib.error
import urllib.request


class Balancer:
    def __init__(self, upstreams: list[str], timeout: float = 600.0):
        self.upstreams = [u.rstrip("/").removesuffix("/v1") for u in upstreams]
        self.timeout = timeout
        self.in_flight = [0] * len(upstreams)
        self.served = [0] * len(upstreams)
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _pick(self) -> int:
        with self._lock:
            i = min(range(len(self.upstreams)), key=lambda j: (self.in_flight[j], self.served[j]))
            self.in_flight[i] += 1
            self.max_in_flight = max(self.max_in_flight, sum(self.in_flight))
            return i

    def _done(self, i: int) -> None:
        with self._lock:
            self.in_flight[i] -= 1
            self.served[i] += 1

    def _forward(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0)) or None
        i = self._pick()
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
        req = urllib.request.Request(self.upstreams[i] + handler.path, data=body, headers=headers, method=handler.command)
        try:
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "application/json")
            except urllib.error.HTTPError as e:
                status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "application/json")
        except (urllib.error.URLError, OSError):
            status, payload, ctype = 502, b'{"error": "upstream unreachable"}', "application/json"
        finally:
            self._done(i)
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def __enter__(self) -> "Balancer":
        balancer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                balancer._forward(self)

            def do_POST(self) -> None:
                balancer._forward(self)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
