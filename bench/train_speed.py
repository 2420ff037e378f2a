"""Training speed: the fast step against the plain one, and sparse against dense, side by side in one run.

    python bench/train_speed.py [--preset small] [--steps 40]

Each configuration trains in its own subprocess (so allocator settings and peak memory are its own)
on the same random batches of real-sized token ids, through `sparse_model.step.train_step`, with the
density schedule of a real run from step 0 (so the projection costs what it costs during training).
Configurations run interleaved twice and the best of the two counts, so drift in machine load cancels.
Prints tokens/s, seconds per step, the share of the step spent in the top-k projection, peak resident
memory, the fast/plain speed-up (target: at least 1.5x) and the sparse/dense step-time ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
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
    ap.add_argument("--one", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.preset, float(args.one[1]), args.steps, args.one[0])))
        return
    from sparse_model.train import preset_configs

    density = args.density or preset_configs(args.preset)[1].density
    configs = [("plain", density), ("fast", density), ("fast", 1.0)]
    results: dict[tuple[str, float], dict] = {}
    for _ in range(2):
        for kind, d in configs:
            out = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--steps", str(args.steps),
                                  "--one", kind, str(d)], check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            if (kind, d) not in results or r["tokens_per_s"] > results[(kind, d)]["tokens_per_s"]:
                results[(kind, d)] = r
    print(f"preset {args.preset}, {args.steps} steps each, best of 2 interleaved runs")
    print(f"{'step':<8}{'density':>8}{'tokens/s':>10}{'s/step':>9}{'top-k share':>13}{'peak RSS MB':>13}")
    for kind, d in configs:
        r = results[(kind, d)]
        print(f"{kind:<8}{d:>8g}{r['tokens_per_s']:>10.0f}{r['seconds_per_step']:>9.3f}{r['projection_share']:>13.1%}{r['peak_rss_mb']:>13.0f}")
    plain, fast, dense = results[("plain", density)], results[("fast", density)], results[("fast", 1.0)]
    print(f"fast/plain tokens/s: {fast['tokens_per_s'] / plain['tokens_per_s']:.2f}x (target >= 1.5x)")
    print(f"sparse/dense step time (fast step): {fast['seconds_per_step'] / dense['seconds_per_step']:.2f}x (target <= 1.25x)")


if __name__ == "__main__":
    main()
