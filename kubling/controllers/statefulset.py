"""The StatefulSet controller: pods with stable names, storage and an ordered life.

A StatefulSet ``web`` of three replicas owns pods ``web-0``, ``web-1``, ``web-2`` (from
``spec.ordinals.start``), each labelled with its name and index, with ``hostname`` = its
name and ``subdomain`` = ``spec.serviceName``, and, for every ``volumeClaimTemplates``
entry ``data``, a PersistentVolumeClaim ``data-web-<i>`` created before the pod and
mounted through the pod's volume ``data``. Claims outlive their pods: a recreated
``web-1`` finds its old claim again.

As upstream's ``defaultStatefulSetControl``, one reconcile:

1. claims the pods (``<set>-<ordinal>`` matching the selector) and ControllerRevisions;
2. finds the *current* revision (``status.currentRevision``) and the *update* revision
   (the template now), making or renumbering the revision as needed;
3. walks the ordinals in order: deletes failed/succeeded pods, creates missing ones (from
   the current revision below the partition, else the update revision). Under
   ``OrderedReady`` it stops at the first pod it created, or that is not yet Running,
   Ready and available for ``minReadySeconds``; ``Parallel`` goes on (slow-start batches);
4. deletes pods beyond ``replicas`` from the highest ordinal, one at a time under
   ``OrderedReady`` and only when every remaining pod is healthy;
5. for ``RollingUpdate``, deletes the highest-ordinal pod at or above ``partition`` not on
   the update revision (up to ``maxUnavailable`` at once when it is set), waiting for
   unhealthy pods; the deletion makes step 3 recreate it from the update revision.
   ``OnDelete`` leaves that to the user;
6. writes the status and trims revisions beyond ``revisionHistoryLimit`` (never one a pod
   or the status still names).

``persistentVolumeClaimRetentionPolicy`` is enforced with ownerReferences on the claims,
left for the garbage collector to act on: ``whenDeleted: Delete`` points the claim at
the set, ``whenScaled: Delete`` points a scaled-down pod's claim at that pod.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import deployment_util, history, manager, podcontrol

log = logging.getLogger(__name__)

STATEFULSETS = rest.lookup("apps/v1", "statefulsets")
PODS = podcontrol.PODS
CLAIMS = rest.lookup("v1", "persistentvolumeclaims")

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = history.CONTROLLER_REVISION_HASH_LABEL

_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


# -- identity and storage -----------------------------------------------------------------


def parent_and_ordinal(pod_name: str) -> tuple[str, int]:
    """``web-3`` → (``web``, 3); a name without an ordinal gives (``""``, -1)."""
    match = _ORDINAL.match(pod_name)
    if match is None:
        return "", -1
    return match.group(1), int(match.group(2))


def _spec(set_: Object) -> dict[str, Any]:
    spec = set_.get("spec")
    return spec if isinstance(spec, dict) else {}


def start_ordinal(set_: Object) -> int:
    return int((_spec(set_).get("ordinals") or {}).get("start") or 0)


def in_ordinal_range(set_: Object, ordinal: int) -> bool:
    start = start_ordinal(set_)
    return start <= ordinal < start + podcontrol.replicas_of(set_)


def claim_name(template: Object, set_: Object, ordinal: int) -> str:
    return f"{meta.name_of(template)}-{meta.name_of(set_)}-{ordinal}"


def claims_for(set_: Object, ordinal: int) -> dict[str, Object]:
    """The claims the pod at ``ordinal`` mounts, by volume name (``getPersistentVolumeClaims``)."""
    selector_labels = (_spec(set_).get("selector") or {}).get("matchLabels") or {}
    claims: dict[str, Object] = {}
    for template in _spec(set_).get("volumeClaimTemplates") or []:
        claim = copy.deepcopy(template)
        claim.pop("status", None)
        md = meta.metadata(claim)
        md["name"] = claim_name(template, set_, ordinal)
        md["namespace"] = meta.namespace_of(set_)
        md["labels"] = {**(md.get("labels") or {}), **selector_labels}
        claim.update(apiVersion="v1", kind="PersistentVolumeClaim")
        claims[meta.name_of(template)] = claim
    return claims


def new_pod(set_: Object, ordinal: int, revision: str) -> Object:
    """The pod for ``ordinal`` as ``set_``'s template makes it (``newStatefulSetPod``)."""
    name = f"{meta.name_of(set_)}-{ordinal}"
    pod = podcontrol.pod_from_template(
        _spec(set_).get("template") or {}, namespace=meta.namespace_of(set_),
        generate_name=f"{meta.name_of(set_)}-", owner_ref=podcontrol.controller_ref(
            set_, api_version="apps/v1", kind="StatefulSet"))
    md = meta.metadata(pod)
    md.pop("generateName", None)
    md["name"] = name
    md["labels"].update({POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
                         REVISION_LABEL: revision})
    spec = pod["spec"]
    spec["hostname"] = name
    spec["subdomain"] = _spec(set_).get("serviceName") or ""
    claims = claims_for(set_, ordinal)
    volumes = [{"name": volume, "persistentVolumeClaim": {"claimName": meta.name_of(claim)}}
               for volume, claim in claims.items()]
    volumes += [v for v in spec.get("volumes") or [] if v.get("name") not in claims]
    if volumes:
        spec["volumes"] = volumes
    return pod


