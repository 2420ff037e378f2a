"""The report page: HTML from the plain values of `data.py` (no store here).

Everything read from the database goes through `esc` (html.escape with quote=True); no data is
written inside the one <script> block, which is report.js, constant; the Content-Security-Policy
allows only that script, by the sha256 of its content, so an injected script could not run even
if escaping failed. CSS and script are inlined: the page needs no network and no other file.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from datetime import datetime, timezone
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..pipeline import LLM, NODE_KINDS, SHUFFLED, TOKEN_LOOKUP
from ..scoring import correlation
from .data import CircuitData, Explained, ModelData
from .svg import circuit_svg, histogram_svg, tradeoff_svg

REPORT_TITLE = "sparse-circuits report"
MAX_TABLE_ROWS = 300  # explained nodes listed per circuit


# ---- small helpers ------------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Text from the database, safe in element content and in quoted attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def num(v: Any, digits: int = 4) -> str:
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


def slug(*parts: Any) -> str:
    """An element id made from data: readable, and unique through a hash of the raw parts."""
    raw = "\x1f".join(str(p) for p in parts)
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", raw).strip("-")[:48] or "x"
    return f"{readable}-{hashlib.sha1(raw.encode('utf-8', 'replace')).hexdigest()[:8]}"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """Headers are our own text (escaped anyway); cells must already be HTML."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def dl(items: Iterable[tuple[str, str]]) -> str:
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
    return num(v)


def show_token(tok: str) -> str:
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


# ---- style, script and the CSP --------------------------------------------------------------------


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """report.css or report.js, package data read once per process."""
    return files("explainer.report").joinpath(name).read_text(encoding="utf-8")


