"""The controller work queue: client-go's rate-limited, delaying, deduplicating queue.

Informer handlers ``add`` keys; workers ``await get()``, reconcile the key, then call
``done(key)``. The queue guarantees what a reconcile loop relies on:

- a key added several times before a worker takes it is handed out once (*dirty* set);
- a key is never handed to two workers at once: added while being processed, it is
  handed out again only after ``done`` (*processing* set);
- ``add_after`` delays a key (the earliest of several pending delays wins);
- ``add_rate_limited`` delays it by the rate limiter: per key exponential backoff
  (5 ms doubling to 1000 s) and an overall token bucket (10 qps, burst 100), the larger
  of the two, as client-go's ``DefaultControllerRateLimiter``; ``forget`` resets the key's
  backoff after a success.

Everything here runs on one event loop and none of it is thread-safe.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

from kubling.client import clock as clocks
from kubling.client import rest

log = logging.getLogger(__name__)

T = TypeVar("T", bound=Hashable)
T_contra = TypeVar("T_contra", bound=Hashable, contravariant=True)

# The clock seam lives in ``clock``; these names are here for the queue's users and tests.
Clock = clocks.Clock
FakeClock = clocks.FakeClock


class QueueShutDown(Exception):
    """``get`` on a queue that is shut down and has nothing left to hand out."""


# -- rate limiters -----------------------------------------------------------------------


class RateLimiter(Protocol[T_contra]):
    """How long to wait before retrying an item; ``forget`` ends its failure streak."""

    def when(self, item: T_contra) -> float: ...

    def forget(self, item: T_contra) -> None: ...

    def num_requeues(self, item: T_contra) -> int: ...


class ItemExponentialFailureRateLimiter(Generic[T]):
    """``base * 2**failures`` per item, capped at ``cap``."""

    def __init__(self, base: float = 0.005, cap: float = 1000.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        if failures >= 64:  # 2**64 * base overflows any sensible cap
            return self.cap
        return min(self.base * float(2**failures), self.cap)

    def forget(self, item: T) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: T) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter(Generic[T]):
    """An overall token bucket (``qps`` refill, ``burst`` size) shared by every item.

    Each ``when`` reserves a token, going into debt when none is left, so the returned
    delay spaces retries ``1/qps`` apart once the burst is spent (as ``rate.Limiter``).
    """

    def __init__(self, qps: float = 10.0, burst: int = 100, *,
                 clock: clocks.Clock = clocks.REAL) -> None:
        self.qps = qps
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock.monotonic()

    def when(self, item: T) -> float:
        now = self.clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: T) -> None:
        pass

    def num_requeues(self, item: T) -> int:
        return 0


class MaxOfRateLimiter(Generic[T]):
    """The longest delay of several limiters; requeues counted by the most pessimistic."""

    def __init__(self, *limiters: RateLimiter[T]) -> None:
        self.limiters = limiters

    def when(self, item: T) -> float:
        return max(limiter.when(item) for limiter in self.limiters)

    def forget(self, item: T) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return max(limiter.num_requeues(item) for limiter in self.limiters)


def default_controller_rate_limiter(clock: clocks.Clock = clocks.REAL) -> MaxOfRateLimiter[T]:
    """client-go's default: per-item 5 ms → 1000 s backoff, overall 10 qps burst 100."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(0.005, 1000.0),
        BucketRateLimiter(10.0, 100, clock=clock),
    )


# -- the queue ---------------------------------------------------------------------------


