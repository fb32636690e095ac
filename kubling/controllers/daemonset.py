"""The DaemonSet controller: one pod on every node that should run one.

A node should run a DaemonSet's pod when the pod's ``nodeName`` (if any), ``nodeSelector``
and required node affinity admit it and every ``NoSchedule``/``NoExecute`` taint of the node
is tolerated — counting the tolerations the controller adds to every daemon pod, as
upstream does: ``not-ready``/``unreachable`` ``NoExecute`` without a time limit (a daemon
is not evicted from a sick node), ``disk-pressure``, ``memory-pressure``, ``pid-pressure``,
``unschedulable`` ``NoSchedule`` (a cordoned node keeps its daemons), and
``network-unavailable`` for ``hostNetwork`` pods. A pod already running where only a
``NoSchedule`` taint is untolerated may stay; an untolerated ``NoExecute`` taint removes it.

Pods are not bound by the controller: each is created with a required node affinity
``matchFields metadata.name In [<node>]`` replacing the template's, and the scheduler binds
it (upstream's ``ScheduleDaemonSetPods``). Until then it counts as being on that node.

One reconcile (upstream ``syncDaemonSet``): build the ControllerRevision history (the
current revision's hash labels new pods), create pods on nodes that lack one and delete
pods on nodes that should not run one, failed pods (with a per-node backoff) and extra
pods; then, for ``RollingUpdate`` and once the cache has caught up, replace old pods —
without surge, deleting up to ``maxUnavailable`` old pods (unavailable ones first); with
``maxSurge``, creating new pods next to old ones and deleting an old pod when its
replacement is available; trim the history to ``revisionHistoryLimit``; write the status.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import deployment_util, history, manager, podcontrol

log = logging.getLogger(__name__)

DAEMONSETS = rest.lookup("apps/v1", "daemonsets")
NODES = rest.lookup("v1", "nodes")
PODS = podcontrol.PODS

HASH_LABEL = history.CONTROLLER_REVISION_HASH_LABEL
TEMPLATE_GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
TEMPLATE_GENERATION_LABEL = "pod-template-generation"
#: Upstream's ``BurstReplicas``: at most this many creations (deletions) per pass.
BURST_REPLICAS = 250
_BACKOFF_INITIAL = 1.0
_BACKOFF_MAX = 900.0

_OPERATORS = {
    "In": labels.Operator.IN, "NotIn": labels.Operator.NOT_IN,
    "Exists": labels.Operator.EXISTS, "DoesNotExist": labels.Operator.DOES_NOT_EXIST,
    "Gt": labels.Operator.GREATER_THAN, "Lt": labels.Operator.LESS_THAN,
}


# -- which nodes --------------------------------------------------------------------------


def _toleration(key: str, effect: str) -> Object:
    return {"key": key, "operator": "Exists", "effect": effect}


def daemon_tolerations(spec: Object) -> list[Object]:
    """The pod's tolerations with the DaemonSet defaults added or replacing equal ones
    (upstream ``AddOrUpdateDaemonPodTolerations``)."""
    defaults = [_toleration("node.kubernetes.io/not-ready", "NoExecute"),
                _toleration("node.kubernetes.io/unreachable", "NoExecute"),
                _toleration("node.kubernetes.io/disk-pressure", "NoSchedule"),
                _toleration("node.kubernetes.io/memory-pressure", "NoSchedule"),
                _toleration("node.kubernetes.io/pid-pressure", "NoSchedule"),
                _toleration("node.kubernetes.io/unschedulable", "NoSchedule")]
    if spec.get("hostNetwork"):
        defaults.append(_toleration("node.kubernetes.io/network-unavailable", "NoSchedule"))
    tolerations = [dict(t) for t in spec.get("tolerations") or []]

    def same(a: Object, b: Object) -> bool:
        return all((a.get(k) or "") == (b.get(k) or "")
                   for k in ("key", "operator", "value", "effect"))

    for default in defaults:
        replaced = False
        for i, existing in enumerate(tolerations):
            if same(existing, default):
                tolerations[i] = default
                replaced = True
        if not replaced:
            tolerations.append(default)
    return tolerations


def _requirements_match(requirements: Iterable[Object], values: dict[str, str]) -> bool:
    for requirement in requirements:
        op = _OPERATORS.get(str(requirement.get("operator")))
        if op is None:
            return False
        term = labels.Requirement(str(requirement.get("key") or ""), op,
                                  tuple(str(v) for v in requirement.get("values") or []))
        if not term.matches(values):
            return False
    return True


def node_affinity_matches(spec: Object, node: Object) -> bool:
    """``nodeSelector`` and the required node affinity (upstream ``GetRequiredNodeAffinity``):
    terms are ORed, a term's requirements ANDed, an empty term matches nothing."""
    node_labels = meta.labels_of(node)
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node_labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    fields = {"metadata.name": meta.name_of(node)}
    for term in required.get("nodeSelectorTerms") or []:
        expressions = term.get("matchExpressions") or []
        match_fields = term.get("matchFields") or []
        if not expressions and not match_fields:
            continue
        if (_requirements_match(expressions, node_labels)
                and _requirements_match(match_fields, fields)):
            return True
    return False


