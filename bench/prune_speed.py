"""Seconds to prune one task, per model, with the stages split out.

    python bench/prune_speed.py runs/demo [runs/standard ...] [--task single_double_quote]

For each run: mean activations (once per model), mask learning, bisection and verification, timed
separately; prints seconds per task for each model side by side (target: at most 120 s on demo).
The task is pruned at a target just under what the unpruned model reaches, so even a model that has
not learned the task to 0.15 is timed on the same amount of work.
"""

from __future__ import annotations

import argparse
import math
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--task", default="single_double_quote")
    args = ap.parse_args()

    from sparse_model.run import Run
    from sparse_model.prune import (PruneSettings, bisect_keep, circuit_edges, keep_masks, learn_scores, loss_with,
                                    rank_nodes, split_val)

    rows = []
    for run_dir in args.runs:
        run = Run(run_dir)
        (task,) = run.tasks([args.task])
        t0 = time.perf_counter()
        means = run.means
        t1 = time.perf_counter()
        full = loss_with(run.model, task.val)[0]
        target = min(0.15, math.log(2) - 1e-3) if full <= 0.15 else min(full * 1.05, math.log(2) - 1e-3)
        settings = PruneSettings(target_loss=target)
        scores, evidence = learn_scores(run.model, task, means, settings)
        t2 = time.perf_counter()
        sel, held = split_val(task)
        ranked = rank_nodes(scores, evidence)
        k, _ = bisect_keep(run.model, ranked, sel, means, target)
        kept = [(l, i) for l, i, _ in ranked[:k]]
        loss_with(run.model, held, means, keep_masks(run.model.cfg, kept))
        loss_with(run.model, held, means, keep_masks(run.model.cfg, kept, invert=True))
        edges = circuit_edges(run.model, kept)
        t3 = time.perf_counter()
        rows.append((run.name, sum(p.numel() for p in run.model.parameters()), t1 - t0, t2 - t1, t3 - t2, t3 - t1, k, len(edges)))
    print(f"task {args.task}, {PruneSettings().steps} mask steps, torch threads {torch.get_num_threads()}")
    print(f"{'model':<14}{'means s':>9}{'masks s':>9}{'bisect+verify s':>17}{'s/task':>9}{'nodes':>7}{'edges':>8}")
    for name, _, tm, tl, tb, total, k, e in rows:
        print(f"{name:<14}{tm:>9.1f}{tl:>9.1f}{tb:>17.1f}{total:>9.1f}{k:>7}{e:>8}")
    if len(rows) > 1:
        print(f"s/task ratio {rows[1][0]}/{rows[0][0]}: {rows[1][5] / rows[0][5]:.2f}x")


if __name__ == "__main__":
    main()
