"""The watch cache: every resource's current objects and recent events, in memory.

One storage watch on ``/registry/`` feeds a ``ResourceCache`` per resource, so LIST and
WATCH never touch storage and thousands of watchers cost one storage watch (the design of
kube-apiserver's cacher). Each cached object is decoded once and serialized at most once
(``CachedObject.json``): every watcher that receives an event shares the same bytes.

Freshness: ``CacheSet.revision`` is the newest storage revision applied. A consistent read
waits until it reaches the storage's current revision (upstream's consistent list from
cache), so a client never lists a state older than one it has already written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import logging
from collections.abc import Callable, Iterator

import orjson

from kubling import storage
from kubling.api.meta import Object

log = logging.getLogger("kubling.apiserver.watchcache")

#: Events kept per resource for watches that resume from an older resourceVersion.
EVENT_WINDOW = 5000
#: Events a slow watcher may have queued before it is closed (the client re-watches).
WATCHER_QUEUE = 10000
#: How long a read waits for the cache to catch up before it asks storage instead.
CATCH_UP_SECONDS = 0.1
#: Collections of the younger generations before Python considers a full collection
#: (CPython's default is 10).
FULL_COLLECTION_THRESHOLD = 1000


def tune_garbage_collector() -> None:
    """Make the cyclic garbage collector's full passes rare.

    The cache (and the informers of the in-process components) hold every object of the
    cluster as plain dicts and lists: millions of objects that live long and are never
    part of a cycle, yet each full collection walks them all. Every write replaces an
    object with a newly decoded one, so with CPython's defaults a busy server ran a full
    collection every few thousand writes, each longer as the cluster grew: with 1,000
    nodes, collecting took 30 % of the event loop's time while 3,000 pods were scheduled,
    and a full pass took 0.75 s at 10,000 pods (bench/scale_bench.py). The young
    generations, where cyclic garbage appears (tasks, futures, exceptions), are still
    collected as often as before; only the full pass waits for a hundred times as many of
    their collections (CPython also still waits until the long-lived objects have grown by
    a quarter since the last full pass).
    """
    gen0, gen1, _ = gc.get_threshold()
    gc.set_threshold(gen0, gen1, FULL_COLLECTION_THRESHOLD)


class CachedObject:
    """One object at one revision; immutable once built (share it, never mutate ``obj``)."""

    __slots__ = ("_json", "key", "namespace", "obj", "revision")

    def __init__(self, key: str, obj: Object, revision: int) -> None:
        self.key = key
        self.obj = obj
        self.revision = revision
        meta = obj.get("metadata") or {}
        self.namespace: str = meta.get("namespace", "") or ""
        self._json: bytes | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = orjson.dumps(self.obj)
        return self._json

    def copy(self) -> Object:
        """A private, mutable copy of the object."""
        result: Object = orjson.loads(self.json)
        return result


def decode(kv: storage.KeyValue, *, revision: int | None = None) -> CachedObject:
    """Turn a stored value into an object whose ``resourceVersion`` is its revision."""
    obj: Object = orjson.loads(kv.value)
    rev = kv.mod_revision if revision is None else revision
    obj.setdefault("metadata", {})["resourceVersion"] = str(rev)
    return CachedObject(kv.key, obj, rev)


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change as the cache saw it: ``ADDED``, ``MODIFIED`` or ``DELETED``."""

    type: str
    obj: CachedObject
    prev: CachedObject | None
    revision: int


class Watcher:
    """One client's watch: a filter and a bounded queue the cache fills."""

    def __init__(self, matches: Callable[[CachedObject], bool]) -> None:
        self.matches = matches
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()
        self.overflowed = False

    def offer(self, event: WatchEvent) -> None:
        """Translate a change through the filter (entering is ADDED, leaving is DELETED)."""
        now = event.type != "DELETED" and self.matches(event.obj)
        before = event.prev is not None and self.matches(event.prev)
        if event.type == "DELETED":
            if before:
                self._put(event)
        elif now and before:
            self._put(event)
        elif now:
            self._put(WatchEvent("ADDED", event.obj, event.prev, event.revision))
        elif before:
            self._put(WatchEvent("DELETED", event.obj, event.prev, event.revision))

    def _put(self, event: WatchEvent) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= WATCHER_QUEUE:
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(event)


