"""Sparse vs dense training speed and memory at the same shape, side by side in one run.

    python bench/train_speed.py [--preset demo] [--steps 60]

Each configuration trains in its own subprocess (so peak memory is its own) on the same random
batches of real tokens from the standard library. Prints tokens/s for each, the sparse/dense
step-time ratio (target: at most 1.25), the share of step time spent in the top-k projection, and
peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(preset: str, density: float, steps: int) -> dict:
    import numpy as np
    import torch

    from sparse_model.model import SparseGPT
    from sparse_model.sparsity import lr_at, normalize_grad_rms_, project_
    from sparse_model.train import make_optimizer, preset_configs

    mcfg, tcfg = preset_configs(preset, density=density, steps=steps)
    torch.manual_seed(0)
    model = SparseGPT(mcfg)
    opt = make_optimizer(model, tcfg)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.integers(0, mcfg.vocab_size, (tcfg.batch_size, mcfg.n_ctx + 1))) for _ in range(4)]
    t_step = t_proj = 0.0
    warmup = 5
    for step in range(steps + warmup):
        batch = batches[step % 4]
        t0 = time.perf_counter()
        loss = model.loss(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        normalize_grad_rms_(params)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, tcfg.lr, tcfg.density)
        opt.step()
        t1 = time.perf_counter()
        project_(model, density)  # at the target density throughout: the projection's full cost
        t2 = time.perf_counter()
        if step >= warmup:
            t_step += t1 - t0
            t_proj += t2 - t1
    tokens = steps * tcfg.batch_size * mcfg.n_ctx
    return {"density": density, "tokens_per_s": tokens / (t_step + t_proj), "seconds_per_step": (t_step + t_proj) / steps,
            "projection_share": t_proj / (t_step + t_proj), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--density", type=float, default=None, help="sparse density (default: the preset's)")
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.preset, args.one, args.steps)))
        return
    from sparse_model.train import preset_configs

    density = args.density or preset_configs(args.preset)[1].density
    results = {}
    for d in (1.0, density, 1.0, density):  # interleaved twice, best of two, so drift in machine load cancels
        out = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--steps", str(args.steps), "--one", str(d)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        if d not in results or r["tokens_per_s"] > results[d]["tokens_per_s"]:
            results[d] = r
    dense, sparse = results[1.0], results[density]
    print(f"preset {args.preset}, {args.steps} steps each, best of 2 interleaved runs")
    print(f"{'model':<16}{'tokens/s':>10}{'s/step':>9}{'top-k share':>13}{'peak RSS MB':>13}")
    for label, r in ((f"dense (1.0)", dense), (f"sparse ({density:g})", sparse)):
        print(f"{label:<16}{r['tokens_per_s']:>10.0f}{r['seconds_per_step']:>9.3f}{r['projection_share']:>13.1%}{r['peak_rss_mb']:>13.0f}")
    ratio = sparse["seconds_per_step"] / dense["seconds_per_step"]
    print(f"sparse/dense step time: {ratio:.2f}x (target <= 1.25x)")
    print(f"sparse/dense peak memory: {sparse['peak_rss_mb'] / dense['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