def identity_matches(set_: Object, pod: Object) -> bool:
    parent, ordinal = parent_and_ordinal(meta.name_of(pod))
    pod_labels = meta.labels_of(pod)
    return (ordinal >= 0 and parent == meta.name_of(set_)
            and meta.namespace_of(pod) == meta.namespace_of(set_)
            and pod_labels.get(POD_NAME_LABEL) == meta.name_of(pod)
            and pod_labels.get(POD_INDEX_LABEL) == str(ordinal))


def revision_of(pod: Object) -> str:
    return meta.labels_of(pod).get(REVISION_LABEL, "")


def is_running_and_ready(pod: Object) -> bool:
    return podcontrol.phase_of(pod) == "Running" and podcontrol.is_pod_ready(pod)


def is_healthy(pod: Object) -> bool:
    return is_running_and_ready(pod) and not podcontrol.is_terminating(pod)


def _claim_refs(set_: Object, pod: Object, claim: Object) -> list[Object]:
    """The claim's ownerReferences under the set's retention policy
    (upstream ``updateClaimOwnerRefForSetAndPod``)."""
    policy = _spec(set_).get("persistentVolumeClaimRetentionPolicy") or {}
    when_deleted = policy.get("whenDeleted") == "Delete"
    when_scaled = policy.get("whenScaled") == "Delete"
    _, ordinal = parent_and_ordinal(meta.name_of(pod))
    scaled_down = not in_ordinal_range(set_, ordinal)
    set_uid = meta.metadata(set_).get("uid")
    pod_uid = meta.metadata(pod).get("uid")
    refs = [r for r in meta.metadata(claim).get("ownerReferences") or []
            if r.get("uid") not in (set_uid, pod_uid)]
    if when_deleted and not (when_scaled and scaled_down):
        refs.append({"apiVersion": "apps/v1", "kind": "StatefulSet",
                     "name": meta.name_of(set_), "uid": set_uid})
    if when_scaled and scaled_down and pod_uid:
        refs.append({"apiVersion": "v1", "kind": "Pod", "name": meta.name_of(pod),
                     "uid": pod_uid})
    return refs


def _same_refs(a: list[Object], b: list[Object]) -> bool:
    return sorted(str(r.get("uid")) for r in a) == sorted(str(r.get("uid")) for r in b)


# -- the controller -----------------------------------------------------------------------


