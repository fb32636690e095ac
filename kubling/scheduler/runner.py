"""The scheduler as a cluster component: informers in, bindings and events out.

The pure core (``Framework``, ``Snapshot``, ``SchedulingQueue``) decides; this module
keeps the snapshot and the queue in step with the API through informers on pods and
nodes (and caches Services and controllers for default spreading), pops pods one at a time, binds them through ``pods/binding`` (assuming the pod
on its node at once, so the next decision sees it), and for a pod that fits nowhere
records upstream's ``FailedScheduling`` event and ``PodScheduled=False`` condition.
Only the holder of the ``kube-scheduler`` Lease schedules.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, informer, leaderelection, rest
from kubling.scheduler import owners
from kubling.scheduler import queue as queues
from kubling.scheduler.framework import DEFAULT_SCHEDULER_NAME, FitError, Framework, Profile
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.plugins import volume_binding
from kubling.scheduler.snapshot import Snapshot

log = logging.getLogger("kubling.scheduler")

_TERMINAL = ("Succeeded", "Failed")
_BINDING_CONCURRENCY = 16
#: What a failed API call can raise: an answer (``ApiError``) or no answer at all.
_FAILURES: tuple[type[BaseException], ...] = (rest.ApiError, *rest.TRANSPORT_ERRORS)
#: PreBind also fails when a claim is deleted or does not bind in time (a TimeoutError).
_PRE_BIND_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, LookupError)


def _assigned(pod: Object) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def _live(pod: Object) -> bool:
    return (pod.get("status") or {}).get("phase") not in _TERMINAL


class Scheduler:
    def __init__(self, client: rest.Client, *, scheduler_name: str = DEFAULT_SCHEDULER_NAME,
                 identity: str = "") -> None:
        self.client = client
        self.framework = Framework(Profile(scheduler_name=scheduler_name))
        self.scheduler_name = scheduler_name
        self.pods = client.resource(rest.lookup("v1", "pods"))
        self.identity = identity or f"{socket.gethostname()}_{uuid.uuid4()}"
        self.snapshot = Snapshot()
        self.queue = queues.SchedulingQueue()
        self._wakeup = asyncio.Event()
        self._recorder: events.EventRecorder | None = None
        #: Bindings in flight (at most ``_BINDING_CONCURRENCY``), awaited on shutdown.
        self._binding: set[asyncio.Task[None]] = set()
        self._binding_slots = asyncio.Semaphore(_BINDING_CONCURRENCY)

    async def run(self) -> None:
        elector = leaderelection.LeaderElector(self.client, "kube-system", "kube-scheduler",
                                               self.identity)
        while True:
            await elector.run(self._lead)
            await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        self.snapshot = Snapshot()
        self.queue = queues.SchedulingQueue()
        self._recorder = events.EventRecorder(self.client, "default-scheduler",
                                              socket.gethostname())
        factory = informer.SharedInformerFactory(self.client)
        nodes = factory.informer(rest.lookup("v1", "nodes"))
        pods = factory.informer(rest.lookup("v1", "pods"))
        nodes.add_event_handler(on_add=self._node_added, on_update=self._node_updated,
                                on_delete=self._node_deleted)
        pods.add_event_handler(on_add=self._pod_added, on_update=self._pod_updated,
                               on_delete=self._pod_deleted)
        self._watch_listers(factory)
        # What owns a pod, for PodTopologySpread's default constraints.
        self.framework.owner_selectors = owners.OwnerSelectors.from_informers(
            factory.informer(rest.lookup("v1", "services")),
            factory.informer(rest.lookup("v1", "replicationcontrollers")),
            factory.informer(rest.lookup("apps/v1", "replicasets")),
            factory.informer(rest.lookup("apps/v1", "statefulsets")))
        factory.start()
        try:
            await factory.wait_for_sync(timeout=60)
            log.info("scheduler running (%d nodes)", len(self.snapshot))
            await self._loop()
        finally:
            for task in list(self._binding):
                task.cancel()
            await asyncio.gather(*self._binding, return_exceptions=True)
            await factory.shutdown()
            self.framework.owner_selectors = None
            await self._recorder.close()

    # -- informer handlers: keep the snapshot and the queue current --------------------
    def _watch_listers(self, factory: informer.SharedInformerFactory) -> None:
        """The snapshot's listers: claims, volumes, classes (VolumeBinding), namespace
        labels (affinity namespace selectors), disruption budgets (preemption). A claim
        that appears or changes may let a pod waiting on it fit."""
        def keyed(obj: Object) -> tuple[str, str]:
            return meta.namespace_of(obj) or "default", meta.name_of(obj)

        def claim_set(obj: Object, event: queues.ClusterEvent) -> None:
            self.snapshot.pvcs[keyed(obj)] = obj
            self._move(event)

        def claim_gone(obj: Object) -> None:
            self.snapshot.pvcs.pop(keyed(obj), None)

        def class_set(obj: Object) -> None:
            self.snapshot.storage_classes[meta.name_of(obj)] = obj
            self._move(queues.STORAGE_CLASS_ADD)

        def volume_set(obj: Object, event: queues.ClusterEvent) -> None:
            self.snapshot.pvs[meta.name_of(obj)] = obj
            self._move(event)

        def volume_gone(obj: Object) -> None:
            self.snapshot.pvs.pop(meta.name_of(obj), None)

        def class_gone(obj: Object) -> None:
            self.snapshot.storage_classes.pop(meta.name_of(obj), None)

        def namespace_set(obj: Object) -> None:
            self.snapshot.namespace_labels[meta.name_of(obj)] = meta.labels_of(obj)

        def namespace_gone(obj: Object) -> None:
            self.snapshot.namespace_labels.pop(meta.name_of(obj), None)

        claims = factory.informer(rest.lookup("v1", "persistentvolumeclaims"))
        claims.add_event_handler(
            on_add=lambda obj: claim_set(obj, queues.PVC_ADD),
            on_update=lambda _old, obj: claim_set(obj, queues.PVC_UPDATE),
            on_delete=claim_gone)
        volumes = factory.informer(rest.lookup("v1", "persistentvolumes"))
        volumes.add_event_handler(
            on_add=lambda obj: volume_set(obj, queues.PV_ADD),
            on_update=lambda _old, obj: volume_set(obj, queues.PV_UPDATE),
            on_delete=volume_gone)
        classes = factory.informer(rest.lookup("storage.k8s.io/v1", "storageclasses"))
        classes.add_event_handler(on_add=class_set, on_update=lambda _old, obj: class_set(obj),
                                  on_delete=class_gone)
        namespaces = factory.informer(rest.lookup("v1", "namespaces"))
        namespaces.add_event_handler(on_add=namespace_set,
                                     on_update=lambda _old, obj: namespace_set(obj),
                                     on_delete=namespace_gone)
        budgets: dict[tuple[str, str], Object] = {}

        def budget_changed(obj: Object, gone: bool = False) -> None:
            if gone:
                budgets.pop(keyed(obj), None)
            else:
                budgets[keyed(obj)] = obj
            self.snapshot.pdbs = list(budgets.values())

        pdbs = factory.informer(rest.lookup("policy/v1", "poddisruptionbudgets"))
        pdbs.add_event_handler(on_add=budget_changed,
                               on_update=lambda _old, obj: budget_changed(obj),
                               on_delete=lambda obj: budget_changed(obj, gone=True))

    def _node_added(self, node: Object) -> None:
        self.snapshot.add_node(node)
        self._move(queues.NODE_ADD)

    def _node_updated(self, _old: Object, node: Object) -> None:
        self.snapshot.update_node(node)
        self._move(queues.NODE_UPDATE)

    def _node_deleted(self, node: Object) -> None:
        self.snapshot.remove_node(meta.name_of(node))

    def _mine(self, pod: Object) -> bool:
        name = (pod.get("spec") or {}).get("schedulerName") or DEFAULT_SCHEDULER_NAME
        return bool(name == self.scheduler_name)

    def _pod_added(self, pod: Object) -> None:
        if _assigned(pod):
            if _live(pod):
                self.snapshot.add_pod(PodInfo(pod))
                self._move(queues.ASSIGNED_POD_ADD)
        elif self._mine(pod) and _live(pod) and not pod["metadata"].get("deletionTimestamp"):
            self.queue.add(pod)
            self._wakeup.set()

    def _pod_updated(self, old: Object, pod: Object) -> None:
        if _assigned(pod):
            info = PodInfo(pod)
            self.queue.delete(pod)
            self.snapshot.remove_pod(info)
            if _live(pod):
                self.snapshot.add_pod(info)
            else:
                self._move(queues.ASSIGNED_POD_DELETE)
            return
        if self._mine(pod) and _live(pod):
            self.queue.update(pod)
            self._wakeup.set()

    def _pod_deleted(self, pod: Object) -> None:
        info = PodInfo(pod)
        self.queue.delete(pod)
        if self.snapshot.remove_pod(info):
            self._move(queues.ASSIGNED_POD_DELETE)

    def _move(self, event: queues.ClusterEvent) -> None:
        self.queue.move_all_to_active_or_backoff(event)
        self._wakeup.set()

    # -- the scheduling loop ----------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            self.queue.flush()
            queued = self.queue.pop()
            if queued is None:
                self._wakeup.clear()
                expiry = self.queue.next_backoff_expiry()
                timeout = 1.0 if expiry is None else max(0.01, min(1.0, expiry))
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass
                continue
            cycle = self.queue.scheduling_cycle
            await self._schedule_one(queued, cycle)

    async def _schedule_one(self, queued: queues.QueuedPodInfo, cycle: int) -> None:
        pod = queued.pod_info
        try:
            result = self.framework.schedule(pod, self.snapshot)
        except Exception as err:  # a plugin failed: back off, as upstream
            log.warning("scheduling %s/%s failed: %s", pod.namespace, pod.name, err)
            self.queue.add_unschedulable(queued, cycle, frozenset())
            return
        if isinstance(result, FitError):
            await self._unschedulable(queued, cycle, result)
            return
        node = result.suggested_host
        self.snapshot.assume(pod, node)
        volumes = volume_binding.assume_pod_volumes(pod, node, self.snapshot)
        # The binding cycle runs beside the next scheduling cycles, as upstream's does:
        # the pod is assumed on its node, so later decisions already account for it. The
        # slots bound how many Binding writes are in flight; a pod whose claims must bind
        # first (which may take minutes) takes its slot only once they have.
        holds_slot = volumes.empty
        if holds_slot:
            await self._binding_slots.acquire()
        task = asyncio.create_task(self._bind(queued, cycle, node, volumes, holds_slot))
        self._binding.add(task)
        task.add_done_callback(self._binding.discard)

    async def _bind(self, queued: queues.QueuedPodInfo, cycle: int, node: str,
                    volumes: volume_binding.PodVolumes, holds_slot: bool) -> None:
        try:
            if not holds_slot:
                if not await self._pre_bind(queued, cycle, node, volumes):
                    return
                await self._binding_slots.acquire()
                holds_slot = True
            await self._post_binding(queued, cycle, node)
        finally:
            if holds_slot:
                self._binding_slots.release()

    async def _pre_bind(self, queued: queues.QueuedPodInfo, cycle: int, node: str,
                        volumes: volume_binding.PodVolumes) -> bool:
        """PreBind: the pod's delayed claims are bound first, as upstream; a failure is
        upstream's FailedScheduling event and ``PodScheduled=False SchedulerError``."""
        pod = queued.pod_info
        try:
            await volume_binding.bind_pod_volumes(self.client, volumes, self.snapshot)
        except _PRE_BIND_FAILURES as err:
            volume_binding.forget_pod_volumes(volumes, self.snapshot)
            self.snapshot.remove_pod(pod)
            message = (f'running PreBind plugin "VolumeBinding": binding volumes: '
                       f"{err or type(err).__name__}")
            log.warning("%s/%s on %s: %s", pod.namespace, pod.name, node, message)
            self.queue.add_unschedulable(queued, cycle, frozenset())
            await self._record_failure(queued, message, reason="SchedulerError")
            return False
        return True

    async def _post_binding(self, queued: queues.QueuedPodInfo, cycle: int,
                            node: str) -> None:
        pod = queued.pod_info
        try:
            await self.pods.create(
                {"apiVersion": "v1", "kind": "Binding",
                 "metadata": {"name": pod.name, "namespace": pod.namespace,
                              "uid": pod.uid},
                 "target": {"apiVersion": "v1", "kind": "Node", "name": node}},
                namespace=pod.namespace, name=pod.name, subresource="binding")
        except _FAILURES as err:
            self.snapshot.remove_pod(pod)
            if isinstance(err, rest.ApiError) and (rest.is_not_found(err)
                                                   or rest.is_conflict(err)):
                self.queue.done(pod.uid)  # deleted or bound by someone else meanwhile
                return
            log.warning("binding %s/%s to %s failed: %s", pod.namespace, pod.name, node, err)
            self.queue.add_unschedulable(queued, cycle, frozenset())
            return
        self.queue.done(pod.uid)
        if self._recorder is not None:
            self._recorder.record(dict(pod.pod), "Normal", "Scheduled",
                                  f"Successfully assigned {pod.namespace}/{pod.name} to {node}")

    async def _unschedulable(self, queued: queues.QueuedPodInfo, cycle: int,
                             fit: FitError) -> None:
        self.queue.add_unschedulable(queued, cycle, fit.unschedulable_plugins)
        await self._record_failure(queued, fit.message, reason="Unschedulable", fit=fit)

    async def _record_failure(self, queued: queues.QueuedPodInfo, message: str, *,
                              reason: str, fit: FitError | None = None) -> None:
        """The FailedScheduling event and the ``PodScheduled=False`` condition (with a
        preemption's nominated node and victims)."""
        pod = queued.pod_info
        if self._recorder is not None:
            self._recorder.record(dict(pod.pod), "Warning", "FailedScheduling", message)
        condition: dict[str, Any] = {"type": "PodScheduled", "status": "False",
                                     "reason": reason, "message": message,
                                     "lastProbeTime": None,
                                     "lastTransitionTime": meta.now()}
        current = [c for c in (pod.pod.get("status") or {}).get("conditions") or []
                   if c.get("type") == "PodScheduled"]
        if current and current[0].get("message") == message:
            return
        status: dict[str, Any] = {"conditions": [condition]}
        if fit is not None and fit.nominated_node:
            status["nominatedNodeName"] = fit.nominated_node
            for victim in fit.victims:
                vmd = victim.get("metadata") or {}
                try:
                    await self.pods.delete(vmd.get("name", ""),
                                           namespace=vmd.get("namespace", ""),
                                           preconditions={"uid": vmd.get("uid", "")})
                except _FAILURES as err:
                    log.warning("preempting %s failed: %s", vmd.get("name"), err)
        try:
            await self.pods.patch(pod.name, {"status": status}, namespace=pod.namespace,
                                  subresource="status", type="strategic")
        except _FAILURES as err:
            log.debug("recording PodScheduled=False on %s/%s: %s", pod.namespace, pod.name,
                      err)
