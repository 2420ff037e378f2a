"""Progress that shows on a terminal and away from one (a CI log, `circuits demo | tee log`).

On a terminal: a tqdm bar. Elsewhere a bar's carriage returns make one unreadable line, so
`progress_bar` returns `ProgressLines` instead: one whole line at most every `interval` seconds
(and when the work ends) with the count, the share done, the rate, the time left and whatever the
caller set as postfix, for example

    train demo: 350/700 steps (50%), loss 3.214, tok_s 8140, 2 min 41 s left
"""

from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TextIO

from tqdm.auto import tqdm

LINE_INTERVAL = 30.0  # seconds between lines away from a terminal


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


class ProgressLines:
    """The part of tqdm's interface the jobs use (iterate, update, set_postfix, set_postfix_str,
    close), written as periodic whole lines; tqdm's display options (leave, dynamic_ncols) are ignored."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", interval: float = LINE_INTERVAL, file: TextIO | None = None,
                 disable: bool = False, **_ignored) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.interval, self.file, self.disable = interval, file, disable
        self.postfix = ""
        self._start_n = self._written_n = initial
        self._t0 = self._last = time.monotonic()
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, **kwargs) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in kwargs.items())

    def set_postfix_str(self, s: str) -> None:
        self.postfix = s

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._write()

    def line(self) -> str:
        units = self.unit if self.unit.endswith("s") else self.unit + "s"
        parts = [f"{self.n}/{self.total} {units} ({self.n / self.total:.0%})" if self.total else f"{self.n} {units}"]
        if self.postfix:
            parts.append(self.postfix)
        done, elapsed = self.n - self._start_n, time.monotonic() - self._t0
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} {units}/s" if rate < 10 else f"{rate:.0f} {units}/s")
            if self.total and self.n < self.total:
                parts.append(f"{_duration((self.total - self.n) / rate)} left")
        if self.total and self.n >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _write(self) -> None:
        self._written_n = self.n
        if not self.disable:
            print(self.line(), file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n > self._written_n:  # what the last line did not show yet
                self._write()


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm | ProgressLines:
    """A tqdm bar on a terminal; `ProgressLines` when stderr is not one."""
    if not sys.stderr.isatty():
        return ProgressLines(iterable, disable=not enabled, **kwargs)
    return tqdm(iterable, disable=not enabled, **kwargs)