def should_run(node: Object, ds: Object) -> tuple[bool, bool]:
    """(should a new daemon pod go here, may an existing one stay): upstream
    ``NodeShouldRunDaemonPod``."""
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    if spec.get("nodeName") and spec["nodeName"] != meta.name_of(node):
        return False, False
    if not node_affinity_matches(spec, node):
        return False, False
    tolerations = daemon_tolerations(spec)
    untolerated = [t for t in (node.get("spec") or {}).get("taints") or []
                   if t.get("effect") in ("NoSchedule", "NoExecute")
                   and not any(podcontrol.tolerates(tol, t) for tol in tolerations)]
    if untolerated:
        return False, not any(t.get("effect") == "NoExecute" for t in untolerated)
    return True, True


def target_node(pod: Object) -> str:
    """The node a daemon pod is on, or is for while unscheduled (``GetTargetNodeName``)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for field in term.get("matchFields") or []:
            values = field.get("values") or []
            if (field.get("key") == "metadata.name" and field.get("operator") == "In"
                    and len(values) == 1):
                return str(values[0])
    return ""


def bind_to_node(spec: Object, node_name: str) -> None:
    """Replace the required node affinity with ``metadata.name In [node]``
    (upstream ``ReplaceDaemonSetPodNodeNameNodeAffinity``)."""
    term = {"matchFields": [{"key": "metadata.name", "operator": "In",
                             "values": [node_name]}]}
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {
        "nodeSelectorTerms": [term]}


def _oldest_first(pods: list[Object]) -> list[Object]:
    """Scheduled pods first, then by creation time and name (``podByCreationTimestampAndPhase``)."""
    return sorted(pods, key=lambda p: (
        not (p.get("spec") or {}).get("nodeName"),
        str(meta.metadata(p).get("creationTimestamp") or ""), meta.name_of(p)))


def template_generation(ds: Object) -> str | None:
    value = (meta.metadata(ds).get("annotations") or {}).get(TEMPLATE_GENERATION_ANNOTATION)
    return str(value) if value is not None else None


def is_updated(pod: Object, hash_: str, generation: str | None) -> bool:
    pod_labels = meta.labels_of(pod)
    return bool((hash_ and pod_labels.get(HASH_LABEL) == hash_)
                or (generation is not None
                    and pod_labels.get(TEMPLATE_GENERATION_LABEL) == generation))


def _spec(ds: Object) -> Object:
    spec = ds.get("spec")
    return spec if isinstance(spec, dict) else {}


def _min_ready(ds: Object) -> int:
    return int(_spec(ds).get("minReadySeconds") or 0)


@dataclasses.dataclass
class _Backoff:
    delay: float
    updated: float


# -- the controller -----------------------------------------------------------------------


class DaemonSetController:
    """Reconciles each DaemonSet (key ``namespace/name``) with the nodes and its pods."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.client = ctx.client
        self.clock = ctx.clock
        self.wall = podcontrol.WallClock(ctx.clock)
        self.recorder: events.EventRecorder = ctx.recorder_for("daemonset-controller")
        self.daemonsets = ctx.informers.informer(DAEMONSETS)
        self.pods = ctx.informers.informer(PODS)
        self.nodes = ctx.informers.informer(NODES)
        self.revisions = ctx.informers.informer(history.CONTROLLER_REVISIONS)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="daemonset",
                                                                   clock=ctx.clock)
        # Two records, so that recording deletions does not reset awaited creations.
        self.creations = podcontrol.Expectations(ctx.clock)
        self.deletions = podcontrol.Expectations(ctx.clock)
        self._failed_backoff: dict[str, _Backoff] = {}
        self.daemonsets.add_event_handler(on_add=self._enqueue,
                                          on_update=lambda old, new: self._enqueue(new),
                                          on_delete=self._enqueue)
        self.pods.add_event_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                    on_delete=self._pod_deleted)
        self.nodes.add_event_handler(on_add=self._node_added, on_update=self._node_updated,
                                     on_delete=self._node_added)
        self.revisions.add_event_handler(on_add=self._revision_changed,
                                         on_update=lambda old, new: self._revision_changed(new),
                                         on_delete=self._revision_changed)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    # -- handlers: they only enqueue (and note what the cache has caught up with) ---------
    def _enqueue(self, ds: Object) -> None:
        self.queue.add(informer.key_of(ds))

    def _owner_key(self, obj: Object) -> str | None:
        owner = podcontrol.resolve_controller_ref(
            self.daemonsets.indexer, meta.namespace_of(obj), podcontrol.controller_of(obj),
            "DaemonSet")
        return None if owner is None else informer.key_of(owner)

    def _enqueue_selecting(self, obj: Object) -> None:
        namespace = meta.namespace_of(obj)
        for ds in self.daemonsets.indexer.by_index(informer.NAMESPACE_INDEX, namespace):
            if history.selector_of(ds).matches(meta.labels_of(obj)):
                self._enqueue(ds)

    def _pod_added(self, pod: Object) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.creations.creation_observed(key)
            if podcontrol.is_terminating(pod):
                self.deletions.deletion_observed(key, podcontrol.uid_of(pod))
            self.queue.add(key)
        elif podcontrol.controller_of(pod) is None:
            self._enqueue_selecting(pod)

    def _pod_updated(self, old: Object, new: Object) -> None:
        key, old_key = self._owner_key(new), self._owner_key(old)
        if old_key is not None and old_key != key:
            self.queue.add(old_key)
        if key is not None:
            if podcontrol.is_terminating(new):
                self.deletions.deletion_observed(key, podcontrol.uid_of(new))
            self.queue.add(key)
            ds = self.daemonsets.indexer.get(key) or {}
            if (_min_ready(ds) and not podcontrol.is_pod_ready(old)
                    and podcontrol.is_pod_ready(new)):
                self.queue.add_after(key, _min_ready(ds) + 1)
        elif podcontrol.controller_of(new) is None and meta.labels_of(old) != meta.labels_of(new):
            self._enqueue_selecting(new)

    def _pod_deleted(self, pod: Object) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.deletions.deletion_observed(key, podcontrol.uid_of(pod))
            self.queue.add(key)

    def _node_added(self, node: Object) -> None:
        for ds in self.daemonsets.indexer.list():
            self._enqueue(ds)

    def _node_updated(self, old: Object, new: Object) -> None:
        for ds in self.daemonsets.indexer.list():
            if should_run(old, ds) != should_run(new, ds):
                self._enqueue(ds)

    def _revision_changed(self, revision: Object) -> None:
        key = self._owner_key(revision)
        if key is not None:
            self.queue.add(key)

    # -- reconcile ------------------------------------------------------------------------
    def _satisfied(self, key: str) -> bool:
        return self.creations.satisfied(key) and self.deletions.satisfied(key)

    async def reconcile(self, key: str) -> float | None:
        cached = self.daemonsets.indexer.get(key)
        if cached is None:
            self.creations.forget(key)
            self.deletions.forget(key)
            return None
        if podcontrol.is_terminating(cached):
            return None
        ds = copy.deepcopy(cached)
        ds.setdefault("apiVersion", "apps/v1")
        ds.setdefault("kind", "DaemonSet")
        sync = _Sync(self, key, ds)
        await sync.load()
        current, old = await sync.construct_history()
        hash_ = meta.labels_of(current).get(HASH_LABEL, "")
        if not self._satisfied(key):
            await sync.write_status(hash_, observed=False)
            return sync.requeue_after
        try:
            await sync.manage(hash_)
            if self._satisfied(key) and (_spec(ds).get("updateStrategy") or {}).get(
                    "type", "RollingUpdate") == "RollingUpdate":
                await sync.rolling_update(hash_)
            await sync.cleanup_history(old)
        finally:
            await sync.write_status(hash_, observed=True)
        return sync.requeue_after

    # -- failed-pod backoff (upstream's ``failedPodsBackoff``) ------------------------------
    def in_backoff(self, key: str) -> float | None:
        entry = self._failed_backoff.get(key)
        if entry is None or self.clock.monotonic() - entry.updated >= entry.delay:
            return None
        return entry.delay

    def next_backoff(self, key: str) -> None:
        now = self.clock.monotonic()
        entry = self._failed_backoff.get(key)
        if entry is None or now - entry.updated > 2 * _BACKOFF_MAX:
            self._failed_backoff[key] = _Backoff(_BACKOFF_INITIAL, now)
        else:
            entry.delay = min(entry.delay * 2, _BACKOFF_MAX)
            entry.updated = now


