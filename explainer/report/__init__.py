"""The HTML report: one self-contained file per database (or per model) that opens from disk.

    from explainer.report import write_report
    with Store.open("circuits.duckdb", read_only=True) as store:
        write_report(store, "report.html")              # every model in the database
        write_report(store, "std.html", model="standard")

For each model the report shows:

- the model card: config, weight density, corpus manifest (summary fields), train/val loss, tokens
  seen, the unpruned model's task evaluations (`task_evals`) and every stored circuit
  (`circuit_summary`);
- a histogram of explanation scores (split 'score', method 'correlation'; the selected explanation
  of each kind) for the LLM against the `token_lookup` and `shuffled` baselines, undefined (NULL)
  scores counted apart;
- per task, its newest circuit (the one `circuits explain --task` explains; `all_circuits=True` draws
  every stored circuit) as an inline SVG graph: one column per layer (then `final`), one band per
  node location in forward order, nodes sorted by index; edges coloured by sign, width and opacity
  by |weight| relative to the strongest edge of its kind, residual edges dashed; at most `max_edges`
  edges (the strongest of each kind, in proportion to how many there are), with a note saying how
  many were left out. Each node's tooltip holds its name, its best LLM explanation and score. Then
  the unpruned, sufficiency and necessity losses and a table of the circuit's explained nodes;
- per explained node (the best `nodes_per_task` per task by LLM score), every selected explanation
  with its scores, other LLM candidates, and token heatmaps of the top and random score windows:
  the real activation (normalised by the node's largest |activation|) beside the simulated one
  (normalised by the largest prediction of that explanation).

Safety: everything read from the database (corpus text, LLM output, names) goes through
`html.escape(..., quote=True)`; no data is written inside the one <script> block, which is ours
and constant; a Content-Security-Policy meta tag allows only that script (by its sha256 hash), so
an injected script could not run even if escaping failed. No network, no external files.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from sparse_model.errors import UserError

from ..scoring import correlation
from ..store import Store

KINDS = ("llm", "token_lookup", "shuffled")
LOCATIONS = ("attn.resid_read", "attn.q", "attn.k", "attn.v", "attn.resid_write",
             "mlp.resid_read", "mlp.neuron", "mlp.resid_write")
FINAL = "final.resid_read"
DEFAULT_MAX_EDGES = 1500
DEFAULT_NODES_PER_TASK = 30
DEFAULT_WINDOWS = 4
MAX_TABLE_ROWS = 300
HIST_BINS = 20  # correlation in [-1, 1], bins of 0.1


@dataclass(frozen=True)
class ReportSettings:
    max_edges: int = DEFAULT_MAX_EDGES  # edges drawn per circuit
    nodes_per_task: int = DEFAULT_NODES_PER_TASK  # explained nodes per circuit with a full card
    windows_per_node: int = DEFAULT_WINDOWS  # heatmap windows per node (top and random, about half each)
    all_circuits: bool = False  # draw every stored circuit, not only the newest per task

    def check(self) -> None:
        if self.max_edges < 0:
            raise UserError(f"--max-edges must be 0 or more, got {self.max_edges}")
        if self.nodes_per_task < 0:
            raise UserError(f"--nodes-per-task must be 0 or more, got {self.nodes_per_task}")
        if self.windows_per_node < 0:
            raise UserError(f"--windows must be 0 or more, got {self.windows_per_node}")


# ---- small helpers ------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Text from the database, safe in element content and in quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.{digits}g}"
    return esc(v)


def _slug(*parts: Any) -> str:
    """An element id made from data: readable, and unique through a hash of the raw parts."""
    raw = "\x1f".join(str(p) for p in parts)
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-")[:48] or "x"
    return f"{readable}-{hashlib.sha1(raw.encode('utf-8', 'replace')).hexdigest()[:8]}"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Headers are our own text (escaped anyway); cells must already be HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _dl(items: Iterable[tuple[str, str]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, leaf value) pairs, keys sorted."""
    if not isinstance(d, dict):
        return [(prefix, d)]
    out: list[tuple[str, Any]] = []
    for k in sorted(d, key=str):
        out += _flatten(d[k], f"{prefix}.{k}" if prefix else str(k))
    return out


def _json_cell(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return f"<code>{esc(json.dumps(v, sort_keys=True))}</code>"
    return _num(v)


def _show_token(tok: str) -> str:
    """A token made visible: newline and tab as symbols, other control characters as \\xNN."""
    out = []
    for ch in tok:
        if ch == "\n":
            out.append("↵")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\r":
            out.append("␍")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _rows(store: Store, sql: str, params: list | None = None) -> list[dict]:
    cur = store.con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _has_table(store: Store, name: str) -> bool:
    return store.con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                             [name]).fetchone()[0] > 0


# ---- data -----------------------------------------------------------------------------------------


@dataclass
class Explained:
    """What the report shows about one node's explanations."""

    selected: dict[str, list[dict]]  # kind -> selected explanations (with score columns), best first
    candidates: list[dict]  # LLM candidates that were not selected

    @property
    def best_llm(self) -> dict | None:
        rows = self.selected.get("llm") or []
        return rows[0] if rows else None

    def best_score(self, kind: str = "llm") -> float | None:
        rows = self.selected.get(kind) or []
        return rows[0]["score"] if rows else None


def _score_key(row: dict) -> tuple:
    s = row.get("score")
    return (s is None, -(s if s is not None else 0.0), str(row.get("created_at")))


