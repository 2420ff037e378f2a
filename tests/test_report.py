"""`circuits report`: the self-contained HTML report, built from a real pipeline run (a tiny model trained
on a corpus that holds a hostile file, its random-label control circuit, explained through the FAKE
OpenAI-compatible server), checked as HTML, rendered in headless Chromium, and fed bad input."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from explainer.jobs.circuits import prune_job
from explainer.cli import main
from explainer.report import REPORT_TITLE, ReportSettings, build_report, write_report
from explainer.store import Store
from fault_server import FaultServer
from sparse_model.corpus import _is_val
from sparse_model.errors import UserError
from sparse_model.prune import PruneSettings
from sparse_model.prune_search import SearchSettings
from output import message_lines

SECRET = "sk-test-report-0000"
EXPLAINED_NODES = 32  # circuit nodes the fake server explains (every node took 2 minutes)
EXPLAIN = ["--window", "12", "--explain-windows", "1", "--score-windows", "2", "--calibrate-windows", "1",
           "--explanations-per-node", "1", "--concurrency", "2", "--backoff", "0.05", "--timeout", "5",
           "--explain-prompt", "explain"]  # the fake server answers the worked-example format

# A real-looking module (an HTML page renderer) whose strings and comments carry markup that must never
# reach the report as markup. The DOM-visible payloads (document.title, an element id "pwned") let the
# browser test see whether any of them ran.
HOSTILE_PY = '''"""Tiny HTML page templates for the documentation server.