class ResourceCache:
    """The objects and recent events of one resource (all its versions share it)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.items: dict[str, CachedObject] = {}
        self.by_namespace: dict[str, dict[str, CachedObject]] = {}
        self.events: collections.deque[WatchEvent] = collections.deque()
        #: Watches may resume from any revision >= this one.
        self.oldest_revision = 0
        self.watchers: set[Watcher] = set()
        #: In-process observers (the CRD registry): called synchronously for every event.
        self.listeners: list[Callable[[WatchEvent], None]] = []

    def snapshot(self, namespace: str = "") -> Iterator[CachedObject]:
        """Current objects (of one namespace when given), in key order."""
        source = self.by_namespace.get(namespace, {}) if namespace else self.items
        for key in sorted(source):
            yield source[key]

    def put(self, obj: CachedObject) -> CachedObject | None:
        prev = self.items.get(obj.key)
        self.items[obj.key] = obj
        self.by_namespace.setdefault(obj.namespace, {})[obj.key] = obj
        return prev

    def remove(self, key: str) -> CachedObject | None:
        prev = self.items.pop(key, None)
        if prev is not None:
            bucket = self.by_namespace.get(prev.namespace)
            if bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del self.by_namespace[prev.namespace]
        return prev

    def record(self, event: WatchEvent) -> None:
        self.events.append(event)
        if len(self.events) > EVENT_WINDOW:
            dropped = self.events.popleft()
            self.oldest_revision = dropped.revision
        for watcher in self.watchers:
            watcher.offer(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("watch cache listener failed on %s", event.obj.key)

    def events_after(self, revision: int) -> list[WatchEvent]:
        """Recorded events newer than ``revision`` (caller checked ``oldest_revision``)."""
        result: list[WatchEvent] = []
        for event in reversed(self.events):
            if event.revision <= revision:
                break
            result.append(event)
        result.reverse()
        return result


def resource_prefix(key: str) -> str:
    """``/registry/apps/deployments/ns/name`` → ``/registry/apps/deployments/``."""
    parts = key.split("/", 4)
    return "/".join(parts[:4]) + "/"


class CacheSet:
    """All resource caches, fed by one storage watch."""

    def __init__(self, backend: storage.Backend) -> None:
        self.backend = backend
        self.caches: dict[str, ResourceCache] = {}
        self.revision = 0
        #: The revision of the list the caches were (re)loaded from.
        self.start_revision = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._watch: storage.Watch | None = None

    def cache(self, prefix: str) -> ResourceCache:
        cache = self.caches.get(prefix)
        if cache is None:
            cache = ResourceCache(prefix)
            # Nothing of this resource changed since the list the cache started from.
            cache.oldest_revision = self.start_revision
            self.caches[prefix] = cache
        return cache

    async def start(self) -> None:
        """Load every stored object, then follow the storage from that revision on."""
        tune_garbage_collector()
        listed = await self.backend.list("/registry/")
        self.start_revision = listed.revision
        for kv in listed.items:
            obj = decode(kv)
            self.cache(resource_prefix(kv.key)).put(obj)
        self.revision = listed.revision
        for cache in self.caches.values():
            cache.oldest_revision = listed.revision
        self._task = asyncio.create_task(self._follow(listed.revision + 1), name="watch-cache")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for cache in self.caches.values():
            for watcher in cache.watchers:
                watcher.queue.put_nowait(None)

    async def _follow(self, start: int) -> None:
        while True:
            watch = self.backend.watch("/registry/", start_revision=start)
            self._watch = watch
            try:
                async for event in watch:
                    self._apply(event)
                    start = event.revision + 1
            except storage.CompactedError:
                log.warning("watch cache fell behind storage compaction; reloading")
                await self._reload()
                start = self.revision + 1
            except storage.StorageError as err:
                # Keep following: reads fall back to storage while the cache lags.
                log.error("watch cache: storage watch failed (%s); resuming", err)
                await asyncio.sleep(1.0)
            finally:
                await watch.close()

    async def _reload(self) -> None:
        """Start over from a fresh list; watchers are closed so that clients re-list."""
        listed = await self.backend.list("/registry/")
        self.start_revision = listed.revision
        for cache in self.caches.values():
            for watcher in cache.watchers:
                watcher.queue.put_nowait(None)
            cache.watchers.clear()
            cache.items.clear()
            cache.by_namespace.clear()
            cache.events.clear()
            cache.oldest_revision = listed.revision
        for kv in listed.items:
            self.cache(resource_prefix(kv.key)).put(decode(kv))
        self._advance(listed.revision)

    def _apply(self, event: storage.Event) -> None:
        cache = self.cache(resource_prefix(event.kv.key))
        if event.type is storage.EventType.DELETE:
            deleted = decode(event.kv, revision=event.revision)
            prev = cache.remove(event.kv.key)
            cache.record(WatchEvent("DELETED", deleted, prev or deleted, event.revision))
        else:
            obj = decode(event.kv)
            prev = cache.put(obj)
            kind = "MODIFIED" if prev is not None else "ADDED"
            cache.record(WatchEvent(kind, obj, prev, event.revision))
        self._advance(event.revision)

    def _advance(self, revision: int) -> None:
        self.revision = max(self.revision, revision)
        if not self._waiters:
            return
        waiting = []
        for wanted, future in self._waiters:
            if wanted <= self.revision:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((wanted, future))
        self._waiters = waiting

    async def wait_for(self, revision: int, *, timeout: float = 3.0) -> bool:
        """Wait until the cache has applied ``revision``; False on timeout."""
        if self.revision >= revision:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (revision, future)
        self._waiters.append(entry)
        # A plain timer rather than asyncio.wait_for: this runs for most reads under load.
        timer = loop.call_later(timeout, _expire, future)
        try:
            await future
        finally:
            timer.cancel()
            if entry in self._waiters:  # timed out or cancelled: do not leak the waiter
                self._waiters.remove(entry)
        return self.revision >= revision

    async def is_fresh(self) -> bool:
        """Whether the cache already holds every write storage has acknowledged."""
        return self.revision >= await self.backend.current_revision()

    async def wait_fresh(self, *, timeout: float = 3.0) -> bool:
        """Wait until the cache holds everything storage has acknowledged so far."""
        return await self.wait_for(await self.backend.current_revision(), timeout=timeout)

    async def catch_up(self) -> bool:
        """Whether the cache holds every acknowledged write, after waiting briefly for it.

        Under a steady stream of writes the cache is almost never fresh at the instant of a
        read: the last commits are still on their way through the storage watch, a few
        event-loop turns behind. Waiting those turns is far cheaper than a round trip
        through a SQLite reader thread (and keeps the reader threads off the GIL); only a
        cache that lags longer (a stalled storage watch) sends the read to storage.
        """
        return await self.wait_fresh(timeout=CATCH_UP_SECONDS)


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