class StatefulSetController:
    """Reconciles each StatefulSet (key ``namespace/name``) with its pods and claims.

    Expectations are kept per pod (``<set key>/<pod name>``): a pod this controller created
    or deleted but the pod informer does not show yet holds the set's next pass back, so a
    lagging cache never makes it create a pod twice or count a deleted one as running.
    """

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.client = ctx.client
        self.recorder: events.EventRecorder = ctx.recorder_for("statefulset-controller")
        self.wall = podcontrol.WallClock(ctx.clock)
        self.sets = ctx.informers.informer(STATEFULSETS)
        self.pods = ctx.informers.informer(PODS)
        self.claims = ctx.informers.informer(CLAIMS)
        self.revisions = ctx.informers.informer(history.CONTROLLER_REVISIONS)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="statefulset",
                                                                   clock=ctx.clock)
        self.expectations = podcontrol.Expectations(ctx.clock)
        #: set key → names of its pods with an expectation recorded.
        self.expecting: dict[str, set[str]] = {}
        self.sets.add_event_handler(on_add=self._enqueue, on_update=self._set_updated,
                                    on_delete=self._enqueue)
        self.pods.add_event_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                    on_delete=self._pod_deleted)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    # -- handlers: they only enqueue (and note what the cache has caught up with) ---------
    def _enqueue(self, set_: Object) -> None:
        self.queue.add(informer.key_of(set_))

    def _set_updated(self, old: Object, new: Object) -> None:
        self._enqueue(new)

    def _owner_key(self, pod: Object) -> str | None:
        owner = podcontrol.resolve_controller_ref(
            self.sets.indexer, meta.namespace_of(pod), podcontrol.controller_of(pod),
            "StatefulSet")
        return None if owner is None else informer.key_of(owner)

    def _enqueue_selecting(self, pod: Object) -> None:
        """An orphan: wake every set that could adopt it."""
        for set_ in self.sets.indexer.by_index(informer.NAMESPACE_INDEX, meta.namespace_of(pod)):
            if history.selector_of(set_).matches(meta.labels_of(pod)):
                self._enqueue(set_)

    def _observe(self, key: str, pod: Object, *, gone: bool = False) -> None:
        pod_key = f"{key}/{meta.name_of(pod)}"
        if gone or podcontrol.is_terminating(pod):
            self.expectations.deletion_observed(pod_key, podcontrol.uid_of(pod))
        else:
            self.expectations.creation_observed(pod_key)

    def _pod_added(self, pod: Object) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self._observe(key, pod)
            self.queue.add(key)
        elif podcontrol.controller_of(pod) is None:
            self._enqueue_selecting(pod)

    def _pod_updated(self, old: Object, new: Object) -> None:
        key = self._owner_key(new)
        old_key = self._owner_key(old)
        if old_key is not None and old_key != key:
            self.queue.add(old_key)
        if key is not None:
            if podcontrol.is_terminating(new):
                self._observe(key, new)
            self.queue.add(key)
            set_ = self.sets.indexer.get(key)
            min_ready = int(_spec(set_ or {}).get("minReadySeconds") or 0)
            if min_ready and not podcontrol.is_pod_ready(old) and podcontrol.is_pod_ready(new):
                self.queue.add_after(key, min_ready + 1)
        elif podcontrol.controller_of(new) is None and meta.labels_of(old) != meta.labels_of(new):
            self._enqueue_selecting(new)

    def _pod_deleted(self, pod: Object) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self._observe(key, pod, gone=True)
            self.queue.add(key)

    # -- expectations ---------------------------------------------------------------------
    def expect_creation(self, key: str, pod_name: str) -> None:
        self.expecting.setdefault(key, set()).add(pod_name)
        self.expectations.expect_creations(f"{key}/{pod_name}", 1)

    def expect_deletion(self, key: str, pod: Object) -> None:
        self.expecting.setdefault(key, set()).add(meta.name_of(pod))
        self.expectations.expect_deletions(f"{key}/{meta.name_of(pod)}",
                                           [podcontrol.uid_of(pod)])

    def _satisfied(self, key: str) -> bool:
        names = self.expecting.get(key, set())
        for name in list(names):
            if self.expectations.satisfied(f"{key}/{name}"):
                self.expectations.forget(f"{key}/{name}")
                names.discard(name)
        return not names

    def _forget(self, key: str) -> None:
        for name in self.expecting.pop(key, set()):
            self.expectations.forget(f"{key}/{name}")

    # -- reconcile ------------------------------------------------------------------------
    async def reconcile(self, key: str) -> float | None:
        cached = self.sets.indexer.get(key)
        if cached is None:
            self._forget(key)
            return None
        if not self._satisfied(key):
            return podcontrol.EXPECTATIONS_TIMEOUT  # the awaited events requeue it sooner
        set_ = copy.deepcopy(cached)
        set_.setdefault("apiVersion", "apps/v1")
        set_.setdefault("kind", "StatefulSet")
        selector = history.selector_of(set_)
        namespace, name = meta.namespace_of(set_), meta.name_of(set_)
        owner_ref = podcontrol.controller_ref(set_, api_version="apps/v1", kind="StatefulSet")
        recheck = podcontrol.owner_recheck(self.client.resource(STATEFULSETS), set_)
        # Only ``<set>-<ordinal>`` pods are members (upstream ``isMemberOf``).
        candidates = [p for p in self.pods.indexer.by_index(informer.NAMESPACE_INDEX, namespace)
                      if parent_and_ordinal(meta.name_of(p))[0] == name]
        pods = await podcontrol.RefManager(
            self.client.resource(PODS), set_, selector=selector, owner_ref=owner_ref,
            recheck=recheck).claim(candidates)
        revisions = await podcontrol.RefManager(
            self.client.resource(history.CONTROLLER_REVISIONS), set_, selector=selector,
            owner_ref=owner_ref, recheck=recheck,
        ).claim(self.revisions.indexer.by_index(informer.NAMESPACE_INDEX, namespace))
        sync = _Sync(self, key, set_, pods, history.sort_revisions(revisions))
        status = await sync.run()
        min_ready = int(_spec(set_).get("minReadySeconds") or 0)
        if min_ready and status["readyReplicas"] != status["availableReplicas"]:
            return float(min_ready)
        return None