def _load_explanations(store: Store, model: str) -> dict[str, Explained]:
    if not _has_table(store, "explanations"):
        return {}
    rows = _rows(store, """
        SELECT e.explanation_id, e.node_id, e.kind, e.text, e.candidate, e.selected, e.source_node_id,
               src.name AS source_name, e.explainer, e.simulator, e.failure, e.raw_text, e.created_at,
               max(s.value) FILTER (WHERE s.split = 'score' AND s.method = 'correlation') AS score,
               max(s.value) FILTER (WHERE s.split = 'score' AND s.method = 'mean_window_correlation') AS mean_window,
               max(s.value) FILTER (WHERE s.split = 'score' AND s.method = 'r_squared') AS r_squared,
               max(s.value) FILTER (WHERE s.split = 'score' AND s.method = 'absolute_deviation_explained') AS ade,
               max(s.value) FILTER (WHERE s.split = 'calibrate' AND s.method = 'correlation') AS validation
        FROM explanations e
        LEFT JOIN scores s ON s.explanation_id = e.explanation_id
        LEFT JOIN nodes src ON src.node_id = e.source_node_id
        WHERE e.model = ? AND coalesce(e.purpose, 'circuit') <> 'eval'
        GROUP BY ALL""", [model])
    out: dict[str, Explained] = {}
    for r in rows:
        ex = out.setdefault(r["node_id"], Explained(defaultdict(list), []))
        if r["selected"]:
            ex.selected[r["kind"]].append(r)
        elif r["kind"] == "llm":
            ex.candidates.append(r)
    for ex in out.values():
        for lst in ex.selected.values():
            lst.sort(key=_score_key)
        ex.candidates.sort(key=lambda r: (str(r.get("created_at")), r.get("candidate") or 0))
    return out


