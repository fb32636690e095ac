"""The disruption controller: the status of every PodDisruptionBudget.

Upstream's ``pkg/controller/disruption``. For a budget it counts the pods its selector
matches (a missing selector matches none, ``{}`` all) and works out:

- ``expectedPods``: with ``maxUnavailable`` or a percentage ``minAvailable``, the replicas
  the pods' controllers want (a ReplicaSet's Deployment, a ReplicaSet, a
  ReplicationController, a StatefulSet; another scalable kind through its ``scale``
  subresource), each controller once; with an integer ``minAvailable``, the pods there are;
- ``desiredHealthy``: ``minAvailable`` (a percentage of the expected pods, rounded up), or
  the expected pods less ``maxUnavailable``;
- ``currentHealthy``: pods that are Ready, not being deleted, and not recently evicted
  (the eviction subresource records them in ``disruptedPods``; an entry stands until the
  pod's deletion is seen, or two minutes pass);
- ``disruptionsAllowed``: healthy minus desired, never below 0, and 0 while no pod is
  expected, so a budget whose pods have not appeared yet protects them when they do.

The ``DisruptionAllowed`` condition says ``SufficientPods`` or ``InsufficientPods``; when
the numbers cannot be worked out (a pod whose controller is gone) the controller fails safe:
no disruptions allowed, reason ``SyncFailed``. ``observedGeneration`` tells the eviction
subresource the status is current.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import manager, podcontrol

log = logging.getLogger(__name__)

PDBS = rest.lookup("policy/v1", "poddisruptionbudgets")
PODS = rest.lookup("v1", "pods")
DEPLOYMENTS = rest.lookup("apps/v1", "deployments")
REPLICA_SETS = rest.lookup("apps/v1", "replicasets")
REPLICATION_CONTROLLERS = rest.lookup("v1", "replicationcontrollers")
STATEFUL_SETS = rest.lookup("apps/v1", "statefulsets")

CONDITION = "DisruptionAllowed"
SUFFICIENT_PODS = "SufficientPods"
INSUFFICIENT_PODS = "InsufficientPods"
SYNC_FAILED = "SyncFailed"
#: How long an eviction's ``disruptedPods`` entry waits for the pod's deletion to be seen.
DELETION_TIMEOUT = 120.0


class SyncError(Exception):
    """The budget's numbers cannot be worked out; the controller fails safe."""