class _Sync:
    """One pass over one StatefulSet (upstream ``updateStatefulSet``): the set, its pods
    and revisions as the reconcile found them, and the status it builds up."""

    def __init__(self, controller: StatefulSetController, key: str, set_: Object,
                 pods: list[Object], revisions: list[Object]) -> None:
        self.c = controller
        self.key = key
        self.set = set_
        self.pods = pods
        self.revisions = revisions
        self.namespace = meta.namespace_of(set_)
        self.name = meta.name_of(set_)
        self.status: dict[str, Any] = {}

    async def run(self) -> dict[str, Any]:
        current, update, collisions = await self._revisions()
        self.current, self.update = current, update
        self.current_set = history.apply_revision(self.set, current)
        self.update_set = history.apply_revision(self.set, update)
        spec = _spec(self.set)
        self.status = {
            "observedGeneration": meta.metadata(self.set).get("generation") or 0,
            "replicas": 0, "readyReplicas": 0, "currentReplicas": 0, "updatedReplicas": 0,
            "availableReplicas": 0, "currentRevision": meta.name_of(current),
            "updateRevision": meta.name_of(update), "collisionCount": collisions,
        }
        try:
            await self._update_pods(int(spec.get("minReadySeconds") or 0))
        finally:
            await self._write_status()
        await self._truncate_history()
        return self.status

    # -- revisions ----------------------------------------------------------------------
    async def _revisions(self) -> tuple[Object, Object, int]:
        """(current, update, collisionCount), as upstream ``getStatefulSetRevisions``."""
        revisions = self.revisions
        collisions = int((self.set.get("status") or {}).get("collisionCount") or 0)
        number = max((history.revision_number(r) for r in revisions), default=0) + 1
        data = history.template_patch(self.set)

        def make(count: int | None) -> Object:
            return history.new_revision(
                self.set, kind="StatefulSet", data=data, number=number,
                hash_label=history.REVISION_HASH_LABEL, hash_=history.hash_revision(data, count))

        equal = [r for r in revisions if history.same_data(r, {"data": data})]
        if equal and revisions[-1] is equal[-1]:
            update = equal[-1]
        elif equal:
            update = await self.c.client.resource(history.CONTROLLER_REVISIONS).patch(
                meta.name_of(equal[-1]), {"revision": number}, namespace=self.namespace)
            self.revisions = history.sort_revisions(
                [update if r is equal[-1] else r for r in revisions])
        else:
            update, count = await history.create_revision(
                self.c.client, self.set, make, collisions)
            collisions = count or 0
            self.revisions = [*revisions, update]
        wanted = (self.set.get("status") or {}).get("currentRevision")
        current = next((r for r in self.revisions if meta.name_of(r) == wanted), update)
        return current, update, collisions

    async def _truncate_history(self) -> None:
        live = {meta.name_of(self.current), meta.name_of(self.update)}
        live.update(revision_of(p) for p in self.pods)
        old = [r for r in self.revisions if meta.name_of(r) not in live]
        limit = int(_spec(self.set).get("revisionHistoryLimit") or 0)
        resource = self.c.client.resource(history.CONTROLLER_REVISIONS)
        for revision in old[:max(0, len(old) - limit)]:
            try:
                await resource.delete(meta.name_of(revision), namespace=self.namespace)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise

    # -- pods -----------------------------------------------------------------------------
    def _versioned_pod(self, ordinal: int) -> Object:
        """``newVersionedStatefulSetPod``: the current revision below the partition."""
        strategy = _spec(self.set).get("updateStrategy") or {}
        rolling = strategy.get("rollingUpdate")
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            if rolling is None:
                current = int((self.set.get("status") or {}).get("currentReplicas") or 0)
                below = ordinal < start_ordinal(self.set) + current
            else:
                below = ordinal < start_ordinal(self.set) + int(rolling.get("partition") or 0)
            if below:
                return new_pod(self.current_set, ordinal, meta.name_of(self.current))
        return new_pod(self.update_set, ordinal, meta.name_of(self.update))

    async def _update_pods(self, min_ready: int) -> None:
        status = self.status
        now = self.c.wall.now()
        start, count = start_ordinal(self.set), podcontrol.replicas_of(self.set)
        replicas: list[Object | None] = [None] * count
        condemned: list[Object] = []
        for pod in self.pods:
            status["replicas"] += 1
            if is_running_and_ready(pod):
                status["readyReplicas"] += 1
                if podcontrol.is_pod_available(pod, min_ready, now):
                    status["availableReplicas"] += 1
            if not podcontrol.is_terminating(pod):
                if revision_of(pod) == status["currentRevision"]:
                    status["currentReplicas"] += 1
                if revision_of(pod) == status["updateRevision"]:
                    status["updatedReplicas"] += 1
            ordinal = parent_and_ordinal(meta.name_of(pod))[1]
            if start <= ordinal < start + count:
                replicas[ordinal - start] = pod
            elif ordinal >= 0:
                condemned.append(pod)
        slots: list[Object] = [p if p is not None else self._versioned_pod(start + i)
                               for i, p in enumerate(replicas)]
        condemned.sort(key=lambda p: parent_and_ordinal(meta.name_of(p))[1], reverse=True)
        first_unhealthy = next((p for p in [*slots, *condemned]
                                if _created(p) and not is_healthy(p)), None)
        if podcontrol.is_terminating(self.set):
            return
        monotonic = _spec(self.set).get("podManagementPolicy") != "Parallel"

        async def process_replica(i: int) -> bool:
            pod = slots[i]
            ordinal = start + i
            if _created(pod) and podcontrol.phase_of(pod) in ("Failed", "Succeeded"):
                if not podcontrol.is_terminating(pod):
                    failed = podcontrol.phase_of(pod) == "Failed"
                    self.c.recorder.record(
                        self.set, events.WARNING,
                        "RecreatingFailedPod" if failed else "RecreatingTerminatedPod",
                        f"StatefulSet {self.namespace}/{self.name} is recreating "
                        f"{'failed' if failed else 'terminated'} Pod {meta.name_of(pod)}")
                    await self._delete_pod(pod)
                return True  # recreated by a later pass, once the deletion is in the cache
            if not _created(pod):
                await self._create_pod(pod, ordinal)
                if revision_of(pod) == status["currentRevision"]:
                    status["currentReplicas"] += 1
                if revision_of(pod) == status["updateRevision"]:
                    status["updatedReplicas"] += 1
                status["replicas"] += 1
                return monotonic
            if podcontrol.phase_of(pod) in ("", "Pending"):
                await self._create_claims(pod, ordinal)
            if monotonic and (podcontrol.is_terminating(pod) or not is_running_and_ready(pod)
                              or not podcontrol.is_pod_available(pod, min_ready, now)):
                return True
            await self._fix_pod(pod, ordinal)
            return False

        if await _run_for_all(len(slots), process_replica, monotonic):
            return
        for pod in condemned:
            await self._fix_claims(pod)

        async def process_condemned(i: int) -> bool:
            pod = condemned[i]
            if podcontrol.is_terminating(pod):
                return monotonic
            if monotonic and pod is not first_unhealthy and (
                    not is_running_and_ready(pod)
                    or not podcontrol.is_pod_available(pod, min_ready, now)):
                return True
            await self._delete_pod(pod)
            return monotonic

        if await _run_for_all(len(condemned), process_condemned, monotonic):
            return
        strategy = _spec(self.set).get("updateStrategy") or {}
        if strategy.get("type") == "OnDelete":
            return
        await self._rolling_update(slots, strategy.get("rollingUpdate"))

    async def _rolling_update(self, slots: list[Object], rolling: Object | None) -> None:
        """Replace pods not on the update revision, highest ordinal first."""
        update_min = int((rolling or {}).get("partition") or 0)
        update = self.status["updateRevision"]
        if rolling is None or rolling.get("maxUnavailable") is None:
            for target in range(len(slots) - 1, update_min - 1, -1):
                pod = slots[target]
                if revision_of(pod) != update and not podcontrol.is_terminating(pod):
                    await self._delete_pod(pod)
                    self.status["currentReplicas"] -= 1
                    return
                if not is_healthy(pod):
                    return
            return
        # maxUnavailable (upstream's MaxUnavailableStatefulSet): up to that many pods of
        # the whole set may be down at once, counting the ones already unhealthy.
        allowed = max(1, deployment_util.scaled_value(rolling["maxUnavailable"], len(slots),
                                              round_up=True))
        unavailable = sum(1 for p in slots if not is_healthy(p))
        budget = allowed - unavailable
        for target in range(len(slots) - 1, update_min - 1, -1):
            if budget <= 0:
                return
            pod = slots[target]
            if revision_of(pod) != update and not podcontrol.is_terminating(pod):
                await self._delete_pod(pod)
                self.status["currentReplicas"] -= 1
                budget -= 1

    # -- writes ---------------------------------------------------------------------------
    async def _create_claims(self, pod: Object, ordinal: int) -> None:
        resource = self.c.client.resource(CLAIMS)
        for claim in claims_for(self.set, ordinal).values():
            cached = self.c.claims.indexer.get(f"{self.namespace}/{meta.name_of(claim)}")
            if cached is not None:
                if podcontrol.is_terminating(cached):
                    raise RuntimeError(f"pvc {meta.name_of(claim)} is being deleted")
                continue
            refs = _claim_refs(self.set, pod, claim)
            if refs:
                meta.metadata(claim)["ownerReferences"] = refs
            try:
                await resource.create(claim, namespace=self.namespace)
            except rest.ApiError as err:
                if rest.is_already_exists(err):
                    continue
                self.c.recorder.record(
                    self.set, events.WARNING, "FailedCreate",
                    f"create Claim {meta.name_of(claim)} for Pod {meta.name_of(pod)} in "
                    f"StatefulSet {self.name} failed error: {err.message}")
                raise
            self.c.recorder.record(
                self.set, events.NORMAL, "SuccessfulCreate",
                f"create Claim {meta.name_of(claim)} Pod {meta.name_of(pod)} in "
                f"StatefulSet {self.name} success")

    async def _create_pod(self, pod: Object, ordinal: int) -> None:
        """Claims first (a pod must never start without its storage), then the pod."""
        await self._create_claims(pod, ordinal)
        self.c.expect_creation(self.key, meta.name_of(pod))
        try:
            await self.c.client.resource(PODS).create(pod, namespace=self.namespace)
        except rest.ApiError as err:
            self.c.expectations.creation_observed(f"{self.key}/{meta.name_of(pod)}")
            if not rest.is_already_exists(err):
                self._pod_event("create", pod, err)
            raise
        self._pod_event("create", pod, None)

    async def _delete_pod(self, pod: Object) -> None:
        uid = podcontrol.uid_of(pod)
        self.c.expect_deletion(self.key, pod)
        try:
            await self.c.client.resource(PODS).delete(
                meta.name_of(pod), namespace=self.namespace, preconditions={"uid": uid})
        except rest.ApiError as err:
            self.c.expectations.deletion_observed(f"{self.key}/{meta.name_of(pod)}", uid)
            if rest.is_not_found(err):
                return
            self._pod_event("delete", pod, err)
            raise
        self._pod_event("delete", pod, None)

    async def _fix_pod(self, pod: Object, ordinal: int) -> None:
        """Restore a live pod's identity labels and its claims (``UpdateStatefulPod``)."""
        await self._fix_claims(pod)
        if identity_matches(self.set, pod):
            return
        body = {"metadata": {"labels": {POD_NAME_LABEL: meta.name_of(pod),
                                        POD_INDEX_LABEL: str(ordinal)},
                             "resourceVersion": meta.metadata(pod).get("resourceVersion")}}
        try:
            await self.c.client.resource(PODS).patch(meta.name_of(pod), body,
                                                     namespace=self.namespace)
        except rest.ApiError as err:
            self._pod_event("update", pod, err)
            raise
        self._pod_event("update", pod, None)

    async def _fix_claims(self, pod: Object) -> None:
        """Keep the claims' ownerReferences in line with the retention policy."""
        _, ordinal = parent_and_ordinal(meta.name_of(pod))
        resource = self.c.client.resource(CLAIMS)
        for claim in claims_for(self.set, ordinal).values():
            cached = self.c.claims.indexer.get(f"{self.namespace}/{meta.name_of(claim)}")
            if cached is None or podcontrol.is_terminating(cached):
                continue
            refs = _claim_refs(self.set, pod, cached)
            if _same_refs(refs, meta.metadata(cached).get("ownerReferences") or []):
                continue
            md = meta.metadata(cached)
            await resource.patch(meta.name_of(cached), {"metadata": {
                "ownerReferences": refs or None, "resourceVersion": md.get("resourceVersion")}},
                namespace=self.namespace)

    def _pod_event(self, verb: str, pod: Object, err: rest.ApiError | None) -> None:
        if err is None:
            self.c.recorder.record(
                self.set, events.NORMAL, f"Successful{verb.title()}",
                f"{verb} Pod {meta.name_of(pod)} in StatefulSet {self.name} successful")
        else:
            self.c.recorder.record(
                self.set, events.WARNING, f"Failed{verb.title()}",
                f"{verb} Pod {meta.name_of(pod)} in StatefulSet {self.name} failed "
                f"error: {err.message}")

    async def _write_status(self) -> None:
        status = self.status
        strategy = _spec(self.set).get("updateStrategy") or {}
        if (strategy.get("type", "RollingUpdate") == "RollingUpdate"
                and status["updatedReplicas"] == status["replicas"]
                and status["readyReplicas"] == status["replicas"]):
            status["currentReplicas"] = status["updatedReplicas"]
            status["currentRevision"] = status["updateRevision"]
        old = self.set.get("status") or {}
        if all(old.get(k, 0 if isinstance(v, int) else "") == v for k, v in status.items()):
            return
        try:
            await self.c.client.resource(STATEFULSETS).patch(
                self.name, {"status": status}, namespace=self.namespace, subresource="status")
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise


def _created(pod: Object) -> bool:
    """A pod from the cache (it has a uid), as opposed to one this pass would create."""
    return bool(meta.metadata(pod).get("uid"))


async def _run_for_all(count: int, fn: Callable[[int], Awaitable[bool]],
                       monotonic: bool) -> bool:
    """Call ``fn`` for each index: in order, stopping when it says so (``OrderedReady``),
    or in slow-start batches of 1, 2, 4, ... (``Parallel``), stopping at an error.
    Returns whether the pass should stop here."""
    if monotonic:
        for i in range(count):
            if await fn(i):
                return True
        return False
    indices = iter(range(count))

    async def next_one() -> None:
        await fn(next(indices))

    _, failure = await podcontrol.slow_start_batch(count, 1, next_one)
    if failure is not None:
        raise failure
    return False