Never put user text into a page without escaping it: a comment such as
<script>window.__pwned=1</script> or a stray </textarea> would otherwise end the markup early,
and <img src=x onerror="window.__pwned=2"> runs code as soon as the page loads.
"""

import html

PAGE = """<!DOCTYPE html>
<html><head><title>{title}</title></head>
<body>
<textarea name="code">{code}</textarea>
<script>window.__pwned=1</script>
<script>document.title = "pwned"; document.body.id = "pwned";</script>
<img src=x onerror="window.__pwned=2">
<img src=x onerror="document.body.id = 'pwned'">
</body></html>
"""

BAD_SNIPPETS = [
    "<script>window.__pwned=1</script>",
    "</textarea>",
    '<img src=x onerror="window.__pwned=2">',
    '"quotes"',
    "<script>document.title = 'pwned'</script>",
]


def render(title, code):
    # "quotes" and <angle brackets> must be escaped: html.escape(text, quote=True)
    return PAGE.format(title=html.escape(title, quote=True), code=html.escape(code))


def unsafe_render(title, code):
    """The bug this module exists to avoid: "</textarea><script>window.__pwned=1</script>"."""
    return "<textarea>" + code + "</textarea>" + "<script>document.title = 'pwned'</script>"


def is_safe(snippet):
    if "<script>" in snippet or "</script>" in snippet:
        return False
    if "</textarea>" in snippet:
        return False
    if 'onerror="' in snippet:
        return False
    return True


class Page:
    def __init__(self, title, body):
        self.title = title
        self.body = body

    def __repr__(self):
        return f"Page({self.title!r}, <textarea>{self.body!r}</textarea>)"

    def to_html(self):
        return render(self.title, self.body)


def check_all():
    for snippet in BAD_SNIPPETS:
        page = Page("<script>window.__pwned=1</script>", snippet)
        out = page.to_html()
        assert "<script>window.__pwned=1</script>" not in out.split("<body>")[0]
        assert is_safe(html.escape(snippet))


if __name__ == "__main__":
    check_all()
'''

# Stands for a hostile corpus window and hostile LLM output (the corpus file above holds the same strings;
# this row guarantees they reach the report whatever windows the tiny model picks).
HOSTILE_TOKENS = ["<script>", "window.__pwned=1", "</script>", "</textarea>", ' "quotes"', "\n", "\t",
                  "<img src=x onerror=\"document.body.id='pwned'\">", "<script>document.title='pwned'</script>"]
HOSTILE_EXPLANATION = "<script>window.__pwned=3;document.title='pwned'</script> closing </textarea> \"quotes\""
HOSTILE_RAW = "</textarea><img src=x onerror=\"document.body.id='pwned'\"><script>window.__pwned=4</script>"
RAW_PAYLOADS = ["<script>window.__pwned", "<script>document.title", "</textarea>", "<img src=x", "onerror=\""]


def _cli(db, *args, env=None):
    r = CliRunner().invoke(main, ["--db", str(db), *args], env=env)
    return r.exit_code, r.stdout, r.stderr


def _one_error_line(err: str) -> bool:
    """The user sees one line saying what is wrong (progress bars aside), never a traceback."""
    lines = message_lines(err)
    return len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err


def _hostile_name() -> str:
    """A file name the corpus puts in the validation split (where activation records come from)."""
    return next(f"page_templates_{i}.py" for i in range(10_000) if _is_val(f"page_templates_{i}.py", 0.05))


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory, small_corpus) -> Path:
    """The small stdlib corpus (its files that go to training) plus the hostile module, which is the
    whole validation split, so every activation record is a window of it."""
    dst = tmp_path_factory.mktemp("hostile_corpus")
    for p in sorted(small_corpus.glob("*.py")):
        if not _is_val(p.name, 0.05):
            shutil.copy(p, dst / p.name)
    (dst / _hostile_name()).write_text(HOSTILE_PY, encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, hostile_corpus, small_prompts):
    """train tiny -> circuits tasks -> prune random_control -> circuits explain (fake server) -> one
    extra hostile record and explanation."""
    from sparse_model.train import train

    root = tmp_path_factory.mktemp("report")
    run = root / "tiny-run"
    train(run, "tiny", corpus_dir=hostile_corpus, progress=False, log=lambda s: None)
    db = root / "c.duckdb"
    code, _, err = _cli(db, "tasks", str(run))
    assert code == 0, err
    with Store.open(db) as store:
        (circuit,) = prune_job(store, run, ["random_control"], SearchSettings(PruneSettings(k_coef=5e-5), budget_s=None,
                                                                              points=2), progress=False)
    assert circuit["n_nodes"] > 1
    with Store.open(db, read_only=True) as store:  # the best-ranked 32 of its nodes: more than the report's 30 cards
        explained = [x["name"] for x in store.circuit_nodes(circuit["circuit_id"])[:EXPLAINED_NODES]]
    with FaultServer() as server:
        code, _, err = _cli(db, "explain", str(run), *[a for n in explained for a in ("--node", n)], "--backend", "openai",
                            "--base-url", server.base_url, "--prompts", str(small_prompts), *EXPLAIN,
                            env={"OPENAI_API_KEY": SECRET})
    assert code == 0, err
    with Store.open(db) as store:
        model = store.list_models()[0]["name"]
        nodes = store.circuit_nodes(circuit["circuit_id"])
        target = nodes[0]["node_id"]
        keep = ("sampling", "rank", "split", "start", "max_activation", "tokens", "activations", "sample_seed")
        rows = [{k: r[k] for k in keep} for r in store.activation_records(target)]
        acts = [float(i % 4) for i in range(len(HOSTILE_TOKENS))]
        rows.append({"sampling": "top", "rank": 999, "split": "score", "start": 0, "max_activation": max(acts),
                     "tokens": HOSTILE_TOKENS, "activations": acts, "sample_seed": 0})
        store.save_activation_records(model, target, rows)
        store.save_explanation(
            {"explanation_id": "hostile-llm", "node_id": target, "model": model, "kind": "llm",
             "text": HOSTILE_EXPLANATION, "candidate": 0, "selected": True, "explainer": "openai:<b>evil</b>",
             "simulator": "all_at_once"},
            [{"sampling": "top", "rank": 999, "split": "score", "predicted": [9.0 - a for a in acts]}],
            [{"split": "score", "method": "correlation", "value": 0.99, "n_tokens": len(acts)}])
        store.save_explanation(
            {"explanation_id": "hostile-failed", "node_id": target, "model": model, "kind": "llm", "text": None,
             "candidate": 1, "selected": False, "failure": "<script>document.title='pwned'</script>",
             "raw_text": HOSTILE_RAW}, [], [])
    return SimpleNamespace(db=db, run=run, model=model, circuit=circuit, nodes=nodes, target=target)


@pytest.fixture(scope="module")
def report(pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "missing" / "folder" / "report.html"  # -o into a missing folder
    code, stdout, err = _cli(pipeline.db, "report", "-o", str(out))
    assert code == 0, err
    assert out.is_file() and f"wrote {out}" in stdout
    return SimpleNamespace(path=out, html=out.read_text(encoding="utf-8"))


class _Elements(HTMLParser):
    """Every start tag as (tag, attrs, ancestors' tags), plus text per open tag."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict, tuple[str, ...]]] = []
        self.stack: list[str] = []
        self.texts: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self.stack)))
        if tag not in ("meta", "br", "img", "line", "rect", "circle", "input", "link"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, dict(attrs), tuple(self.stack)))

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if self.stack:
            self.texts.setdefault(self.stack[-1], []).append(data)

    def having(self, tag: str | None = None, cls: str | None = None) -> list[dict]:
        return [a for t, a, _ in self.elements if (tag is None or t == tag)
                and (cls is None or cls in (a.get("class") or "").split())]


