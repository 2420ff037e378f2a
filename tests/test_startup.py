"""Commands that need no model start without importing one: torch, llama.cpp and
sentence-transformers load only where they are used (README, "Start-up"). Not a timing test: each
command runs in a fresh interpreter, which then reports which of those modules it imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "llama_cpp", "sentence_transformers")
PROBE = """
import sys
from explainer.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
except BaseException:
    pass
print("HEAVY=" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""
COMMANDS = ["demo", "train", "models", "tasks", "prune", "circuits", "explain", "jobs", "eval", "report", "search",
            "sql", "export"]


def _heavy_after(args: list[str], env_db: str) -> list[str]:
    code = PROBE.format(heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "CIRCUITS_DB": env_db})
    line = [x for x in done.stdout.splitlines() if x.startswith("HEAVY=")]
    assert line, done.stdout + done.stderr
    return [m for m in line[-1][len("HEAVY="):].split(",") if m]


def test_importing_the_cli_imports_no_model():
    done = subprocess.run([sys.executable, "-c", "import sys, json; import explainer.cli; "
                           f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"],
                          capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], done.stderr


@pytest.mark.parametrize("args", [["--help"], *[[c, "--help"] for c in COMMANDS]], ids=lambda a: " ".join(a))
def test_help_imports_no_model(args, tmp_path):
    assert _heavy_after(args, str(tmp_path / "c.duckdb")) == []


@pytest.mark.parametrize("args", [
    ["sql", "SELECT 1"], ["jobs"], ["models"], ["circuits"], ["export", "--parquet", "OUT"], ["report", "-o", "OUT.html"],
    ["prune", "no/such/run", "--all"], ["explain", "no/such/run"], ["sql", "SELEC nonsense"],
], ids=lambda a: " ".join(a))
def test_commands_that_need_no_model_import_none(args, tmp_path):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    assert _heavy_after(args, str(tmp_path / "c.duckdb")) == []