def _newest_per_task(circuits: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for c in circuits:  # ordered by task, created_at (as `circuits explain` picks them)
        latest[c["task"]] = c
    return latest


def _edge_sample(store: Store, circuit_id: str, max_edges: int) -> tuple[list[dict], dict[str, int]]:
    """The strongest edges of a circuit, at most `max_edges`, shared among edge kinds in proportion
    to their counts; each row has `rel` = |weight| / max |weight| of its kind."""
    counts = dict(store.con.execute("SELECT kind, count(*) FROM edges WHERE circuit_id = ? GROUP BY kind",
                                    [circuit_id]).fetchall())
    total = sum(counts.values())
    if total == 0 or max_edges == 0:
        return [], counts
    if total <= max_edges:
        caps = dict(counts)
    else:  # largest remainder
        exact = {k: max_edges * n / total for k, n in counts.items()}
        caps = {k: int(v) for k, v in exact.items()}
        left = max_edges - sum(caps.values())
        for k in sorted(exact, key=lambda k: exact[k] - caps[k], reverse=True)[:left]:
            caps[k] += 1
    out: list[dict] = []
    for kind, cap in caps.items():
        if cap <= 0:
            continue
        out += _rows(store, """
            SELECT source, target, weight, kind,
                   abs(weight) / nullif(max(abs(weight)) OVER (), 0) AS rel
            FROM edges WHERE circuit_id = ? AND kind = ?
            ORDER BY abs(weight) DESC, source, target LIMIT ?""", [circuit_id, kind, cap])
    return out, counts


# ---- the circuit graph --------------------------------------------------------------------------


def _loc_class(location: str) -> str:
    return {"attn.q": "q", "attn.k": "k", "attn.v": "v", "mlp.neuron": "neuron"}.get(location, "resid")


def _node_title(n: dict, ex: Explained | None) -> str:
    lines = [f"{n['name']}  (circuit rank {n['rank']}, mask score {_num(n.get('score'), 3)})"]
    if ex is not None:
        best = ex.best_llm
        if best is not None:
            text = best["text"] if best["text"] is not None else f"(no explanation: {best['failure']})"
            lines.append(f"LLM: {text}  [score {_num(best['score'], 3)}]")
        for kind in ("token_lookup", "shuffled"):
            if ex.selected.get(kind):
                lines.append(f"{kind}: score {_num(ex.best_score(kind), 3)}")
    return "\n".join(lines)


def _circuit_svg(uid: str, nodes: list[dict], edges: list[dict], n_layer: int,
                 explained: dict[str, Explained], numbers: dict[str, int]) -> str:
    n = len(nodes)
    if n <= 150:
        sp, r = 16.0, 5.0
    elif n <= 800:
        sp, r = 11.0, 3.6
    else:
        sp, r = 8.0, 2.7
    layers = list(range(max([n_layer] + [x["layer"] + 1 for x in nodes if x["site"] != FINAL])))
    columns = [f"L{i}" for i in layers] + ["final"]
    heads = {c: c for c in columns} | {"final": FINAL}
    locations = list(LOCATIONS) + sorted({x["site"] for x in nodes} - set(LOCATIONS) - {FINAL})
    band: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (column, location) -> nodes
    for x in nodes:
        if x["site"] == FINAL:
            band[("final", LOCATIONS[0])].append(x)
        else:
            band[(f"L{x['layer']}", x["site"])].append(x)
    for lst in band.values():
        lst.sort(key=lambda x: (x["idx"] if x["idx"] is not None else 0, x["name"]))
    biggest = max([len(v) for v in band.values()] + [1])
    per_row = max(6, min(biggest, 32 if n > 800 else 24))
    left, top, col_gap, band_gap = 118.0, 34.0, 26.0, 12.0
    col_w = per_row * sp
    band_rows = {loc: max([math.ceil(len(band.get((c, loc), [])) / per_row) for c in columns] + [1])
                 for loc in locations}
    band_y: dict[str, float] = {}
    y = top
    for loc in locations:
        band_y[loc] = y
        y += band_rows[loc] * sp + band_gap
    height = y + 8
    width = left + len(columns) * (col_w + col_gap)
    col_x = {c: left + i * (col_w + col_gap) for i, c in enumerate(columns)}

    pos: dict[str, tuple[float, float]] = {}
    key: dict[str, str] = {}
    for (c, loc), lst in band.items():
        for i, x in enumerate(lst):
            pos[x["node_id"]] = (col_x[c] + (i % per_row) * sp + sp / 2, band_y[loc] + (i // per_row) * sp + sp / 2)
    for i, x in enumerate(nodes):
        key[x["node_id"]] = f"n{i}"

    parts = [f'<svg class="circuit" id="graph-{esc(uid)}" data-info="info-{esc(uid)}" xmlns="http://www.w3.org/2000/svg" '
             f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img">']
    # band backgrounds and labels
    for j, loc in enumerate(locations):
        yb = band_y[loc] - 2
        hb = band_rows[loc] * sp + 4
        if j % 2 == 0:
            parts.append(f'<rect class="band" x="0" y="{yb:.1f}" width="{width:.0f}" height="{hb:.1f}"/>')
        parts.append(f'<text class="bandlabel" x="{left - 8:.0f}" y="{yb + min(hb / 2, 10) + 3:.1f}">{esc(loc)}</text>')
    for c in columns:
        parts.append(f'<text class="colhead" x="{col_x[c] + col_w / 2:.1f}" y="20">{esc(heads[c])}</text>')
    # edges: weakest first so the strongest are drawn on top
    groups: dict[str, list[str]] = {"pos": [], "neg": [], "res": []}
    for e in sorted(edges, key=lambda e: (e["rel"] or 0.0)):
        a, b = pos.get(e["source"]), pos.get(e["target"])
        if a is None or b is None:
            continue
        rel = float(e["rel"] or 0.0)
        g = "res" if e["kind"] == "residual" else ("pos" if (e["weight"] or 0.0) >= 0 else "neg")
        width_, opacity = (0.3 + 1.0 * rel, 0.1 + 0.4 * rel) if g == "res" else (0.3 + 2.2 * rel, 0.12 + 0.78 * rel)
        groups[g].append(
            f'<line x1="{a[0]:.1f}" y1="{a[1]:.1f}" x2="{b[0]:.1f}" y2="{b[1]:.1f}" stroke-width="{width_:.2f}" '
            f'opacity="{opacity:.2f}" data-s="{key[e["source"]]}" data-t="{key[e["target"]]}"/>')
    for g, lines in groups.items():
        parts.append(f'<g class="edges {g}">' + "".join(lines) + "</g>")
    # nodes
    parts.append('<g class="nodes">')
    for x in nodes:
        cx, cy = pos[x["node_id"]]
        ex = explained.get(x["node_id"])
        cls = f"node loc-{_loc_class(x['site'])}" + (" explained" if ex is not None else "")
        parts.append(f'<circle class="{cls}" data-k="{key[x["node_id"]]}" cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}">'
                     f"<title>{esc(_node_title(x, ex))}</title></circle>")
    parts.append("</g>")
    labels = []
    for x in nodes:
        num = numbers.get(x["node_id"])
        if num is not None:
            cx, cy = pos[x["node_id"]]
            labels.append(f'<text class="num" x="{cx:.1f}" y="{cy - r - 1.5:.1f}">{num}</text>')
    parts.append('<g class="nums">' + "".join(labels) + "</g>")
    parts.append("</svg>")
    return "".join(parts)


# ---- heatmaps -------------------------------------------------------------------------------------


def _heat_row(tokens: Sequence[str], values: Sequence[float] | None, scale: float, what: str) -> str:
    spans = []
    for i, tok in enumerate(tokens):
        v = None if values is None or i >= len(values) else values[i]
        if v is None:
            cls = "h0"
            title = "no value"
        else:
            level = 0 if scale <= 0 else min(9, int(round(abs(v) / scale * 9)))
            cls = f"{'n' if v < 0 else 'h'}{level}"
            title = f"{what} {v:.3g}"
        spans.append(f'<span class="{cls}" title="{esc(title)}">{esc(_show_token(tok))}</span>')
    return f'<div class="tokens">{"".join(spans)}</div>'


def _window_html(w: dict, act_scale: float, sim_scale: float) -> str:
    tokens, acts, pred = w["tokens"] or [], w["activations"] or [], w.get("predicted")
    n = min(len(acts), len(pred or []))
    r = correlation(acts[:n], pred[:n]) if pred else None
    head = (f'<div class="winhead">{esc(w["sampling"])} window #{esc(w["rank"])} · max activation '
            f'{_num(max(acts) if acts else None, 3)}' + (f" · window correlation {_num(r, 3)}" if pred else "") + "</div>")

    def side(head: str, inner: str) -> str:
        return f'<div class="side"><div class="sidehead">{esc(head)}</div>{inner}</div>'

    real = side("real activation", _heat_row(tokens, acts, act_scale, "real"))
    if pred:
        sim = side("simulated (0..9)", _heat_row(tokens, pred, sim_scale, "simulated"))
    elif w.get("failure"):
        sim = side("simulated", f'<p class="fail">simulation failed: {esc(w["failure"])}</p>')
    else:
        sim = side("simulated", '<p class="muted">no simulation for this window</p>')
    return f'<div class="window">{head}<div class="pair">{real}{sim}</div></div>'


def _pick_windows(rows: list[dict], n: int) -> list[dict]:
    tops = [r for r in rows if r["sampling"] == "top"]
    rand = [r for r in rows if r["sampling"] != "top"]
    k_top = min(len(tops), max(n - len(rand), (n + 1) // 2))
    return tops[:k_top] + rand[: n - k_top]


def _load_windows(store: Store, cards: dict[str, Explained], n: int) -> tuple[dict[str, list[dict]], dict[str, float]]:
    """node_id -> windows to draw (score split: simulated by the best LLM explanation when there is
    one, else the bare records), and node_id -> largest |activation| over all its records."""
    if not cards or not _has_table(store, "activation_records"):
        return {}, {}
    ids = list(cards)
    scale = {nid: max(abs(hi or 0.0), abs(lo or 0.0)) for nid, hi, lo in store.con.execute(
        "SELECT node_id, max(list_max(activations)), min(list_min(activations)) FROM activation_records "
        "WHERE list_contains(?::VARCHAR[], node_id) GROUP BY node_id", [ids]).fetchall()}
    if n == 0:
        return {}, scale
    best = {nid: ex.best_llm["explanation_id"] for nid, ex in cards.items() if ex.best_llm is not None}
    by_node: dict[str, list[dict]] = defaultdict(list)
    if best:
        for r in _rows(store, """
                SELECT s.node_id, s.sampling, s.rank, s.predicted, s.failure, r.tokens, r.activations
                FROM simulations s JOIN activation_records r
                  ON r.node_id = s.node_id AND r.sampling = s.sampling AND r.rank = s.rank
                WHERE list_contains(?::VARCHAR[], s.explanation_id) AND s.split = 'score'
                ORDER BY s.node_id, CASE s.sampling WHEN 'top' THEN 0 WHEN 'random' THEN 1 ELSE 2 END, s.rank""",
                       [list(best.values())]):
            by_node[r["node_id"]].append(r)
    missing = [nid for nid in ids if nid not in by_node]
    if missing:
        for r in _rows(store, """
                SELECT node_id, sampling, rank, NULL AS predicted, NULL AS failure, tokens, activations
                FROM activation_records WHERE list_contains(?::VARCHAR[], node_id) AND split = 'score'
                ORDER BY node_id, CASE sampling WHEN 'top' THEN 0 WHEN 'random' THEN 1 ELSE 2 END, rank""", [missing]):
            by_node[r["node_id"]].append(r)
    return {nid: _pick_windows(rows, n) for nid, rows in by_node.items()}, scale


# ---- sections -------------------------------------------------------------------------------------


def _model_card(m: dict, evals: list[dict], summary: list[dict], drawn: set[str]) -> str:
    uid = _slug("model", m["name"])
    n_params, n_nonzero = m.get("n_params"), m.get("n_nonzero")
    overall = (n_nonzero / n_params) if n_params and n_nonzero is not None else None
    facts = [("model", esc(m["name"])), ("parameters", _num(n_params)), ("nonzero parameters", _num(n_nonzero)),
             ("nonzero fraction, all parameters", _num(overall, 3)), ("train loss", _num(m.get("train_loss"))),
             ("val loss", _num(m.get("val_loss"))), ("tokens seen", _num(m.get("tokens_seen"))),
             ("steps", _num(m.get("steps"))), ("run folder", f"<code>{esc(m.get('run_dir'))}</code>"),
             ("checkpoint", f"<code>{esc(m.get('checkpoint_path'))}</code>"),
             ("created", esc(m.get("created_at"))), ("updated", esc(m.get("updated_at")))]
    config = m.get("config") or {}
    cfg_rows = [[f"<code>{esc(k)}</code>", _json_cell(v)] for k, v in _flatten(config)] if isinstance(config, dict) else []
    mc = config.get("model") if isinstance(config, dict) else None
    shape = ", ".join(f"{k} {mc[k]}" for k in ("n_layer", "d_model", "n_head", "d_mlp", "n_ctx", "vocab_size")
                      if isinstance(mc, dict) and k in mc)
    if isinstance(config, dict) and config.get("preset"):
        shape = f"preset {config['preset']}" + (f"; {shape}" if shape else "")
    density = m.get("density") or {}
    dens_html = "<p class='muted'>no density recorded</p>"
    if isinstance(density, dict) and density:
        vals = sorted(float(v) for v in density.values() if isinstance(v, (int, float)))
        med = vals[len(vals) // 2] if vals else None
        dens_html = (f"<p>{len(density)} weight matrices; fraction of nonzero weights: "
                     f"min {_num(vals[0] if vals else None, 3)}, "
                     f"median {_num(med, 3)}, max {_num(vals[-1] if vals else None, 3)}.</p>"
                     "<details><summary>every matrix</summary>"
                     + _table(["matrix", "density"], [[f"<code>{esc(k)}</code>", _num(v, 3)] for k, v in density.items()])
                     + "</details>")
    manifest = m.get("corpus_manifest") or {}
    man_rows = []
    if isinstance(manifest, dict):
        for k in sorted(manifest, key=str):
            v = manifest[k]
            if isinstance(v, (list, dict)):
                man_rows.append([f"<code>{esc(k)}</code>", f"<span class='muted'>{len(v):,} entries (not shown)</span>"])
            else:
                man_rows.append([f"<code>{esc(k)}</code>", _json_cell(v)])
    eval_rows = [[esc(e["task"]), _num(e["loss"]), _num(e["accuracy"], 3), _num(e["mean_logit_diff"], 3),
                  _num(e["n_val"]), _num(e["learned"]), _num(e["target_loss"], 3)] for e in evals]
    sum_rows = [[esc(s["task"]), esc(s["status"]), _num(s["n_nodes"]), _num(s["n_edges"]), _num(s["full_loss"]),
                 _num(s["sufficiency_loss"]), _num(s["necessity_loss"]), _num(s["sufficient"]),
                 _num(s["target_loss"], 3), _num(s.get("random_labels")),
                 ("drawn" if s["circuit_id"] in drawn else ""), f"<code>{esc(s['circuit_id'])}</code>"] for s in summary]
    return (f'<section class="model-card" id="card-{esc(uid)}"><h3>Model card</h3>'
            f"<div class='cols'><div>{_dl(facts)}<details><summary>Config: {esc(shape)}</summary>"
            f"{_table(['key', 'value'], cfg_rows, 'config')}</details></div>"
            f"<div><h4>Corpus manifest</h4>{_table(['field', 'value'], man_rows) if man_rows else '<p class=muted>none</p>'}"
            f"<h4>Weight density</h4>{dens_html}</div></div>"
            f"<h4>Unpruned model on every task (task_evals)</h4>"
            + (_table(["task", "loss", "accuracy", "mean logit diff", "n val", "learned", "target"], eval_rows, "evals")
               if eval_rows else "<p class='muted'>no task evaluations; run <code>circuits tasks RUN</code></p>")
            + "<h4>Stored circuits (circuit_summary)</h4>"
            + (_table(["task", "status", "nodes", "edges", "unpruned loss", "sufficiency loss", "necessity loss",
                       "sufficient", "target", "random labels", "", "circuit id"], sum_rows, "summary")
               if sum_rows else "<p class='muted'>no circuits</p>")
            + "</section>")


def _histogram(model: str, explained: dict[str, Explained]) -> str:
    uid = _slug("hist", model)
    scores: dict[str, list[float]] = {k: [] for k in KINDS}
    undefined = {k: 0 for k in KINDS}
    for ex in explained.values():
        for kind in KINDS:
            for row in ex.selected.get(kind, []):
                if row["score"] is None:
                    undefined[kind] += 1
                else:
                    scores[kind].append(float(row["score"]))
    counts = {k: [0] * HIST_BINS for k in KINDS}
    for k, vals in scores.items():
        for v in vals:
            counts[k][min(HIST_BINS - 1, max(0, int((v + 1.0) / 2.0 * HIST_BINS)))] += 1
    top = max([c for k in KINDS for c in counts[k]] + list(undefined.values()) + [1])
    step = max(1, math.ceil(top / 4))
    top = step * math.ceil(top / step)
    W, H, left, bottom, pad, extra = 790.0, 240.0, 40.0, 30.0, 10.0, 70.0  # `extra`: the undefined group
    plot_w, plot_h = W - left - pad - extra, H - bottom - pad
    bw = plot_w / HIST_BINS
    parts = [f'<svg class="histogram" id="{esc(uid)}" xmlns="http://www.w3.org/2000/svg" width="{W:.0f}" height="{H:.0f}" '
             f'viewBox="0 0 {W:.0f} {H:.0f}" role="img"><title>explanation scores of {esc(model)}</title>']
    for t in range(0, top + 1, step):
        yy = pad + plot_h - plot_h * t / top
        parts.append(f'<line class="grid" x1="{left}" x2="{W - pad}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
                     f'<text class="axis" x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end">{t}</text>')

    def bar(x: float, w: float, c: int, k: str, what: str) -> str:
        h = plot_h * c / top
        return (f'<rect class="bar kind-{k}" x="{x:.1f}" y="{pad + plot_h - h:.1f}" width="{w:.1f}" height="{h:.1f}">'
                f"<title>{esc(k)}: {c} {esc(what)}</title></rect>")

    for b in range(HIST_BINS):
        lo = -1 + 2 * b / HIST_BINS
        for j, k in enumerate(KINDS):
            if counts[k][b]:
                parts.append(bar(left + b * bw + 1 + j * (bw - 2) / 3, (bw - 2) / 3, counts[k][b], k,
                                 f"in [{lo:.1f}, {lo + 0.1:.1f})"))
    ux = left + plot_w + 26
    for j, k in enumerate(KINDS):
        if undefined[k]:
            parts.append(bar(ux + j * 14, 12, undefined[k], k, "undefined"))
    parts.append(f'<text class="axis" x="{ux + 21:.1f}" y="{H - bottom + 14:.1f}" text-anchor="middle">undefined</text>')
    for t in range(0, HIST_BINS + 1, 5):
        xx = left + t * bw
        parts.append(f'<text class="axis" x="{xx:.1f}" y="{H - bottom + 14:.1f}" text-anchor="middle">'
                     f"{-1 + 2 * t / HIST_BINS:.1f}</text>")
    parts.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{H - 4:.1f}" text-anchor="middle">'
                 "score (correlation of real and simulated activation on the held-out score windows)</text></svg>")
    rows = []
    for k in KINDS:
        vals = sorted(scores[k])
        mean = sum(vals) / len(vals) if vals else None
        med = vals[len(vals) // 2] if vals else None
        rows.append([f'<span class="swatch kind-{k}"></span>{esc(k)}', _num(len(vals) + undefined[k]), _num(len(vals)),
                     _num(undefined[k]), _num(mean, 3), _num(med, 3)])
    return (f'<section class="scores"><h3>Explanation scores: LLM against baselines</h3>'
            "<p>One count per node and kind (its selected explanation). <em>undefined</em>: no score "
            "(a failed explanation or simulation, or a constant activation), counted apart, never as 0.</p>"
            + "".join(parts)
            + _table(["kind", "explanations", "scored", "undefined", "mean", "median"], rows, "hist-table")
            + "</section>")


def _explanation_rows(ex: Explained) -> list[list[str]]:
    rows = []
    for kind in KINDS:
        for r in ex.selected.get(kind, []):
            if r["text"] is None:
                text = f'<span class="fail">no explanation: {esc(r["failure"])}</span>'
                if r.get("raw_text"):
                    text += f' <span class="muted">raw output:</span> <code>{esc(r["raw_text"])}</code>'
            else:
                text = esc(r["text"])
                if kind == "shuffled" and r.get("source_name"):
                    text += f' <span class="muted">(explanation of {esc(r["source_name"])})</span>'
                if r.get("failure"):
                    text += f' <span class="fail">{esc(r["failure"])}</span>'
            rows.append([f'<span class="swatch kind-{kind}"></span>{esc(kind)}', f'<span class="expl">{text}</span>',
                         f"<b>{_num(r['score'], 3)}</b>", _num(r["mean_window"], 3), _num(r["r_squared"], 3),
                         _num(r["ade"], 3), _num(r["validation"], 3), esc(r["explainer"]), esc(r["simulator"])])
    return rows


def _node_card(model: str, n: dict, ex: Explained, tasks: list[str], windows: list[dict], scale: float) -> str:
    uid = _slug("node", model, n["node_id"])
    table = _table(["kind", "explanation", "score", "mean window corr.", "r²", "abs. dev. explained",
                    "validation score", "explainer", "simulator"], _explanation_rows(ex), "expl-table")
    cands = ""
    if ex.candidates:
        crow = [[_num(c["candidate"]), (esc(c["text"]) if c["text"] is not None else
                                        f'<span class="fail">{esc(c["failure"])}</span>'
                                        + (f' <code>{esc(c["raw_text"])}</code>' if c.get("raw_text") else "")),
                 _num(c["validation"], 3)] for c in ex.candidates]
        cands = ("<details><summary>other LLM candidates (not selected on the calibrate windows)</summary>"
                 + _table(["candidate", "explanation", "validation score"], crow) + "</details>")
    preds = [v for w in windows for v in (w.get("predicted") or [])]
    sim_scale = max(preds) if preds else 0.0
    heat = "".join(_window_html(w, scale, sim_scale) for w in windows)
    if not windows:
        heat = "<p class='muted'>no score windows stored for this node</p>"
    return (f'<article class="node-card" id="{esc(uid)}"><h4>{esc(n["name"])}</h4>'
            f'<p class="muted">layer {esc(n["layer"])} · {esc(n["site"])} · index {esc(n["idx"])} · '
            f"in the circuits of {esc(', '.join(tasks))} · largest |activation| {_num(scale, 3)}</p>"
            f"{table}{cands}<div class='heatmaps'>{heat}</div></article>")


def _circuit_section(store: Store, model: str, c: dict, nodes: list[dict], n_layer: int,
                     explained: dict[str, Explained], settings: ReportSettings, card_ids: dict[str, str],
                     cards_here: list[str], older: list[dict]) -> str:
    uid = _slug("circuit", c["circuit_id"])
    edges, counts = _edge_sample(store, c["circuit_id"], settings.max_edges)
    total = sum(counts.values())
    here = {x["node_id"]: explained[x["node_id"]] for x in nodes if x["node_id"] in explained}
    order = sorted(here, key=lambda nid: _score_key(here[nid].best_llm or {"score": None}))
    numbers = {nid: i + 1 for i, nid in enumerate(order[:MAX_TABLE_ROWS])}
    by_id = {x["node_id"]: x for x in nodes}
    svg = _circuit_svg(uid, nodes, edges, n_layer, here, numbers)
    left_out = total - len(edges)
    kinds_txt = ", ".join(f"{v:,} {k}" for k, v in sorted(counts.items()))
    note = (f"All {total:,} edges drawn ({kinds_txt})." if left_out == 0 else
            f"Showing the strongest {len(edges):,} of {total:,} edges ({kinds_txt}), shared among edge kinds in "
            f"proportion to their counts; {left_out:,} weaker edges are not drawn.")
    losses = _dl([("status", esc(c["status"])), ("nodes", _num(c["n_nodes"])), ("edges", _num(c["n_edges"])),
                  ("unpruned loss", _num(c["full_loss"])), ("unpruned accuracy", _num(c.get("full_accuracy"), 3)),
                  ("sufficiency loss", _num(c["sufficiency_loss"])),
                  ("sufficiency accuracy", _num(c.get("sufficiency_accuracy"), 3)),
                  ("necessity loss", _num(c["necessity_loss"])), ("target loss", _num(c["target_loss"], 3)),
                  ("sufficient", _num(c["sufficient"])), ("candidates", _num(c.get("n_candidates"))),
                  ("prune settings", f"<code>{esc(json.dumps(c.get('settings'), sort_keys=True))}</code>"),
                  ("circuit id", f"<code>{esc(c['circuit_id'])}</code>")])
    rows = []
    for nid in order[:MAX_TABLE_ROWS]:
        ex, x = here[nid], by_id[nid]
        best = ex.best_llm
        name = esc(x["name"])
        if nid in card_ids:
            name = f'<a href="#{esc(card_ids[nid])}">{name}</a>'
        text = ("—" if best is None else esc(best["text"]) if best["text"] is not None
                else f'<span class="fail">{esc(best["failure"])}</span>')
        rows.append([str(numbers[nid]), name, f'<span class="expl">{text}</span>',
                     _num(ex.best_score("llm"), 3), _num(ex.best_score("token_lookup"), 3),
                     _num(ex.best_score("shuffled"), 3)])
    more = ""
    if len(order) > MAX_TABLE_ROWS:
        more = f"<p class='note'>{len(order) - MAX_TABLE_ROWS:,} more explained nodes are not listed.</p>"
    if len(order) > len(cards_here):
        more += (f"<p class='note'>Heatmap cards for the best {len(cards_here)} of {len(order)} explained nodes "
                 f"(by LLM score); the others are listed above only.</p>")
    expl_html = (_table(["#", "node", "best LLM explanation", "LLM", "token_lookup", "shuffled"], rows, "node-table") + more
                 if rows else f"<p class='muted'>No node of this circuit is explained yet; run "
                              f"<code>circuits explain {esc(model)} --task {esc(c['task'])}</code>.</p>")
    older_html = ""
    if older:
        orows = [[f"<code>{esc(o['circuit_id'])}</code>", esc(o["status"]), _num(o["n_nodes"]), _num(o["n_edges"]),
                  _num(o["sufficiency_loss"]), _num(o["necessity_loss"]), esc(o["created_at"])] for o in older]
        older_html = ("<details><summary>older circuits of this task (not drawn)</summary>"
                      + _table(["circuit id", "status", "nodes", "edges", "sufficiency loss", "necessity loss", "created"],
                               orows) + "</details>")
    return (f'<section class="task" id="{esc(uid)}"><h3>Task {esc(c["task"])}</h3>'
            f"<div class='cols'><div>{losses}</div><div>{older_html}</div></div>"
            f'<div class="graph">{svg}</div>'
            f'<p class="note">{esc(note)} Columns are layers, bands are node locations in forward order; '
            f'<span class="swatch pos"></span>positive and <span class="swatch neg"></span>negative weights, '
            f'<span class="swatch res"></span>residual-stream edges (dashed), width and opacity by |weight| '
            f"relative to the strongest edge of its kind. Explained nodes have a dark ring and a number (see the "
            f"table). Hover a node for its explanation.</p>"
            f'<p class="info" id="info-{esc(uid)}">Click a node to highlight its edges.</p>'
            f"<h4>Explained nodes</h4>{expl_html}</section>")


def _model_section(store: Store, m: dict, settings: ReportSettings) -> tuple[str, str, int]:
    """(section HTML, nav HTML, number of circuits drawn) for one model."""
    model = m["name"]
    circuits = store.list_circuits(model)
    latest = _newest_per_task(circuits)
    drawn = [c for c in (circuits if settings.all_circuits else latest.values()) if c["n_nodes"]]
    drawn_ids = {c["circuit_id"] for c in drawn}
    explained = _load_explanations(store, model)
    evals = _rows(store, "SELECT * FROM task_evals WHERE model = ? ORDER BY task", [model])
    summary = _rows(store, "SELECT * FROM circuit_summary WHERE model = ? ORDER BY task, circuit_id", [model])
    cfg = m.get("config") or {}
    n_layer = int((cfg.get("model") or {}).get("n_layer") or 0) if isinstance(cfg, dict) else 0

    # which explained nodes get a full card: the best `nodes_per_task` of each drawn circuit
    circuit_nodes = {c["circuit_id"]: store.circuit_nodes(c["circuit_id"]) for c in drawn}
    cards_per_circuit: dict[str, list[str]] = {}
    card_nodes: dict[str, dict] = {}
    tasks_of: dict[str, list[str]] = defaultdict(list)
    for c in drawn:
        here = [x for x in circuit_nodes[c["circuit_id"]] if x["node_id"] in explained]
        for x in here:
            if c["task"] not in tasks_of[x["node_id"]]:
                tasks_of[x["node_id"]].append(c["task"])
        here.sort(key=lambda x: _score_key(explained[x["node_id"]].best_llm or {"score": None}))
        cards_per_circuit[c["circuit_id"]] = [x["node_id"] for x in here[: settings.nodes_per_task]]
        for x in here[: settings.nodes_per_task]:
            card_nodes.setdefault(x["node_id"], x)
    card_ids = {nid: _slug("node", model, nid) for nid in card_nodes}
    windows, scales = _load_windows(store, {nid: explained[nid] for nid in card_nodes}, settings.windows_per_node)

    muid = _slug("model-section", model)
    body = [f'<section class="model" id="{esc(muid)}"><h2>Model {esc(model)}</h2>',
            _model_card(m, evals, summary, drawn_ids), _histogram(model, explained)]
    nav = [f'<li><a href="#{esc(muid)}">{esc(model)}</a><ul>']
    if not drawn:
        body.append("<p class='note'>This model has no circuit with nodes yet (no task learned at the target loss); "
                    f"see the tables above, or prune with a higher target: <code>circuits prune {esc(model)} --all "
                    "--target-loss 0.4</code>.</p>")
    for c in drawn:
        older = [] if settings.all_circuits else [o for o in circuits if o["task"] == c["task"]
                                                   and o["circuit_id"] != c["circuit_id"]]
        body.append(_circuit_section(store, model, c, circuit_nodes[c["circuit_id"]], n_layer, explained, settings, card_ids,
                                     cards_per_circuit[c["circuit_id"]], older))
        nav.append(f'<li><a href="#{esc(_slug("circuit", c["circuit_id"]))}">{esc(c["task"])}</a> '
                   f'<span class="muted">({_num(c["n_nodes"])} nodes)</span></li>')
    if card_nodes:
        body.append(f'<section class="nodes" id="{esc(muid)}-nodes"><h3>Explained nodes of {esc(model)}</h3>'
                    "<p class='note'>Heatmaps: the held-out score windows (top and random) the best LLM explanation was "
                    "scored on. Left: the real activation, shaded by |activation| / the node's largest |activation| "
                    "(<span class='swatch h9'></span>positive, <span class='swatch n9'></span>negative); right: the "
                    "simulated activation from the explanation alone, shaded by value / the largest prediction. "
                    "↵ is a newline, ⇥ a tab; hover a token for its value.</p>")
        for nid, x in card_nodes.items():
            body.append(_node_card(model, x, explained[nid], tasks_of[nid], windows.get(nid, []), scales.get(nid, 0.0)))
        body.append("</section>")
        nav.append(f'<li><a href="#{esc(muid)}-nodes">explained nodes</a></li>')
    nav.append("</ul></li>")
    body.append("</section>")
    return "".join(body), "".join(nav), len(drawn)


# ---- the page -------------------------------------------------------------------------------------

# Our one script (constant, no data inside): click a graph node to highlight its edges, and mark the
# page so a test can see that this script, and only this script, ran.
_SCRIPT = """
document.documentElement.setAttribute('data-report-js', 'ok');
document.querySelectorAll('svg.circuit').forEach(function (svg) {
  var info = document.getElementById(svg.getAttribute('data-info'));
  svg.addEventListener('click', function (ev) {
    var node = ev.target.closest ? ev.target.closest('.node') : null;
    svg.querySelectorAll('.hl').forEach(function (el) { el.classList.remove('hl'); });
    if (!node) {
      svg.classList.remove('focus');
      if (info) { info.textContent = 'Click a node to highlight its edges.'; }
      return;
    }
    var k = node.getAttribute('data-k');
    svg.classList.add('focus');
    node.classList.add('hl');
    svg.querySelectorAll('[data-s="' + k + '"],[data-t="' + k + '"]').forEach(function (el) { el.classList.add('hl'); });
    var t = node.querySelector('title');
    if (info) { info.textContent = t ? t.textContent : ''; }
  });
});
"""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 24px 40px;color:#1d232b;background:#fff}
h1{font-size:24px;margin:18px 0 4px}h2{font-size:20px;border-bottom:2px solid #2b5d8a;padding-bottom:4px;margin-top:36px}
h3{font-size:17px;margin:26px 0 8px}h4{font-size:14px;margin:14px 0 6px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d5dbe2;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eef2f6}
dl.kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0}
dl.kv dt{color:#5b6672}dl.kv dd{margin:0}
.cols{display:flex;gap:32px;flex-wrap:wrap}.cols>div{min-width:320px;flex:1}
.muted{color:#6b7580}.note{color:#4b5560;font-size:13px}.fail{color:#a3261b}
.info{font:12px ui-monospace,Menlo,monospace;white-space:pre-wrap;background:#f5f7f9;padding:4px 8px;min-height:1.4em}
.graph{overflow:auto;border:1px solid #d5dbe2;max-height:900px;background:#fff}
svg.circuit .band{fill:#f4f6f9}
svg.circuit .bandlabel{font:10px sans-serif;fill:#6b7580;text-anchor:end}
svg.circuit .colhead{font:bold 12px sans-serif;fill:#1d232b;text-anchor:middle}
svg.circuit .edges line{stroke-linecap:round}
svg.circuit .edges.pos line{stroke:#d0582c}svg.circuit .edges.neg line{stroke:#2a6fbd}
svg.circuit .edges.res line{stroke:#6b7580;stroke-dasharray:3 2}
svg.circuit .node{stroke:#fff;stroke-width:.6;cursor:pointer}
svg.circuit .loc-resid{fill:#8b97a5}svg.circuit .loc-q{fill:#8e5bb5}svg.circuit .loc-k{fill:#b55b9c}
svg.circuit .loc-v{fill:#5b6fb5}svg.circuit .loc-neuron{fill:#3e9a5a}
svg.circuit .node.explained{stroke:#111;stroke-width:1.6}
svg.circuit .num{font:bold 8px sans-serif;fill:#111;text-anchor:middle;pointer-events:none}
svg.circuit.focus .edges line{opacity:.04}svg.circuit.focus .edges line.hl{opacity:1}
svg.circuit .node.hl{stroke:#f2c200;stroke-width:2.5}
svg.histogram .bar.kind-llm,.swatch.kind-llm{fill:#d0582c;background:#d0582c}
svg.histogram .bar.kind-token_lookup,.swatch.kind-token_lookup{fill:#2a6fbd;background:#2a6fbd}
svg.histogram .bar.kind-shuffled,.swatch.kind-shuffled{fill:#8b97a5;background:#8b97a5}
svg.histogram .grid{stroke:#e3e7ec}svg.histogram .axis{font:10px sans-serif;fill:#4b5560}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px;border-radius:2px}
.swatch.pos{background:#d0582c}.swatch.neg{background:#2a6fbd}.swatch.res{background:#6b7580}
.node-card{border:1px solid #d5dbe2;border-radius:6px;padding:4px 14px 10px;margin:14px 0}
.node-card h4{font:bold 15px ui-monospace,Menlo,monospace}
.expl{white-space:pre-wrap}
.window{margin:8px 0 12px}.winhead{font-size:12px;color:#4b5560;margin-bottom:2px}
.pair{display:flex;gap:12px}.side{flex:1;min-width:0}.sidehead{font-size:11px;color:#6b7580}
.tokens{font:12px/1.9 ui-monospace,Menlo,Consolas,monospace;border:1px solid #e3e7ec;padding:3px;
overflow-wrap:anywhere;word-break:break-all}
.tokens span{white-space:pre-wrap;border-radius:2px;outline:1px solid #f0f2f4}
.h0{background:transparent}.h1{background:rgba(240,120,30,.1)}.h2{background:rgba(240,120,30,.2)}
.h3{background:rgba(240,120,30,.3)}.h4{background:rgba(240,120,30,.4)}.h5{background:rgba(240,120,30,.5)}
.h6{background:rgba(240,120,30,.6)}.h7{background:rgba(240,120,30,.7)}.h8{background:rgba(240,120,30,.8)}
.h9{background:rgba(240,120,30,.92)}
.n0{background:transparent}.n1{background:rgba(42,111,189,.1)}.n2{background:rgba(42,111,189,.2)}
.n3{background:rgba(42,111,189,.3)}.n4{background:rgba(42,111,189,.4)}.n5{background:rgba(42,111,189,.5)}
.n6{background:rgba(42,111,189,.6)}.n7{background:rgba(42,111,189,.7)}.n8{background:rgba(42,111,189,.8)}
.n9{background:rgba(42,111,189,.92)}
nav ul{margin:2px 0;padding-left:20px}
"""


def _csp() -> str:
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


REPORT_TITLE = "sparse-circuits report"


def build_report(store: Store, model: str | None = None, settings: ReportSettings | None = None) -> str:
    """The report of one model (or of every model in the store) as one HTML document."""
    settings = settings or ReportSettings()
    settings.check()
    where = f" for model {model}" if model else ""
    if not _has_table(store, "circuits") or not _has_table(store, "models"):
        raise UserError(f"no circuits in {store.path}{where}: nothing to report; train a model, then run "
                        "`circuits tasks RUN` and `circuits prune RUN --all` first")
    if model is not None:
        m = store.get_model(model)
        if m is None:
            raise UserError(f"no model named {model!r} in {store.path}; list them with `circuits models`")
        models = [m]
    else:
        models = store.list_models()
    with_circuits = [m for m in models if store.list_circuits(m["name"])]
    if not models:
        raise UserError(f"no models and no circuits in {store.path}: nothing to report; run `circuits train`, "
                        "`circuits tasks RUN` and `circuits prune RUN --all` first")
    if not with_circuits:
        run = models[0]["run_dir"] if len(models) == 1 and models[0].get("run_dir") else "RUN"
        raise UserError(f"no circuits in {store.path}{where}: nothing to report; run `circuits tasks {run}` and "
                        f"`circuits prune {run} --all` first")
    sections, navs, n_drawn = [], [], 0
    for m in models:
        s, nav, k = _model_section(store, m, settings)
        sections.append(s)
        navs.append(nav)
        n_drawn += k
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = ", ".join(m["name"] for m in models)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{esc(_csp())}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(REPORT_TITLE)}</title><style>{_CSS}</style></head><body>"
            f'<header id="report-header"><h1>{esc(REPORT_TITLE)}</h1>'
            f"<p class='muted'>Models: {esc(names)} · database <code>{esc(store.path)}</code> · "
            f"generated {esc(generated)}"
            f" · {n_drawn} circuits drawn</p>"
            f"<nav id='toc'><ul>{''.join(navs)}</ul></nav></header>"
            f"<main>{''.join(sections)}</main>"
            f"<script>{_SCRIPT}</script></body></html>\n")


def write_report(store: Store, out_path: str | Path, model: str | None = None,
                 settings: ReportSettings | None = None) -> Path:
    """Build the report and write it to `out_path` (parent folders are created), atomically."""
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise UserError(f"{out} is a directory; pass -o with a file name such as {out / 'report.html'}")
    text = build_report(store, model, settings)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
                f.write(text)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise UserError(f"cannot write the report to {out}: {e.strerror or e}; pass -o with another path") from None
    return out
