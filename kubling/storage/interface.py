"""The storage contract every driver implements (sqlite, memory, later etcd).

The design follows kine: the store is a log of revisions. Every write gets the next
revision of the whole store (a single, strictly increasing integer shared by all keys,
as etcd's), the current value of a key is its newest revision, and a watch replays the
log from any revision that has not been compacted away. Writes are compare-and-swap on
the key's modification revision, which is what lets the API server turn a stale
``resourceVersion`` into a 409 Conflict without locks.

Keys are ``str`` (``/registry/<resource>/<namespace>/<name>``), values opaque ``bytes``.
No method returns before the write is durable.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator
from typing import Protocol


class StorageError(Exception):
    """Base of every error a driver raises on purpose."""


class KeyExistsError(StorageError):
    """``create`` found a live value under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key exists: {key}")
        self.key = key


class KeyNotFoundError(StorageError):
    """The key has no live value."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key not found: {key}")
        self.key = key


class ConflictError(StorageError):
    """A compare-and-swap failed: the key's revision is not the expected one.

    ``current`` is the value the key holds now (``None`` when deleted), so that a
    retrying caller does not need another read.
    """

    def __init__(self, key: str, current: KeyValue | None) -> None:
        super().__init__(f"revision mismatch: {key}")
        self.key = key
        self.current = current


class CompactedError(StorageError):
    """The asked-for revision is older than the oldest one kept."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept: {compacted})")
        self.requested = requested
        self.compacted = compacted


class FutureRevisionError(StorageError):
    """The asked-for revision is newer than the store's current revision."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"revision {requested} is in the future (current: {current})")
        self.requested = requested
        self.current = current


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    """One key at one revision.

    ``mod_revision`` is the revision of the write that produced ``value`` (what the API
    reports as ``resourceVersion``); ``create_revision`` the one that created the key.
    """

    key: str
    value: bytes
    mod_revision: int
    create_revision: int


class EventType(enum.Enum):
    PUT = "PUT"  # created or updated; ``prev`` tells which
    DELETE = "DELETE"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One write as a watcher sees it.

    For ``PUT``, ``kv`` is the new value and ``prev`` the value it replaced (``None`` on
    create). For ``DELETE``, ``kv`` carries the *deleted* value with ``mod_revision`` set to
    the revision of the delete, and ``prev`` is that same old value.
    """

    type: EventType
    kv: KeyValue
    prev: KeyValue | None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision

    @property
    def created(self) -> bool:
        return self.type is EventType.PUT and self.prev is None


@dataclasses.dataclass(frozen=True, slots=True)
class ListResult:
    """A consistent snapshot of a key range at ``revision``."""

    items: list[KeyValue]
    revision: int


class Watch(Protocol):
    """A running watch: iterate events, then ``close()``.

    Events arrive in revision order with no gaps among the keys watched. If the watcher
    falls too far behind, the driver ends the iteration by raising ``CompactedError``.
    """

    def __aiter__(self) -> AsyncIterator[Event]: ...

    async def close(self) -> None: ...


class Backend(Protocol):
    """An MVCC key-value store. All methods are coroutines and never block the loop."""

    async def start(self) -> None:
        """Open files or connections, create schema; called once before any other method."""

    async def close(self) -> None:
        """Flush and release everything; pending writes complete first."""

    async def current_revision(self) -> int:
        """The revision of the newest write (0 on an empty store)."""

    async def compacted_revision(self) -> int:
        """The oldest revision still readable or watchable from (0 if never compacted)."""

    async def get(self, key: str, *, revision: int = 0) -> KeyValue | None:
        """The live value of ``key`` (at ``revision`` when non-zero), or ``None``."""

    async def list(self, prefix: str, *, revision: int = 0) -> ListResult:
        """Live values under ``prefix`` sorted by key, at ``revision`` (0: newest).

        Raises ``CompactedError`` / ``FutureRevisionError`` for a revision out of range.
        """

    async def count(self, prefix: str) -> int:
        """How many live keys are under ``prefix``."""

    async def create(self, key: str, value: bytes) -> KeyValue:
        """Store a new key; ``KeyExistsError`` if it has a live value."""

    async def update(self, key: str, value: bytes, *, expected_revision: int) -> KeyValue:
        """Replace the value iff its ``mod_revision`` equals ``expected_revision``.

        ``KeyNotFoundError`` if it has no live value, ``ConflictError`` on a mismatch.
        """

    async def delete(self, key: str, *, expected_revision: int = 0) -> KeyValue:
        """Delete iff ``mod_revision`` matches (0: unconditionally); returns the old value.

        The returned value's ``mod_revision`` is the revision of the delete itself.
        """

    def watch(self, prefix: str, *, start_revision: int) -> Watch:
        """Events for keys under ``prefix`` with revision >= ``start_revision``.

        ``start_revision`` 0 means "from now on". Raises ``CompactedError`` (when
        iterated) if ``start_revision`` is older than the compacted revision.
        """

    async def compact(self, revision: int) -> None:
        """Forget superseded values and tombstones at revisions below ``revision``."""