class _Sync:
    """One pass over one DaemonSet: the set, the nodes and its pods by node."""

    def __init__(self, controller: DaemonSetController, key: str, ds: Object) -> None:
        self.c = controller
        self.key = key
        self.ds = ds
        self.namespace = meta.namespace_of(ds)
        self.name = meta.name_of(ds)
        self.nodes = sorted(controller.nodes.indexer.list(), key=meta.name_of)
        self.by_node: dict[str, list[Object]] = {}
        self.collisions: int | None = (ds.get("status") or {}).get("collisionCount")
        self.requeue_after: float | None = None

    def _requeue(self, delay: float) -> None:
        if self.requeue_after is None or delay < self.requeue_after:
            self.requeue_after = delay

    async def load(self) -> None:
        """Claim the pods and map them to their nodes (``getNodesToDaemonPods``)."""
        selector = history.selector_of(self.ds)
        pods = await podcontrol.RefManager(
            self.c.client.resource(PODS), self.ds, selector=selector,
            owner_ref=podcontrol.controller_ref(self.ds, api_version="apps/v1",
                                                kind="DaemonSet"),
            recheck=podcontrol.owner_recheck(self.c.client.resource(DAEMONSETS), self.ds),
        ).claim(self.c.pods.indexer.by_index(informer.NAMESPACE_INDEX, self.namespace))
        for pod in pods:
            if podcontrol.phase_of(pod) in ("Succeeded", "Failed") and \
                    podcontrol.is_terminating(pod):
                continue
            node = target_node(pod)
            if node:
                self.by_node.setdefault(node, []).append(pod)

    # -- history --------------------------------------------------------------------------
    async def construct_history(self) -> tuple[Object, list[Object]]:
        """The current revision (made or renumbered as needed) and the older ones."""
        resource = self.c.client.resource(history.CONTROLLER_REVISIONS)
        revisions = await podcontrol.RefManager(
            resource, self.ds, selector=history.selector_of(self.ds),
            owner_ref=podcontrol.controller_ref(self.ds, api_version="apps/v1",
                                                kind="DaemonSet"),
            recheck=podcontrol.owner_recheck(self.c.client.resource(DAEMONSETS), self.ds),
        ).claim(self.c.revisions.indexer.by_index(informer.NAMESPACE_INDEX, self.namespace))
        data = history.template_patch(self.ds)
        current = [r for r in revisions if history.same_data(r, {"data": data})]
        old = [r for r in revisions if not history.same_data(r, {"data": data})]
        number = max((history.revision_number(r) for r in old), default=0) + 1
        if not current:
            template = _spec(self.ds).get("template") or {}

            def make(count: int | None) -> Object:
                return history.new_revision(
                    self.ds, kind="DaemonSet", data=data, number=number,
                    hash_label=HASH_LABEL, hash_=deployment_util.compute_hash(template, count))

            cur, self.collisions = await history.create_revision(
                self.c.client, self.ds, make, self.collisions)
            return cur, old
        cur = await self._dedup(history.sort_revisions(current))
        if history.revision_number(cur) < number:
            cur = await resource.patch(meta.name_of(cur), {"revision": number},
                                       namespace=self.namespace)
        return cur, old

    async def _dedup(self, current: list[Object]) -> Object:
        """Equal revisions (a race, or an old controller): keep the newest, move the pods
        of the others onto its hash, delete the others."""
        keep = current[-1]
        keep_hash = meta.labels_of(keep).get(HASH_LABEL, meta.name_of(keep))
        pods = self.c.client.resource(PODS)
        revisions = self.c.client.resource(history.CONTROLLER_REVISIONS)
        for duplicate in current[:-1]:
            dup_hash = meta.labels_of(duplicate).get(HASH_LABEL)
            for node_pods in self.by_node.values():
                for pod in node_pods:
                    if dup_hash and meta.labels_of(pod).get(HASH_LABEL) == dup_hash:
                        await pods.patch(meta.name_of(pod),
                                         {"metadata": {"labels": {HASH_LABEL: keep_hash}}},
                                         namespace=self.namespace)
            await revisions.delete(meta.name_of(duplicate), namespace=self.namespace)
        return keep

    async def cleanup_history(self, old: list[Object]) -> None:
        limit = int(_spec(self.ds).get("revisionHistoryLimit") or 0)
        to_kill = len(old) - limit
        if to_kill <= 0:
            return
        live = {meta.labels_of(p).get(HASH_LABEL) for ps in self.by_node.values() for p in ps}
        resource = self.c.client.resource(history.CONTROLLER_REVISIONS)
        for revision in history.sort_revisions(old):
            if to_kill <= 0:
                break
            if meta.labels_of(revision).get(HASH_LABEL) in live:
                continue
            try:
                await resource.delete(meta.name_of(revision), namespace=self.namespace)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise
            to_kill -= 1

    # -- pods -----------------------------------------------------------------------------
    async def manage(self, hash_: str) -> None:
        """Create missing daemon pods, delete misplaced, failed and extra ones."""
        to_create: list[str] = []
        to_delete: list[Object] = []
        surge = self._allows_surge()
        for node in self.nodes:
            creates, deletes = self._pods_for_node(node, hash_, surge)
            to_create += creates
            to_delete += deletes
        # Unscheduled pods meant for nodes that are gone would never be scheduled.
        known = {meta.name_of(n) for n in self.nodes}
        for node_name, pods in self.by_node.items():
            if node_name not in known:
                to_delete += [p for p in pods if not (p.get("spec") or {}).get("nodeName")
                              and not podcontrol.is_terminating(p)]
        await self.sync_nodes(to_delete, to_create, hash_)

    def _allows_surge(self) -> bool:
        strategy = _spec(self.ds).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return False
        surge = (strategy.get("rollingUpdate") or {}).get("maxSurge")
        return deployment_util.scaled_value(surge, 1, round_up=True) > 0

    def _pods_for_node(self, node: Object, hash_: str,
                       surge: bool) -> tuple[list[str], list[Object]]:
        """Upstream ``podsShouldBeOnNode``: what to create and delete for one node."""
        name = meta.name_of(node)
        run, keep = should_run(node, self.ds)
        pods = self.by_node.get(name, [])
        if run and not pods:
            return [name], []
        if not keep:
            return [], [p for p in pods if not podcontrol.is_terminating(p)]
        to_delete: list[Object] = []
        running: list[Object] = []
        for pod in pods:
            if podcontrol.is_terminating(pod):
                continue
            phase = podcontrol.phase_of(pod)
            if phase == "Failed":
                backoff_key = f"{podcontrol.uid_of(self.ds)}/{name}"
                delay = self.c.in_backoff(backoff_key)
                if delay is not None:
                    self._requeue(delay)
                    continue
                self.c.next_backoff(backoff_key)
                self.c.recorder.record(
                    self.ds, events.WARNING, "FailedDaemonPod",
                    f"Found failed daemon pod {self.namespace}/{meta.name_of(pod)} on node "
                    f"{name}, will try to kill it")
                to_delete.append(pod)
            elif phase == "Succeeded":
                to_delete.append(pod)
            else:
                running.append(pod)
        running = _oldest_first(running)
        if not surge:
            return [], to_delete + running[1:]
        if len(running) <= 1:
            return ([name] if not running and run else []), to_delete
        # Surging: keep the oldest new pod and, while it is not yet available, the oldest
        # old pod if that one is ready.
        newest: Object | None = None
        oldest_old: Object | None = None
        for pod in running:
            if meta.labels_of(pod).get(HASH_LABEL) == hash_:
                if newest is None:
                    newest = pod
                    continue
            elif oldest_old is None:
                oldest_old = pod
                continue
            to_delete.append(pod)
        if newest is not None and oldest_old is not None and (
                not podcontrol.is_pod_ready(oldest_old)
                or podcontrol.is_pod_available(newest, _min_ready(self.ds), self.c.wall.now())):
            to_delete.append(oldest_old)
        return [], to_delete

    def _updated_on(self, pods: list[Object], hash_: str) -> tuple[Object | None, Object | None,
                                                                   bool]:
        """(new pod, old pod, ok) on one node; not ok when either kind is there twice."""
        new: Object | None = None
        old: Object | None = None
        generation = template_generation(self.ds)
        for pod in pods:
            if podcontrol.is_terminating(pod):
                continue
            if is_updated(pod, hash_, generation):
                if new is not None:
                    return None, None, False
                new = pod
            else:
                if old is not None:
                    return None, None, False
                old = pod
        return new, old, True

    async def rolling_update(self, hash_: str) -> None:
        """Upstream ``rollingUpdate``: replace old pods within maxUnavailable / maxSurge."""
        by_node = dict(self.by_node)
        desired = 0
        for node in self.nodes:
            if should_run(node, self.ds)[0]:
                desired += 1
                by_node.setdefault(meta.name_of(node), [])
        rolling = (_spec(self.ds).get("updateStrategy") or {}).get("rollingUpdate") or {}
        max_surge = deployment_util.scaled_value(rolling.get("maxSurge"), desired, round_up=True)
        max_unavailable = deployment_util.scaled_value(rolling.get("maxUnavailable"), desired,
                                                       round_up=True)
        if max_surge == 0 and max_unavailable == 0:
            max_unavailable = 1
        now = self.c.wall.now()
        min_ready = _min_ready(self.ds)

        def available(pod: Object) -> bool:
            return podcontrol.is_pod_available(pod, min_ready, now)

        if max_surge == 0:
            unavailable = 0
            replace: list[Object] = []
            candidates: list[Object] = []
            for _, pods in sorted(by_node.items()):
                new, old, ok = self._updated_on(pods, hash_)
                if not ok or (new is None) == (old is None):
                    unavailable += 1  # for manage to sort out
                elif new is not None:
                    unavailable += 0 if available(new) else 1
                elif old is not None and not available(old):
                    replace.append(old)
                    unavailable += 1
                elif old is not None and unavailable < max_unavailable:
                    candidates.append(old)
            budget = min(max(max_unavailable - unavailable, 0), len(candidates))
            await self.sync_nodes(replace + candidates[:budget], [], hash_)
            return
        surged = 0
        old_to_delete: list[Object] = []
        allowed: list[str] = []
        candidate_nodes: list[str] = []
        for node_name, pods in sorted(by_node.items()):
            new, old, ok = self._updated_on(pods, hash_)
            if not ok:
                surged += 1
            elif old is None:
                continue
            elif new is None:
                if not available(old):
                    allowed.append(node_name)
                elif surged < max_surge:
                    candidate_nodes.append(node_name)
            elif not available(new):
                surged += 1
            else:
                old_to_delete.append(old)
        budget = min(max(max_surge - surged, 0), len(candidate_nodes))
        await self.sync_nodes(old_to_delete, allowed + candidate_nodes[:budget], hash_)

    def _pod_template(self, hash_: str) -> Object:
        """``CreatePodTemplate``: default tolerations, the hash (and generation) labels."""
        template = copy.deepcopy(_spec(self.ds).get("template") or {})
        spec = template.setdefault("spec", {})
        spec["tolerations"] = daemon_tolerations(spec)
        template_labels = template.setdefault("metadata", {}).setdefault("labels", {})
        generation = template_generation(self.ds)
        if generation is not None:
            template_labels[TEMPLATE_GENERATION_LABEL] = generation
        if hash_:
            template_labels[HASH_LABEL] = hash_
        return template

    async def sync_nodes(self, to_delete: list[Object], to_create: list[str],
                         hash_: str) -> None:
        """Create a pod on each of ``to_create``, delete ``to_delete``; expectations first."""
        to_create, to_delete = to_create[:BURST_REPLICAS], to_delete[:BURST_REPLICAS]
        if not to_create and not to_delete:
            return
        self.c.creations.expect_creations(self.key, len(to_create))
        self.c.deletions.expect_deletions(self.key, [podcontrol.uid_of(p) for p in to_delete])
        template = self._pod_template(hash_)
        owner_ref = podcontrol.controller_ref(self.ds, api_version="apps/v1", kind="DaemonSet")
        pods = self.c.client.resource(PODS)
        nodes = iter(to_create)
        attempted = 0

        async def create_one() -> None:
            nonlocal attempted
            attempted += 1
            pod = podcontrol.pod_from_template(template, namespace=self.namespace,
                                               generate_name=f"{self.name}-",
                                               owner_ref=owner_ref)
            bind_to_node(pod["spec"], next(nodes))
            try:
                created = await pods.create(pod, namespace=self.namespace)
            except rest.ApiError as err:
                self.c.creations.creation_observed(self.key)
                if podcontrol.namespace_terminating(err):
                    return
                self.c.recorder.record(self.ds, events.WARNING, "FailedCreate",
                                       f"Error creating: {err.message}")
                raise
            self.c.recorder.record(self.ds, events.NORMAL, "SuccessfulCreate",
                                   f"Created pod: {meta.name_of(created)}")

        async def delete_one(pod: Object) -> None:
            uid = podcontrol.uid_of(pod)
            try:
                await pods.delete(meta.name_of(pod), namespace=self.namespace,
                                  preconditions={"uid": uid})
            except rest.ApiError as err:
                self.c.deletions.deletion_observed(self.key, uid)
                if rest.is_not_found(err):
                    return
                self.c.recorder.record(self.ds, events.WARNING, "FailedDelete",
                                       f"Error deleting: {err.message}")
                raise
            self.c.recorder.record(self.ds, events.NORMAL, "SuccessfulDelete",
                                   f"Deleted pod: {meta.name_of(pod)}")

        _, failure = await podcontrol.slow_start_batch(len(to_create), 1, create_one)
        for _ in range(len(to_create) - attempted):
            self.c.creations.creation_observed(self.key)  # never tried: not awaited
        results = await asyncio.gather(*(delete_one(p) for p in to_delete),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                failure = failure or result
        if failure is not None:
            raise failure

    # -- status ---------------------------------------------------------------------------
    async def write_status(self, hash_: str, *, observed: bool) -> None:
        """Upstream ``updateDaemonSetStatus``, from the pods the pass started with."""
        counts: dict[str, Any] = dict.fromkeys(
            ("desiredNumberScheduled", "currentNumberScheduled", "numberMisscheduled",
             "numberReady", "updatedNumberScheduled", "numberAvailable"), 0)
        now = self.c.wall.now()
        generation = template_generation(self.ds)
        for node in self.nodes:
            run, _ = should_run(node, self.ds)
            pods = self.by_node.get(meta.name_of(node), [])
            if not run:
                counts["numberMisscheduled"] += 1 if pods else 0
                continue
            counts["desiredNumberScheduled"] += 1
            if not pods:
                continue
            counts["currentNumberScheduled"] += 1
            pod = _oldest_first(pods)[0]
            if podcontrol.is_pod_ready(pod):
                counts["numberReady"] += 1
                if podcontrol.is_pod_available(pod, _min_ready(self.ds), now):
                    counts["numberAvailable"] += 1
            if is_updated(pod, hash_, generation):
                counts["updatedNumberScheduled"] += 1
        counts["numberUnavailable"] = counts["desiredNumberScheduled"] - counts["numberAvailable"]
        old = self.ds.get("status") or {}
        generation_now = meta.metadata(self.ds).get("generation") or 0
        if observed:
            counts["observedGeneration"] = generation_now
        if self.collisions is not None:
            counts["collisionCount"] = self.collisions
        if _min_ready(self.ds) and counts["numberReady"] != counts["numberAvailable"]:
            self._requeue(float(_min_ready(self.ds)))
        if all(old.get(k, 0) == v for k, v in counts.items()):
            return
        try:
            await self.c.client.resource(DAEMONSETS).patch(
                self.name, {"status": counts}, namespace=self.namespace, subresource="status")
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
