"""The ReplicaSet and ReplicationController controllers: keep ``replicas`` pods running.

One implementation, as upstream's ``ReplicationManager`` is the ReplicaSet controller run
on ReplicationControllers: ``_Kind`` says what differs (the resource, an ``apps/v1``
``LabelSelector`` or a ``v1`` label map, the event source).

A reconcile of one owner: claim the pods of its namespace (adopt matching orphans,
release owned pods that stopped matching), then — only if the creations and deletions of
the previous reconcile have all shown up in the pod informer (``Expectations``) — create
the missing pods in slow-start batches or delete the surplus, least useful first, and
finally write ``status``. Informer handlers only enqueue owners and lower expectations.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import manager, podcontrol

log = logging.getLogger(__name__)

#: Upstream's ``BurstReplicas``: the most pods one reconcile creates or deletes.
BURST_REPLICAS = 500
REPLICA_FAILURE = "ReplicaFailure"


def _rs_selector(owner: Object) -> labels.Selector:
    return labels.from_label_selector((owner.get("spec") or {}).get("selector"))


def _rc_selector(owner: Object) -> labels.Selector:
    selector = (owner.get("spec") or {}).get("selector")
    if not selector:
        return labels.nothing()  # validation forbids it; never select every pod
    return labels.selector_from_set(selector)


@dataclasses.dataclass(frozen=True)
class _Kind:
    """What differs between ReplicaSets and ReplicationControllers."""

    resource: ResourceType
    api_version: str
    kind: str
    component: str
    selector: Callable[[Object], labels.Selector]


REPLICA_SET = _Kind(rest.lookup("apps/v1", "replicasets"), "apps/v1", "ReplicaSet",
                    "replicaset-controller", _rs_selector)
REPLICATION_CONTROLLER = _Kind(rest.lookup("v1", "replicationcontrollers"), "v1",
                               "ReplicationController", "replication-controller", _rc_selector)


def min_ready_seconds(owner: Object) -> int:
    value = (owner.get("spec") or {}).get("minReadySeconds")
    return int(value) if isinstance(value, int) else 0


class _ReplicaController:
    """The shared implementation; see the module docstring."""

    def __init__(self, ctx: manager.ControllerContext, kind: _Kind) -> None:
        self.kind = kind
        self.owners = ctx.client.resource(kind.resource)
        self.pods = ctx.client.resource(podcontrol.PODS)
        self.owner_informer = ctx.informers.informer(kind.resource)
        self.pod_informer = ctx.informers.informer(podcontrol.PODS)
        self.recorder: events.EventRecorder = ctx.recorder_for(kind.component)
        self.wall = podcontrol.WallClock(ctx.clock)
        self.expectations = podcontrol.Expectations(ctx.clock)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name=kind.component,
                                                                   clock=ctx.clock)
        self.burst_replicas = BURST_REPLICAS
        self.owner_informer.add_event_handler(on_add=self._owner_added,
                                              on_update=self._owner_updated,
                                              on_delete=self._owner_deleted)
        self.pod_informer.add_event_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                            on_delete=self._pod_deleted)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    # -- informer handlers: enqueue, and lower expectations ------------------------------
    def _owner_added(self, owner: Object) -> None:
        self.queue.add(informer.key_of(owner))

    def _owner_updated(self, old: Object, new: Object) -> None:
        if podcontrol.uid_of(old) != podcontrol.uid_of(new):
            self._owner_deleted(old)
        self.queue.add(informer.key_of(new))

    def _owner_deleted(self, owner: Object) -> None:
        key = informer.key_of(owner)
        self.expectations.forget(key)
        self.queue.add(key)

    def _owner_of(self, pod: Object, ref: Object | None) -> Object | None:
        return podcontrol.resolve_controller_ref(self.owner_informer.indexer,
                                                 meta.namespace_of(pod), ref, self.kind.kind)

    def _matching_owners(self, pod: Object) -> list[Object]:
        """Owners in the pod's namespace whose selector matches it (orphan adoption)."""
        found = []
        pod_labels = meta.labels_of(pod)
        for owner in self.owner_informer.indexer.by_index(informer.NAMESPACE_INDEX,
                                                          meta.namespace_of(pod)):
            try:
                if self.kind.selector(owner).matches(pod_labels):
                    found.append(owner)
            except labels.SelectorError:
                continue
        return found

    def _pod_added(self, pod: Object) -> None:
        if podcontrol.is_terminating(pod):
            self._pod_deleted(pod)  # e.g. seen for the first time after a re-list
            return
        ref = podcontrol.controller_of(pod)
        if ref is not None:
            owner = self._owner_of(pod, ref)
            if owner is not None:
                key = informer.key_of(owner)
                self.expectations.creation_observed(key)
                self.queue.add(key)
            return
        for owner in self._matching_owners(pod):
            self.queue.add(informer.key_of(owner))

    def _pod_updated(self, old: Object, new: Object) -> None:
        if meta.metadata(old).get("resourceVersion") == meta.metadata(new).get("resourceVersion"):
            return
        labels_changed = meta.labels_of(old) != meta.labels_of(new)
        if podcontrol.is_terminating(new):
            # Graceful deletion: the pod is as good as gone; replace it now.
            self._pod_deleted(new)
            if labels_changed:
                self._pod_deleted(old)
            return
        old_ref, new_ref = podcontrol.controller_of(old), podcontrol.controller_of(new)
        if old_ref != new_ref and old_ref is not None:
            previous = self._owner_of(old, old_ref)
            if previous is not None:
                self.queue.add(informer.key_of(previous))
        if new_ref is not None:
            owner = self._owner_of(new, new_ref)
            if owner is None:
                return
            key = informer.key_of(owner)
            self.queue.add(key)
            min_ready = min_ready_seconds(owner)
            if min_ready > 0 and not podcontrol.is_pod_ready(old) and podcontrol.is_pod_ready(new):
                # Nothing will tell us when the pod turns available: look again then.
                self.queue.add_after(key, min_ready + 1.0)
            return
        if labels_changed or old_ref != new_ref:
            for owner in self._matching_owners(new):
                self.queue.add(informer.key_of(owner))

    def _pod_deleted(self, pod: Object) -> None:
        owner = self._owner_of(pod, podcontrol.controller_of(pod))
        if owner is None:
            return
        key = informer.key_of(owner)
        self.expectations.deletion_observed(key, informer.key_of(pod))
        self.queue.add(key)

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, key: str) -> float | None:
        """Bring one owner's pods to ``replicas`` and write its status; the delay returned
        is when a ready pod turns available (``minReadySeconds``)."""
        namespace, _ = informer.split_key(key)
        cached = self.owner_informer.indexer.get(key)
        if cached is None:
            self.expectations.forget(key)
            return None
        owner = copy.deepcopy(cached)
        needs_sync = self.expectations.satisfied(key)
        try:
            selector = self.kind.selector(owner)
        except labels.SelectorError as err:
            log.warning("%s %s has an invalid selector: %s", self.kind.kind, key, err)
            return None
        candidates = [p for p in self.pod_informer.indexer.by_index(informer.NAMESPACE_INDEX,
                                                                    namespace)
                      if podcontrol.is_pod_active(p)]
        refs = podcontrol.RefManager(
            self.pods, owner, selector=selector, owner_ref=self._owner_ref(owner),
            recheck=podcontrol.owner_recheck(self.owners, owner))
        pods = await refs.claim(candidates)

        failure: Exception | None = None
        if needs_sync and not podcontrol.is_terminating(owner):
            try:
                await self._manage_replicas(key, owner, pods)
            except podcontrol.API_FAILURES as err:
                failure = err
        updated = await self._update_status(owner, self._calculate_status(owner, pods, failure))
        if failure is not None:
            raise failure
        return self._availability_delay(updated, pods)

    def _owner_ref(self, owner: Object) -> Object:
        return podcontrol.controller_ref(owner, api_version=self.kind.api_version,
                                         kind=self.kind.kind)

    async def _manage_replicas(self, key: str, owner: Object, pods: list[Object]) -> None:
        diff = len(pods) - podcontrol.replicas_of(owner)
        if diff < 0:
            await self._create_pods(key, owner, min(-diff, self.burst_replicas))
        elif diff > 0:
            await self._delete_pods(key, owner, pods, min(diff, self.burst_replicas))

    async def _create_pods(self, key: str, owner: Object, count: int) -> None:
        template = (owner.get("spec") or {}).get("template") or {}
        name, namespace = meta.name_of(owner), meta.namespace_of(owner)
        pod = podcontrol.pod_from_template(template, namespace=namespace,
                                           generate_name=f"{name}-",
                                           owner_ref=self._owner_ref(owner))
        # Recorded before any create goes out: the informer may show a new pod before
        # the create's answer arrives, and must find the expectation to lower.
        self.expectations.expect_creations(key, count)

        async def create_one() -> None:
            if not pod["metadata"]["labels"]:
                raise ValueError("unable to create pods, no labels")
            try:
                created = await self.pods.create(copy.deepcopy(pod), namespace=namespace)
            except rest.ApiError as err:
                if podcontrol.namespace_terminating(err):
                    return  # every create will fail; the namespace controller cleans up
                self.recorder.record(owner, events.WARNING, "FailedCreate",
                                     f"Error creating: {err.message}")
                raise
            self.recorder.record(owner, events.NORMAL, "SuccessfulCreate",
                                 f"Created pod: {meta.name_of(created)}")

        successes, failure = await podcontrol.slow_start_batch(count, 1, create_one)
        for _ in range(count - successes):
            # The informer will never show these: stop waiting for them.
            self.expectations.creation_observed(key)
        if failure is not None:
            raise failure

    async def _delete_pods(self, key: str, owner: Object, pods: list[Object],
                           count: int) -> None:
        victims = podcontrol.pods_to_delete(pods, self._related_pods(owner, pods), count,
                                            self.wall.now())
        self.expectations.expect_deletions(key, [informer.key_of(p) for p in victims])

        async def delete_one(pod: Object) -> None:
            name = meta.name_of(pod)
            try:
                await self.pods.delete(name, namespace=meta.namespace_of(pod))
            except rest.ApiError as err:
                self.expectations.deletion_observed(key, informer.key_of(pod))
                if rest.is_not_found(err):
                    return
                self.recorder.record(owner, events.WARNING, "FailedDelete",
                                     f"Error deleting: {err.message}")
                raise
            self.recorder.record(owner, events.NORMAL, "SuccessfulDelete",
                                 f"Deleted pod: {name}")

        results = await asyncio.gather(*(delete_one(p) for p in victims),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _related_pods(self, owner: Object, pods: list[Object]) -> list[Object]:
        """The pods of every owner sharing this owner's controller (a Deployment's other
        ReplicaSets), which the deletion ranking uses to spot pods doubled up on a node."""
        ref = podcontrol.controller_of(owner)
        if ref is None:
            return pods
        namespace = meta.namespace_of(owner)
        siblings = {podcontrol.uid_of(o) for o in
                    self.owner_informer.indexer.by_index(informer.NAMESPACE_INDEX, namespace)
                    if (podcontrol.controller_of(o) or {}).get("uid") == ref.get("uid")}
        siblings.add(podcontrol.uid_of(owner))
        return [p for p in self.pod_informer.indexer.by_index(informer.NAMESPACE_INDEX, namespace)
                if (podcontrol.controller_of(p) or {}).get("uid") in siblings]

    # -- status ---------------------------------------------------------------------------
    def _calculate_status(self, owner: Object, pods: list[Object],
                          failure: Exception | None) -> Object:
        template_labels = (((owner.get("spec") or {}).get("template") or {}).get("metadata")
                           or {}).get("labels") or {}
        min_ready, now = min_ready_seconds(owner), self.wall.now()
        status: Object = {"replicas": len(pods)}
        counts = {
            "fullyLabeledReplicas": sum(
                1 for p in pods if podcontrol.label_subset(template_labels, meta.labels_of(p))),
            "readyReplicas": sum(1 for p in pods if podcontrol.is_pod_ready(p)),
            "availableReplicas": sum(
                1 for p in pods if podcontrol.is_pod_available(p, min_ready, now)),
        }
        status.update({k: v for k, v in counts.items() if v})  # upstream omits zeros
        old_status = owner.get("status") or {}
        conditions = [c for c in old_status.get("conditions") or [] if isinstance(c, dict)]
        has_failure = any(c.get("type") == REPLICA_FAILURE for c in conditions)
        if failure is not None and not has_failure:
            diff = len(pods) - podcontrol.replicas_of(owner)
            reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
            message = failure.message if isinstance(failure, rest.ApiError) else str(failure)
            conditions.append({"type": REPLICA_FAILURE, "status": "True",
                               "lastTransitionTime": self.wall.stamp(), "reason": reason,
                               "message": message})
        elif failure is None and has_failure:
            conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
        if conditions:
            status["conditions"] = conditions
        return status

    async def _update_status(self, owner: Object, status: Object) -> Object:
        """Write ``status`` (with ``observedGeneration``) unless nothing changed; one retry
        on a conflict, from a fresh read, as upstream."""
        generation = meta.metadata(owner).get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
        current = owner.get("status") or {}
        if _same_status(current, status):
            return owner
        target = owner
        for attempt in range(2):
            target["status"] = status
            try:
                return await self.owners.update_status(target)
            except rest.ApiError as err:
                if not rest.is_conflict(err) or attempt:
                    raise
            target = await self.owners.get(meta.name_of(owner),
                                           namespace=meta.namespace_of(owner))
        raise AssertionError("unreachable")

    def _availability_delay(self, owner: Object, pods: list[Object]) -> float | None:
        """When a ready-but-not-yet-available pod becomes available, if all are ready."""
        min_ready = min_ready_seconds(owner)
        status = owner.get("status") or {}
        wanted = podcontrol.replicas_of(owner)
        if (min_ready <= 0 or status.get("readyReplicas", 0) != wanted
                or status.get("availableReplicas", 0) == wanted):
            return None
        now = self.wall.now()
        waits = [w for p in pods
                 if (w := podcontrol.available_in(p, min_ready, now)) is not None and w > 0]
        return (min(waits) if waits else float(min_ready)) + 0.01


def _same_status(current: Object, new: Object) -> bool:
    keys = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas",
            "observedGeneration")
    same_counts = all(int(current.get(k) or 0) == int(new.get(k) or 0) for k in keys)
    conditions: Any = current.get("conditions") or []
    return same_counts and conditions == (new.get("conditions") or [])


class ReplicaSetController(_ReplicaController):
    """apps/v1 ReplicaSets (``kube-controller-manager``'s ``replicaset`` controller)."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        super().__init__(ctx, REPLICA_SET)


class ReplicationManager(_ReplicaController):
    """v1 ReplicationControllers (the ``replicationcontroller`` controller)."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        super().__init__(ctx, REPLICATION_CONTROLLER)
