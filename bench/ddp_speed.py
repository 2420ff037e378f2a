"""Training tokens/s in one process against two processes under torchrun (DDP, gloo), side by side,
and how far apart the two runs' weights end.

    python bench/ddp_speed.py [--preset small] [--steps 60] [--corpus DIR] [--repeats 2]

Each configuration trains the same run (same preset, seed, steps and global batch) into its own
fresh folder with `circuits train`, in its own process(es), interleaved, best of --repeats. One
process uses torch's default threads (every core); under torchrun each process gets one thread
(torchrun's OMP_NUM_THREADS=1), so both use the whole machine. tokens/s is the run's own
measure (tokens seen over training seconds, checkpoint writes excluded). On a 2-core CPU two
processes are not expected to be faster: the point of running them is that they train the same
model. The weights are compared with a 1-process run with one thread (each of the two processes
has one) and with the default 1-process run: a different thread count changes how matmuls round,
and the top-k projection turns those last-bit differences into different masks within tens of
steps, so only the first comparison can be exact.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent


def run(kind: str, out: Path, args) -> float:
    cmd = [str(BIN / "circuits"), "train", "--preset", args.preset, "--steps", str(args.steps), "--out", str(out),
           "--checkpoint-every", str(args.steps)]
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    if kind == "2 processes":
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", *cmd]
    env = dict(os.environ, CIRCUITS_DB=str(out.parent / f"{out.name}.duckdb"))
    if kind == "1 process, 1 thread":
        env["OMP_NUM_THREADS"] = "1"
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = json.loads((out / "checkpoint.json").read_text())
    return state["tokens_seen"] / state["seconds"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sparse_model import checkpoint as ckpt

    tmp = Path(tempfile.mkdtemp(prefix="ddp_speed_"))
    kinds = ["1 process", "1 process, 1 thread", "2 processes"]
    best = {k: 0.0 for k in kinds}
    folders = {}
    for rep in range(args.repeats):
        for kind in kinds:
            out = tmp / f"{kind.replace(' ', '_')}_{rep}" / "run"
            out.parent.mkdir(parents=True)
            tok_s = run(kind, out, args)
            best[kind] = max(best[kind], tok_s)
            folders[kind] = out
            print(f"{kind}, repeat {rep + 1}: {tok_s:,.0f} tokens/s", flush=True)
    weights = {k: ckpt.load_model(folders[k])[0].state_dict() for k in kinds}
    print(f"\n{args.preset} preset, {args.steps} steps, best of {args.repeats}, {os.cpu_count()} cores")
    for kind in kinds:
        print(f"{kind:<20} {best[kind]:9,.0f} tokens/s  {best[kind] / best['1 process']:.2f}x")
    for ref in ("1 process, 1 thread", "1 process"):
        a, b = weights[ref], weights["2 processes"]
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        flips = sum(int(((a[k] != 0) != (b[k] != 0)).sum()) for k in a)
        print(f"2 processes against {ref}: max weight difference {diff:.2e}, {flips:,} weights zero in one "
              f"run and not the other (of {sum(v.numel() for v in a.values()):,})")

if __name__ == "__main__":
    main()
