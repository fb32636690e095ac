"""Informers: a local, indexed, always-catching-up copy of one kind of object.

An ``Informer`` lists a resource (in pages), then watches it from the list's
resourceVersion with bookmarks, applying each event to its ``Indexer`` and telling its
event handlers. When the watch's resourceVersion is too old (410 Gone, e.g. after the API
server restarted) it lists again and tells the handlers the difference between the new list
and its cache, as client-go's ``Replace`` does: deletions that happened while it was away
arrive as ``on_delete`` with the last state it knew. Connection failures are retried with
jittered exponential backoff (0.1 s doubling to 30 s).

Contracts for users:

- **Handlers only enqueue.** ``on_add(obj)``, ``on_update(old, new)`` and
  ``on_delete(obj)`` are plain callables run inside the informer's task, one event at a
  time; they must not block or await. Put a key on a ``WorkQueue`` and return.
  An exception in a handler is logged and does not stop the informer.
- **Cached objects are shared and read-only.** ``get``, ``list`` and ``by_index`` return
  the cache's own dicts, also given to every handler; copy (``copy.deepcopy``) before
  changing one, e.g. to send an update.

``SharedInformerFactory`` hands every controller asking for the same resource and
selectors the same informer, so a process watches each of them once.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable, Iterable

from kubling.api import meta
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.client import rest

log = logging.getLogger(__name__)

IndexFunc = Callable[[Object], Iterable[str]]

#: The index every ``Indexer`` has: objects by ``metadata.namespace``.
NAMESPACE_INDEX = "namespace"

_BACKOFF_INITIAL = 0.1
_BACKOFF_CAP = 30.0
#: Watches are re-opened after a randomised 5-10 minutes, as client-go's reflector does,
#: so that a silently dead connection is noticed and load spreads over time.
_MIN_WATCH_TIMEOUT = 300


def key_of(obj: Object) -> str:
    """The cache key: ``namespace/name``, or ``name`` for cluster-scoped objects."""
    namespace, name = meta.namespace_of(obj), meta.name_of(obj)
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str, str]:
    """``namespace/name`` → (namespace, name); ``name`` → ("", name)."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def _namespace_index(obj: Object) -> list[str]:
    return [meta.namespace_of(obj)]


