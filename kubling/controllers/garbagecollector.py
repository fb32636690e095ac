"""The garbage collector: deletes objects whose owners are gone, and finishes cascades.

Objects name their owners in ``metadata.ownerReferences``. As upstream's collector, this one
keeps a graph of those references (``gc_graph``) fed by one metadata-only informer per
resource that can be listed, watched and deleted (found through discovery, refreshed every
``resync_period`` so that custom resources are covered), and works three queues:

- **graph changes** (key: resource + ``namespace/name``): reads the informer's cache and
  updates the graph, which says which uids need a look;
- **attempt to delete** (key: uid): an object whose owners may all be gone is checked
  against the live API (a dangling reference — owner uid not found, or a different uid
  under the owner's name — is confirmed by a GET by name first, as upstream's
  ``attemptToDelete``) and deleted with ``preconditions.uid`` and a ``propagationPolicy``
  that keeps the cascade going; references to absent owners are removed from objects that
  still have a live owner. An owner deleted in the *foreground* (``foregroundDeletion``
  finalizer) sees its dependents deleted first and loses the finalizer once no dependent
  with ``blockOwnerDeletion`` is left;
- **attempt to orphan** (key: uid): an owner deleted with ``propagationPolicy: Orphan``
  (``orphan`` finalizer) has its reference removed from every dependent, then the finalizer.

Events (``v1`` and ``events.k8s.io``) are not watched, as upstream ignores them by default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.client import discovery, informer, rest, workqueue
from kubling.controllers import gc_graph, manager

log = logging.getLogger(__name__)

#: How often discovery is read again for new (custom) resources, as upstream's 30 s.
RESYNC_PERIOD = 30.0
#: Resources the collector does not watch (upstream's default ``ignoredResources``).
IGNORED = frozenset({"events", "events.events.k8s.io"})
_NEEDED_VERBS = frozenset({"list", "watch", "delete"})
_KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "ownerReferences",
                  "finalizers", "deletionTimestamp")
_PATCH_ATTEMPTS = 5

GraphKey = tuple[ResourceType, str]


class MetadataIndexer(informer.Indexer):
    """An informer cache that keeps only the metadata the collector reads, so that
    watching every resource costs memory per object, not per byte of object."""

    def upsert(self, obj: Object) -> Object | None:
        md = meta.metadata(obj)
        trimmed = {k: md[k] for k in _KEPT_METADATA if k in md}
        return super().upsert({"metadata": trimmed})


class _MappingError(Exception):
    """An ``ownerReference`` names a kind discovery does not know (yet): retried."""


class GarbageCollector:
    """Background, foreground and orphan cascades over the ``ownerReferences`` graph."""

    def __init__(self, ctx: manager.ControllerContext, *,
                 resync_period: float = RESYNC_PERIOD) -> None:
        self.client = ctx.client
        self.clock = ctx.clock
        self.resync_period = resync_period
        self.graph = gc_graph.Graph()
        self.absent = gc_graph.AbsentOwners()
        self.discovery = discovery.Discovery(())
        self.monitors: dict[ResourceType, informer.Informer] = {}
        self._uids: dict[tuple[str, str], str] = {}  # (group-resource, key) → uid seen
        self.graph_queue: workqueue.WorkQueue[GraphKey] = workqueue.WorkQueue(
            name="garbagecollector-graph", clock=ctx.clock)
        self.delete_queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            name="garbagecollector-delete", clock=ctx.clock)
        self.orphan_queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            name="garbagecollector-orphan", clock=ctx.clock)

    # -- running ------------------------------------------------------------------------
    async def run(self, *, workers: int) -> None:
        queues = (self.graph_queue, self.delete_queue, self.orphan_queue)
        try:
            await self.sync_monitors()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._resync_loop())
                group.create_task(workqueue.run_workers(self.graph_queue, self.sync_graph))
                await self._wait_for_monitors(timeout=60.0)
                group.create_task(workqueue.run_workers(
                    self.delete_queue, self.attempt_to_delete, workers=max(workers, 1)))
                group.create_task(workqueue.run_workers(
                    self.orphan_queue, self.attempt_to_orphan, workers=max(workers, 1)))
        finally:
            for queue in queues:
                queue.shut_down()
            await asyncio.gather(*(m.stop() for m in self.monitors.values()))

    async def _resync_loop(self) -> None:
        while True:
            await self.clock.sleep(self.resync_period)
            try:
                await self.sync_monitors()
            except discovery.DISCOVERY_ERRORS as err:
                log.warning("garbage collector: discovery failed: %s", err)

    async def _wait_for_monitors(self, *, timeout: float) -> None:
        # asyncio.timeout, not wait_for(gather(...)): a gather cancelled by wait_for keeps a
        # CancelledError nobody retrieves, which asyncio then logs with a traceback.
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(m.wait_for_sync() for m in self.monitors.values()))
        except TimeoutError:
            unsynced = [repr(m) for m in self.monitors.values() if not m.has_synced]
            log.warning("garbage collector: collecting before %s synced", ", ".join(unsynced))

    async def sync_monitors(self) -> None:
        """Watch what discovery lists now: start informers for new resources, stop those
        for resources that went away (a deleted CRD)."""
        self.discovery = await discovery.discover(self.client)
        wanted = {rt for rt in self.discovery.resources
                  if _NEEDED_VERBS <= set(rt.verbs) and rt.group_resource not in IGNORED}
        if not self.discovery.failed:
            # Only a complete answer says a resource went away: a group that could not be
            # read keeps its informers until it can.
            for rt in list(self.monitors):
                if rt not in wanted:
                    await self.monitors.pop(rt).stop()
        for rt in wanted - self.monitors.keys():
            monitor = informer.Informer(self.client, rt)
            monitor.indexer = MetadataIndexer()
            enqueue = self._enqueuer(rt)
            monitor.add_event_handler(on_add=enqueue, on_update=_on_new(enqueue),
                                      on_delete=enqueue)
            self.monitors[rt] = monitor
            monitor.start()

    def _enqueuer(self, rt: ResourceType) -> Callable[[Object], None]:
        return lambda obj: self._enqueue(rt, obj)

    def _enqueue(self, rt: ResourceType, obj: Object) -> None:
        self.graph_queue.add((rt, informer.key_of(obj)))

    def _apply(self, work: gc_graph.Work) -> None:
        for uid in work.attempt_to_delete:
            self.delete_queue.add(uid)
        for uid in work.attempt_to_orphan:
            self.orphan_queue.add(uid)

    # -- the graph ----------------------------------------------------------------------
    async def sync_graph(self, item: GraphKey) -> float | None:
        """Bring the graph in line with what the informer of ``item`` holds now."""
        rt, key = item
        monitor = self.monitors.get(rt)
        cached = monitor.indexer.get(key) if monitor is not None else None
        seen_key = (rt.group_resource, key)
        known = self._uids.get(seen_key)
        uid = str(meta.metadata(cached).get("uid") or "") if cached is not None else ""
        if known and known != uid:
            del self._uids[seen_key]
            self._apply(self.graph.forget(known))
        if cached is not None and uid:
            self._uids[seen_key] = uid
            self._apply(self.graph.observe(
                gc_graph.ref_of(cached, rt.api_version, rt.kind), cached))
        return None

    # -- attempt to delete --------------------------------------------------------------
    async def attempt_to_delete(self, uid: str) -> float | None:
        try:
            await self._attempt_to_delete(uid)
        except _MappingError as err:
            # A kind not served (yet): a new CRD appears at the next discovery.
            log.info("garbage collector: %s; looking again in %.0fs", err, self.resync_period)
            return self.resync_period
        return None

    async def _attempt_to_delete(self, uid: str) -> None:
        node = self.graph.get(uid)
        if node is None:
            return
        live = await self._get_live(node.ref)
        if live is None:
            # Gone, or never there (a dangling reference): its dependents lost an owner.
            self.absent.add(uid, node.ref.namespace)
            current = self.graph.get(uid)
            if current is not None and (current.virtual or current is node):
                self._apply(self.graph.forget(uid))
            return
        if node.virtual:
            return  # it exists; its informer will add it to the graph
        if gc_graph.deleting_dependents(live):
            await self._process_deleting_dependents(node, live)
            return
        if gc_graph.being_deleted(live):
            return
        owners = gc_graph.owner_refs(live)
        if not owners:
            return
        solid, dangling, waiting = await self._classify(node.ref, owners)
        if solid:
            stale = {o.uid for o in (*dangling, *waiting)}
            if stale:
                log.info("garbage collector: removing references to %s from %s",
                         ", ".join(sorted(stale)), node.ref)
                await self._patch_metadata(node.ref, live, lambda md: _without_owners(md, stale))
            return
        if waiting and self.graph.dependents(uid):
            if any(dep.deleting_dependents for dep in self.graph.dependents(uid)):
                # A cycle of foreground deletions would wait forever: stop blocking.
                await self._patch_metadata(node.ref, live, _unblocked_owners)
            await self._delete(node.ref, "Foreground")
            return
        finalizers = gc_graph.finalizers_of(live)
        if gc_graph.ORPHAN_FINALIZER in finalizers:
            policy = "Orphan"
        elif gc_graph.FOREGROUND_FINALIZER in finalizers:
            policy = "Foreground"
        else:
            policy = "Background"
        await self._delete(node.ref, policy)
        return

    async def _classify(self, ref: gc_graph.ObjectRef, owners: tuple[gc_graph.OwnerRef, ...]
                        ) -> tuple[list[gc_graph.OwnerRef], list[gc_graph.OwnerRef],
                                   list[gc_graph.OwnerRef]]:
        """Owners that are alive, absent (dangling), and alive but deleting in the
        foreground (waiting for their dependents, this one among them)."""
        solid: list[gc_graph.OwnerRef] = []
        dangling: list[gc_graph.OwnerRef] = []
        waiting: list[gc_graph.OwnerRef] = []
        for owner in owners:
            node = self.graph.get(owner.uid)
            if node is not None and not node.virtual and node.ref.name == owner.name:
                (waiting if node.deleting_dependents else solid).append(owner)
                continue
            if (owner.uid, ref.namespace) in self.absent:
                dangling.append(owner)
                continue
            live = await self._get_live(gc_graph.ObjectRef(
                owner.uid, owner.api_version, owner.kind, owner.name, ref.namespace))
            if live is None:
                self.absent.add(owner.uid, ref.namespace)
                dangling.append(owner)
            elif gc_graph.deleting_dependents(live):
                waiting.append(owner)
            else:
                solid.append(owner)
        return solid, dangling, waiting

    async def _process_deleting_dependents(self, node: gc_graph.Node, live: Object) -> None:
        """A foreground deletion finishes when no blocking dependent is left."""
        blocking = self.graph.blocking_dependents(node.ref.uid)
        if not blocking:
            await self._patch_metadata(node.ref, live, lambda md: _without_finalizer(
                md, gc_graph.FOREGROUND_FINALIZER))
            return
        for dep in blocking:
            if not dep.deleting_dependents:
                self.delete_queue.add(dep.ref.uid)

    # -- attempt to orphan --------------------------------------------------------------
    async def attempt_to_orphan(self, uid: str) -> float | None:
        try:
            await self._attempt_to_orphan(uid)
        except _MappingError as err:
            log.info("garbage collector: %s; looking again in %.0fs", err, self.resync_period)
            return self.resync_period
        return None

    async def _attempt_to_orphan(self, uid: str) -> None:
        node = self.graph.get(uid)
        if node is None or node.virtual:
            return
        live = await self._get_live(node.ref)
        if live is None or not gc_graph.orphaning(live):
            return
        results = await asyncio.gather(
            *(self._orphan(dep.ref, uid) for dep in self.graph.dependents(uid)),
            return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        await self._patch_metadata(node.ref, live, lambda md: _without_finalizer(
            md, gc_graph.ORPHAN_FINALIZER))
        return

    async def _orphan(self, dependent: gc_graph.ObjectRef, owner_uid: str) -> None:
        live = await self._get_live(dependent)
        if live is not None:
            await self._patch_metadata(dependent, live,
                                       lambda md: _without_owners(md, {owner_uid}))

    # -- API ----------------------------------------------------------------------------
    def _resource(self, ref: gc_graph.ObjectRef) -> rest.Resource:
        rt = self.discovery.by_kind(ref.api_version, ref.kind)
        if rt is None:
            raise _MappingError(f"no resource serves kind {ref.kind} of {ref.api_version}")
        return self.client.resource(rt)

    async def _get_live(self, ref: gc_graph.ObjectRef) -> Object | None:
        """The object now, or ``None`` when it is absent (or has another uid)."""
        resource = self._resource(ref)
        if resource.rt.namespaced and not ref.namespace:
            return None  # a namespaced owner of a cluster-scoped object cannot exist
        try:
            obj = await resource.get(ref.name, namespace=ref.namespace)
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return None
            raise
        return obj if meta.metadata(obj).get("uid") == ref.uid else None

    async def _delete(self, ref: gc_graph.ObjectRef, policy: str) -> None:
        log.debug("garbage collector: deleting %s (propagationPolicy %s)", ref, policy)
        try:
            await self._resource(ref).delete(ref.name, namespace=ref.namespace,
                                             propagation_policy=policy,
                                             preconditions={"uid": ref.uid})
        except rest.ApiError as err:
            if not (rest.is_not_found(err) or rest.is_conflict(err)):
                raise

    async def _patch_metadata(self, ref: gc_graph.ObjectRef, live: Object,
                              change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        """Merge-patch the metadata fields ``change`` computes from the live object, as a
        compare-and-swap on its resourceVersion (and uid); re-read and retry on conflict.
        ``change`` returns ``None`` when there is nothing (left) to do."""
        resource = self._resource(ref)
        current: Object | None = live
        for _ in range(_PATCH_ATTEMPTS):
            if current is None:
                return
            md = meta.metadata(current)
            fields = change(md)
            if fields is None:
                return
            body = {"metadata": {**fields, "uid": ref.uid,
                                 "resourceVersion": md.get("resourceVersion")}}
            try:
                await resource.patch(ref.name, body, namespace=ref.namespace)
                return
            except rest.ApiError as err:
                if rest.is_not_found(err):
                    return
                if not rest.is_conflict(err):
                    raise
            current = await self._get_live(ref)
        raise RuntimeError(f"{ref}: too many conflicts updating metadata")


def _on_new(handler: Callable[[Object], None]) -> Callable[[Object, Object], None]:
    """An ``on_update`` handler that looks at the new object only."""
    return lambda _old, new: handler(new)


def _without_owners(md: dict[str, Any], uids: set[str]) -> dict[str, Any] | None:
    refs = md.get("ownerReferences") or []
    kept = [r for r in refs if r.get("uid") not in uids]
    if len(kept) == len(refs):
        return None
    return {"ownerReferences": kept or None}


def _unblocked_owners(md: dict[str, Any]) -> dict[str, Any] | None:
    refs = md.get("ownerReferences") or []
    if not any(r.get("blockOwnerDeletion") for r in refs):
        return None
    return {"ownerReferences": [{**r, "blockOwnerDeletion": False} for r in refs]}


def _without_finalizer(md: dict[str, Any], finalizer: str) -> dict[str, Any] | None:
    finalizers = md.get("finalizers") or []
    if finalizer not in finalizers:
        return None
    return {"finalizers": [f for f in finalizers if f != finalizer]}

