"""Training speed: the fast step against the plain one, and sparse against dense, side by side in one run.

    python bench/train_speed.py [--preset small] [--steps 40] [--rounds 3]

Each configuration trains in its own subprocess (so allocator settings and peak memory are its own)
on the same random batches of real-sized token ids, through `sparse_model.step.train_step`, with the
density schedule of a real run from step 0 (so the projection costs what it costs during training).
Configurations run interleaved in rounds (--rounds, default 3). The speed-ups are taken within each
round, whose configurations ran back to back, and the median over rounds is reported with every
round's value: on this shared machine the load drifts from minute to minute. The table shows each
configuration's best round: tokens/s, seconds per step, the share of the step spent in the top-k
projection (timed inside the step), and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict

STEPS = {"plain": "PLAIN_STEP", "fast": "FAST_STEP"}


def one(preset: str, density: float, steps: int, step_kind: str) -> dict:
    import numpy as np
    import torch

    from sparse_model import step as step_mod
    from sparse_model.model import SparseGPT
    from sparse_model.sparsity import density_at, lr_at, project_
    from sparse_model.train import make_optimizer, preset_configs

    settings = getattr(step_mod, STEPS[step_kind])
    if settings.keep_freed_memory:
        step_mod.keep_freed_memory()
    mcfg, tcfg = preset_configs(preset, density=density)
    torch.manual_seed(0)
    model = SparseGPT(mcfg)
    opt = make_optimizer(model, tcfg, settings)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.integers(0, mcfg.vocab_size, (tcfg.batch_size, mcfg.n_ctx + 1))) for _ in range(4)]
    in_projection = [0.0]

    def timed_project(*args):  # the step's own projection, timed where it runs (after the optimizer)
        t = time.perf_counter()
        project_(*args)
        in_projection[0] += time.perf_counter() - t

    step_mod.project_ = timed_project
    warmup, total, t_proj = 3, 0.0, 0.0
    for i in range(steps + warmup):
        batch = batches[i % 4]
        s = i * (tcfg.steps // (steps + warmup))  # spread over the run, so densities are the run's
        in_projection[0] = 0.0
        t0 = time.perf_counter()
        step_mod.train_step(model, opt, params, batch[:, :-1], batch[:, 1:], lr_at(s, tcfg.steps, tcfg.lr, density),
                            density_at(s, tcfg.steps, density), settings)
        t1 = time.perf_counter()
        if i >= warmup:
            total += t1 - t0
            t_proj += in_projection[0]
    tokens = steps * tcfg.batch_size * mcfg.n_ctx
    return {"step": step_kind, "settings": asdict(settings), "density": density, "tokens_per_s": tokens / total,
            "seconds_per_step": total / steps, "projection_share": t_proj / total,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--density", type=float, default=None, help="sparse density (default: the preset's)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the ratios are per round, then the median")
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.preset, float(args.one[1]), args.steps, args.one[0])))
        return
    from sparse_model.train import preset_configs

    density = args.density or preset_configs(args.preset)[1].density
    configs = [("plain", density), ("fast", density), ("fast", 1.0)]
    best: dict[tuple[str, float], dict] = {}
    speedups, dense_ratios = [], []
    for _ in range(args.rounds):
        this: dict[tuple[str, float], dict] = {}
        for kind, d in configs:
            out = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--steps", str(args.steps),
                                  "--one", kind, str(d)], check=True, capture_output=True, text=True).stdout
            this[(kind, d)] = r = json.loads(out.strip().splitlines()[-1])
            if (kind, d) not in best or r["tokens_per_s"] > best[(kind, d)]["tokens_per_s"]:
                best[(kind, d)] = r
        # within a round the configurations ran back to back, so a round's ratio sees one machine load
        speedups.append(this[("fast", density)]["tokens_per_s"] / this[("plain", density)]["tokens_per_s"])
        dense_ratios.append(this[("fast", density)]["seconds_per_step"] / this[("fast", 1.0)]["seconds_per_step"])
    print(f"preset {args.preset}, {args.steps} steps each, {args.rounds} interleaved rounds (table: best of the rounds)")
    print(f"{'step':<8}{'density':>8}{'tokens/s':>10}{'s/step':>9}{'top-k share':>13}{'peak RSS MB':>13}")
    for kind, d in configs:
        r = best[(kind, d)]
        print(f"{kind:<8}{d:>8g}{r['tokens_per_s']:>10.0f}{r['seconds_per_step']:>9.3f}{r['projection_share']:>13.1%}{r['peak_rss_mb']:>13.0f}")

    def spread(xs: list[float]) -> str:
        return f"median {statistics.median(xs):.2f}x (rounds: {', '.join(f'{x:.2f}' for x in xs)})"

    print(f"fast/plain tokens/s: {spread(speedups)} (target >= 1.5x)")
    print(f"sparse/dense step time (fast step): {spread(dense_ratios)} (target <= 1.25x)")


if __name__ == "__main__":
    main()