class Indexer:
    """Objects by key, plus named secondary indexes (index value → keys).

    Only the owning informer mutates it (``upsert``/``delete``); everyone else reads.
    """

    def __init__(self) -> None:
        self._items: dict[str, Object] = {}
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indices: dict[str, dict[str, set[str]]] = {}
        self.add_index(NAMESPACE_INDEX, _namespace_index)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add_index(self, name: str, fn: IndexFunc, *, exist_ok: bool = False) -> None:
        """Index objects by the values ``fn`` returns; existing objects are indexed now.
        ``exist_ok``: controllers sharing an informer each ask for the index they need."""
        if name in self._index_funcs:
            if exist_ok and self._index_funcs[name] is fn:
                return
            raise ValueError(f"index {name!r} already exists")
        self._index_funcs[name] = fn
        self._indices[name] = {}
        for key, obj in self._items.items():
            self._index_one(name, key, obj)

    def get(self, key: str) -> Object | None:
        return self._items.get(key)

    def list(self) -> builtins.list[Object]:
        return list(self._items.values())

    def keys(self) -> builtins.list[str]:
        return list(self._items)

    def by_index(self, name: str, value: str) -> builtins.list[Object]:
        """Objects whose index ``name`` includes ``value``; ``KeyError`` for an unknown index."""
        return [self._items[key] for key in self.index_keys(name, value)]

    def index_keys(self, name: str, value: str) -> builtins.list[str]:
        if name not in self._indices:
            raise KeyError(f"no index {name!r}")
        return sorted(self._indices[name].get(value, ()))

    def upsert(self, obj: Object) -> Object | None:
        """Store ``obj`` under its key; return what it replaced."""
        key = key_of(obj)
        old = self._items.get(key)
        if old is not None:
            self._unindex(key, old)
        self._items[key] = obj
        for name in self._index_funcs:
            self._index_one(name, key, obj)
        return old

    def delete(self, key: str) -> Object | None:
        """Remove ``key``; return the object it held."""
        old = self._items.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _index_one(self, name: str, key: str, obj: Object) -> None:
        index = self._indices[name]
        for value in self._index_funcs[name](obj):
            index.setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Object) -> None:
        for name, fn in self._index_funcs.items():
            index = self._indices[name]
            for value in fn(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


@dataclasses.dataclass(eq=False)
class EventHandlers:
    """One registration of handlers (see the module docstring for what they may do)."""

    on_add: Callable[[Object], None] | None = None
    on_update: Callable[[Object, Object], None] | None = None
    on_delete: Callable[[Object], None] | None = None


class _Backoff:
    """Exponential backoff with jitter: each delay is the current step times 1..1.5."""

    def __init__(self, initial: float = _BACKOFF_INITIAL, cap: float = _BACKOFF_CAP) -> None:
        self.initial = initial
        self.cap = cap
        self._step = initial

    def next(self) -> float:
        delay = min(self.cap, self._step * (1.0 + 0.5 * random.random()))
        self._step = min(self.cap, self._step * 2)
        return delay

    def reset(self) -> None:
        self._step = self.initial


class Informer:
    """List+watch one resource (optionally one namespace and selectors) into an ``Indexer``.

    ``start()`` runs it as a task (or ``await run()``); ``await wait_for_sync()`` before
    trusting the cache. With ``resync_period``, every cached object is also handed to
    ``on_update(obj, obj)`` that often, so controllers re-check state the API cannot show.
    """

    def __init__(
        self,
        client: rest.Client,
        resource: ResourceType,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        resync_period: float | None = None,
        page_size: int = 500,
    ) -> None:
        self.resource = client.resource(resource)
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync_period = resync_period
        self.page_size = page_size
        self.indexer = Indexer()
        #: The resourceVersion the cache is current to (the last list's or event's).
        self.resource_version = ""
        #: How many times the informer has listed (once, plus once per 410 or error).
        self.lists = 0
        self._handlers: list[EventHandlers] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        selection = ",".join(
            s for s in (self.namespace, self.label_selector, self.field_selector) if s
        )
        return f"<Informer {self.resource.rt.group_resource}{' ' + selection if selection else ''}>"

    # -- handlers ---------------------------------------------------------------------
    def add_event_handler(
        self,
        *,
        on_add: Callable[[Object], None] | None = None,
        on_update: Callable[[Object, Object], None] | None = None,
        on_delete: Callable[[Object], None] | None = None,
    ) -> EventHandlers:
        """Register handlers; a late registration first gets ``on_add`` for cached objects."""
        handlers = EventHandlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if on_add is not None:
            for obj in self.indexer.list():
                self._call(on_add, obj)
        return handlers

    def remove_event_handler(self, handlers: EventHandlers) -> None:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handlers)

    def _call(self, fn: Callable[..., None], *args: Object) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("%r: event handler %r failed", self, fn)

    def _added(self, obj: Object) -> None:
        for handlers in self._handlers:
            if handlers.on_add is not None:
                self._call(handlers.on_add, obj)

    def _updated(self, old: Object, new: Object) -> None:
        for handlers in self._handlers:
            if handlers.on_update is not None:
                self._call(handlers.on_update, old, new)

    def _deleted(self, obj: Object) -> None:
        for handlers in self._handlers:
            if handlers.on_delete is not None:
                self._call(handlers.on_delete, obj)

    # -- lifecycle --------------------------------------------------------------------
    @property
    def has_synced(self) -> bool:
        """True once the first list is in the cache (it stays true across re-lists)."""
        return self._synced.is_set()

    async def wait_for_sync(self, timeout: float | None = None) -> None:
        """Wait for the first list; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    def start(self) -> asyncio.Task[None]:
        """Run the informer in a task of the running loop (once; later calls return it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name=repr(self))
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        """List and watch until cancelled."""
        resync = (
            asyncio.create_task(self._resync_loop(self.resync_period))
            if self.resync_period else None
        )
        try:
            await self._list_and_watch()
        finally:
            if resync is not None:
                resync.cancel()

    async def _list_and_watch(self) -> None:
        backoff = _Backoff()
        loop = asyncio.get_running_loop()
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    backoff.reset()
                started = loop.time()
                if await self._watch():
                    backoff.reset()
                elif loop.time() - started < 1.0:
                    await asyncio.sleep(backoff.next())  # closed at once: do not spin
            except rest.ApiError as err:
                need_list = True
                if rest.is_gone(err):
                    log.info("%r: %s; re-listing", self, err.message)
                    continue
                delay = backoff.next()
                log.warning("%r: %s; re-listing in %.1fs", self, err, delay)
                await asyncio.sleep(delay)
            except rest.TRANSPORT_ERRORS as err:
                delay = backoff.next()
                log.warning("%r: API server unreachable (%s); retrying in %.1fs",
                            self, err or type(err).__name__, delay)
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        """List everything and reconcile the cache with it, telling the handlers."""
        items, resource_version = await self.resource.list_all(
            namespace=self.namespace, label_selector=self.label_selector,
            field_selector=self.field_selector, page_size=self.page_size,
        )
        self.lists += 1
        listed = {key_of(obj): obj for obj in items}
        for key in self.indexer.keys():
            if key not in listed:
                gone = self.indexer.delete(key)
                if gone is not None:
                    self._deleted(gone)
        for obj in listed.values():
            old = self.indexer.upsert(obj)
            if old is None:
                self._added(obj)
            elif _resource_version(old) != _resource_version(obj):
                self._updated(old, obj)
        self.resource_version = resource_version
        self._synced.set()

    async def _watch(self) -> int:
        """Follow one watch stream until it ends; return how many events it carried."""
        count = 0
        timeout = _MIN_WATCH_TIMEOUT + int(random.random() * _MIN_WATCH_TIMEOUT)
        events = self.resource.watch(
            namespace=self.namespace, resource_version=self.resource_version,
            label_selector=self.label_selector, field_selector=self.field_selector,
            allow_bookmarks=True, timeout_seconds=timeout,
        )
        async with contextlib.aclosing(events):
            async for kind, obj in events:
                count += 1
                if kind in ("ADDED", "MODIFIED"):
                    old = self.indexer.upsert(obj)
                    if old is None:
                        self._added(obj)
                    else:
                        self._updated(old, obj)
                elif kind == "DELETED":
                    self.indexer.delete(key_of(obj))
                    self._deleted(obj)
                elif kind != "BOOKMARK":
                    log.warning("%r: unknown watch event type %r", self, kind)
                    continue
                resource_version = _resource_version(obj)
                if resource_version:
                    self.resource_version = resource_version
        return count

    async def _resync_loop(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            if self.has_synced:
                for obj in self.indexer.list():
                    self._updated(obj, obj)


def _resource_version(obj: Object) -> str:
    md = obj.get("metadata")
    return str(md.get("resourceVersion") or "") if isinstance(md, dict) else ""


class SharedInformerFactory:
    """One informer per resource and selection, shared by everyone who asks for it.

    Ask for informers (``informer``), then ``start()``: informers asked for after a
    ``start`` need another ``start()``, as with client-go's factory.
    """

    def __init__(self, client: rest.Client, *, resync_period: float | None = None) -> None:
        self.client = client
        self.resync_period = resync_period
        self._informers: dict[tuple[ResourceType, str, str, str], Informer] = {}

    def informer(
        self,
        resource: ResourceType,
        *,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
    ) -> Informer:
        key = (resource, namespace, label_selector, field_selector)
        informer = self._informers.get(key)
        if informer is None:
            informer = Informer(
                self.client, resource, namespace=namespace, label_selector=label_selector,
                field_selector=field_selector, resync_period=self.resync_period,
            )
            self._informers[key] = informer
        return informer

    def start(self) -> None:
        for informer in self._informers.values():
            informer.start()

    async def wait_for_sync(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(i.wait_for_sync() for i in self._informers.values()))

    async def shutdown(self) -> None:
        await asyncio.gather(*(i.stop() for i in self._informers.values()))