class WorkQueue(Generic[T]):
    """A deduplicating, delaying, rate-limited queue of keys (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str = "",
        clock: clocks.Clock = clocks.REAL,
        rate_limiter: RateLimiter[T] | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.rate_limiter: RateLimiter[T] = (
            rate_limiter if rate_limiter is not None else default_controller_rate_limiter(clock)
        )
        self._queue: collections.deque[T] = collections.deque()
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shutting_down = False
        # Delayed items: a heap of (ready_at, seq, item) and each item's earliest ready_at.
        self._waiting: list[tuple[float, int, T]] = []
        self._ready_at: dict[T, float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._delay_task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        """Items ready to be handed out (not counting delayed or in-process ones)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, item: T) -> None:
        """Queue ``item`` unless it is already queued; park it if a worker holds it."""
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            return  # ``done`` queues it again
        self._queue.append(item)
        self._wake_getter()

    def add_after(self, item: T, delay: float) -> None:
        """``add(item)`` once ``delay`` seconds have passed (at once when ``delay <= 0``)."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        ready_at = self.clock.monotonic() + delay
        current = self._ready_at.get(item)
        if current is not None and current <= ready_at:
            return
        self._ready_at[item] = ready_at
        heapq.heappush(self._waiting, (ready_at, next(self._seq), item))
        self._wake.set()
        if self._delay_task is None:
            self._delay_task = asyncio.get_running_loop().create_task(
                self._run_delays(), name=f"workqueue-delays-{self.name}"
            )

    def add_rate_limited(self, item: T) -> None:
        """``add_after`` by the rate limiter's verdict for ``item``."""
        self.add_after(item, self.rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """End ``item``'s failure streak: its next ``add_rate_limited`` waits the base delay."""
        self.rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self.rate_limiter.num_requeues(item)

    async def get(self) -> T:
        """The next item; the caller owns it until ``done(item)``.

        After ``shut_down`` the remaining items are still handed out; then ``QueueShutDown``.
        """
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(future)
            try:
                await future
            except asyncio.CancelledError:
                # If this getter was woken for an item, pass the wake-up on.
                if future.done() and not future.cancelled():
                    self._wake_getter()
                raise
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        """The worker is finished with ``item``; queue it again if it was added meanwhile."""
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_getter()

    def shut_down(self) -> None:
        """Refuse new items, drop delayed ones, and let ``get`` drain what is queued."""
        self._shutting_down = True
        if self._delay_task is not None:
            self._delay_task.cancel()
            self._delay_task = None
        self._waiting.clear()
        self._ready_at.clear()
        while self._getters:
            future = self._getters.popleft()
            if not future.done():
                future.set_result(None)

    def _wake_getter(self) -> None:
        while self._getters:
            future = self._getters.popleft()
            if not future.done():
                future.set_result(None)
                return

    async def _run_delays(self) -> None:
        """Move delayed items into the queue as they come due."""
        while not self._shutting_down:
            self._wake.clear()
            now = self.clock.monotonic()
            while self._waiting and self._waiting[0][0] <= now:
                ready_at, _, item = heapq.heappop(self._waiting)
                if self._ready_at.get(item) == ready_at:
                    del self._ready_at[item]
                    self.add(item)
            waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wake.wait())}
            if self._waiting:
                waits.add(asyncio.ensure_future(self.clock.sleep(self._waiting[0][0] - now)))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waits:
                    waiter.cancel()


# -- workers -----------------------------------------------------------------------------

#: A reconcile function: brings ``key`` towards its desired state. It may return a delay
#: in seconds to look at the key again later (a periodic re-check), or ``None``.
Reconcile = Callable[[T], Awaitable[float | None]]


async def run_workers(queue: WorkQueue[T], reconcile: Reconcile[T], *, workers: int = 1) -> None:
    """Run ``workers`` loops that reconcile keys from ``queue`` until it is shut down.

    A successful reconcile ``forget``s the key (and re-adds it after the delay it returned,
    if any); a failed one is re-added rate-limited and logged in one line (with a
    traceback only for unexpected exceptions, not for ``ApiError``s). Cancelling this
    coroutine cancels the workers and shuts the queue down.
    """

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except QueueShutDown:
                return
            try:
                requeue_after = await reconcile(key)
            except asyncio.CancelledError:
                raise
            except rest.ApiError as err:
                log.warning("%s: reconcile %s failed (retry %d): %s", queue.name or "workqueue",
                            key, queue.num_requeues(key) + 1, err)
                queue.add_rate_limited(key)
            except Exception:
                log.exception("%s: reconcile %s failed (retry %d)", queue.name or "workqueue",
                              key, queue.num_requeues(key) + 1)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
                if requeue_after is not None:
                    queue.add_after(key, requeue_after)
            finally:
                queue.done(key)

    tasks = [asyncio.create_task(worker(), name=f"{queue.name or 'workqueue'}-worker-{i}")
             for i in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        # The workers are done with the queue: shut it down so that handlers that still
        # add keys do not fill it for nobody (callers need no try/finally of their own).
        queue.shut_down()
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
