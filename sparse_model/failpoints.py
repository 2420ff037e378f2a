"""Named points where a test can kill this process with SIGKILL, to prove that every stage survives `kill -9`.

    CIRCUITS_KILL_AT=explain.node:2 circuits demo   # SIGKILL when the second node is explained, before its commit

`failpoint(name)` counts how often it is reached in this process and, when $CIRCUITS_KILL_AT names it
with that count, sends SIGKILL to its own process: the kernel ends it at once, with no handler, no
`finally` and no flush, exactly as `kill -9` from outside would, but at a chosen point instead of
a random one. Unset (always, outside tests), a failpoint costs one environment lookup.

The points: train.step (after each optimizer step), tasks.task (after each task is evaluated),
prune.step (each pruning step), join.chunk (each 8 MiB written while joining model parts),
records.node (each node's activation records stored), explain.node (each node explained, just before
it is committed), report.write (the report written to its temporary file, before the rename).
"""

from __future__ import annotations

import os
import signal

ENV = "CIRCUITS_KILL_AT"
_counts: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