def _parse(text: str) -> _Elements:
    p = _Elements()
    p.feed(text)
    return p


def _q(db, sql, params=None):
    with Store.open(db, read_only=True) as s:
        return s.query(sql, params)[1]


# ---- contents -----------------------------------------------------------------------------------------


def test_the_report_has_every_section_with_the_stored_numbers(pipeline, report):
    doc, text = _parse(report.html), report.html
    circuit = pipeline.circuit
    # One graph for the one circuit, with one node element per circuit node and its edges.
    (graph,) = doc.having("svg", "circuit")
    circles = [a for t, a, _ in doc.elements if t == "circle" and "node" in a.get("class", "").split()]
    assert len(circles) == circuit["n_nodes"] == len(pipeline.nodes)
    n_lines = len(re.findall(r"<line x1=", text.split('class="circuit"')[1].split("</svg>")[0]))
    assert n_lines == min(circuit["n_edges"], 1500) > 0
    assert f"All {circuit['n_edges']:,} edges drawn" in text or "weaker edges are not drawn" in text
    # Node tooltips carry the best LLM explanation (escaped) and its score.
    assert "LLM: &lt;script&gt;window.__pwned=3" in text and "[score 0.99]" in text
    # Unpruned, sufficiency and necessity losses of the circuit.
    for key in ("full_loss", "sufficiency_loss", "necessity_loss"):
        assert f"{circuit[key]:.4g}" in text
    assert "unpruned loss" in text and "sufficiency loss" in text and "necessity loss" in text
    # Histogram with bars for the LLM and both baselines, and its summary table.
    (hist,) = doc.having("svg", "histogram")
    kinds = {c for a in doc.having("rect", "bar") for c in a["class"].split() if c.startswith("kind-")}
    assert kinds == {"kind-llm", "kind-token_lookup", "kind-shuffled"}
    n_sel = _q(pipeline.db, "SELECT kind, count(*) FROM explanations WHERE selected GROUP BY kind")
    table = text.split('class="hist-table"')[1].split("</table>")[0]
    for kind, n in n_sel:
        assert re.search(rf"{kind}</td><td>{n}</td>", table), (kind, n)
    # Heatmaps: real beside simulated, for the cards of explained nodes (the best 30 of those explained).
    cards = doc.having("article", "node-card")
    assert len(cards) == min(30, circuit["n_nodes"], EXPLAINED_NODES)
    windows = doc.having("div", "window")
    assert windows and len(doc.having("div", "tokens")) == 2 * len(windows)
    assert text.count(">real activation<") == text.count(">simulated (0..9)<") > 0
    # The model card: config, density, corpus manifest summary, losses, task_evals and circuit_summary.
    (card,) = doc.having("section", "model-card")
    model = _q(pipeline.db, "SELECT val_loss, train_loss, tokens_seen FROM models")[0]
    assert f"{model[0]:.4g}" in text and f"{model[1]:.4g}" in text and f"{model[2]:,}" in text
    assert "model.n_layer" in text and "weight matrices" in text and "val_files" in text
    n_tasks = _q(pipeline.db, "SELECT count(*) FROM task_evals")[0][0]
    assert len(re.findall(r"<tr>", text.split('class="evals"')[1].split("</table>")[0])) == n_tasks + 1
    assert "random_control" in text.split('class="summary"')[1].split("</table>")[0]


