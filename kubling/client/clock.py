"""Time as the client machinery sees it, behind a seam so that tests control it.

The work queue, its rate limiters, the event recorder and the leader elector read the
time and sleep only through a ``Clock``. Production code uses ``REAL``; unit tests pass a
``FakeClock`` and move time forward with ``advance`` instead of waiting.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """A monotonic clock that can also sleep."""

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The event loop's own notion of time."""

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


REAL: Clock = RealClock()


class FakeClock:
    """A clock that stands still until a test calls ``advance``.

    ``sleep`` parks the caller on a future that ``advance`` resolves once its deadline has
    passed; the woken tasks run at the test's next ``await`` (``await asyncio.sleep(0)``).
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline is now due."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def sleepers(self) -> int:
        """How many sleeps are pending (cancelled ones are not counted)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())
