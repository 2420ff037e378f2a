"""The fault matrix against a real server: a full `circuits explain` job against llama.cpp's server
(SmolLM2, the tests' server) through a FAKE loopback proxy (tests/fault_proxy.py) that faults the
first attempt of every distinct request, the capability probe's included (429 with Retry-After, 429
bare, 500, 503, a dropped connection, malformed JSON, and one hang past the timeout), then the same
job fault-free through the same address, then a rerun of the faulty job's database. Prints the
figures and checks: same rows as the fault-free run, Retry-After obeyed, attempts bounded, a rerun
asks nothing, the API key in no file written.

    python bench/fault_matrix.py [RUN]      # tens of minutes; RUN: a trained run (default: train a tiny one)

    python bench/fault_matrix.py --simulator chat_logprobs --timeout 30   # quicker

Not part of the test suite: even with the chat_logprobs simulator it takes over 3 minutes here, and
the default simulator on this server (all at once, whose echoed prompt log-probabilities take 20 to
60 s per simulation) about 16. The suite covers the same handling against the fake server
(tests/test_resilience.py, tests/test_probe_faults.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

TIMEOUT = 120  # seconds per attempt: the server echoes prompt log-probs slowly; the one hang outlasts it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--simulator", default="auto", help="auto (all at once on this server: slow) or chat_logprobs")
    ap.add_argument("--timeout", type=float, default=TIMEOUT)
    ap.add_argument("--concurrency", type=int, default=4, help="the ceiling of the adaptive limit (default: the CLI's)")
    args = ap.parse_args()

    from fault_matrix_run import run_fault_matrix
    from llama_server import start_llama_server
    from prompt_files import write_small_prompts

    tmp = Path(tempfile.mkdtemp(prefix="fault_matrix_"))
    run = Path(args.run) if args.run else None
    if run is None:
        from sparse_model.train import train
        run = tmp / "tiny"
        print("training a tiny model first ...", flush=True)
        train(run, "tiny", progress=False, log=lambda s: None)
    prompts = write_small_prompts(tmp / "prompts")
    with start_llama_server() as upstream:
        try:
            figures, checks = run_fault_matrix(run, prompts, upstream, tmp, simulator=args.simulator,
                                               timeout=args.timeout, concurrency=args.concurrency)
        except RuntimeError as e:
            sys.exit(str(e))
    print(json.dumps(figures, indent=1))
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
