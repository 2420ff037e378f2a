"""Pruning that searches against one run of the pruner, side by side in one process, per run and
task: nodes, edges, held-out sufficiency loss, status, what a random ranking needs, and seconds.
With two runs (a sparse model and its dense baseline) it also prints dense/sparse ratios at the
same target, the paper's comparison.

    python bench/prune_search.py --run runs/demo [--run runs/demo-dense] \
        [--task single_double_quote --task indent_after_header] [--budget 150] [--target-loss 0.15]

Nothing is stored: the circuits are computed and printed only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sparse_model.prune import PruneSettings, prune  # noqa: E402
from sparse_model.prune_search import SearchSettings, search  # noqa: E402
from sparse_model.run import Run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="run folder (repeatable: sparse, then dense)")
    ap.add_argument("--task", action="append", default=None, help="default: single_double_quote, indent_after_header")
    ap.add_argument("--budget", type=float, default=SearchSettings.budget_s, help="search seconds per task")
    ap.add_argument("--target-loss", type=float, default=0.15)
    args = ap.parse_args()
    tasks = args.task or ["single_double_quote", "indent_after_header"]
    base = PruneSettings(target_loss=args.target_loss)
    found: dict[tuple[str, str, str], object] = {}
    print(f"{'run':14} {'task':22} {'pruning':8} {'status':17} {'nodes':>6} {'edges':>8} {'held-out':>8} "
          f"{'random':>6} {'points':>6} {'s':>6}")
    for run_dir in args.run:
        run = Run(run_dir)
        for task in run.tasks(tasks):
            for how in ("one run", "search"):
                t0 = time.perf_counter()
                c = prune(run.model, task, run.means, base) if how == "one run" else \
                    search(run.model, task, run.means, SearchSettings(base, args.budget))
                seconds = time.perf_counter() - t0
                found[(run_dir, task.name, how)] = c
                loss = "-" if c.sufficiency_loss is None else f"{c.sufficiency_loss:.3f}"
                print(f"{Path(run_dir).name:14} {task.name:22} {how:8} {c.status:17} {len(c.nodes):6,} "
                      f"{len(c.edges):8,} {loss:>8} {c.baseline_nodes or '-':>6} {len(c.search) or 1:6} "
                      f"{seconds:6.0f}", flush=True)
    for task in tasks:
        one, best = found.get((args.run[0], task, "one run")), found.get((args.run[0], task, "search"))
        if one is not None and best is not None and best.nodes and one.nodes:
            print(f"{task}: search/one run {len(best.nodes) / len(one.nodes):.2f}x nodes, "
                  f"{len(best.edges) / max(1, len(one.edges)):.2f}x edges")
        if len(args.run) > 1:
            sparse, dense = found.get((args.run[0], task, "search")), found.get((args.run[1], task, "search"))
            if sparse is not None and dense is not None and sparse.nodes and dense.nodes:
                print(f"{task}: dense/sparse (searched, same target) {len(dense.nodes) / len(sparse.nodes):.1f}x nodes, "
                      f"{len(dense.edges) / max(1, len(sparse.edges)):.1f}x edges")


if __name__ == "__main__":
    main()
