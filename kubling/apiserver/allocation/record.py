"""One allocation bitmap, persisted in storage as a ``RangeAllocation`` record.

Upstream keeps ``/registry/ranges/serviceips`` and ``/registry/ranges/servicenodeports``:
``{"range": "10.43.0.0/16", "data": <bitmap bytes>}``, and every allocation or release is a
compare-and-swap on that record's revision, so two API servers sharing a store never hand
out the same value. kubling does the same, with one refinement: changes that arrive while a
write is in flight are applied together to a copy of the bitmap and committed by the next
single write (group commit), so a burst of Service creates costs a few writes, not one each.

An operation is a function applied to a ``Draft`` (the bitmap being built): it takes and
frees offsets and returns a value, or raises to leave the bitmap as it found it. On a lost
race the record adopts the stored value and re-applies the whole batch, so operations must
decide only from the draft (no side effects).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import orjson

from kubling import storage
from kubling.api import meta
from kubling.apiserver.allocation.bitmap import (
    AllocationError,
    AlreadyAllocatedError,
    Bitmap,
    NotInRangeError,
    RangeFullError,
)

log = logging.getLogger("kubling.apiserver.allocation")

T = TypeVar("T")
V = TypeVar("V")

#: Lost races with another writer before a batch gives up (each re-reads the record).
_ATTEMPTS = 16


class Range(Protocol[V]):
    """What a record needs of its range (``IPRange`` or ``PortRange``)."""

    spec: str
    size: int
    band: int

    def offset(self, value: V) -> int: ...

    def value(self, offset: int) -> V: ...

    def contains(self, value: V) -> bool: ...

    def already(self, value: V) -> AlreadyAllocatedError: ...


class Draft(Generic[V]):
    """The bitmap as one operation sees it; remembers what it took so it can be undone."""

    def __init__(self, bitmap: Bitmap, rng_range: Range[V], rng: random.Random) -> None:
        self.bitmap = bitmap
        self.range: Range[V] = rng_range
        self._rng = rng
        self.taken: list[int] = []
        self.freed: list[int] = []

    def has(self, value: V) -> bool:
        return self.range.contains(value) and self.bitmap.has(self.range.offset(value))

    def take(self, value: V) -> None:
        """Reserve ``value``: NotInRangeError / AlreadyAllocatedError in upstream words."""
        offset = self.range.offset(value)
        if self.bitmap.has(offset):
            raise self.range.already(value)
        self.bitmap.set(offset)
        self.taken.append(offset)

    def take_next(self) -> V:
        """A free value, the upper band first (RangeFullError when none is left)."""
        offset = self.bitmap.next_free(self.range.band, self._rng)
        if offset is None:
            raise RangeFullError()
        self.bitmap.set(offset)
        self.taken.append(offset)
        return self.range.value(offset)

    def free(self, value: V) -> None:
        """Release ``value``; one outside the range or not taken is ignored (as upstream)."""
        if not self.range.contains(value):
            return
        offset = self.range.offset(value)
        if self.bitmap.has(offset):
            self.bitmap.clear(offset)
            self.freed.append(offset)

    def undo(self) -> None:
        for offset in self.taken:
            self.bitmap.clear(offset)
        for offset in self.freed:
            self.bitmap.set(offset)
        self.taken.clear()
        self.freed.clear()


Operation = Callable[[Draft[V]], T]


class _Pending:
    __slots__ = ("future", "operation")

    def __init__(self, operation: Operation[Any, Any], future: asyncio.Future[Any]) -> None:
        self.operation = operation
        self.future = future


class RangeRecord(Generic[V]):
    """A bitmap over ``rng`` kept at ``key`` in ``backend``; see the module docstring."""

    def __init__(self, backend: storage.Backend, key: str, rng: Range[V], *,
                 name: str, seed: int | None = None) -> None:
        self.backend = backend
        self.key = key
        self.range: Range[V] = rng
        self.name = name
        self._rng = random.Random(seed)
        self.bitmap = Bitmap(rng.size)
        self.revision = 0  # of the stored record; 0: not stored yet
        self.writes = 0  # storage writes made (a measure of batching)
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Held by whoever writes the record: the batch flusher, or repair.
        self.lock = asyncio.Lock()

    # -- the stored form ----------------------------------------------------------------
    def encode(self, bitmap: Bitmap) -> bytes:
        return orjson.dumps({
            "apiVersion": "v1", "kind": "RangeAllocation",
            "metadata": {"name": self.name, "creationTimestamp": meta.now()},
            "range": self.range.spec,
            "data": base64.b64encode(bitmap.to_bytes()).decode(),
        })

    def decode(self, kv: storage.KeyValue) -> Bitmap | None:
        """The stored bitmap, or None when it is for another range (or unreadable)."""
        try:
            stored = orjson.loads(kv.value)
            if stored.get("range") != self.range.spec:
                log.warning("%s: stored range %s differs from the configured %s; repair "
                            "rebuilds it", self.name, stored.get("range"), self.range.spec)
                return None
            return Bitmap.from_bytes(self.range.size, base64.b64decode(stored.get("data", "")))
        except (ValueError, TypeError, AttributeError) as err:
            log.error("%s: unreadable allocation record (%s); repair rebuilds it", self.name, err)
            return None

    def adopt(self, kv: storage.KeyValue | None) -> None:
        """Take the stored state as the in-memory one."""
        if kv is None:
            self.bitmap, self.revision = Bitmap(self.range.size), 0
            return
        self.bitmap = self.decode(kv) or Bitmap(self.range.size)
        self.revision = kv.mod_revision

    async def load(self) -> None:
        self.adopt(await self.backend.get(self.key))

    async def write(self, bitmap: Bitmap) -> None:
        """Store ``bitmap`` if the record is still at ``self.revision`` (else ConflictError,
        carrying the current value). Callers hold ``lock``."""
        value = self.encode(bitmap)
        if self.revision == 0:
            try:
                kv = await self.backend.create(self.key, value)
            except storage.KeyExistsError:
                raise storage.ConflictError(self.key, await self.backend.get(self.key)) from None
        else:
            try:
                kv = await self.backend.update(self.key, value, expected_revision=self.revision)
            except storage.KeyNotFoundError:
                raise storage.ConflictError(self.key, None) from None
        self.bitmap, self.revision = bitmap, kv.mod_revision
        self.writes += 1

    # -- reads --------------------------------------------------------------------------
    def has(self, value: V) -> bool:
        return self.range.contains(value) and self.bitmap.has(self.range.offset(value))

    def used(self) -> int:
        return self.bitmap.count()

    def values(self) -> list[V]:
        return [self.range.value(offset) for offset in self.bitmap.offsets()]

    def simulate(self, operation: Operation[V, T]) -> T:
        """Run ``operation`` on a copy (dry run): same checks, nothing kept."""
        return operation(Draft(self.bitmap.copy(), self.range, self._rng))

    # -- writes -------------------------------------------------------------------------
    async def apply(self, operation: Operation[V, T]) -> T:
        """Run ``operation`` and make its changes durable; returns its value.

        If the caller is cancelled while its change is being written, the change is undone
        by a later write once it lands, so a cancelled request leaks nothing.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[T, list[int]]] = loop.create_future()
        self._queue.append(_Pending(operation, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"allocation-{self.name}")
        try:
            value, _taken = await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(self._undo_abandoned)
            raise
        return value

    def _undo_abandoned(self, future: asyncio.Future[tuple[Any, list[int]]]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        _value, taken = future.result()
        if not taken:
            return

        def release(draft: Draft[V]) -> None:
            for offset in taken:
                draft.bitmap.clear(offset)

        log.info("%s: releasing %d value(s) of a cancelled request", self.name, len(taken))
        # Fire and forget: the flusher owns the write; nobody waits for this one.
        self._queue.append(_Pending(release, asyncio.get_running_loop().create_future()))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name=f"allocation-{self.name}")

    async def release(self, values: list[V]) -> None:
        """Free ``values`` (those not allocated or out of range are ignored)."""
        if not values:
            return

        def free_all(draft: Draft[V]) -> None:
            for value in values:
                draft.free(value)

        await self.apply(free_all)

    async def _flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            async with self.lock:
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        outcomes: list[tuple[_Pending, Any, BaseException | None, list[int]]] = []
        for _attempt in range(_ATTEMPTS):
            working = self.bitmap.copy()
            outcomes = []
            for pending in batch:
                draft: Draft[V] = Draft(working, self.range, self._rng)
                try:
                    value = pending.operation(draft)
                except Exception as err:  # the operation's own failure: undo only it
                    draft.undo()
                    outcomes.append((pending, None, err, []))
                    continue
                outcomes.append((pending, value, None, list(draft.taken)))
            try:
                if working.bits != self.bitmap.bits or self.revision == 0:
                    await self.write(working)
            except storage.ConflictError as err:
                self.adopt(err.current)  # another server wrote: redo the batch on its state
                continue
            except Exception as err:
                log.error("%s: allocation write failed: %s", self.name, err)
                for pending in batch:
                    _settle(pending.future, None, err, [])
                return
            for pending, value, error, taken in outcomes:
                _settle(pending.future, value, error, taken)
            return
        conflict = AllocationError("too many concurrent writers of the allocation record")
        for pending in batch:
            _settle(pending.future, None, conflict, [])


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None,
            taken: list[int]) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
        future.exception()  # a fire-and-forget operation's failure is logged, not raised
    else:
        future.set_result((value, taken))


__all__ = [
    "AllocationError",
    "AlreadyAllocatedError",
    "Draft",
    "NotInRangeError",
    "RangeFullError",
    "RangeRecord",
]
