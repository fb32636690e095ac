"""An in-process ``Backend`` for unit tests: the sqlite driver's semantics, no disk.

It keeps the same revision log as the sqlite driver (every write, deletes included, is a
row) rather than a plain dict, so that reads at old revisions, watches from the past and
compaction behave exactly as in production. All work is synchronous and in memory, so no
method blocks the loop for long; single-threaded access makes every compare-and-swap
atomic without locks.
"""

from __future__ import annotations

import bisect
import builtins

from kubling.storage._common import (
    DEFAULT_WATCH_QUEUE_LIMIT,
    BackendClosedError,
    HubWatch,
    Row,
    WatchHub,
    check_revision,
)
from kubling.storage.interface import (
    CompactedError,
    ConflictError,
    Event,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
)


class MemoryBackend:
    """A ``Backend`` whose log lives in Python lists; lost when the process ends."""

    def __init__(self, *, watch_queue_limit: int = DEFAULT_WATCH_QUEUE_LIMIT) -> None:
        self._revision = 0
        self._compacted = 0
        self._log: builtins.list[Row] = []  # every kept row, in revision order
        self._keys: dict[str, builtins.list[Row]] = {}  # per key, in revision order
        self._hub = WatchHub(self._history, watch_queue_limit)
        self._closed = False

    async def start(self) -> None:
        """Nothing to open; present for the protocol."""

    async def close(self) -> None:
        self._closed = True
        self._hub.close_all()

    async def current_revision(self) -> int:
        return self._revision

    async def compacted_revision(self) -> int:
        return self._compacted

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        self._check_open()
        rev = check_revision(revision, current=self._revision, compacted=self._compacted)
        row = self._row_at(key, rev)
        return None if row is None or row.deleted else row.kv()

    async def list(self, prefix: str, *, revision: int = 0) -> ListResult:
        self._check_open()
        rev = check_revision(revision, current=self._revision, compacted=self._compacted)
        items = []
        for key in sorted(k for k in self._keys if k.startswith(prefix)):
            row = self._row_at(key, rev)
            if row is not None and not row.deleted:
                items.append(row.kv())
        return ListResult(items, rev)

    async def count(self, prefix: str) -> int:
        self._check_open()
        return sum(
            1 for key, rows in self._keys.items() if key.startswith(prefix) and not rows[-1].deleted
        )

    async def create(self, key: str, value: bytes) -> KeyValue:
        self._check_open()
        latest = self._latest(key)
        if latest is not None and not latest.deleted:
            raise KeyExistsError(key)
        rev = self._revision + 1
        prev_rev = latest.revision if latest is not None else 0
        return self._append(Row(rev, key, True, False, rev, prev_rev, value, None)).kv()

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        self._check_open()
        latest = self._live_matching(key, expected_revision)
        row = Row(
            self._revision + 1,
            key,
            False,
            False,
            latest.create_revision,
            latest.revision,
            value,
            latest.value,
        )
        return self._append(row).kv()

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        self._check_open()
        latest = self._live_matching(key, expected_revision)
        row = Row(
            self._revision + 1,
            key,
            False,
            True,
            latest.create_revision,
            latest.revision,
            latest.value,
            latest.value,
        )
        return self._append(row).kv()

    def watch(self, prefix: str, *, start_revision: int) -> HubWatch:
        self._check_open()
        return self._hub.watch(prefix, start_revision)

    async def compact(self, revision: int) -> None:
        self._check_open()
        if revision > self._revision:
            raise FutureRevisionError(revision, self._revision)
        if revision <= self._compacted:
            return
        kept: set[int] = set()
        for key in builtins.list(self._keys):
            rows = [
                r for i, r in enumerate(self._keys[key]) if _survives(self._keys[key], i, revision)
            ]
            kept.update(r.revision for r in rows)
            if rows:
                self._keys[key] = rows
            else:
                del self._keys[key]
        self._log = [r for r in self._log if r.revision in kept]
        self._compacted = revision
        self._hub.compacted = revision

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BackendClosedError()

    def _latest(self, key: str) -> Row | None:
        rows = self._keys.get(key)
        return rows[-1] if rows else None

    def _row_at(self, key: str, revision: int) -> Row | None:
        """The newest row of ``key`` at or below ``revision``."""
        rows = self._keys.get(key, [])
        idx = bisect.bisect_right(rows, revision, key=lambda r: r.revision)
        return rows[idx - 1] if idx else None

    def _live_matching(self, key: str, expected_revision: int) -> Row:
        """The live newest row of ``key``, checked against ``expected_revision`` (0: any)."""
        latest = self._latest(key)
        if latest is None or latest.deleted:
            raise KeyNotFoundError(key)
        if expected_revision and latest.revision != expected_revision:
            raise ConflictError(key, latest.kv())
        return latest

    def _append(self, row: Row) -> Row:
        self._log.append(row)
        self._keys.setdefault(row.key, []).append(row)
        self._revision = row.revision
        self._hub.publish([row.event()])
        return row

    async def _history(self, prefix: str, start: int, end: int, limit: int) -> builtins.list[Event]:
        if start < self._compacted:
            raise CompactedError(start, self._compacted)
        idx = bisect.bisect_left(self._log, start, key=lambda r: r.revision)
        events: builtins.list[Event] = []
        for row in self._log[idx:]:
            if row.revision > end or len(events) >= limit:
                break
            if row.key.startswith(prefix):
                events.append(row.event())
        return events


def _survives(rows: list[Row], i: int, revision: int) -> bool:
    """Whether compaction at ``revision`` keeps ``rows[i]`` (same rule as the sqlite driver).

    Rows at or above ``revision`` stay (they are still watchable). Below it, a row goes if
    a newer row of the key at or below ``revision`` supersedes it, or if it is a tombstone:
    a read at ``revision`` then finds no row, which means "absent" all the same.
    """
    row = rows[i]
    if row.revision >= revision:
        return True
    superseded = i + 1 < len(rows) and rows[i + 1].revision <= revision
    return not (superseded or row.deleted)