def test_text_from_the_corpus_and_the_llm_is_escaped_never_markup(pipeline, report):
    text = report.html
    # The corpus reached the activation records: the hostile module is the validation split.
    assert _q(pipeline.db, "SELECT count(*) FROM activation_records WHERE array_to_string(tokens, '') LIKE '%<%' "
                           "AND rank < 999")[0][0] > 0
    for raw in RAW_PAYLOADS:
        assert raw not in text, raw
    assert "&lt;script&gt;window.__pwned=3;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in text
    assert "&lt;/textarea&gt;" in text and "&quot;quotes&quot;" in text
    assert "&lt;img src=x onerror=&quot;document.body.id=&#x27;pwned&#x27;&quot;&gt;" in text
    assert "openai:&lt;b&gt;evil&lt;/b&gt;" in text and "<b>evil" not in text
    for shown in ("↵", "⇥"):  # newline and tab tokens are visible symbols in the heatmaps
        assert re.search(rf'<span class="[hn]\d" title="[^"<>]*">{shown}</span>', text), shown
    # Exactly one script block, ours, allowed by the CSP through its hash; no data inside it.
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", text, re.S)
    assert len(scripts) == 1 and "pwned" not in scripts[0]
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    (csp,) = re.findall(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert f"script-src &#x27;sha256-{digest}&#x27;" in csp and "default-src &#x27;none&#x27;" in csp
    assert "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text  # self-contained: nothing to fetch


# ---- in a browser -------------------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        why = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CIRCUITS_REQUIRE_BROWSER") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = _chromium()
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_the_report_renders_in_headless_chromium_and_no_script_from_data_runs(pipeline, report, tmp_path):
    url = report.path.resolve().as_uri()
    shot = tmp_path / "report.png"
    r = _browser(tmp_path, f"--screenshot={shot}", url)
    assert shot.is_file(), r.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not a blank one
    print(f"screenshot: {shot}")

    r = _browser(tmp_path, "--dump-dom", url)
    dom = r.stdout
    assert "</html>" in dom, r.stderr[-2000:]
    assert re.search(r'<html[^>]*data-report-js="ok"', dom)  # our own script ran under the CSP
    assert re.findall(r"<title>(.*?)</title>", dom)[0] == REPORT_TITLE
    assert not re.search(r"<[a-z][^<>]*\sid=\"?pwned", dom)  # no payload touched the DOM
    assert "pwned" not in re.findall(r"<title>(.*?)</title>", dom)[0]
    for needle in ('class="circuit"', 'class="histogram"', 'class="model-card"', 'class="node-card"',
                   'class="window"', 'id="toc"', 'class="tradeoff"'):
        assert needle in dom, needle
    assert len(re.findall(r'<circle class="node ', dom)) == len(re.findall(r'<circle class="node ', report.html))
    # the pruning search's size-against-loss plot: one mark per stored point, the chosen one ringed
    points = _q(pipeline.db, "SELECT count(*), count(*) FILTER (WHERE chosen) FROM prune_points")[0]
    assert points[0] >= 2 and points[1] == 1
    drawn = re.findall(r'<(?:circle|rect) class="point[^"]*"', dom)
    assert len(drawn) == points[0] and len([d for d in drawn if "chosen" in d]) == 1


# ---- library, options and bad input ----------------------------------------------------------------------


def test_library_api_edge_cap_and_run_folder(pipeline, tmp_path):
    n_edges = pipeline.circuit["n_edges"]
    assert n_edges >= 2
    cap = n_edges - 1
    with Store.open(pipeline.db, read_only=True) as store:
        text = build_report(store, pipeline.model, ReportSettings(max_edges=cap, nodes_per_task=2, windows_per_node=1))
        out = write_report(store, tmp_path / "a" / "r.html", model=pipeline.model)
        with pytest.raises(UserError, match="no model named 'nope'"):
            build_report(store, "nope")
    assert out.is_file() and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    svg = text.split('class="circuit"')[1].split("</svg>")[0]
    assert len(re.findall(r"<line x1=", svg)) == cap
    assert f"Showing the strongest {cap:,} of {n_edges:,} edges" in text and "1 weaker edges are not drawn" in text
    assert text.count('class="node-card"') == 2 and text.count('class="window"') == 2
    assert "Heatmap cards for the best 2 of" in text
    # RUN may be the run folder or the model name.
    for run in (str(pipeline.run), pipeline.model):
        code, stdout, err = _cli(pipeline.db, "report", run, "-o", str(tmp_path / "b.html"))
        assert code == 0 and "wrote" in stdout, err


def _big_circuit_db(path: Path, n_edges: int = 118_000, n_explained: int = 32) -> int:
    """A SYNTHETIC store the size of the standard model's biggest circuit (3 layers, about 3,600 of 4,352
    nodes, 118,000 edges, 32 explained nodes), written with SQL for speed: a load test of the report, not
    a model."""
    sizes = {"attn.resid_read": 128, "attn.q": 128, "attn.k": 128, "attn.v": 128, "attn.resid_write": 128,
             "mlp.resid_read": 128, "mlp.neuron": 512, "mlp.resid_write": 128}
    cid = "big/quote_in_context/synthetic"
    with Store.open(path) as store:
        store.upsert_model({"name": "big", "config": {"preset": "synthetic", "model": {"n_layer": 3}},
                            "density": {"w": 0.25}, "corpus_manifest": {"files": 1, "list": ["a.py"]}})
        store.con.execute("""
            INSERT INTO nodes (node_id, model, layer, site, idx, name, mean, location)
            SELECT 'big/' || name, 'big', layer, site, idx, name, 0.0, split_part(name, '[', 1) FROM (
                SELECT l AS layer, v.loc AS site, i AS idx, 'L' || l || '.' || v.loc || '[' || i || ']' AS name
                FROM range(3) a(l), (SELECT unnest(?::VARCHAR[]) AS loc, unnest(?::INTEGER[]) AS n) v, range(512) b(i)
                WHERE i < v.n
                UNION ALL
                SELECT 3, 'final.resid_read', i, 'final.resid_read[' || i || ']' FROM range(128) b(i))""",
                          [list(sizes), list(sizes.values())])
        kept = store.query("SELECT node_id FROM nodes WHERE idx % 6 <> 0 ORDER BY layer, site, idx")[1]
        store.save_circuit({"circuit_id": cid, "model": "big", "task": "quote_in_context", "status": "circuit",
                            "target_loss": 0.15, "full_loss": 0.077, "sufficiency_loss": 0.13, "necessity_loss": 0.71,
                            "sufficient": True, "n_nodes": len(kept), "n_edges": n_edges, "settings": {}}, [], [])
        store.con.execute("INSERT INTO circuit_nodes SELECT ?, node_id, row_number() OVER (ORDER BY node_id) - 1, 0.5 "
                          "FROM nodes WHERE idx % 6 <> 0", [cid])
        store.con.execute("""
            INSERT INTO edges
            WITH cn AS (SELECT node_id, row_number() OVER (ORDER BY node_id) - 1 AS k FROM circuit_nodes),
                 c AS (SELECT count(*) AS n FROM cn)
            SELECT ?, a.node_id, b.node_id, ((i * 37) % 1000 - 500) / 1000.0,
                   CASE WHEN i % 50 = 0 THEN 'residual' ELSE 'weight' END
            FROM range(?) r(i), c JOIN cn a ON a.k = (i * 7919) % c.n JOIN cn b ON b.k = (i * 104729 + 13) % c.n""",
                          [cid, n_edges])
        tokens = [f"tok{i}" for i in range(64)]
        items = []
        for j, (node,) in enumerate(kept[:n_explained]):
            acts = [float((i * (j + 3)) % 7) for i in range(64)]
            store.save_activation_records("big", node, [
                {"sampling": kind, "rank": r, "split": "score", "start": 64 * r, "max_activation": max(acts),
                 "tokens": tokens, "activations": acts, "sample_seed": 0} for kind in ("top", "random") for r in range(3)])
            sims = [{"sampling": kind, "rank": r, "split": "score", "predicted": [a + 1 for a in acts]}
                    for kind in ("top", "random") for r in range(3)]
            items.append(({"explanation_id": f"e{j}", "node_id": node, "model": "big", "kind": "llm",
                           "text": f"explanation {j}", "selected": True}, sims,
                          [{"split": "score", "method": "correlation", "value": j / 100}]))
        store.save_explanations(items)
    return len(kept)


def test_a_circuit_as_big_as_the_standard_models_is_capped_small_and_quick(tmp_path):
    import time

    db = tmp_path / "big.duckdb"
    n_nodes = _big_circuit_db(db)
    assert n_nodes > 3500
    out = tmp_path / "big.html"
    started = time.monotonic()
    code, stdout, err = _cli(db, "report", "big", "-o", str(out))
    seconds = time.monotonic() - started
    assert code == 0, err
    text = out.read_text(encoding="utf-8")
    print(f"big circuit: {out.stat().st_size / 1e6:.2f} MB in {seconds:.1f} s")
    assert seconds < 30 and out.stat().st_size < 3_000_000
    svg = text.split('class="circuit"')[1].split("</svg>")[0]
    assert len(re.findall(r"<line x1=", svg)) == 1500
    assert len(re.findall(r'<circle class="node ', svg)) == n_nodes
    assert "Showing the strongest 1,500 of 118,000 edges" in text and "116,500 weaker edges are not drawn" in text
    assert text.count('class="node-card"') == 30 and "Heatmap cards for the best 30 of 32 explained nodes" in text
    assert text.count('class="window"') == 30 * 4


def test_bad_input_is_one_clear_line(pipeline, tmp_path):
    empty = tmp_path / "empty.duckdb"
    Store.open(empty).close()  # a database with every table and no circuits
    code, _, err = _cli(empty, "report", "-o", str(tmp_path / "r.html"))
    assert code == 1 and _one_error_line(err) and "circuits prune" in err and not (tmp_path / "r.html").exists()

    code, _, err = _cli(pipeline.db, "report", "no-such-model", "-o", str(tmp_path / "r.html"))
    assert code == 1 and _one_error_line(err) and "no-such-model" in err and "circuits models" in err

    code, _, err = _cli(tmp_path / "missing.duckdb", "report")
    assert code == 1 and _one_error_line(err)

    (tmp_path / "adir").mkdir()
    code, _, err = _cli(pipeline.db, "report", "-o", str(tmp_path / "adir"))
    assert code == 1 and _one_error_line(err) and "directory" in err

    code, _, err = _cli(pipeline.db, "report", "--max-edges", "-1")
    assert code == 1 and _one_error_line(err) and "--max-edges" in err
