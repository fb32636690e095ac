"""The node lifecycle controller: notices dead nodes, taints them, and evicts their pods.

Upstream's ``pkg/controller/nodelifecycle`` together with its taint-eviction controller.

**Health.** A kubelet proves it is alive by renewing its Lease in ``kube-node-lease`` and
posting the node's ``Ready`` condition. The controller remembers, by its own clock, when it
last saw either change (never trusting the node's timestamps, which come from another
machine's clock). A node silent for ``node_monitor_grace_period`` (40 s;
``node_startup_grace_period`` before it ever posted status) has its conditions set to
``Unknown`` ("Kubelet stopped posting node status."), and its pods' ``Ready`` set to False,
so endpoints stop sending them traffic.

**Taints.** The node's conditions are mirrored as taints that the scheduler and the eviction
below act on: ``Ready`` False → ``node.kubernetes.io/not-ready``, Unknown →
``node.kubernetes.io/unreachable``, each as ``NoSchedule`` and ``NoExecute``; pressure
conditions → their ``NoSchedule`` taints; ``spec.unschedulable`` →
``node.kubernetes.io/unschedulable:NoSchedule``. When the node reports Ready again they go.

**Eviction.** A pod on a node with ``NoExecute`` taints it does not tolerate is deleted at
once; one that tolerates them all for a while (the API server gives every pod 300 s for
not-ready/unreachable) is deleted when the shortest ``tolerationSeconds`` has passed since
the controller first saw it tainted. Deleted pods get a ``DisruptionTarget`` condition
first, so their owners know why.

**Pacing.** NoSchedule taints go on at once; a new ``NoExecute`` taint waits for its zone's
rate limiter, and none goes on while every zone is fully disrupted — then the controller
assumes it is the one cut off and lifts the ones it set (``node_disruption``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import manager, node_disruption, podcontrol
from kubling.controllers.node_disruption import Transition

log = logging.getLogger(__name__)

NODES = rest.lookup("v1", "nodes")
PODS = rest.lookup("v1", "pods")
LEASES = rest.lookup("coordination.k8s.io/v1", "leases")
LEASE_NAMESPACE = "kube-node-lease"

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
#: condition type → (status that taints, taint key) for the NoSchedule taints.
_CONDITION_TAINTS = (
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
)
_MANAGED_NO_SCHEDULE = frozenset(key for _, _, key in _CONDITION_TAINTS) | {UNSCHEDULABLE}
_MANAGED_NO_EXECUTE = frozenset({NOT_READY, UNREACHABLE})
#: The conditions a silent node's kubelet can no longer vouch for.
_UNKNOWN_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

_POD_INDEX = "nodelifecycle/node"


@dataclasses.dataclass
class _Health:
    """What the controller last saw of a node, and when (its own monotonic clock)."""

    probe: float
    heartbeat: Any = None
    lease_renew: float | None = None
    ready: str | None = None


def _node_of(pod: Object) -> list[str]:
    name = (pod.get("spec") or {}).get("nodeName")
    return [name] if name else []


def toleration_time(pod: Object, taints: list[Object]) -> float | None:
    """Seconds the pod may stay on a node with these NoExecute taints: ``None`` when a taint
    is not tolerated (evict now), ``math.inf`` when tolerated forever."""
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    used: list[Object] = []
    for taint in taints:
        matching = [t for t in tolerations if podcontrol.tolerates(t, taint)]
        if not matching:
            return None
        used += matching
    seconds = [t["tolerationSeconds"] for t in used
               if isinstance(t.get("tolerationSeconds"), int)]
    if not seconds:
        return math.inf
    return float(max(0, min(seconds)))


def no_execute_taints(node: Object) -> list[Object]:
    return [t for t in (node.get("spec") or {}).get("taints") or []
            if t.get("effect") == "NoExecute"]


class NodeLifecycleController:
    """Node health, condition taints and NoExecute eviction (see the module docstring)."""

    def __init__(self, ctx: manager.ControllerContext, *,
                 node_monitor_grace_period: float = 40.0,
                 node_startup_grace_period: float = 60.0,
                 node_monitor_period: float = 5.0,
                 zones: node_disruption.ZoneStates | None = None) -> None:
        self.grace_period = node_monitor_grace_period
        self.startup_grace_period = node_startup_grace_period
        self.monitor_period = node_monitor_period
        self.clock = ctx.clock
        self.wall = podcontrol.WallClock(ctx.clock)
        self.nodes_api = ctx.client.resource(NODES)
        self.pods_api = ctx.client.resource(PODS)
        self.recorder: events.EventRecorder = ctx.recorder_for("node-controller")
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="nodelifecycle",
                                                                   clock=ctx.clock)
        self.nodes = ctx.informers.informer(NODES)
        self.leases = ctx.informers.informer(LEASES, namespace=LEASE_NAMESPACE)
        self.pods = ctx.informers.informer(PODS)
        self.pods.indexer.add_index(_POD_INDEX, _node_of, exist_ok=True)
        self._health: dict[str, _Health] = {}
        self.zones = zones or node_disruption.ZoneStates()
        #: node → seconds until its zone may take another NoExecute taint.
        self._taint_wait: dict[str, float] = {}
        #: pod key → when the controller first saw it on a tainted node (monotonic).
        self._tainted_since: dict[str, float] = {}
        self.nodes.add_event_handler(on_add=self._node_added, on_update=self._node_updated,
                                     on_delete=self._node_added)
        self.leases.add_event_handler(on_add=self._lease_changed,
                                      on_update=lambda old, new: self._lease_changed(new))
        self.pods.add_event_handler(on_add=self._pod_changed,
                                    on_update=lambda old, new: self._pod_changed(new),
                                    on_delete=self._pod_changed)

    # -- handlers (enqueue only) ------------------------------------------------------
    def _node_added(self, node: Object) -> None:
        self.queue.add("node/" + meta.name_of(node))

    def _node_updated(self, old: Object, new: Object) -> None:
        self._node_added(new)
        if no_execute_taints(old) != no_execute_taints(new):
            for key in self.pods.indexer.index_keys(_POD_INDEX, meta.name_of(new)):
                self.queue.add("pod/" + key)

    def _lease_changed(self, lease: Object) -> None:
        self.queue.add("node/" + meta.name_of(lease))

    def _pod_changed(self, pod: Object) -> None:
        self.queue.add("pod/" + informer.key_of(pod))

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    async def reconcile(self, key: str) -> float | None:
        kind, _, name = key.partition("/")
        if kind == "node":
            return await self._reconcile_node(name)
        return await self._reconcile_pod(name)

    # -- node health and taints -------------------------------------------------------
    async def _reconcile_node(self, name: str) -> float | None:
        node = self.nodes.indexer.get(name)
        if node is None:
            self._health.pop(name, None)
            self.zones.forget(name)
            self._disruption_changed(self.zones.refresh())
            return None
        previous_ready = (self._health.get(name) or _Health(0.0)).ready
        grace = self._observe(node)
        health = self._health[name]
        silent_for = self.clock.monotonic() - health.probe
        if silent_for > grace:
            node = await self._mark_unknown(node)
        ready = podcontrol.find_condition(node, "Ready")
        ready_status = ready.get("status") if ready is not None else None
        health.ready = ready_status
        self.zones.observe(name, node_disruption.zone_of(node), ready_status == "True")
        self._disruption_changed(self.zones.refresh())
        if previous_ready == "True" and ready_status not in (None, "True"):
            self.recorder.record(node, events.NORMAL, "NodeNotReady",
                                 f"Node {name} status is now: NodeNotReady")
        await self._update_taints(node)
        if ready_status not in (None, "True"):
            await self._mark_pods_not_ready(name)
        # Look again every monitor period, right when the grace period runs out, and when
        # the zone may take the taint it is waiting for.
        after = self.monitor_period
        if silent_for <= grace:
            after = min(after, grace - silent_for + 0.01)
        wait = self._taint_wait.pop(name, math.inf)
        return min(after, wait + 0.01)

    def _disruption_changed(self, transition: Transition) -> None:
        """Entering or leaving master disruption mode concerns every node: look at each
        again (lifting or allowing NoExecute taints); on leaving, give each a fresh grace
        period, as upstream does."""
        if transition is Transition.NONE:
            return
        if transition is Transition.ENTERED_MASTER_DISRUPTION:
            log.info("Controller detected that all Nodes are not-Ready. "
                     "Entering master disruption mode")
        else:
            log.info("Controller detected that some Nodes are Ready. "
                     "Exiting master disruption mode")
            now = self.clock.monotonic()
            for health in self._health.values():
                health.probe = now
        for name in self.nodes.indexer.keys():
            self.queue.add("node/" + name)

    def _observe(self, node: Object) -> float:
        """Update the node's health record from what it posted; return its grace period."""
        name = meta.name_of(node)
        now = self.clock.monotonic()
        ready = podcontrol.find_condition(node, "Ready")
        saved = self._health.get(name)
        if ready is None:
            grace = self.startup_grace_period
            if saved is None:
                created = podcontrol.parse_time(
                    (node.get("metadata") or {}).get("creationTimestamp"))
                age = self.wall.now() - created if created is not None else 0.0
                saved = self._health[name] = _Health(probe=now - max(0.0, age))
        else:
            grace = self.grace_period
            heartbeat = ready.get("lastHeartbeatTime")
            if saved is None:
                saved = self._health[name] = _Health(probe=now, heartbeat=heartbeat)
            elif saved.heartbeat != heartbeat:
                saved.heartbeat = heartbeat
                saved.probe = now
        lease = self.leases.indexer.get(f"{LEASE_NAMESPACE}/{name}")
        if lease is not None:
            renewed = podcontrol.parse_time((lease.get("spec") or {}).get("renewTime"))
            if renewed is not None and (saved.lease_renew is None
                                        or renewed > saved.lease_renew):
                saved.lease_renew = renewed
                saved.probe = now
        return grace

    async def _mark_unknown(self, node: Object) -> Object:
        updated = copy.deepcopy(node)
        status = updated.setdefault("status", {})
        conditions = status.setdefault("conditions", [])
        stamp = self.wall.stamp()
        changed = False
        for kind in _UNKNOWN_CONDITIONS:
            cond = podcontrol.find_condition(updated, kind)
            if cond is None:
                conditions.append({
                    "type": kind, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": (node.get("metadata") or {}).get("creationTimestamp"),
                    "lastTransitionTime": stamp})
                changed = True
            elif cond.get("status") != "Unknown":
                cond.update({"status": "Unknown", "reason": "NodeStatusUnknown",
                             "message": "Kubelet stopped posting node status.",
                             "lastTransitionTime": stamp})
                changed = True
        if not changed:
            return node
        log.info("node %s: no status for %.0fs; conditions now Unknown", meta.name_of(node),
                 self.grace_period)
        result: Object = await self.nodes_api.update_status(updated)
        return result

    def _desired_taints(self, node: Object) -> list[Object]:
        spec = node.get("spec") or {}
        current = spec.get("taints") or []
        managed = [t for t in current
                   if (t.get("effect") == "NoSchedule" and t.get("key") in _MANAGED_NO_SCHEDULE)
                   or (t.get("effect") == "NoExecute" and t.get("key") in _MANAGED_NO_EXECUTE)]
        keep = [t for t in current if t not in managed]
        wanted: list[tuple[str, str]] = []
        ready = podcontrol.find_condition(node, "Ready")
        for kind, value, key in _CONDITION_TAINTS:
            cond = podcontrol.find_condition(node, kind)
            if cond is not None and cond.get("status") == value:
                wanted.append((key, "NoSchedule"))
        if spec.get("unschedulable"):
            wanted.append((UNSCHEDULABLE, "NoSchedule"))
        if ready is None:
            # Never posted status: leave the readiness taints as they are (the API server
            # adds not-ready at registration), until the startup grace period marks it.
            wanted += [(t["key"], t["effect"]) for t in managed
                       if t.get("key") in (NOT_READY, UNREACHABLE)
                       and (t["key"], t["effect"]) not in wanted]
        elif ready.get("status") == "False":
            wanted.append((NOT_READY, "NoExecute"))
        elif ready.get("status") == "Unknown":
            wanted.append((UNREACHABLE, "NoExecute"))
        result = list(keep)
        for key, effect in wanted:
            existing = next((t for t in managed
                             if t.get("key") == key and t.get("effect") == effect), None)
            if effect == "NoExecute" and self.zones.master_disruption:
                continue  # the controller, not the nodes, may be the one cut off
            if existing is not None:
                result.append(existing)
            elif effect == "NoExecute":
                wait = self.zones.may_taint(node_disruption.zone_of(node),
                                            self.clock.monotonic())
                if wait == 0:
                    result.append({"key": key, "effect": effect,
                                   "timeAdded": self.wall.stamp()})
                elif wait != math.inf:
                    self._taint_wait[meta.name_of(node)] = wait
            else:
                result.append({"key": key, "effect": effect})
        return result

    async def _update_taints(self, node: Object) -> None:
        wanted = self._desired_taints(node)
        current = (node.get("spec") or {}).get("taints") or []
        if _taint_set(wanted) == _taint_set(current):
            return
        updated = copy.deepcopy(node)
        spec = updated.setdefault("spec", {})
        if wanted:
            spec["taints"] = wanted
        else:
            spec.pop("taints", None)
        log.info("node %s: taints now %s", meta.name_of(node),
                 ", ".join(f"{t['key']}:{t['effect']}" for t in wanted) or "none")
        await self.nodes_api.update(updated)

    async def _mark_pods_not_ready(self, node_name: str) -> None:
        """Upstream ``MarkPodsNotReady``: a silent node's pods cannot be vouched for."""
        for pod in self.pods.indexer.by_index(_POD_INDEX, node_name):
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                continue
            ready = podcontrol.find_condition(pod, "Ready")
            if ready is None or ready.get("status") != "True":
                continue
            updated = copy.deepcopy(pod)
            cond = podcontrol.find_condition(updated, "Ready")
            assert cond is not None
            cond.update({"status": "False", "lastTransitionTime": self.wall.stamp()})
            try:
                await self.pods_api.update_status(updated)
            except rest.ApiError as err:
                # Gone, or changed meanwhile: the node's next pass looks at it again.
                if not (rest.is_not_found(err) or rest.is_conflict(err)):
                    raise

    # -- NoExecute eviction -----------------------------------------------------------
    async def _reconcile_pod(self, key: str) -> float | None:
        pod = self.pods.indexer.get(key)
        node_name = (pod.get("spec") or {}).get("nodeName") if pod is not None else None
        node = self.nodes.indexer.get(node_name) if node_name else None
        if pod is None or node is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
            self._tainted_since.pop(key, None)
            return None
        taints = no_execute_taints(node)
        allowed = toleration_time(pod, taints) if taints else math.inf
        if allowed == math.inf:
            self._tainted_since.pop(key, None)
            return None
        now = self.clock.monotonic()
        since = self._tainted_since.setdefault(key, now)
        if allowed is not None and since + allowed > now:
            return since + allowed - now
        await self._evict(pod, node_name or "")
        self._tainted_since.pop(key, None)
        return None

    async def _evict(self, pod: Object, node_name: str) -> None:
        namespace, name = meta.namespace_of(pod), meta.name_of(pod)
        log.info("pod %s/%s: evicting it from node %s (NoExecute taint)", namespace, name,
                 node_name)
        self.recorder.record(pod, events.NORMAL, "TaintManagerEviction",
                             f"Marking for deletion Pod {namespace}/{name}")
        updated = copy.deepcopy(pod)
        status = updated.setdefault("status", {})
        status["conditions"] = [c for c in status.get("conditions") or []
                                if c.get("type") != "DisruptionTarget"]
        status["conditions"].append({
            "type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": self.wall.stamp()})
        uid = (pod.get("metadata") or {}).get("uid")
        try:
            await self.pods_api.update_status(updated)
            await self.pods_api.delete(name, namespace=namespace,
                                       preconditions={"uid": uid} if uid else None)
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise


def _taint_set(taints: list[Object]) -> set[tuple[str, str, str]]:
    return {(str(t.get("key")), str(t.get("effect")), str(t.get("value") or ""))
            for t in taints}
