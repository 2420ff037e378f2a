"""How many requests are in flight: a limit that adapts to the server (AIMD, as TCP and
concurrency-limit libraries do), so a slow server is never sent more than it serves in time.

`--concurrency` is the ceiling. The limit starts at 1 and grows while answers come back well within
the timeout: by one per answer while it is below the ceiling for the first time (slow start:
it doubles every round trip), by one per `limit` answers after that (additive increase). An
answer that took more than half the timeout, a timeout, a 429 or a 5xx halves it (multiplicative
decrease, never below 1). So against a laptop server that answers one request in 75 s with a
120 s timeout the limit stays 1 and nothing times out for being queued behind our own requests;
against vLLM, answering in a second, it reaches the ceiling within a few round trips.

    limit = AdaptiveLimit(ceiling=4, timeout=120)
    async with limit.slot() as slot:
        answer = await send()
        slot.answered(seconds)        # or slot.overloaded() on a timeout, 429 or 5xx
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

FAST = 0.25  # an answer within this share of the timeout: room for more in flight
SLOW = 0.5  # an answer later than this share of the timeout: too many in flight


class Slot:
    """One request's place in flight; it reports how the request went."""

    def __init__(self, limit: "AdaptiveLimit"):
        self._limit = limit

    def answered(self, seconds: float) -> None:
        self._limit._answered(seconds)

    def overloaded(self) -> None:
        self._limit._cut()


class AdaptiveLimit:
    """Requests in flight at most `limit` (a float; the integer part counts), between 1 and `ceiling`."""

    def __init__(self, ceiling: int, timeout: float):
        self.ceiling = max(1, int(ceiling))
        self.timeout = float(timeout)
        self.limit = 1.0
        self.in_flight = 0
        self.cuts = 0
        self._slow_start = True
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _condition(self) -> asyncio.Condition:
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:  # one condition per event loop
            self._changed, self._loop = asyncio.Condition(), loop
        return self._changed

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        changed = self._condition()
        async with changed:
            await changed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        try:
            yield Slot(self)
        finally:
            async with changed:
                self.in_flight -= 1
                changed.notify_all()

    def _answered(self, seconds: float) -> None:
        if seconds > SLOW * self.timeout:
            self._cut()
        elif seconds <= FAST * self.timeout and self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + (1.0 if self._slow_start else 1.0 / self.limit))
            if self.limit >= self.ceiling:
                self._slow_start = False

    def _cut(self) -> None:
        self.limit = max(1.0, self.limit / 2)
        self._slow_start = False
        self.cuts += 1

    @property
    def settled(self) -> int:
        """The limit now, as a number of requests."""
        return int(self.limit)
