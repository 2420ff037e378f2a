"""Progress bars that also show when the output is not a terminal (a log file, CI, `make demo > log`)."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar; away from a terminal it still writes, at most every 10 seconds, instead of
    switching itself off (tqdm's default for `disable=None`)."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", 10.0)
    return tqdm(iterable, disable=not enabled, **kwargs)
