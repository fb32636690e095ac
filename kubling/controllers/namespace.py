"""The namespace controller: empties a Terminating namespace, then lets the API server drop it.

Deleting a namespace only marks it (``deletionTimestamp``, phase ``Terminating``): the API
server keeps it while ``spec.finalizers`` holds ``kubernetes``. This controller is what
finishes the job, as upstream's ``namespaced_resources_deleter`` does:

1. discover every namespaced resource the server serves that can be deleted (built-in and
   custom, the preferred version of each group);
2. delete the namespace's objects of each one (``deletecollection`` with ``Background``
   propagation, else one ``delete`` per object), then list what remains: objects with
   finalizers of their own, or pods still in their grace period;
3. write the outcome into the namespace's status conditions
   (``NamespaceDeletionDiscoveryFailure``, ``NamespaceDeletionGroupVersionParsingFailure``,
   ``NamespaceDeletionContentFailure``, ``NamespaceContentRemaining``,
   ``NamespaceFinalizersRemaining``) with upstream's reasons and messages;
4. while anything remains, look again later; once nothing does, remove ``kubernetes`` from
   ``spec.finalizers`` through ``namespaces/<ns>/finalize``, and the API server deletes the
   namespace when no finalizer is left.

Discovery (step 1) is ``kubling.client.discovery``, which the garbage collector shares.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Iterable, Mapping

from kubling.api import meta
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.client import discovery as discovery_client
from kubling.client import informer, rest, workqueue
from kubling.controllers import manager

log = logging.getLogger(__name__)

NAMESPACES = rest.lookup("v1", "namespaces")

#: The finalizer this controller owns in ``spec.finalizers``.
FINALIZER = "kubernetes"

#: How long to wait before looking at a namespace whose content is still going away
#: (objects with finalizers, pods in their grace period). Upstream waits about 8 s for
#: finalizers; a shorter wait costs one discovery and one list per resource.
REMAINING_RECHECK = 2.0
#: Backoff after a failed pass (discovery or a deletion failed), per namespace.
ERROR_BACKOFF_INITIAL = 0.5
ERROR_BACKOFF_CAP = 60.0

# The conditions this controller maintains, in upstream's order, and their "all is well"
# variants (status False) written when the problem is absent.
DISCOVERY_FAILURE = "NamespaceDeletionDiscoveryFailure"
PARSING_FAILURE = "NamespaceDeletionGroupVersionParsingFailure"
CONTENT_FAILURE = "NamespaceDeletionContentFailure"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"

_OK: dict[str, tuple[str, str]] = {
    DISCOVERY_FAILURE: ("ResourcesDiscovered", "All resources successfully discovered"),
    PARSING_FAILURE: ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    CONTENT_FAILURE: ("ContentDeleted",
                      "All content successfully deleted, may be waiting on finalization"),
    CONTENT_REMAINING: ("ContentRemoved", "All content successfully removed"),
    FINALIZERS_REMAINING: ("ContentHasNoFinalizers",
                           "All content-preserving finalizers finished"),
}


@dataclasses.dataclass
class _Content:
    """What one pass over a namespace's content found."""

    remaining: dict[str, int] = dataclasses.field(default_factory=dict)  # "plural.group" →
    finalizers: dict[str, int] = dataclasses.field(default_factory=dict)
    errors: list[str] = dataclasses.field(default_factory=list)