def csp(script: str) -> str:
    """Allow only `script` (by the sha256 of its exact content), inline styles and data: images."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{digest}'; "
            "base-uri 'none'; form-action 'none'")


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
        spans.append(f'<span class="{cls}" title="{esc(title)}">{esc(show_token(tok))}</span>')
    return f'<div class="tokens">{"".join(spans)}</div>'


def _window_html(w: dict, act_scale: float, sim_scale: float) -> str:
    tokens, acts, pred = w["tokens"] or [], w["activations"] or [], w.get("predicted")
    n = min(len(acts), len(pred or []))
    r = correlation(acts[:n], pred[:n]) if pred else None
    head = (f'<div class="winhead">{esc(w["sampling"])} window #{esc(w["rank"])} · max activation '
            f'{num(max(acts) if acts else None, 3)}' + (f" · window correlation {num(r, 3)}" if pred else "") + "</div>")

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


# ---- the model card and the score histogram ----------------------------------------------------


def _model_card(m: dict, evals: list[dict], summary: list[dict], drawn: set[str]) -> str:
    uid = slug("model", m["name"])
    n_params, n_nonzero = m.get("n_params"), m.get("n_nonzero")
    overall = (n_nonzero / n_params) if n_params and n_nonzero is not None else None
    facts = [("model", esc(m["name"])), ("parameters", num(n_params)), ("nonzero parameters", num(n_nonzero)),
             ("nonzero fraction, all parameters", num(overall, 3)), ("train loss", num(m.get("train_loss"))),
             ("val loss", num(m.get("val_loss"))), ("tokens seen", num(m.get("tokens_seen"))),
             ("steps", num(m.get("steps"))), ("run folder", f"<code>{esc(m.get('run_dir'))}</code>"),
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
                     f"min {num(vals[0] if vals else None, 3)}, "
                     f"median {num(med, 3)}, max {num(vals[-1] if vals else None, 3)}.</p>"
                     "<details><summary>every matrix</summary>"
                     + table(["matrix", "density"], [[f"<code>{esc(k)}</code>", num(v, 3)] for k, v in density.items()])
                     + "</details>")
    manifest = m.get("corpus_manifest") or {}
    man_rows = []
    if isinstance(manifest, dict):
        for k in sorted(manifest, key=str):
            v = manifest[k]
            if isinstance(v, (list, dict)):  # file lists can be long: count them only
                man_rows.append([f"<code>{esc(k)}</code>", f"<span class='muted'>{len(v):,} entries (not shown)</span>"])
            else:
                man_rows.append([f"<code>{esc(k)}</code>", _json_cell(v)])
    eval_rows = [[esc(e["task"]), num(e["loss"]), num(e["accuracy"], 3), num(e["mean_logit_diff"], 3),
                  num(e["n_val"]), num(e["learned"]), num(e["target_loss"], 3)] for e in evals]
    sum_rows = [[esc(s["task"]), esc(s["status"]), num(s["n_nodes"]), num(s.get("baseline_nodes")),
                 num(s["n_edges"]), num(s["full_loss"]),
                 num(s["sufficiency_loss"]), num(s["necessity_loss"]), num(s["sufficient"]),
                 num(s["target_loss"], 3), num(s.get("random_labels")),
                 ("drawn" if s["circuit_id"] in drawn else ""), f"<code>{esc(s['circuit_id'])}</code>"] for s in summary]
    return (f'<section class="model-card" id="card-{esc(uid)}"><h3>Model card</h3>'
            f"<div class='cols'><div>{dl(facts)}<details><summary>Config: {esc(shape)}</summary>"
            f"{table(['key', 'value'], cfg_rows, 'config')}</details></div>"
            f"<div><h4>Corpus manifest</h4>{table(['field', 'value'], man_rows) if man_rows else '<p class=muted>none</p>'}"
            f"<h4>Weight density</h4>{dens_html}</div></div>"
            f"<h4>Unpruned model on every task (task_evals)</h4>"
            + (table(["task", "loss", "accuracy", "mean logit diff", "n val", "learned", "target"], eval_rows, "evals")
               if eval_rows else "<p class='muted'>no task evaluations; run <code>circuits tasks RUN</code></p>")
            + "<h4>Stored circuits (circuit_summary)</h4>"
            + (table(["task", "status", "nodes", "random-ranking nodes", "edges", "unpruned loss", "sufficiency loss",
                      "necessity loss", "sufficient", "target", "random labels", "", "circuit id"], sum_rows, "summary")
               if sum_rows else "<p class='muted'>no circuits</p>")
            + "</section>")


def _scores_section(model: str, explained: dict[str, Explained]) -> str:
    """The histogram of selected-explanation scores per kind, and its summary table."""
    scores: dict[str, list[float]] = {k: [] for k in NODE_KINDS}
    undefined = {k: 0 for k in NODE_KINDS}
    for ex in explained.values():
        for kind in NODE_KINDS:
            for row in ex.selected.get(kind, []):
                if row["score"] is None:
                    undefined[kind] += 1  # counted apart, never as 0
                else:
                    scores[kind].append(float(row["score"]))
    rows = []
    for k in NODE_KINDS:
        vals = sorted(scores[k])
        mean = sum(vals) / len(vals) if vals else None
        med = vals[len(vals) // 2] if vals else None
        rows.append([f'<span class="swatch kind-{k}"></span>{esc(k)}', num(len(vals) + undefined[k]), num(len(vals)),
                     num(undefined[k]), num(mean, 3), num(med, 3)])
    return (f'<section class="scores"><h3>Explanation scores: the selected explanation against baselines</h3>'
            "<p>One count per node and kind (its selected explanation; kind llm is the best of the LLM's candidates "
            "and those written without an LLM, its writer is on the node's card). <em>undefined</em>: no score "
            "(a failed explanation or simulation, or a constant activation), counted apart, never as 0.</p>"
            + histogram_svg(slug("hist", model), model, scores, undefined)
            + table(["kind", "explanations", "scored", "undefined", "mean", "median"], rows, "hist-table")
            + "</section>")


# ---- node cards ---------------------------------------------------------------------------------


def _explanation_rows(ex: Explained) -> list[list[str]]:
    rows = []
    for kind in NODE_KINDS:
        for r in ex.selected.get(kind, []):
            if r["text"] is None:
                text = f'<span class="fail">no explanation: {esc(r["failure"])}</span>'
                if r.get("raw_text"):
                    text += f' <span class="muted">raw output:</span> <code>{esc(r["raw_text"])}</code>'
            else:
                text = esc(r["text"])
                if kind == SHUFFLED and r.get("source_name"):
                    text += f' <span class="muted">(explanation of {esc(r["source_name"])})</span>'
                if r.get("failure"):
                    text += f' <span class="fail">{esc(r["failure"])}</span>'
            rows.append([f'<span class="swatch kind-{kind}"></span>{esc(kind)}', esc(r.get("writer") or ""),
                         f'<span class="expl">{text}</span>',
                         f"<b>{num(r['score'], 3)}</b>", num(r["mean_window_correlation"], 3),
                         num(r["r_squared"], 3), num(r["absolute_deviation_explained"], 3),
                         num(r["calibrate_score"], 3), esc(r["explainer"]), esc(r["simulator"])]
                        + ([num(r.get("detection"), 3), num(r.get("fuzzing"), 3)] if _has_excerpt_scores(ex) else []))
    return rows


def _has_excerpt_scores(ex: Explained) -> bool:
    """Whether any selected explanation of the node was judged by detection or fuzzing (`--scorer`)."""
    return any(r.get("detection") is not None or r.get("fuzzing") is not None
               for lst in ex.selected.values() for r in lst)


def _role_lines(roles: list[dict]) -> str:
    """A node card's view of its roles: per task, its effects, in-task explanation and tokens."""
    items = []
    for r in roles:
        intask = (f"<span class='expl'>{esc(r['task_explanation'])}</span> (score {num(r['task_score'], 3)}, "
                  f"token lookup {num(r['task_token_lookup_score'], 3)})" if r["task_explanation"] else "—")
        items.append((f"in task {esc(r['task'])}",
                      f"effect in circuit {num(r['effect_in_circuit'], 3)}, in model {num(r['effect_in_model'], 3)}, "
                      f"direct Δ logit diff {num(r['direct_logit_diff'], 3)}; in-task explanation: {intask}; "
                      f"promotes {_tokens(r['promoted'])}; suppresses {_tokens(r['suppressed'])}"))
    return dl(items) if items else ""


