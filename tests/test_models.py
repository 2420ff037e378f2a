"""The embedded LLM's weights: parts joined in order, size and hash checked, atomically (a killed or
failed join leaves nothing that passes as complete); GGUF paths checked; the real Qwen2.5-Coder
0.5B joined from its installed part packages."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explainer.llm.models import EMBEDDED, check_gguf, join_parts, model_file
from explainer.llm.local import DEFAULT_MODEL
from sparse_model.errors import UserError


def _parts(tmp_path: Path, sizes=(1000, 2500, 17)) -> tuple[list[Path], bytes]:
    data = os.urandom(sum(sizes))
    parts, at = [], 0
    for i, n in enumerate(sizes):
        p = tmp_path / f"part{i:02d}.bin"
        p.write_bytes(data[at:at + n])
        parts.append(p)
        at += n
    return parts, data


def test_parts_are_joined_in_order_and_checked(tmp_path):
    parts, data = _parts(tmp_path)
    dest = tmp_path / "cache" / "m.gguf"
    join_parts(parts, dest, len(data), hashlib.sha256(data).hexdigest())
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir() if ".partial-" in p.name] == []


@pytest.mark.parametrize("what", ["size", "hash", "order"])
def test_a_wrong_join_leaves_no_file(tmp_path, what):
    parts, data = _parts(tmp_path)
    sha = hashlib.sha256(data).hexdigest()
    size = len(data) + 1 if what == "size" else len(data)
    if what == "hash":
        sha = "0" * 64
    if what == "order":
        parts = parts[::-1]
    dest = tmp_path / "cache" / "m.gguf"
    with pytest.raises(UserError) as e:
        join_parts(parts, dest, size, sha)
    assert "\n" not in str(e.value) and "reinstall" in str(e.value)
    assert list(dest.parent.iterdir()) == []


def test_a_killed_join_leaves_only_a_partial_file_that_the_next_join_replaces(tmp_path):
    parts, data = _parts(tmp_path, sizes=(64 << 20, 64 << 20))  # large enough to kill mid-write
    dest = tmp_path / "cache" / "m.gguf"
    sha = hashlib.sha256(data).hexdigest()
    code = (f"import time\nfrom pathlib import Path\nfrom explainer.llm.models import join_parts\n"
            f"join_parts({[str(p) for p in parts]!r}, Path({str(dest)!r}), {len(data)}, {sha!r}, "
            f"progress=lambda n: time.sleep(0.05))\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 60
    while not list(dest.parent.glob("*.partial-*")) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not dest.exists() and list(dest.parent.glob("*.partial-*"))
    join_parts(parts, dest, len(data), sha)
    assert dest.read_bytes() == data and not list(dest.parent.glob("*.partial-*"))


def test_gguf_paths_are_checked(tmp_path):
    with pytest.raises(UserError, match="no model file at"):
        model_file(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(UserError, match="is not a GGUF model file"):
        model_file(not_gguf)
    ok = tmp_path / "m.gguf"
    ok.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert check_gguf(ok) == ok


QWEN = EMBEDDED[DEFAULT_MODEL]  # the default explainer, in the [local] extra
have_qwen = all(importlib.util.find_spec(m) is not None for m in QWEN.part_modules())


@pytest.mark.slow
def test_the_real_qwen_parts_join_into_the_published_file(tmp_path, monkeypatch):
    if not have_qwen:
        if os.environ.get("CIRCUITS_REQUIRE_LLM"):
            pytest.fail(f"the {QWEN.display} part packages are missing: {QWEN.pip_command()}")
        pytest.skip(f"the {QWEN.display} part packages are not installed")
    monkeypatch.setenv("CIRCUITS_MODEL_CACHE", str(tmp_path))
    path = model_file(DEFAULT_MODEL)
    assert path.stat().st_size == QWEN.size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    assert h.hexdigest() == QWEN.sha256
    with open(path, "r+b") as f:  # damage the cached file: it is detected and joined again
        f.truncate(QWEN.size - 1)
    assert model_file(DEFAULT_MODEL).stat().st_size == QWEN.size