class NamespaceController:
    """Reconciles each Terminating namespace (the key is its name) until it is gone."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.client = ctx.client
        self.namespaces = ctx.client.resource(NAMESPACES)
        self.informer = ctx.informers.informer(NAMESPACES)
        self._retry: dict[str, float] = {}  # namespace → next delay after a failed pass
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="namespace",
                                                                   clock=ctx.clock)
        self.informer.add_event_handler(on_add=self._enqueue,
                                        on_update=lambda _old, new: self._enqueue(new))

    def _enqueue(self, obj: Object) -> None:
        if meta.metadata(obj).get("deletionTimestamp"):
            self.queue.add(informer.key_of(obj))

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, name: str) -> float | None:
        cached = self.informer.indexer.get(name)
        if cached is None or not meta.metadata(cached).get("deletionTimestamp"):
            self._retry.pop(name, None)
            return None
        try:
            ns = await self.namespaces.get(name)  # the cache may trail a finalize we made
        except rest.ApiError as err:
            if rest.is_not_found(err):
                self._retry.pop(name, None)
                return None
            raise
        if not meta.metadata(ns).get("deletionTimestamp"):
            return None
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or []):
            return None  # finalized: the API server removes it once its finalizers go
        discovery = await discovery_client.discover(self.client)
        content = await self._delete_content(name, discovery)
        ns = await self._update_conditions(ns, discovery, content)
        problems = [*(f"{gv}: {err}" for gv, err in discovery.failed.items()),
                    *discovery.unparsable, *content.errors]
        if problems:
            # Retried with a per-namespace backoff; the conditions tell the user why.
            delay = self._retry.get(name, ERROR_BACKOFF_INITIAL)
            self._retry[name] = min(delay * 2, ERROR_BACKOFF_CAP)
            log.warning("namespace %s: content deletion incomplete (retry in %.1fs): %s",
                        name, delay, "; ".join(problems))
            return delay
        self._retry.pop(name, None)
        if content.remaining:
            return REMAINING_RECHECK
        await self._finalize(ns)
        return None

    # -- content ------------------------------------------------------------------------
    async def _delete_content(self, namespace: str,
                              discovery: discovery_client.Discovery) -> _Content:
        content = _Content()
        deletable = [rt for rt in discovery.resources
                     if rt.namespaced and ("delete" in rt.verbs or "deletecollection" in rt.verbs)]
        await asyncio.gather(*(self._delete_resource(namespace, rt, content)
                               for rt in deletable))
        return content

    async def _delete_resource(self, namespace: str, rt: ResourceType,
                               content: _Content) -> None:
        """Delete every object of ``rt`` in ``namespace``; count what is still there."""
        resource = self.client.resource(rt)
        options = {"kind": "DeleteOptions", "apiVersion": "v1",
                   "propagationPolicy": "Background"}
        try:
            if "deletecollection" in rt.verbs:
                await self.client.request("DELETE", resource.path(namespace=namespace),
                                          body=options)
            elif "list" in rt.verbs:
                items, _ = await resource.list_all(namespace=namespace)
                for item in items:
                    if meta.metadata(item).get("deletionTimestamp"):
                        continue
                    try:
                        await resource.delete(meta.name_of(item), namespace=namespace,
                                              propagation_policy="Background")
                    except rest.ApiError as err:
                        if not rest.is_not_found(err):
                            raise
            if "list" not in rt.verbs:
                return
            left, _ = await resource.list_all(namespace=namespace)
        except rest.ApiError as err:
            if rest.is_not_found(err) or err.code == 405:
                return  # the resource went away (a CRD deleted) or does not list
            content.errors.append(f"{rt.group_resource}: {err.message or err}")
            return
        except rest.TRANSPORT_ERRORS as err:
            content.errors.append(f"{rt.group_resource}: {err or type(err).__name__}")
            return
        if not left:
            return
        content.remaining[f"{rt.plural}.{rt.group}"] = len(left)
        for item in left:
            for finalizer in meta.metadata(item).get("finalizers") or []:
                content.finalizers[finalizer] = content.finalizers.get(finalizer, 0) + 1

    # -- status -------------------------------------------------------------------------
    async def _update_conditions(self, ns: Object, discovery: discovery_client.Discovery,
                                 content: _Content) -> Object:
        wanted = conditions_for(discovery, content.remaining, content.finalizers,
                                content.errors)
        status = ns.get("status") or {}
        merged = merge_conditions(status.get("conditions") or [], wanted, now=meta.now())
        if merged is None:
            return ns
        updated = copy.deepcopy(ns)
        updated.setdefault("status", {})["conditions"] = merged
        try:
            result: Object = await self.namespaces.update_status(updated)
        except rest.ApiError as err:
            if rest.is_conflict(err):  # changed meanwhile: the next pass writes them
                return ns
            raise
        return result

    async def _finalize(self, ns: Object) -> None:
        """Drop ``kubernetes`` from ``spec.finalizers``; the API server does the rest."""
        finalized = copy.deepcopy(ns)
        spec = finalized.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or [] if f != FINALIZER]
        try:
            await self.namespaces.update(finalized, subresource="finalize")
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise


def conditions_for(discovery: discovery_client.Discovery, remaining: Mapping[str, int],
                   finalizers: Mapping[str, int], errors: Iterable[str]) -> list[Object]:
    """The failing conditions (status True) of one pass, with upstream's messages."""
    found: list[Object] = []

    def failing(kind: str, reason: str, message: str) -> None:
        found.append({"type": kind, "status": "True", "reason": reason, "message": message})

    if discovery.failed:
        groups = ", ".join(f"{gv}: {err}" for gv, err in sorted(discovery.failed.items()))
        failing(DISCOVERY_FAILURE, "DiscoveryFailed",
                f"Discovery failed for some groups, {len(discovery.failed)} failing: "
                f"unable to retrieve the complete list of server APIs: {groups}")
    if discovery.unparsable:
        failing(PARSING_FAILURE, "GroupVersionParsingFailed",
                _aggregate([f"unexpected GroupVersion string: {gv}"
                            for gv in discovery.unparsable]))
    errs = list(errors)
    if errs:
        failing(CONTENT_FAILURE, "ContentDeletionFailed",
                f"Failed to delete all resource types, {len(errs)} remaining: "
                f"{_aggregate(errs)}")
    if remaining:
        listed = sorted(f"{gr} has {n} resource instances" for gr, n in remaining.items() if n)
        failing(CONTENT_REMAINING, "SomeResourcesRemain",
                f"Some resources are remaining: {', '.join(listed)}")
    if finalizers:
        listed = sorted(f"{f} in {n} resource instances" for f, n in finalizers.items() if n)
        failing(FINALIZERS_REMAINING, "SomeFinalizersRemain",
                "Some content in the namespace has finalizers remaining: "
                + ", ".join(listed))
    return found


def merge_conditions(current: list[Object], failing: list[Object], *,
                     now: str) -> list[Object] | None:
    """``current`` with each maintained condition set to its failing or "ok" variant;
    ``None`` when nothing changed (so that no write is made). A condition keeps its
    ``lastTransitionTime`` while its status, reason and message stay the same."""
    by_type = {c["type"]: c for c in failing}
    merged = [dict(c) for c in current]
    changed = False
    for kind, (ok_reason, ok_message) in _OK.items():
        new = by_type.get(kind) or {"type": kind, "status": "False", "reason": ok_reason,
                                    "message": ok_message}
        old = next((c for c in merged if c.get("type") == kind), None)
        if old is not None and all(old.get(f) == new[f] for f in ("status", "reason", "message")):
            continue
        changed = True
        entry = {**new, "lastTransitionTime": now}
        if old is None:
            merged.append(entry)
        else:
            old.clear()
            old.update(entry)
    return merged if changed else None


def _aggregate(messages: list[str]) -> str:
    """How upstream's ``utilerrors.NewAggregate`` prints: one message bare, more in [ ]."""
    return messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
