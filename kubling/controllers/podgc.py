"""The pod garbage collector: removes pods no kubelet will ever finish.

Upstream's ``pkg/controller/podgc``, a periodic sweep (every ``gc_check_period``) that
force-deletes (grace period 0):

- **terminated pods** (``Succeeded``/``Failed``) beyond ``terminated_pod_gc_threshold``,
  oldest first (``--terminated-pod-gc-threshold``; 0 turns this off);
- **orphaned pods**, bound to a node that no longer exists. A node missing from the cache
  is first quarantined for ``quarantine_time`` and then asked about once more, directly, so
  that a node being re-registered (or a cache that lags) costs no pods;
- **terminating pods on out-of-service nodes**: being deleted, on a node that is not Ready
  and carries the ``node.kubernetes.io/out-of-service`` taint an administrator sets when
  the machine is known to be down, so the pods' volumes and names are freed;
- **unscheduled terminating pods**: being deleted and never bound, so no kubelet would
  confirm their deletion.

A pod that is not yet terminal is first marked ``Failed`` with a ``DisruptionTarget``
condition saying why (``DeletionByPodGC``), as upstream does, so its owner can tell a
garbage-collected pod from a crashed one.
"""

from __future__ import annotations

import copy
import logging

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import rest, workqueue
from kubling.controllers import manager, podcontrol

log = logging.getLogger(__name__)

PODS = rest.lookup("v1", "pods")
NODES = rest.lookup("v1", "nodes")

#: Upstream's ``--terminated-pod-gc-threshold`` default.
TERMINATED_POD_GC_THRESHOLD = 12500
GC_CHECK_PERIOD = 20.0
QUARANTINE_TIME = 40.0
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"

#: The one key on the queue: each reconcile is a full sweep.
_SWEEP = "sweep"


def node_is_ready(node: Object) -> bool:
    cond = podcontrol.find_condition(node, "Ready")
    return cond is not None and cond.get("status") == "True"


class PodGCController:
    """Sweeps pods that would otherwise stay forever (see the module docstring)."""

    def __init__(self, ctx: manager.ControllerContext, *,
                 terminated_pod_gc_threshold: int = TERMINATED_POD_GC_THRESHOLD,
                 gc_check_period: float = GC_CHECK_PERIOD,
                 quarantine_time: float = QUARANTINE_TIME) -> None:
        self.threshold = terminated_pod_gc_threshold
        self.gc_check_period = gc_check_period
        self.quarantine_time = quarantine_time
        self.clock = ctx.clock
        self.wall = podcontrol.WallClock(ctx.clock)
        self.pods_api = ctx.client.resource(PODS)
        self.nodes_api = ctx.client.resource(NODES)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="podgc",
                                                                   clock=ctx.clock)
        self.pods = ctx.informers.informer(PODS)
        self.nodes = ctx.informers.informer(NODES)
        #: Node name → when it was first found missing (monotonic).
        self._missing_since: dict[str, float] = {}

    async def run(self, *, workers: int) -> None:
        self.queue.add(_SWEEP)
        try:
            await workqueue.run_workers(self.queue, self.reconcile, workers=1)
        finally:
            self.queue.shut_down()

    async def reconcile(self, key: str) -> float | None:
        pods = self.pods.indexer.list()
        if self.threshold > 0:
            await self._gc_terminated(pods)
        await self._gc_terminating_out_of_service(pods)
        next_check = await self._gc_orphaned(pods)
        await self._gc_unscheduled_terminating(pods)
        return min(self.gc_check_period, next_check)

    async def _gc_terminated(self, pods: list[Object]) -> None:
        terminated = [p for p in pods if podcontrol.is_pod_terminal(p)]
        excess = len(terminated) - self.threshold
        if excess <= 0:
            return
        log.info("garbage collecting %d terminated pods (threshold %d)", excess, self.threshold)
        terminated.sort(key=lambda p: ((p.get("metadata") or {}).get("creationTimestamp", ""),
                                       meta.name_of(p)))
        for pod in terminated[:excess]:
            await self._force_delete(pod, None)

    async def _gc_terminating_out_of_service(self, pods: list[Object]) -> None:
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if not node_name or not podcontrol.is_terminating(pod):
                continue
            node = self.nodes.indexer.get(node_name)
            if node is None or node_is_ready(node):
                continue
            taints = (node.get("spec") or {}).get("taints") or []
            if any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints):
                await self._force_delete(pod, "PodGC: node is out of service")

    async def _gc_orphaned(self, pods: list[Object]) -> float:
        """Delete pods of nodes gone for a quarantine; the seconds until the next is due."""
        now = self.clock.monotonic()
        bound: dict[str, list[Object]] = {}
        for pod in pods:
            node_name = (pod.get("spec") or {}).get("nodeName")
            if node_name:
                bound.setdefault(node_name, []).append(pod)
        missing = {name for name in bound if name not in self.nodes.indexer}
        for name in list(self._missing_since):
            if name not in missing:
                del self._missing_since[name]
        next_check = self.gc_check_period
        for name in sorted(missing):
            since = self._missing_since.setdefault(name, now)
            left = since + self.quarantine_time - now
            if left > 0:
                next_check = min(next_check, left)
                continue
            if await self._node_exists(name):
                del self._missing_since[name]
                continue
            for pod in bound[name]:
                log.info("pod %s/%s: its node %s no longer exists; deleting it",
                         meta.namespace_of(pod), meta.name_of(pod), name)
                await self._force_delete(pod, "PodGC: node no longer exists")
        return next_check

    async def _gc_unscheduled_terminating(self, pods: list[Object]) -> None:
        for pod in pods:
            if podcontrol.is_terminating(pod) and not (pod.get("spec") or {}).get("nodeName"):
                await self._force_delete(pod, "PodGC: unscheduled pod is terminating")

    async def _node_exists(self, name: str) -> bool:
        try:
            await self.nodes_api.get(name)
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return False
            raise
        return True

    async def _force_delete(self, pod: Object, reason_message: str | None) -> None:
        """Mark a live pod ``Failed`` (with why), then delete it with no grace period."""
        namespace, name = meta.namespace_of(pod), meta.name_of(pod)
        try:
            if reason_message is not None and not podcontrol.is_pod_terminal(pod):
                await self._mark_failed(pod, reason_message)
            uid = (pod.get("metadata") or {}).get("uid")
            await self.pods_api.delete(name, namespace=namespace, grace_period_seconds=0,
                                       preconditions={"uid": uid} if uid else None)
        except rest.ApiError as err:
            if rest.is_not_found(err) or rest.is_conflict(err):
                return  # gone already, or a new pod of the same name
            raise

    async def _mark_failed(self, pod: Object, message: str) -> None:
        updated = copy.deepcopy(pod)
        status = updated.setdefault("status", {})
        status["phase"] = "Failed"
        conditions = [c for c in status.get("conditions") or []
                      if c.get("type") != "DisruptionTarget"]
        conditions.append({"type": "DisruptionTarget", "status": "True",
                           "reason": "DeletionByPodGC", "message": message,
                           "lastTransitionTime": self.wall.stamp()})
        status["conditions"] = conditions
        await self.pods_api.update_status(updated)

