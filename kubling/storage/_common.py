"""Pieces both drivers share: the log row, its mapping to API types, and the watch hub.

Keeping them here is what makes the memory driver a faithful stand-in for sqlite in unit
tests: the two differ only in where rows live, not in how rows become events or how a
watch stitches history to live events.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Awaitable, Callable, Iterable

from kubling.storage.interface import (
    CompactedError,
    Event,
    EventType,
    FutureRevisionError,
    KeyValue,
    StorageError,
)

#: How many undelivered events a watch may hold before it is ended (see ``HubWatch``).
DEFAULT_WATCH_QUEUE_LIMIT = 10_000
#: How many history rows a replaying watch fetches per read, to bound memory on big replays.
HISTORY_PAGE = 500


class BackendClosedError(StorageError):
    """The backend was closed; no further reads or writes are accepted."""

    def __init__(self) -> None:
        super().__init__("storage backend is closed")


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One write in the log, shaped like kine's table row.

    A delete is a row too (``deleted``), carrying the value it removed, so the log alone
    can answer "what was the value at revision N" and produce watch events with ``prev``.
    """

    revision: int
    key: str
    created: bool
    deleted: bool
    create_revision: int
    prev_revision: int
    value: bytes
    old_value: bytes | None

    def kv(self) -> KeyValue:
        """The value this row wrote (for a delete: the removed value at the delete's revision)."""
        return KeyValue(self.key, self.value, self.revision, self.create_revision)

    def prev_kv(self) -> KeyValue | None:
        """The value this row replaced, rebuilt from the row alone (``None`` on create)."""
        if self.created or self.old_value is None:
            return None
        return KeyValue(self.key, self.old_value, self.prev_revision, self.create_revision)

    def event(self) -> Event:
        kind = EventType.DELETE if self.deleted else EventType.PUT
        return Event(kind, self.kv(), self.prev_kv())


def check_revision(revision: int, *, current: int, compacted: int) -> int:
    """Resolve a read revision (0 = newest) and reject ones outside ``[compacted, current]``."""
    if revision == 0:
        return current
    if revision > current:
        raise FutureRevisionError(revision, current)
    if revision < compacted:
        raise CompactedError(revision, compacted)
    return revision


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``.

    Lets a prefix scan be an index range ``[prefix, end)``. ``None`` means unbounded (empty
    prefix, or one made only of the largest code point).
    """
    stripped = prefix.rstrip(chr(0x10FFFF))
    if not stripped:
        return None
    nxt = ord(stripped[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be stored as UTF-8; skip over them
        nxt = 0xE000
    return stripped[:-1] + chr(nxt)


#: Reads events for ``prefix`` with ``start <= revision <= end``, at most ``limit`` of them,
#: in revision order; raises ``CompactedError`` if ``start`` is below the compacted revision.
HistoryReader = Callable[[str, int, int, int], Awaitable[list[Event]]]


class WatchHub:
    """Fans committed events out to watches, on the event loop thread only.

    ``revision`` is the newest revision handed to ``publish``: a watch registered now sees
    every later event live, and everything up to ``revision`` must come from history.
    Because registration and publication both happen on the loop, there is no window
    where an event is neither in history-to-read nor in the live queue.
    """

    def __init__(self, history: HistoryReader, queue_limit: int) -> None:
        self.revision = 0
        self.compacted = 0
        self.history = history
        self.queue_limit = queue_limit
        self._watches: set[HubWatch] = set()

    def watch(self, prefix: str, start_revision: int) -> HubWatch:
        watch = HubWatch(self, prefix, start_revision)
        self._watches.add(watch)
        return watch

    def publish(self, events: Iterable[Event]) -> None:
        watches = tuple(self._watches)
        for event in events:
            self.revision = max(self.revision, event.revision)
            for watch in watches:
                watch.offer(event)

    def unsubscribe(self, watch: HubWatch) -> None:
        self._watches.discard(watch)

    def close_all(self) -> None:
        for watch in tuple(self._watches):
            watch.end()
        self._watches.clear()


class _End:
    """Queue marker: the watch was closed (by its owner or the backend)."""


_END = _End()


class HubWatch:
    """One watch: replays history up to the hub revision at registration, then goes live.

    The live subscription exists from construction, before any history is read, so events
    committed during the replay wait in the queue; any of them the replay already yielded
    are skipped by revision, which gives no gap and no duplicate.

    It is its own iterator (iterating again continues where it stopped) and survives a
    consumer being cancelled mid-wait: state only changes once an event is handed out.
    One consumer at a time.

    A watcher that lets more than the hub's ``queue_limit`` events pile up is ended: the
    events already queued are still delivered, then iteration raises
    ``CompactedError(requested=<first dropped revision>, compacted=<newest revision then>)``.
    The watcher must relist and watch again, exactly as after a real compaction; this is
    what bounds the memory a stuck client can pin.
    """

    def __init__(self, hub: WatchHub, prefix: str, start_revision: int) -> None:
        self._hub = hub
        self._prefix = prefix
        self._replay_to = hub.revision
        self._start = start_revision if start_revision > 0 else hub.revision + 1
        self._compacted_at_start = hub.compacted
        self._cursor = self._start  # next history revision to read
        self._page: collections.deque[Event] = collections.deque()
        self._last = self._start - 1  # newest revision handed out
        self._queue: asyncio.Queue[Event | CompactedError | _End] = asyncio.Queue()
        self._closed = False
        self._dropped = False  # fell too far behind: the queue ends with a CompactedError
        self._error: CompactedError | None = None

    def offer(self, event: Event) -> None:
        """Queue ``event`` if it concerns this watch (called by the hub, on the loop)."""
        if self._dropped or event.revision < self._start:
            return
        if not event.kv.key.startswith(self._prefix):
            return
        if self._queue.qsize() >= self._hub.queue_limit:
            self._dropped = True
            self._hub.unsubscribe(self)
            self._queue.put_nowait(CompactedError(event.revision, self._hub.revision))
            return
        self._queue.put_nowait(event)

    def end(self) -> None:
        """Stop the watch: a pending or later ``__anext__`` finishes the iteration."""
        self._closed = True
        self._hub.unsubscribe(self)
        self._queue.put_nowait(_END)

    async def close(self) -> None:
        self.end()

    def __aiter__(self) -> HubWatch:
        return self

    async def __anext__(self) -> Event:
        if self._error is not None:
            raise self._error
        try:
            event = await self._next()
        except CompactedError as exc:
            self._error = exc
            self.end()
            raise
        if event is None:
            raise StopAsyncIteration
        self._last = event.revision
        return event

    async def _next(self) -> Event | None:
        if self._start < self._compacted_at_start:
            raise CompactedError(self._start, self._compacted_at_start)
        while not self._closed:
            if self._page:
                return self._page.popleft()
            if self._cursor <= self._replay_to:
                await self._read_page()
                continue
            item = await self._queue.get()
            if isinstance(item, _End):
                break
            if isinstance(item, CompactedError):
                raise item
            if item.revision > self._last:  # else: already replayed from history
                return item
        return None

    async def _read_page(self) -> None:
        """The next page of history, up to the hub revision at registration."""
        page = await self._hub.history(self._prefix, self._cursor, self._replay_to, HISTORY_PAGE)
        self._page.extend(page)
        full = len(page) == HISTORY_PAGE
        self._cursor = page[-1].revision + 1 if full else self._replay_to + 1
