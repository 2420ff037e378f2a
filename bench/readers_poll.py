"""Is a reader answered while a job writes? Runs one `circuits` command (the job) and, from other
processes, polls `circuits sql` every --every seconds until the job ends or --stop-after seconds
pass. Each read is a full CLI start in its own process, as a user's second terminal would be.

    python bench/readers_poll.py --db c.duckdb [--every 4] [--stop-after 600] -- explain runs/demo --task T

Prints one line per read (seconds into the job, the job's stage from its last progress line, the
wait, answered or the error line), then a summary per stage: reads, answered, longest wait.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

STAGE = re.compile(r"^\s*(\[\d+/\d+\][^:|\d]*|[a-z][a-z ]+?)(?::|\s+\d+%|\s+\|)")


def stage_of(log: str) -> str:
    """The job's current stage: the last progress line's label ('activation records', '[3/5] ...')."""
    for line in reversed(re.split(r"[\r\n]", log)):
        m = STAGE.match(line)
        if m:
            return m.group(1).strip()
    return "start"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--every", type=float, default=4.0, help="seconds between the starts of two reads")
    ap.add_argument("--stop-after", type=float, default=None, help="kill the job after this many seconds")
    ap.add_argument("--sql", default="SELECT count(*) FROM activation_records")
    ap.add_argument("job", nargs=argparse.REMAINDER, help="the circuits command, after --")
    args = ap.parse_args()
    job_args = args.job[1:] if args.job[:1] == ["--"] else args.job
    if not job_args:
        ap.error("give the job's circuits command after --")

    cli = [sys.executable, "-m", "explainer", "--db", args.db]
    log_path = Path(tempfile.mkdtemp(prefix="readers_poll_")) / "job.log"
    reads: list[tuple[float, str, float, bool, str]] = []
    with open(log_path, "w") as log:
        t0 = time.monotonic()
        job = subprocess.Popen(cli + job_args, stdout=subprocess.DEVNULL, stderr=log, env=os.environ.copy())
        try:
            while job.poll() is None:
                at = time.monotonic() - t0
                if args.stop_after is not None and at > args.stop_after:
                    job.terminate()
                    break
                start = time.monotonic()
                r = subprocess.run(cli + ["sql", args.sql, "--csv"], capture_output=True, text=True, timeout=300)
                waited = time.monotonic() - start
                ok = r.returncode == 0
                answer = r.stdout.strip().splitlines()[-1] if ok else (r.stderr.strip().splitlines() or ["?"])[-1]
                stage = stage_of(log_path.read_text(errors="replace"))
                reads.append((at, stage, waited, ok, answer))
                print(f"{at:7.1f} s  {stage[:28]:28s}  {waited:5.2f} s  {'ok ' if ok else 'REFUSED'}  {answer[:60]}",
                      flush=True)
                time.sleep(max(0.0, args.every - waited))
        finally:
            if job.poll() is None:
                job.terminate()
            job.wait()
    by_stage: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for _, stage, waited, ok, _ in reads:
        by_stage[stage].append((waited, ok))
    print(f"\njob: {' '.join(job_args)} (exit {job.returncode}; log {log_path})")
    print(f"{'stage':30s} {'reads':>5s} {'answered':>8s} {'longest':>8s}")
    for stage, rows in by_stage.items():
        print(f"{stage[:30]:30s} {len(rows):5d} {sum(ok for _, ok in rows):8d} {max(w for w, _ in rows):7.2f}s")
    answered = sum(ok for *_, ok, _ in reads)
    print(f"all stages: {answered} of {len(reads)} reads answered, longest {max((r[2] for r in reads), default=0):.2f} s "
          "(a read is a whole CLI start: about 0.4 s of it is Python starting)")


if __name__ == "__main__":
    main()