def scaled_value(value: Any, total: int) -> int:
    """An IntOrString against ``total``: ints as they are, ``"N%"`` rounded up."""
    if isinstance(value, bool):
        raise SyncError(f"invalid value {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("%") and text[:-1].isdigit():
            return math.ceil(int(text[:-1]) * total / 100)
        if text.isdigit():
            return int(text)
    raise SyncError(f"invalid value for IntOrString: {value!r}")


class DisruptionController:
    """Keeps the status of PodDisruptionBudgets (see the module docstring)."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.client = ctx.client
        self.pdbs_api = ctx.client.resource(PDBS)
        self.wall = podcontrol.WallClock(ctx.clock)
        self.recorder: events.EventRecorder = ctx.recorder_for("controllermanager")
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="disruption",
                                                                   clock=ctx.clock)
        self.pdbs = ctx.informers.informer(PDBS)
        self.pods = ctx.informers.informer(PODS)
        self.deployments = ctx.informers.informer(DEPLOYMENTS)
        self.replica_sets = ctx.informers.informer(REPLICA_SETS)
        self.replication_controllers = ctx.informers.informer(REPLICATION_CONTROLLERS)
        self.stateful_sets = ctx.informers.informer(STATEFUL_SETS)
        self.pdbs.add_event_handler(on_add=self._enqueue,
                                    on_update=lambda old, new: self._enqueue(new),
                                    on_delete=self._enqueue)
        self.pods.add_event_handler(on_add=self._pod_changed,
                                    on_update=lambda old, new: self._pod_changed(old, new),
                                    on_delete=self._pod_changed)
        for source in (self.deployments, self.replica_sets, self.replication_controllers,
                       self.stateful_sets):
            source.add_event_handler(on_update=self._scale_changed)

    # -- handlers (enqueue only) ------------------------------------------------------
    def _enqueue(self, pdb: Object) -> None:
        self.queue.add(informer.key_of(pdb))

    def _pod_changed(self, *pods: Object) -> None:
        namespace = meta.namespace_of(pods[0])
        for pdb in self.pdbs.indexer.by_index(informer.NAMESPACE_INDEX, namespace):
            try:
                selector = labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
            except labels.SelectorError:
                continue
            if any(selector.matches(meta.labels_of(p)) for p in pods):
                self._enqueue(pdb)

    def _scale_changed(self, old: Object, new: Object) -> None:
        if podcontrol.replicas_of(old) != podcontrol.replicas_of(new):
            for pdb in self.pdbs.indexer.by_index(informer.NAMESPACE_INDEX,
                                                  meta.namespace_of(new)):
                self._enqueue(pdb)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    # -- reconcile --------------------------------------------------------------------
    async def reconcile(self, key: str) -> float | None:
        pdb = self.pdbs.indexer.get(key)
        if pdb is None or (pdb.get("metadata") or {}).get("deletionTimestamp"):
            return None
        try:
            selector = labels.from_label_selector((pdb.get("spec") or {}).get("selector"))
        except labels.SelectorError as err:
            await self._fail_safe(pdb, f"invalid selector: {err}")
            return None
        pods = [p for p in self.pods.indexer.by_index(informer.NAMESPACE_INDEX,
                                                      meta.namespace_of(pdb))
                if selector.matches(meta.labels_of(p))]
        if not pods:
            self.recorder.record(pdb, events.NORMAL, "NoPods", "No matching pods found")
        try:
            expected, desired = await self._expected_and_desired(pdb, pods, selector)
        except SyncError as err:
            await self._fail_safe(pdb, str(err))
            return None
        disrupted, recheck = self._disrupted_pods(pdb, pods)
        healthy = self._count_healthy(pods, disrupted)
        allowed = healthy - desired if expected > 0 else 0
        status = copy.deepcopy(pdb.get("status") or {})
        status.update({
            "observedGeneration": (pdb.get("metadata") or {}).get("generation", 0),
            "disruptionsAllowed": max(allowed, 0),
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
        })
        if disrupted:
            status["disruptedPods"] = disrupted
        else:
            status.pop("disruptedPods", None)
        sufficient = status["disruptionsAllowed"] > 0
        self._set_condition(status, pdb, "True" if sufficient else "False",
                            SUFFICIENT_PODS if sufficient else INSUFFICIENT_PODS, "")
        await self._write_status(pdb, status)
        return recheck

    async def _expected_and_desired(self, pdb: Object, pods: list[Object],
                                    selector: labels.Selector) -> tuple[int, int]:
        spec = pdb.get("spec") or {}
        max_unavailable = spec.get("maxUnavailable")
        min_available = spec.get("minAvailable")
        if max_unavailable is not None:
            expected = await self._expected_scale(pdb, pods, selector)
            return expected, max(0, expected - scaled_value(max_unavailable, expected))
        if isinstance(min_available, int) and not isinstance(min_available, bool):
            return len(pods), min_available
        if min_available is not None:
            expected = await self._expected_scale(pdb, pods, selector)
            return expected, scaled_value(min_available, expected)
        return 0, 0

    async def _expected_scale(self, pdb: Object, pods: list[Object],
                              selector: labels.Selector) -> int:
        """The replicas the pods' controllers want, counting each controller once."""
        scales: dict[str, int] = {}
        unmanaged = []
        for pod in pods:
            ref = podcontrol.controller_of(pod)
            if ref is None:
                unmanaged.append(meta.name_of(pod))
                continue
            if ref.get("uid") in scales:
                continue
            found = await self._find_scale(ref, meta.namespace_of(pod))
            if found is None:
                message = f'found no controllers for pod "{meta.name_of(pod)}"'
                self.recorder.record(pdb, events.WARNING, "NoControllers", message)
                raise SyncError(message)
            uid, scale = found
            scales[uid] = scale
        if unmanaged:
            self.recorder.record(
                pdb, events.WARNING, "UnmanagedPods",
                f"Pods selected by this PodDisruptionBudget (selector: {selector}) were found "
                "to be unmanaged. As a result, the status of the PDB cannot be calculated "
                "correctly, which may result in undefined behavior. To account for these pods "
                'please set ".spec.minAvailable" field of the PDB to an integer value.')
        return sum(scales.values())

    async def _find_scale(self, ref: Object, namespace: str) -> tuple[str, int] | None:
        """(controller uid, desired replicas) of a pod's controller, if it exists."""
        kind, api_version = ref.get("kind"), ref.get("apiVersion", "")
        group = meta.split_api_version(str(api_version))[0]
        name, uid = str(ref.get("name", "")), str(ref.get("uid", ""))

        def cached(source: informer.Informer, owner_name: str, owner_uid: str) -> Object | None:
            obj = source.indexer.get(f"{namespace}/{owner_name}")
            if obj is None or (obj.get("metadata") or {}).get("uid") != owner_uid:
                return None
            return obj

        if group == "apps" and kind == "ReplicaSet":
            rs = cached(self.replica_sets, name, uid)
            if rs is None:
                return None
            owner = podcontrol.controller_of(rs)
            if owner is not None and owner.get("kind") == "Deployment":
                deployment = cached(self.deployments, str(owner.get("name", "")),
                                    str(owner.get("uid", "")))
                if deployment is None:
                    return None
                return str(owner.get("uid")), podcontrol.replicas_of(deployment)
            return uid, podcontrol.replicas_of(rs)
        sources = {("", "ReplicationController"): self.replication_controllers,
                   ("apps", "StatefulSet"): self.stateful_sets,
                   ("apps", "Deployment"): self.deployments}
        source = sources.get((group, str(kind)))
        if source is not None:
            obj = cached(source, name, uid)
            return None if obj is None else (uid, podcontrol.replicas_of(obj))
        return await self._scale_subresource(str(api_version), str(kind), name, uid, namespace)

    async def _scale_subresource(self, api_version: str, kind: str, name: str, uid: str,
                                 namespace: str) -> tuple[str, int] | None:
        """Any other built-in scalable kind, through its ``scale`` subresource."""
        try:
            rt = rest.lookup_kind(api_version, kind)
        except KeyError:
            return None
        if rt.subresource("scale") is None:
            return None
        try:
            scale = await self.client.resource(rt).get(name, namespace=namespace,
                                                        subresource="scale")
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return None
            raise
        if (scale.get("metadata") or {}).get("uid") not in (None, uid):
            return None
        return uid, podcontrol.replicas_of(scale)

    def _disrupted_pods(self, pdb: Object, pods: list[Object]
                        ) -> tuple[dict[str, str], float | None]:
        """The still-pending evictions, and when the earliest of them expires."""
        recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
        by_name = {meta.name_of(p): p for p in pods}
        now = self.wall.now()
        kept: dict[str, str] = {}
        recheck: float | None = None
        for name, when in recorded.items():
            pod = by_name.get(name)
            if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
                continue  # the deletion was seen
            started = podcontrol.parse_time(when)
            if started is None:
                continue
            expires = started + DELETION_TIMEOUT
            if expires <= now:
                self.recorder.record(pdb, events.WARNING, "NotDeleted",
                                     f"Pod {meta.namespace_of(pod)}/{name} was expected to be "
                                     "deleted but it was not")
                continue
            kept[name] = when
            recheck = min(recheck, expires - now) if recheck is not None else expires - now
        return kept, recheck

    def _count_healthy(self, pods: list[Object], disrupted: dict[str, str]) -> int:
        return sum(1 for p in pods
                   if not (p.get("metadata") or {}).get("deletionTimestamp")
                   and meta.name_of(p) not in disrupted and podcontrol.is_pod_ready(p))

    def _set_condition(self, status: dict[str, Any], pdb: Object, value: str, reason: str,
                       message: str) -> None:
        """``meta.SetStatusCondition``: the transition time moves only with the status."""
        conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
        current = next((c for c in conditions if c.get("type") == CONDITION), None)
        condition = {"type": CONDITION, "status": value, "reason": reason, "message": message,
                     "observedGeneration": (pdb.get("metadata") or {}).get("generation", 0),
                     "lastTransitionTime": self.wall.stamp()}
        if current is not None and current.get("status") == value:
            condition["lastTransitionTime"] = current.get("lastTransitionTime") or \
                condition["lastTransitionTime"]
        status["conditions"] = [condition if c is current else c for c in conditions] \
            if current is not None else [*conditions, condition]

    async def _fail_safe(self, pdb: Object, message: str) -> None:
        status = copy.deepcopy(pdb.get("status") or {})
        status["disruptionsAllowed"] = 0
        self._set_condition(status, pdb, "False", SYNC_FAILED, message)
        await self._write_status(pdb, status)

    async def _write_status(self, pdb: Object, status: dict[str, Any]) -> None:
        if status == (pdb.get("status") or {}):
            return
        updated = copy.deepcopy(pdb)
        updated["status"] = status
        await self.pdbs_api.update_status(updated)