def _node_card(model: str, n: dict, ex: Explained, tasks: list[str], windows: list[dict], scale: float,
               roles: list[dict] | None = None) -> str:
    uid = slug("node", model, n["node_id"])
    expl = table(["kind", "writer", "explanation", "score", "mean window corr.", "r²", "abs. dev. explained",
                  "calibrate score", "explainer", "simulator"]
                 + (["detection (bal. acc.)", "fuzzing (bal. acc.)"] if _has_excerpt_scores(ex) else []),
                 _explanation_rows(ex), "expl-table")
    cands = ""
    if ex.candidates:
        crow = [[num(c["candidate"]), esc(c.get("writer") or ""),
                 (esc(c["text"]) if c["text"] is not None else f'<span class="fail">{esc(c["failure"])}</span>'
                  + (f' <code>{esc(c["raw_text"])}</code>' if c.get("raw_text") else "")),
                 num(c["calibrate_score"], 3), num(c.get("score"), 3)] for c in ex.candidates]
        cands = ("<details><summary>other candidates, by writer (not selected on the calibrate windows; the best "
                 "LLM-written one is also scored on the held-out windows)</summary>"
                 + table(["candidate", "writer", "explanation", "calibrate score", "held-out score"], crow)
                 + "</details>")
    preds = [v for w in windows for v in (w.get("predicted") or [])]
    sim_scale = max(preds) if preds else 0.0
    heat = "".join(_window_html(w, scale, sim_scale) for w in windows)
    if not windows:
        heat = "<p class='muted'>no score windows stored for this node</p>"
    return (f'<article class="node-card" id="{esc(uid)}"><h4>{esc(n["name"])}</h4>'
            f'<p class="muted">layer {esc(n["layer"])} · {esc(n["site"])} · index {esc(n["idx"])} · '
            f"in the circuits of {esc(', '.join(tasks))} · largest |activation| {num(scale, 3)}</p>"
            f"{_role_lines(roles or [])}{expl}{cands}<div class='heatmaps'>{heat}</div></article>")


# ---- circuits -------------------------------------------------------------------------------------


