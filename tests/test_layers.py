"""The architecture, checked from the source: layers import only downward, nothing imports in a
cycle (imports inside functions included), the method never sees DuckDB, click, the store, the
jobs or the CLI, and every module stays small enough to read in one sitting.

Layers, lowest first (docs/architecture.md):
    sparse_model                     the model, training, tasks, pruning, runs, nodes
    explainer.llm                    the LLM client and its backends
    method | explainer.store         records, prompts, explainer, simulators, scoring, pipeline,
                                     ground truth, suite | the DuckDB store (side by side, neither
                                     imports the other)
    explainer.jobs, explainer.report batch jobs over a run and the store (jobs may use the report)
    explainer.cli                    the `circuits` command line
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("sparse_model", "explainer")
MAX_LINES = 650

RANK = {"sparse_model": 0, "llm": 1, "method": 2, "store": 2, "jobs": 3, "report": 3, "cli": 4}
ALSO_ALLOWED = {("jobs", "report")}  # the demo job writes the report
FORBIDDEN_IN_METHOD = ("duckdb", "click", "explainer.store", "explainer.jobs", "explainer.cli", "explainer.report")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _layer(module: str) -> str:
    if module.startswith("sparse_model"):
        return "sparse_model"
    sub = module.split(".")[1] if module.count(".") else ""
    if sub in ("llm", "store", "jobs", "report", "cli"):
        return sub
    if sub == "__main__":
        return "cli"
    return "method"


def _imports(module: str) -> list[str]:
    """Every module this one imports (project modules and third-party top-level names), from
    anywhere in the file, functions included."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                out.append(sub if sub in MODULES else target)
    return out


GRAPH = {m: sorted({i for i in _imports(m) if i in MODULES and i != m}) for m in MODULES}


def test_layers_import_only_downward():
    wrong = []
    for m, targets in GRAPH.items():
        for t in targets:
            a, b = _layer(m), _layer(t)
            if a == b or (a, b) in ALSO_ALLOWED:
                continue
            if RANK[b] >= RANK[a]:
                wrong.append(f"{m} ({a}) imports {t} ({b})")
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_no_import_cycles():
    # Tarjan's strongly connected components over the module graph.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_method_never_sees_the_database_or_the_command_line():
    wrong = [f"{m} imports {i}" for m in MODULES if _layer(m) in ("method", "llm", "sparse_model")
             for i in _imports(m) if any(i == f or i.startswith(f + ".") for f in FORBIDDEN_IN_METHOD)]
    assert not wrong, "\n".join(wrong)


def test_store_imports_no_method_module():
    wrong = [f"{m} imports {t}" for m, ts in GRAPH.items() if _layer(m) == "store" for t in ts
             if _layer(t) not in ("store", "sparse_model")]
    assert not wrong, "\n".join(wrong)


def test_every_module_is_small_enough_to_read_in_one_sitting():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES} lines or more: {long}"


def test_the_checker_sees_imports_inside_functions():
    # The lexer used to be imported by the embedding simulator from the ground-truth fixture
    # inside a function; such an import must count.
    src = "def f():\n    from .ground_truth import RULES\n"
    tree = ast.parse(src)
    assert any(isinstance(n, ast.ImportFrom) for n in ast.walk(tree))
    assert "explainer.lexer" in GRAPH["explainer.simulators.embedding"]
