"""Shared fixtures: a small real corpus (stdlib files) and a tiny model trained on it once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from llama_server import server_available, skip_or_fail, start_llama_server
from prompt_files import write_small_prompts

from sparse_model.corpus import default_corpus_dir


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """About 60 real standard-library modules (~1.5 MB), copied so tests can rely on the set."""
    src = sorted(p for p in default_corpus_dir().glob("*.py") if p.stat().st_size > 2000)
    dst = tmp_path_factory.mktemp("corpus")
    for p in src[:: max(1, len(src) // 60)][:60]:
        shutil.copy(p, dst / p.name)
    return dst


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_corpus) -> Path:
    """A finished `tiny` run folder (trained once per test session)."""
    from sparse_model.train import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(out, "tiny", corpus_dir=small_corpus, progress=False, log=lambda s: None)
    return out


@pytest.fixture(scope="session")
def llama_server():
    """Base URL of one real OpenAI-compatible server (llama_cpp.server with the embedded GGUF file),
    shared by the whole session."""
    why = server_available()
    if why:
        skip_or_fail(why)
    with start_llama_server() as base_url:
        yield base_url


@pytest.fixture(scope="session")
def embedded_llm():
    """Skip (or, under CIRCUITS_REQUIRE_LLM, fail) tests of the embedded LLM when it is not installed."""
    why = server_available()
    if why:
        skip_or_fail(why)


@pytest.fixture(scope="session")
def small_prompts(tmp_path_factory) -> Path:
    """Prompt files with one tiny worked example each (see `prompt_files.write_small_prompts`)."""
    return write_small_prompts(tmp_path_factory.mktemp("prompts"))