def _node_title(n: dict, ex: Explained | None) -> str:
    """A graph node's tooltip: name, rank, mask score, best LLM explanation and baseline scores."""
    lines = [f"{n['name']}  (circuit rank {n['rank']}, mask score {num(n.get('score'), 3)})"]
    if ex is not None:
        best = ex.best_llm
        if best is not None:
            text = best["text"] if best["text"] is not None else f"(no explanation: {best['failure']})"
            lines.append(f"LLM: {text}  [score {num(best['score'], 3)}]")
        for kind in (TOKEN_LOOKUP, SHUFFLED):
            if ex.selected.get(kind):
                lines.append(f"{kind}: score {num(ex.best_score(kind), 3)}")
    return "\n".join(lines)


def _circuit_section(model: str, cd: CircuitData, n_layer: int, card_ids: dict[str, str]) -> str:
    c, here, order = cd.circuit, cd.explained, cd.order
    uid = slug("circuit", c["circuit_id"])
    total = sum(cd.edge_counts.values())
    numbers = {nid: i + 1 for i, nid in enumerate(order[:MAX_TABLE_ROWS])}
    by_id = {x["node_id"]: x for x in cd.nodes}
    titles = {x["node_id"]: _node_title(x, here.get(x["node_id"])) for x in cd.nodes}
    effects = {r["node_id"]: r["effect_in_circuit"] for r in cd.roles}
    for nid, e in effects.items():
        if nid in titles and e is not None:
            titles[nid] += f"\neffect in the circuit {e:+.3f}"
    svg = circuit_svg(uid, cd.nodes, cd.edges, n_layer, set(here), titles, numbers, effects)
    left_out = total - len(cd.edges)
    kinds_txt = ", ".join(f"{v:,} {k}" for k, v in sorted(cd.edge_counts.items()))
    note = (f"All {total:,} edges drawn ({kinds_txt})." if left_out == 0 else
            f"Showing the strongest {len(cd.edges):,} of {total:,} edges ({kinds_txt}), shared among edge kinds in "
            f"proportion to their counts; {left_out:,} weaker edges are not drawn.")
    losses = dl([("status", esc(c["status"])), ("nodes", num(c["n_nodes"])),
                 ("random-ranking nodes", num(c.get("baseline_nodes"))), ("edges", num(c["n_edges"])),
                 ("unpruned loss", num(c["full_loss"])), ("unpruned accuracy", num(c.get("full_accuracy"), 3)),
                 ("sufficiency loss", num(c["sufficiency_loss"])),
                 ("sufficiency accuracy", num(c.get("sufficiency_accuracy"), 3)),
                 ("necessity loss", num(c["necessity_loss"])), ("target loss", num(c["target_loss"], 3)),
                 ("sufficient", num(c["sufficient"])), ("candidates", num(c.get("n_candidates"))),
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
        if best is not None and best.get("writer"):
            text += f' <span class="muted">({esc(best["writer"])})</span>'
        rows.append([str(numbers[nid]), name, f'<span class="expl">{text}</span>',
                     num(ex.best_score(LLM), 3), num(ex.best_score(TOKEN_LOOKUP), 3),
                     num(ex.best_score(SHUFFLED), 3)])
    more = ""
    if len(order) > MAX_TABLE_ROWS:
        more = f"<p class='note'>{len(order) - MAX_TABLE_ROWS:,} more explained nodes are not listed.</p>"
    if len(order) > len(cd.cards):
        more += (f"<p class='note'>Heatmap cards for the best {len(cd.cards)} of {len(order)} explained nodes "
                 f"(by LLM score); the others are listed above only.</p>")
    expl_html = (table(["#", "node", "selected explanation (writer)", "llm", "token_lookup", "shuffled"], rows,
                       "node-table") + more
                 if rows else f"<p class='muted'>No node of this circuit is explained yet; run "
                              f"<code>circuits explain {esc(model)} --task {esc(c['task'])}</code>.</p>")
    older_html = ""
    if cd.older:
        orows = [[f"<code>{esc(o['circuit_id'])}</code>", esc(o["status"]), num(o["n_nodes"]), num(o["n_edges"]),
                  num(o["sufficiency_loss"]), num(o["necessity_loss"]), esc(o["created_at"])] for o in cd.older]
        older_html = ("<details><summary>older circuits of this task (not drawn)</summary>"
                      + table(["circuit id", "status", "nodes", "edges", "sufficiency loss", "necessity loss", "created"],
                              orows) + "</details>")
    warning = ""
    if c["status"] == "no_small_circuit":
        warning = (f"<p class='not-circuit'><b>Not a circuit.</b> {esc(c.get('note') or '')}. The set is drawn "
                   f"below, but its nodes say little about how the model does the task.</p>")
    search_html = ""
    if cd.points:
        chosen = next((p for p in cd.points if p["chosen"]), None)
        search_html = (f"<h4>Pruning search: size against held-out loss ({len(cd.points)} points"
                       + (f", {num(c.get('search_seconds'), 3)} s" if c.get("search_seconds") else "") + ")</h4>"
                       + tradeoff_svg(slug("tradeoff", c["circuit_id"]), c["task"], cd.points, c["target_loss"],
                                      c.get("baseline_nodes"), c.get("n_candidates") or c["n_nodes"])
                       + "<p class='note'>One dot per setting tried (squares: shrunk greedily), filled when its "
                         "held-out loss meets the target (dashed line); the ringed one is the circuit. The dotted "
                         "line is how many nodes a random ranking needs to meet the same target"
                       + (f"; chosen: {esc(json.dumps(chosen['overrides'], sort_keys=True))}" if chosen else "")
                       + ". All points: <code>SELECT * FROM prune_points WHERE circuit_id = '"
                       + esc(c["circuit_id"]) + "'</code>.</p>")
    return (f'<section class="task" id="{esc(uid)}"><h3>Task {esc(c["task"])}</h3>{warning}'
            f"<div class='cols'><div>{losses}</div><div>{older_html}</div></div>{search_html}"
            f'<div class="graph">{svg}</div>'
            f'<p class="note">{esc(note)} Columns are layers, bands are node sites in forward order; '
            f'<span class="swatch pos"></span>positive and <span class="swatch neg"></span>negative weights, '
            f'<span class="swatch res"></span>residual-stream edges (dashed), width and opacity by |weight| '
            f"relative to the strongest edge of its kind. Explained nodes have a dark ring and a number (see the "
            f"table). Hover a node for its explanation."
            + (" Node size: its effect in the circuit (see below)." if effects else "") + "</p>"
            f'<p class="info" id="info-{esc(uid)}">Click a node to highlight its edges.</p>'
            f"{_roles_html(model, cd)}<h4>Explained nodes</h4>{expl_html}</section>")


def _tokens(toks: list[str] | None) -> str:
    return "—" if not toks else ", ".join(f"<code>{esc(show_token(t))}</code>" for t in toks[:5])


def _roles_html(model: str, cd: CircuitData) -> str:
    """What each node does for the task (node_roles), largest effect in the circuit first."""
    c = cd.circuit
    if not cd.roles:
        return (f"<h4>What each node does for the task</h4><p class='muted'>No node effects yet; run "
                f"<code>circuits explain {esc(model)} --task {esc(c['task'])} --in-task</code>.</p>")
    rows = []
    for r in cd.roles[:MAX_TABLE_ROWS]:
        intask = ("—" if r["task_explanation"] is None and r["task_score"] is None
                  else esc(r["task_explanation"] or "(failed)"))
        general = (f'<span class="expl">{esc(r["general_explanation"])}</span> '
                   f'<span class="muted">{num(r["general_score"], 3)}</span>' if r["general_explanation"] else "—")
        rows.append([esc(r["name"]), num(r["effect_in_circuit"], 3), num(r["effect_in_model"], 3),
                     num(r["direct_logit_diff"], 3), f'<span class="expl">{intask}</span>', num(r["task_score"], 3),
                     num(r["task_token_lookup_score"], 3),
                     general,
                     _tokens(r["promoted"]), _tokens(r["suppressed"])])
    base = cd.effects or {}
    check = ""
    if base:
        check = (f" Ablating the whole circuit from the model raises the loss by "
                 f"{num(base['necessity_loss'] - base['model_loss'], 3)}; the single-node effects in the model add "
                 f"up to {num(base.get('sum_effect_in_model'), 3)} (a check, not a target: nodes that back each "
                 f"other up add up to less, nodes that act jointly to more).")
    return ("<h4>What each node does for the task</h4>"
            + table(["node", "effect in circuit", "effect in model", "direct Δ logit diff", "in-task explanation",
                     "in-task score", "token lookup (task)", "general explanation (score)", "promotes", "suppresses"],
                    rows, "node-table roles")
            + f"<p class='note'>Effect: how much the task loss rises when the node alone is mean-ablated, from the "
              f"circuit and from the full model. Direct: its straight path to the two answer logits (empty for "
              f"nodes that only read). In-task explanation: written from the task's own pairs and scored on "
              f"held-out pairs, beside token lookup on the same pairs. Promotes / suppresses: the tokens its "
              f"output raises and lowers most through the unembedding.{check} All rows: <code>SELECT * FROM "
              f"node_roles WHERE circuit_id = '{esc(c['circuit_id'])}'</code>.</p>")


# ---- a model and the page -------------------------------------------------------------------------


def model_section(d: ModelData) -> tuple[str, str]:
    """(section HTML, nav HTML) for one model."""
    model = d.model["name"]
    card_ids = {nid: slug("node", model, nid) for nid in d.card_nodes}
    muid = slug("model-section", model)
    body = [f'<section class="model" id="{esc(muid)}"><h2>Model {esc(model)}</h2>',
            _model_card(d.model, d.evals, d.summary, d.drawn_ids), _scores_section(model, d.explained)]
    nav = [f'<li><a href="#{esc(muid)}">{esc(model)}</a><ul>']
    if not d.circuits:
        body.append("<p class='note'>This model has no circuit with nodes yet (no task learned at the target loss); "
                    f"see the tables above, or prune with a higher target: <code>circuits prune {esc(model)} --all "
                    "--target-loss 0.4</code>.</p>")
    for cd in d.circuits:
        c = cd.circuit
        body.append(_circuit_section(model, cd, d.n_layer, card_ids))
        nav.append(f'<li><a href="#{esc(slug("circuit", c["circuit_id"]))}">{esc(c["task"])}</a> '
                   f'<span class="muted">({num(c["n_nodes"])} nodes)</span></li>')
    if d.card_nodes:
        body.append(f'<section class="nodes" id="{esc(muid)}-nodes"><h3>Explained nodes of {esc(model)}</h3>'
                    "<p class='note'>Heatmaps: the held-out score windows (top and random) the selected explanation was "
                    "scored on. Left: the real activation, shaded by |activation| / the node's largest |activation| "
                    "(<span class='swatch h9'></span>positive, <span class='swatch n9'></span>negative); right: the "
                    "simulated activation from the explanation alone, shaded by value / the largest prediction. "
                    "↵ is a newline, ⇥ a tab; hover a token for its value.</p>")
        roles_of: dict[str, list[dict]] = {}
        for cd in d.circuits:
            for r in cd.roles:
                roles_of.setdefault(r["node_id"], []).append(r)
        for nid, x in d.card_nodes.items():
            body.append(_node_card(model, x, d.explained[nid], d.tasks_of[nid], d.windows.get(nid, []),
                                   d.scales.get(nid, 0.0), roles_of.get(nid)))
        body.append("</section>")
        nav.append(f'<li><a href="#{esc(muid)}-nodes">explained nodes</a></li>')
    nav.append("</ul></li>")
    body.append("</section>")
    return "".join(body), "".join(nav)


def render_page(models: list[ModelData], db_path: str | Path) -> str:
    """The whole report as one HTML document."""
    sections, navs = zip(*(model_section(d) for d in models)) if models else ((), ())
    n_drawn = sum(len(d.circuits) for d in models)
    script = asset("report.js")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    names = ", ".join(d.model["name"] for d in models)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{esc(csp(script))}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(REPORT_TITLE)}</title><style>{asset('report.css')}</style></head><body>"
            f'<header id="report-header"><h1>{esc(REPORT_TITLE)}</h1>'
            f"<p class='muted'>Models: {esc(names)} · database <code>{esc(db_path)}</code> · "
            f"generated {esc(generated)}"
            f" · {n_drawn} circuits drawn</p>"
            f"<nav id='toc'><ul>{''.join(navs)}</ul></nav></header>"
            f"<main>{''.join(sections)}</main>"
            f"<script>{script}</script></body></html>\n")
