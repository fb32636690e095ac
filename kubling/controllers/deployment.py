"""The Deployment controller: declarative rollouts of pod templates over ReplicaSets.

Each template a Deployment has had is one ReplicaSet named ``<deployment>-<hash>``, where
the ``pod-template-hash`` label (also on its selector and pods) keeps the ReplicaSets'
pods apart. A reconcile claims the ReplicaSets that match the Deployment's selector, then
either only scales (paused, or ``spec.replicas`` changed mid-rollout: proportionally) or
rolls out (``RollingUpdate`` within ``maxSurge``/``maxUnavailable``, or ``Recreate``),
and writes status and conditions: ``deployment_rollout`` holds those steps,
``deployment_progress`` the status and conditions, ``deployment_util`` the arithmetic.
Revisions are the ``deployment.kubernetes.io/revision`` annotations that ``kubectl rollout
history|undo`` read.
"""

from __future__ import annotations

import copy
import logging

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import deployment_rollout, manager, podcontrol
from kubling.controllers import deployment_util as util

log = logging.getLogger(__name__)

DEPLOYMENTS = rest.lookup("apps/v1", "deployments")
REPLICASETS = rest.lookup("apps/v1", "replicasets")


class DeploymentController:
    """``kube-controller-manager``'s ``deployment`` controller."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.deployments = ctx.client.resource(DEPLOYMENTS)
        self.replicasets = ctx.client.resource(REPLICASETS)
        self.d_informer = ctx.informers.informer(DEPLOYMENTS)
        self.rs_informer = ctx.informers.informer(REPLICASETS)
        self.pod_informer = ctx.informers.informer(podcontrol.PODS)
        self.recorder: events.EventRecorder = ctx.recorder_for("deployment-controller")
        self.api = deployment_rollout.Api(self.deployments, self.replicasets, self.recorder,
                                          podcontrol.WallClock(ctx.clock))
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="deployment",
                                                                   clock=ctx.clock)
        self.d_informer.add_event_handler(
            on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue)
        self.rs_informer.add_event_handler(on_add=self._rs_added, on_update=self._rs_updated,
                                           on_delete=self._rs_deleted)
        self.pod_informer.add_event_handler(on_delete=self._pod_deleted)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    # -- informer handlers: only enqueue ----------------------------------------------------
    def _enqueue(self, d: Object) -> None:
        self.queue.add(informer.key_of(d))

    def _owner(self, obj: Object, ref: Object | None, indexer: informer.Indexer,
               kind: str) -> Object | None:
        return podcontrol.resolve_controller_ref(indexer, meta.namespace_of(obj), ref, kind)

    def _deployment_of(self, rs: Object, ref: Object | None) -> Object | None:
        return self._owner(rs, ref, self.d_informer.indexer, "Deployment")

    def _matching_deployments(self, rs: Object) -> list[Object]:
        found = []
        for d in self.d_informer.indexer.by_index(informer.NAMESPACE_INDEX,
                                                  meta.namespace_of(rs)):
            try:
                selector = labels.from_label_selector(util.spec(d).get("selector"))
            except labels.SelectorError:
                continue
            if not selector.empty and selector.matches(meta.labels_of(rs)):
                found.append(d)
        return found

    def _rs_added(self, rs: Object) -> None:
        ref = podcontrol.controller_of(rs)
        if ref is not None:
            d = self._deployment_of(rs, ref)
            if d is not None:
                self._enqueue(d)
            return
        if podcontrol.is_terminating(rs):
            return
        for d in self._matching_deployments(rs):
            self._enqueue(d)

    def _rs_updated(self, old: Object, new: Object) -> None:
        if meta.metadata(old).get("resourceVersion") == meta.metadata(new).get("resourceVersion"):
            return
        old_ref, new_ref = podcontrol.controller_of(old), podcontrol.controller_of(new)
        if old_ref != new_ref and old_ref is not None:
            previous = self._deployment_of(old, old_ref)
            if previous is not None:
                self._enqueue(previous)
        if new_ref is not None:
            d = self._deployment_of(new, new_ref)
            if d is not None:
                self._enqueue(d)
            return
        if meta.labels_of(old) != meta.labels_of(new) or old_ref != new_ref:
            for d in self._matching_deployments(new):
                self._enqueue(d)

    def _rs_deleted(self, rs: Object) -> None:
        d = self._deployment_of(rs, podcontrol.controller_of(rs))
        if d is not None:
            self._enqueue(d)

    def _pod_deleted(self, pod: Object) -> None:
        """A Recreate rollout waits for the old pods to be gone: look again."""
        rs = self._owner(pod, podcontrol.controller_of(pod), self.rs_informer.indexer,
                         "ReplicaSet")
        if rs is None:
            return
        d = self._deployment_of(rs, podcontrol.controller_of(rs))
        if d is not None and not util.is_rolling(d):
            self._enqueue(d)

    # -- reconcile ----------------------------------------------------------------------------
    async def reconcile(self, key: str) -> float | None:
        """One sync of one Deployment (upstream ``syncDeployment``)."""
        cached = self.d_informer.indexer.get(key)
        if cached is None:
            return None
        d = copy.deepcopy(cached)
        try:
            selector = labels.from_label_selector(util.spec(d).get("selector"))
        except labels.SelectorError as err:
            log.warning("deployment %s has an invalid selector: %s", key, err)
            return None
        if selector.empty:
            self.recorder.record(d, events.WARNING, "SelectingAll",
                                 "This deployment is selecting all pods. "
                                 "A non-empty selector is required.")
            md = meta.metadata(d)
            status = d.setdefault("status", {})
            if int(status.get("observedGeneration") or 0) < int(md.get("generation") or 0):
                status["observedGeneration"] = md.get("generation")
                await self.deployments.update_status(d)
            return None
        rss = await self._claim_replicasets(d, selector)
        rollout = deployment_rollout.Rollout(self.api, d, rss, self._pods_by_rs(d, rss))
        if podcontrol.is_terminating(d):
            await rollout.sync_status_only()
            return None
        await rollout.check_paused_conditions()
        if util.spec(d).get("paused"):
            await rollout.sync()
            return None
        if await rollout.is_scaling_event():
            await rollout.sync()
            return None
        if util.is_rolling(d):
            await rollout.rolling()
        else:
            await rollout.recreate()
        return rollout.requeue_after

    async def _claim_replicasets(self, d: Object, selector: labels.Selector) -> list[Object]:
        """The ReplicaSets ``d`` controls, adopting matching orphans and releasing strays."""
        candidates = self.rs_informer.indexer.by_index(informer.NAMESPACE_INDEX,
                                                       meta.namespace_of(d))
        refs = podcontrol.RefManager(
            self.replicasets, d, selector=selector,
            owner_ref=podcontrol.controller_ref(d, api_version="apps/v1", kind="Deployment"),
            recheck=podcontrol.owner_recheck(self.deployments, d))
        return await refs.claim(candidates)

    def _pods_by_rs(self, d: Object, rss: list[Object]) -> dict[str, list[Object]]:
        """The pods of each claimed ReplicaSet, by its uid (what Recreate waits on)."""
        owned: dict[str, list[Object]] = {podcontrol.uid_of(rs): [] for rs in rss}
        for pod in self.pod_informer.indexer.by_index(informer.NAMESPACE_INDEX,
                                                      meta.namespace_of(d)):
            uid = (podcontrol.controller_of(pod) or {}).get("uid")
            if uid in owned:
                owned[uid].append(pod)
        return owned
