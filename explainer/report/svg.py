"""The report's two drawings as inline SVG, pure functions of plain values: a circuit graph and
the histogram of explanation scores. Every text from the database is escaped here."""

from __future__ import annotations

import html
import math
from collections import defaultdict

from sparse_model.nodes import FINAL, SITES

HIST_BINS = 20  # correlation in [-1, 1], bins of 0.1


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _site_class(site: str) -> str:
    return {"attn.q": "q", "attn.k": "k", "attn.v": "v", "mlp.neuron": "neuron"}.get(site, "resid")


def circuit_svg(uid: str, nodes: list[dict], edges: list[dict], n_layer: int, explained: set[str],
                titles: dict[str, str], numbers: dict[str, int], effects: dict[str, float] | None = None) -> str:
    """One column per layer (then `final`), one band per site in forward order, nodes sorted by
    index; edges coloured by sign, width and opacity by `rel`, residual edges dashed.

    nodes: rows with node_id, name, layer, site, idx; edges: rows with source, target, weight, kind,
    rel; explained: node ids drawn with a ring; titles: node id -> tooltip; numbers: node id ->
    the number written above it (its row in the explained-nodes table); effects: node id -> its
    effect in the circuit (`circuits explain --in-task`), which sizes the node: the area grows with
    the effect, up to 3x the radius for the largest."""
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
    sites = list(SITES) + sorted({x["site"] for x in nodes} - set(SITES) - {FINAL})
    band: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (column, site) -> nodes
    for x in nodes:
        if x["site"] == FINAL:
            band[("final", SITES[0])].append(x)  # the final read sits in the first band of its column
        else:
            band[(f"L{x['layer']}", x["site"])].append(x)
    for lst in band.values():
        lst.sort(key=lambda x: (x["idx"] if x["idx"] is not None else 0, x["name"]))
    biggest = max([len(v) for v in band.values()] + [1])
    per_row = max(6, min(biggest, 32 if n > 800 else 24))
    left, top, col_gap, band_gap = 118.0, 34.0, 26.0, 12.0
    col_w = per_row * sp
    band_rows = {s: max([math.ceil(len(band.get((c, s), [])) / per_row) for c in columns] + [1]) for s in sites}
    band_y: dict[str, float] = {}
    y = top
    for s in sites:
        band_y[s] = y
        y += band_rows[s] * sp + band_gap
    height = y + 8
    width = left + len(columns) * (col_w + col_gap)
    col_x = {c: left + i * (col_w + col_gap) for i, c in enumerate(columns)}

    pos: dict[str, tuple[float, float]] = {}
    for (c, s), lst in band.items():
        for i, x in enumerate(lst):
            pos[x["node_id"]] = (col_x[c] + (i % per_row) * sp + sp / 2, band_y[s] + (i // per_row) * sp + sp / 2)
    key = {x["node_id"]: f"n{i}" for i, x in enumerate(nodes)}  # short ids that tie edges to nodes in the script

    parts = [f'<svg class="circuit" id="graph-{_esc(uid)}" data-info="info-{_esc(uid)}" '
             f'xmlns="http://www.w3.org/2000/svg" '
             f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img">']
    for j, s in enumerate(sites):  # band backgrounds and labels
        yb = band_y[s] - 2
        hb = band_rows[s] * sp + 4
        if j % 2 == 0:
            parts.append(f'<rect class="band" x="0" y="{yb:.1f}" width="{width:.0f}" height="{hb:.1f}"/>')
        parts.append(f'<text class="bandlabel" x="{left - 8:.0f}" y="{yb + min(hb / 2, 10) + 3:.1f}">{_esc(s)}</text>')
    for c in columns:
        parts.append(f'<text class="colhead" x="{col_x[c] + col_w / 2:.1f}" y="20">{_esc(heads[c])}</text>')
    groups: dict[str, list[str]] = {"pos": [], "neg": [], "res": []}
    for e in sorted(edges, key=lambda e: (e["rel"] or 0.0)):  # weakest first, so the strongest are on top
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
    parts.append('<g class="nodes">')
    top = max([v for v in (effects or {}).values() if v and v > 0] + [0.0])
    for x in nodes:
        cx, cy = pos[x["node_id"]]
        cls = f"node loc-{_site_class(x['site'])}" + (" explained" if x["node_id"] in explained else "")
        e = (effects or {}).get(x["node_id"])
        rx = r * (1 + 2 * math.sqrt(max(e, 0.0) / top)) if e is not None and top > 0 else r
        parts.append(f'<circle class="{cls}" data-k="{key[x["node_id"]]}" cx="{cx:.1f}" cy="{cy:.1f}" r="{rx:.1f}">'
                     f"<title>{_esc(titles.get(x['node_id'], x['name']))}</title></circle>")
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


def histogram_svg(uid: str, model: str, scores: dict[str, list[float]], undefined: dict[str, int]) -> str:
    """Score histogram over [-1, 1], one bar per kind in each bin (kinds in the order of `scores`),
    and a group of bars apart for the undefined scores of each kind."""
    kinds = list(scores)
    counts = {k: [0] * HIST_BINS for k in kinds}
    for k, vals in scores.items():
        for v in vals:
            counts[k][min(HIST_BINS - 1, max(0, int((v + 1.0) / 2.0 * HIST_BINS)))] += 1
    top = max([c for k in kinds for c in counts[k]] + list(undefined.values()) + [1])
    step = max(1, math.ceil(top / 4))
    top = step * math.ceil(top / step)
    W, H, left, bottom, pad, extra = 790.0, 240.0, 40.0, 30.0, 10.0, 70.0  # `extra`: the undefined group
    plot_w, plot_h = W - left - pad - extra, H - bottom - pad
    bw = plot_w / HIST_BINS
    parts = [f'<svg class="histogram" id="{_esc(uid)}" xmlns="http://www.w3.org/2000/svg" width="{W:.0f}" '
             f'height="{H:.0f}" viewBox="0 0 {W:.0f} {H:.0f}" role="img"><title>explanation scores of '
             f"{_esc(model)}</title>"]
    for t in range(0, top + 1, step):
        yy = pad + plot_h - plot_h * t / top
        parts.append(f'<line class="grid" x1="{left}" x2="{W - pad}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
                     f'<text class="axis" x="{left - 4}" y="{yy + 3:.1f}" text-anchor="end">{t}</text>')

    def bar(x: float, w: float, c: int, k: str, what: str) -> str:
        h = plot_h * c / top
        return (f'<rect class="bar kind-{k}" x="{x:.1f}" y="{pad + plot_h - h:.1f}" width="{w:.1f}" height="{h:.1f}">'
                f"<title>{_esc(k)}: {c} {_esc(what)}</title></rect>")

    for b in range(HIST_BINS):
        lo = -1 + 2 * b / HIST_BINS
        for j, k in enumerate(kinds):
            if counts[k][b]:
                parts.append(bar(left + b * bw + 1 + j * (bw - 2) / 3, (bw - 2) / 3, counts[k][b], k,
                                 f"in [{lo:.1f}, {lo + 0.1:.1f})"))
    ux = left + plot_w + 26
    for j, k in enumerate(kinds):
        if undefined.get(k):
            parts.append(bar(ux + j * 14, 12, undefined[k], k, "undefined"))
    parts.append(f'<text class="axis" x="{ux + 21:.1f}" y="{H - bottom + 14:.1f}" text-anchor="middle">undefined</text>')
    for t in range(0, HIST_BINS + 1, 5):
        xx = left + t * bw
        parts.append(f'<text class="axis" x="{xx:.1f}" y="{H - bottom + 14:.1f}" text-anchor="middle">'
                     f"{-1 + 2 * t / HIST_BINS:.1f}</text>")
    parts.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{H - 4:.1f}" text-anchor="middle">'
                 "score (correlation of real and simulated activation on the held-out score windows)</text></svg>")
    return "".join(parts)


def tradeoff_svg(uid: str, task: str, points: list[dict], target: float, baseline: int | None,
                 candidates: int) -> str:
    """A pruning search's size against held-out loss: one dot per point tried (`prune_points`
    rows), nodes on a log axis from 1 to every node of the model, the target as a dashed line, the
    random-ranking baseline as a dotted one; the chosen point ringed, shrunk points as squares."""
    W, H, left, bottom, pad = 560.0, 220.0, 44.0, 32.0, 12.0
    plot_w, plot_h = W - left - pad, H - bottom - pad
    top = max([math.log(2)] + [p["sufficiency_loss"] for p in points if p["sufficiency_loss"] is not None])
    span = math.log10(max(candidates, 10))

    def x(n: float) -> float:
        return left + plot_w * math.log10(max(n, 1)) / span

    def y(v: float) -> float:
        return pad + plot_h - plot_h * min(v, top) / top

    parts = [f'<svg class="tradeoff" id="{_esc(uid)}" xmlns="http://www.w3.org/2000/svg" width="{W:.0f}" '
             f'height="{H:.0f}" viewBox="0 0 {W:.0f} {H:.0f}" role="img"><title>pruning search of {_esc(task)}: '
             f"nodes against held-out loss</title>"]
    for t in range(0, int(span) + 1):
        parts.append(f'<line class="grid" x1="{x(10 ** t):.1f}" x2="{x(10 ** t):.1f}" y1="{pad}" y2="{pad + plot_h}"/>'
                     f'<text class="axis" x="{x(10 ** t):.1f}" y="{H - bottom + 14:.1f}" text-anchor="middle">'
                     f"{10 ** t:,}</text>")
    for v in (0.0, 0.2, 0.4, 0.6):
        if v <= top:
            parts.append(f'<text class="axis" x="{left - 4}" y="{y(v) + 3:.1f}" text-anchor="end">{v:.1f}</text>')
    parts.append(f'<line class="target" x1="{left}" x2="{W - pad}" y1="{y(target):.1f}" y2="{y(target):.1f}">'
                 f"<title>target loss {target:g}</title></line>"
                 f'<text class="axis" x="{left + 4}" y="{y(target) - 4:.1f}">target {target:g}</text>')
    if baseline:
        parts.append(f'<line class="baseline" x1="{x(baseline):.1f}" x2="{x(baseline):.1f}" y1="{pad}" '
                     f'y2="{pad + plot_h}"><title>a random ranking needs {baseline:,} nodes</title></line>'
                     f'<text class="axis" x="{x(baseline) - 3:.1f}" y="{pad + 9:.1f}" text-anchor="end">random ranking</text>')
    for p in points:
        if p["sufficiency_loss"] is None:
            continue
        over = p["overrides"] if isinstance(p["overrides"], dict) else {}
        what = ", ".join(f"{k} {v}" for k, v in over.items() if k != "shrink") or "defaults"
        label = (f"{what}{', shrunk' if over.get('shrink') else ''}: {p['nodes']:,} nodes, {p['edges']:,} edges, "
                 f"held-out loss {p['sufficiency_loss']:.3f}{' (chosen)' if p['chosen'] else ''}")
        cls = "point" + (" chosen" if p["chosen"] else "") + (" sufficient" if p["sufficient"] else "")
        cx, cy = x(p["nodes"]), y(p["sufficiency_loss"])
        shape = (f'<rect class="{cls}" x="{cx - 4:.1f}" y="{cy - 4:.1f}" width="8" height="8">' if over.get("shrink")
                 else f'<circle class="{cls}" cx="{cx:.1f}" cy="{cy:.1f}" r="4.5">')
        parts.append(shape + f"<title>{_esc(label)}</title>" + ("</rect>" if over.get("shrink") else "</circle>"))
    parts.append(f'<text class="axis" x="{left + plot_w / 2:.1f}" y="{H - 4:.1f}" text-anchor="middle">nodes kept '
                 f"(log scale, up to all {candidates:,}); vertical: held-out sufficiency loss</text></svg>")
    return "".join(parts)
