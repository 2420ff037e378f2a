"""What a user reads on stderr once progress is set aside: tqdm bars on a terminal, progress lines elsewhere."""

from __future__ import annotations

import re

# sparse_model.progress.ProgressLines: "train demo: 350/700 steps (50%), ..." or "12 nodes, ..."
_PROGRESS_LINE = re.compile(r"^([^:]+: )?\d+(/\d+)? \w+( \(\d+%\))?(, |$)")


def message_lines(err: str) -> list[str]:
    """The non-empty lines of `err` that are not progress (no tqdm bar, no progress line)."""
    return [ln for ln in err.replace("\r", "\n").splitlines()
            if ln.strip() and "|" not in ln and not _PROGRESS_LINE.match(ln)]
