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
  site in forward order, nodes sorted by index; edges coloured by sign, width and opacity by
  |weight| relative to the strongest edge of its kind, residual edges dashed; at most `max_edges`
  edges (the strongest of each kind, in proportion to how many there are), with a note saying how
  many were left out. Each node's tooltip holds its name, its best LLM explanation and score. Then
  the unpruned, sufficiency and necessity losses and a table of the circuit's explained nodes;
- per explained node (the best `nodes_per_task` per task by LLM score), every selected explanation
  with its scores, other LLM candidates, and token heatmaps of the top and random score windows:
  the real activation (normalised by the node's largest |activation|) beside the simulated one
  (normalised by the largest prediction of that explanation).

The package: `data` gathers these as plain values through Store methods, `svg` draws the graph and
the histogram, `page` writes the HTML (escaping and the CSP are described there), report.css and
report.js are inlined into the page.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sparse_model.errors import UserError
from sparse_model.failpoints import failpoint

from ..store import Store
from ..store.shared import process_alive
from .data import DEFAULT_MAX_EDGES, DEFAULT_NODES_PER_TASK, DEFAULT_WINDOWS, ReportSettings, gather_model, models_to_report
from .page import REPORT_TITLE, render_page

__all__ = ["DEFAULT_MAX_EDGES", "DEFAULT_NODES_PER_TASK", "DEFAULT_WINDOWS", "REPORT_TITLE", "ReportSettings",
           "build_report", "write_report"]


def build_report(store: Store, model: str | None = None, settings: ReportSettings | None = None) -> str:
    """The report of one model (or of every model in the store) as one HTML document."""
    settings = settings or ReportSettings()
    settings.check()
    models = models_to_report(store, model)
    return render_page([gather_model(store, m, settings) for m in models], store.path)


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of earlier writes of this report whose process is gone (killed mid-write)."""
    for tmp in out.parent.glob(f".{out.name}-*-*.tmp"):
        pid = tmp.name[len(out.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            tmp.unlink(missing_ok=True)


def write_report(store: Store, out_path: str | Path, model: str | None = None,
                 settings: ReportSettings | None = None) -> Path:
    """Build the report and write it to `out_path` (parent folders are created), atomically."""
    out = Path(out_path).expanduser()
    if out.is_dir():
        raise UserError(f"{out} is a directory; pass -o with a file name such as {out / 'report.html'}")
    text = build_report(store, model, settings)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-{os.getpid()}-", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as f:
                f.write(text)
            failpoint("report.write")
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
