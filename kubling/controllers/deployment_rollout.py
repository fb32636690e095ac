"""One sync of one Deployment: find or create the new ReplicaSet, move pods from the old
ones to it (``RollingUpdate`` or ``Recreate``), scale proportionally, clean up history,
and write the status that ``deployment_progress`` computes (upstream ``sync.go``,
``rolling.go``, ``recreate.go``).

``Rollout`` holds a working copy of the Deployment and the ReplicaSets it controls; every
write's answer replaces the copy it was made from, so later steps of the same sync build
on what the API server has, not on the (lagging) informer cache. All writes are
compare-and-swap on ``resourceVersion``: a conflict fails the sync, which the work queue
retries.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, rest
from kubling.controllers import deployment_progress as progress
from kubling.controllers import deployment_util as util
from kubling.controllers import podcontrol

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Api:
    """What a sync writes through, and its notion of time."""

    deployments: rest.Resource
    replicasets: rest.Resource
    recorder: events.EventRecorder
    wall: podcontrol.WallClock


class Rollout:
    """A sync of Deployment ``d`` (a private copy) over ``rss`` (the ReplicaSets it owns)
    and ``pods`` (their pods by ReplicaSet uid, which only ``Recreate`` looks at)."""

    def __init__(self, api: Api, d: Object, rss: list[Object],
                 pods: dict[str, list[Object]]) -> None:
        self.api = api
        self.d = d
        self.rss = list(rss)
        self.pods = pods
        #: Seconds after which the Deployment wants another look (progress deadline).
        self.requeue_after: float | None = None

    @property
    def name(self) -> str:
        return meta.name_of(self.d)

    @property
    def namespace(self) -> str:
        return meta.namespace_of(self.d)

    # -- entry points ---------------------------------------------------------------------
    async def sync_status_only(self) -> None:
        """A Deployment being deleted: only its status is kept current."""
        new, olds = await self.new_and_old(create=False)
        await self.sync_deployment_status(_all(new, olds), new)

    async def sync(self) -> None:
        """Scaling (and, while paused, history clean-up) without rolling anything out."""
        new, olds = await self.new_and_old(create=False)
        await self.scale(new, olds)
        if util.spec(self.d).get("paused"):
            await self.cleanup(olds)
        await self.sync_deployment_status(_all(new, olds), new)

    async def is_scaling_event(self) -> bool:
        """Whether ``spec.replicas`` changed since the active ReplicaSets were sized."""
        new, olds = await self.new_and_old(create=False)
        want = str(util.replicas(self.d))
        for rs in util.active(_all(new, olds)):
            desired = util.annotations_of(rs).get(util.DESIRED_REPLICAS)
            if desired is not None and desired != want:
                return True
        return False

    async def rolling(self) -> None:
        new, olds = await self.new_and_old(create=True)
        assert new is not None
        all_rss = _all(new, olds)
        if await self.reconcile_new_rs(all_rss, new):
            await self.sync_rollout_status(self._current(all_rss), self._find(new))
            return
        new = self._find(new)
        if await self.reconcile_old_rss(self._current(all_rss),
                                        util.active(self._current(olds)), new):
            await self.sync_rollout_status(self._current(all_rss), self._find(new))
            return
        if util.deployment_complete(self.d, self.d.get("status") or {}):
            await self.cleanup(self._current(olds))
        await self.sync_rollout_status(self._current(all_rss), new)

    async def recreate(self) -> None:
        new, olds = await self.new_and_old(create=False)
        if await self.scale_down_olds_for_recreate(util.active(olds)):
            await self.sync_rollout_status(self._current(_all(new, olds)), new)
            return
        if self.old_pods_running(new, olds):
            await self.sync_rollout_status(_all(new, olds), new)
            return
        if new is None:
            new, olds = await self.new_and_old(create=True)
        assert new is not None
        await self.scale_and_record(new, util.replicas(self.d))
        if util.deployment_complete(self.d, self.d.get("status") or {}):
            await self.cleanup(self._current(olds))
        await self.sync_rollout_status(self._current(_all(new, olds)), self._find(new))

    async def check_paused_conditions(self) -> None:
        """Progressing turns Unknown/DeploymentPaused on pause and DeploymentResumed on
        resume (unless the deadline was already exceeded)."""
        if not util.has_progress_deadline(self.d):
            return
        status = self.d.setdefault("status", {})
        cond = util.get_condition(status, util.PROGRESSING)
        if cond is not None and cond.get("reason") == util.TIMED_OUT:
            return
        paused_now = cond is not None and cond.get("reason") == util.PAUSED
        paused = bool(util.spec(self.d).get("paused"))
        if paused and not paused_now:
            reason, message = util.PAUSED, "Deployment is paused"
        elif not paused and paused_now:
            reason, message = util.RESUMED, "Deployment is resumed"
        else:
            return
        util.set_condition(status, util.new_condition(util.PROGRESSING, "Unknown", reason,
                                                      message, self.api.wall.stamp()))
        await self._write_status()

    # -- the new ReplicaSet ---------------------------------------------------------------
    async def new_and_old(self, *, create: bool) -> tuple[Object | None, list[Object]]:
        """The new ReplicaSet (created if ``create``) with its revision brought up to date,
        and every other ReplicaSet (``getAllReplicaSetsAndSyncRevision``)."""
        existing = util.find_new_rs(self.d, self.rss)
        olds = [rs for rs in self.rss if rs is not existing]
        new_revision = str(util.max_revision(olds) + 1)
        if existing is not None:
            return await self._sync_existing_new_rs(existing, new_revision), olds
        if not create:
            return None, olds
        return await self._create_new_rs(olds, new_revision), olds

    async def _sync_existing_new_rs(self, existing: Object, new_revision: str) -> Object:
        rs = copy.deepcopy(existing)
        changed = util.set_new_rs_annotations(self.d, rs, new_revision, exists=True)
        min_ready = util.spec(self.d).get("minReadySeconds") or 0
        if changed or (util.spec(rs).get("minReadySeconds") or 0) != min_ready:
            rs["spec"]["minReadySeconds"] = min_ready
            # The Deployment's revision follows on the sync this update triggers.
            return await self._update_rs(rs)
        await self._set_revision(util.annotations_of(rs).get(util.REVISION, ""))
        status = self.d.setdefault("status", {})
        if util.has_progress_deadline(self.d) and util.get_condition(status, util.PROGRESSING) \
                is None:
            util.set_condition(status, util.new_condition(
                util.PROGRESSING, "True", util.FOUND_NEW_RS,
                f"Found new replica set {util.quote(meta.name_of(rs))}", self.api.wall.stamp()))
            await self._write_status()
        return rs

    async def _create_new_rs(self, olds: list[Object], new_revision: str) -> Object:
        status = self.d.setdefault("status", {})
        collision_count = status.get("collisionCount")
        template = copy.deepcopy(util.spec(self.d).get("template") or {})
        pod_hash = util.compute_hash(template, collision_count)
        template.setdefault("metadata", {}).setdefault("labels", {})[util.POD_TEMPLATE_HASH] = \
            pod_hash
        selector = copy.deepcopy(util.spec(self.d).get("selector") or {})
        selector.setdefault("matchLabels", {})[util.POD_TEMPLATE_HASH] = pod_hash
        rs: Object = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {
                "name": f"{self.name}-{pod_hash}", "namespace": self.namespace,
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [podcontrol.controller_ref(
                    self.d, api_version="apps/v1", kind="Deployment")],
            },
            "spec": {"replicas": 0, "minReadySeconds": util.spec(self.d).get("minReadySeconds")
                     or 0, "selector": selector, "template": template},
        }
        rs["spec"]["replicas"] = util.new_rs_new_replicas(self.d, [*olds, rs], rs)
        util.set_new_rs_annotations(self.d, rs, new_revision, exists=False)
        name = meta.name_of(rs)
        already_exists = False
        try:
            created = await self.api.replicasets.create(rs, namespace=self.namespace)
        except rest.ApiError as err:
            if not rest.is_already_exists(err):
                message = f"Failed to create new replica set {util.quote(name)}: {err.message}"
                if util.has_progress_deadline(self.d):
                    util.set_condition(status, util.new_condition(
                        util.PROGRESSING, "False", util.FAILED_RS_CREATE, message,
                        self.api.wall.stamp()))
                    try:
                        await self._write_status()
                    except rest.ApiError:
                        pass  # the create failure is the news; it is raised below
                self.api.recorder.record(self.d, events.WARNING, util.FAILED_RS_CREATE, message)
                raise
            created = await self.api.replicasets.get(name, namespace=self.namespace)
            ref = podcontrol.controller_of(created) or {}
            if ref.get("uid") != podcontrol.uid_of(self.d) or not util.equal_ignore_hash(
                    util.spec(created).get("template") or {},
                    util.spec(self.d).get("template") or {}):
                # A different template hashed to this name: bump the collision count, so
                # that the next sync tries another name.
                status["collisionCount"] = int(collision_count or 0) + 1
                await self._write_status()
                log.info("deployment %s/%s: hash collision on %s; collisionCount is now %d",
                         self.namespace, self.name, name, status["collisionCount"])
                raise
            already_exists = True  # ours, made by an earlier sync the cache had not shown
        self.rss.append(created)
        new_replicas = util.replicas(created)
        if not already_exists and new_replicas > 0:
            self.api.recorder.record(self.d, events.NORMAL, "ScalingReplicaSet",
                                     f"Scaled up replica set {name} from 0 to {new_replicas}")
        await self._set_revision(new_revision)
        if not already_exists and util.has_progress_deadline(self.d):
            util.set_condition(status, util.new_condition(
                util.PROGRESSING, "True", util.NEW_RS_CREATED,
                f"Created new replica set {util.quote(name)}", self.api.wall.stamp()))
            await self._write_status()
        return created

    # -- scaling --------------------------------------------------------------------------
    async def scale_and_record(self, rs: Object, new_scale: int) -> tuple[bool, Object]:
        if util.replicas(rs) == new_scale:
            return False, rs
        operation = "up" if util.replicas(rs) < new_scale else "down"
        return await self.scale_rs(rs, new_scale, operation)

    async def scale_rs(self, rs: Object, new_scale: int, operation: str) -> tuple[bool, Object]:
        """Resize ``rs`` and stamp the Deployment's size on it (the desired/max replicas
        annotations that proportional scaling reads later)."""
        desired = util.replicas(self.d)
        maximum = desired + util.max_surge(self.d)
        size_changes = util.replicas(rs) != new_scale
        if not size_changes and not util.replicas_annotations_need_update(rs, desired, maximum):
            return False, rs
        old_scale = util.replicas(rs)
        target = copy.deepcopy(rs)
        target.setdefault("spec", {})["replicas"] = new_scale
        util.set_replicas_annotations(target, desired, maximum)
        updated = await self._update_rs(target)
        if size_changes:
            self.api.recorder.record(
                self.d, events.NORMAL, "ScalingReplicaSet",
                f"Scaled {operation} replica set {meta.name_of(rs)} from {old_scale} "
                f"to {new_scale}")
        return size_changes, updated

    async def reconcile_new_rs(self, all_rss: list[Object], new: Object) -> bool:
        want = util.replicas(self.d)
        if util.replicas(new) == want:
            return False
        if util.replicas(new) > want:
            scaled, _ = await self.scale_and_record(new, want)
            return scaled
        scaled, _ = await self.scale_and_record(
            new, util.new_rs_new_replicas(self.d, all_rss, new))
        return scaled

    async def reconcile_old_rss(self, all_rss: list[Object], olds: list[Object],
                                new: Object) -> bool:
        """Scale old ReplicaSets down as far as availability allows: first the pods that
        are not available anyway, then available ones down to ``replicas - maxUnavailable``."""
        if util.sum_replicas(olds) == 0:
            return False
        min_available = util.replicas(self.d) - util.max_unavailable(self.d)
        new_unavailable = util.replicas(new) - util.status_int(new, "availableReplicas")
        max_scaled_down = util.sum_replicas(all_rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        olds, cleaned = await self._cleanup_unhealthy(olds, max_scaled_down)
        scaled = await self._scale_down_olds_for_rolling([*olds, new], olds)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(self, olds: list[Object],
                                 max_cleanup: int) -> tuple[list[Object], int]:
        total = 0
        result = []
        for rs in util.by_creation(olds):
            unhealthy = util.replicas(rs) - util.status_int(rs, "availableReplicas")
            if total >= max_cleanup or util.replicas(rs) == 0 or unhealthy <= 0:
                result.append(rs)
                continue
            count = min(max_cleanup - total, unhealthy)
            _, rs = await self.scale_and_record(rs, util.replicas(rs) - count)
            total += count
            result.append(rs)
        return result, total

    async def _scale_down_olds_for_rolling(self, all_rss: list[Object],
                                           olds: list[Object]) -> int:
        min_available = util.replicas(self.d) - util.max_unavailable(self.d)
        available = util.sum_status(all_rss, "availableReplicas")
        if available <= min_available:
            return 0
        total, wanted = 0, available - min_available
        for rs in util.by_creation(olds):
            if total >= wanted:
                break
            if util.replicas(rs) == 0:
                continue
            count = min(util.replicas(rs), wanted - total)
            await self.scale_and_record(rs, util.replicas(rs) - count)
            total += count
        return total

    async def scale_down_olds_for_recreate(self, olds: list[Object]) -> bool:
        scaled = False
        for rs in olds:
            if util.replicas(rs) != 0:
                changed, _ = await self.scale_and_record(rs, 0)
                scaled = scaled or changed
        return scaled

    def old_pods_running(self, new: Object | None, olds: list[Object]) -> bool:
        """Whether any pod of an old ReplicaSet may still run (Recreate waits for none)."""
        if util.sum_status(olds, "replicas") > 0:
            return True
        new_uid = podcontrol.uid_of(new) if new is not None else None
        return any(
            podcontrol.phase_of(pod) not in ("Succeeded", "Failed")
            for uid, pods in self.pods.items() if uid != new_uid for pod in pods)

    async def scale(self, new: Object | None, olds: list[Object]) -> None:
        """Resize for a new ``spec.replicas``: the one active ReplicaSet takes it all;
        during a rollout every active ReplicaSet grows or shrinks by its share."""
        want = util.replicas(self.d)
        only = util.find_active_or_latest(new, olds)
        if only is not None:
            if util.replicas(only) != want:
                await self.scale_and_record(only, want)
            return
        if util.is_saturated(self.d, new):
            for rs in util.active(olds):
                await self.scale_and_record(rs, 0)
            return
        if not util.is_rolling(self.d):
            return
        running = util.active(_all(new, olds))
        allowed = want + util.max_surge(self.d) if want > 0 else 0
        to_add = allowed - util.sum_replicas(running)
        operation = ""
        # Larger first (sorting is stable, also reversed); among equals, the newer first
        # when growing and the older first when shrinking.
        if to_add > 0:
            running = sorted(util.by_creation(running)[::-1], key=util.replicas, reverse=True)
            operation = "up"
        elif to_add < 0:
            running = sorted(util.by_creation(running), key=util.replicas, reverse=True)
            operation = "down"
        sizes: dict[str, int] = {}
        added = 0
        for rs in running:
            share = util.rs_proportion(rs, self.d, to_add, added) if to_add else 0
            sizes[meta.name_of(rs)] = util.replicas(rs) + share
            added += share
        for i, rs in enumerate(running):
            name = meta.name_of(rs)
            if i == 0 and to_add != 0:  # leftovers go to the largest
                sizes[name] = max(0, sizes[name] + to_add - added)
            await self.scale_rs(rs, sizes[name], operation)

    # -- history ----------------------------------------------------------------------------
    async def cleanup(self, olds: list[Object]) -> None:
        """Delete the oldest scaled-down ReplicaSets beyond ``revisionHistoryLimit``."""
        limit = util.revision_history_limit(self.d)
        if limit is None:
            return
        cleanable = [rs for rs in olds if not podcontrol.is_terminating(rs)]
        excess = len(cleanable) - limit
        if excess <= 0:
            return
        for rs in util.by_revision(cleanable)[:excess]:
            md = meta.metadata(rs)
            if (util.status_int(rs, "replicas") != 0 or util.replicas(rs) != 0
                    or int(md.get("generation") or 0) > util.status_int(rs, "observedGeneration")):
                continue
            try:
                await self.api.replicasets.delete(meta.name_of(rs), namespace=self.namespace)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise

    # -- status -----------------------------------------------------------------------------
    async def sync_deployment_status(self, all_rss: list[Object], new: Object | None) -> None:
        status = progress.calculate_status(self.d, all_rss, new, self.api.wall.stamp())
        if status != (self.d.get("status") or {}):
            self.d["status"] = status
            await self._write_status()

    async def sync_rollout_status(self, all_rss: list[Object], new: Object | None) -> None:
        """Write the status with its Progressing condition; if nothing changed, arrange a
        look at the progress deadline."""
        now = self.api.wall.now()
        status = progress.rollout_status(self.d, all_rss, new, now=now,
                                         stamp=podcontrol.format_time(now))
        if status == (self.d.get("status") or {}):
            self.requeue_after = progress.stuck_requeue(self.d, status, now)
            return
        self.d["status"] = status
        await self._write_status()

    # -- writes -----------------------------------------------------------------------------
    async def _update_rs(self, rs: Object) -> Object:
        updated = await self.api.replicasets.update(rs, namespace=self.namespace)
        uid = podcontrol.uid_of(updated)
        self.rss = [updated if podcontrol.uid_of(r) == uid else r for r in self.rss]
        return updated

    async def _set_revision(self, revision: str) -> None:
        """Stamp the Deployment with its new ReplicaSet's revision. Upstream does it in the
        status write; kubling's status subresource keeps metadata, so this is a patch (with
        the resourceVersion as precondition)."""
        if not revision or util.annotations_of(self.d).get(util.REVISION) == revision:
            return
        md = meta.metadata(self.d)
        body = {"metadata": {"annotations": {util.REVISION: revision},
                             "resourceVersion": md.get("resourceVersion")}}
        patched = await self.api.deployments.patch(self.name, body, namespace=self.namespace)
        md.setdefault("annotations", {})[util.REVISION] = revision
        md["resourceVersion"] = meta.metadata(patched).get("resourceVersion")

    async def _write_status(self) -> None:
        written = await self.api.deployments.update_status(self.d, namespace=self.namespace)
        meta.metadata(self.d)["resourceVersion"] = meta.metadata(written).get("resourceVersion")

    # -- helpers ----------------------------------------------------------------------------
    def _find(self, rs: Object) -> Object:
        """The freshest copy of ``rs`` this sync has (after its own writes)."""
        uid = podcontrol.uid_of(rs)
        return next((r for r in self.rss if podcontrol.uid_of(r) == uid), rs)

    def _current(self, rss: list[Object]) -> list[Object]:
        return [self._find(rs) for rs in rss]


def _all(new: Object | None, olds: list[Object]) -> list[Object]:
    return [*olds, new] if new is not None else list(olds)
