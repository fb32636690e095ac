"""The Job controller: runs a Job's pods to completion (upstream ``pkg/controller/job``).

The informers' handlers only enqueue: a Job's own changes and those of the pods it
controls enqueue ``namespace/name`` on ``queue``; a pod that still carries the
``batch.kubernetes.io/job-tracking`` finalizer but whose Job is gone or finished
enqueues the pod's key on ``orphans``. ``reconcile`` runs one sync of a Job
(``job_sync.JobSync``); this module holds the controller's state across syncs — the
expectations of creations, deletions and finalizer removals it has asked for, and each
Job's pod-failure backoff — and the API calls a sync makes.

Counting finished pods follows upstream's finalizer protocol, so that no pod is counted
twice or lost: every pod is created with the tracking finalizer; a finished pod's uid is
first written to ``status.uncountedTerminatedPods``, then its finalizer is removed, then
the uid moves into ``succeeded``/``failed``. A crash between any two steps leaves enough
on the API to resume.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Iterable

from kubling.api import labels, meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import job_pods as jp
from kubling.controllers import job_status as js
from kubling.controllers import job_sync, podcontrol
from kubling.controllers.manager import ControllerContext

log = logging.getLogger(__name__)

JOBS = rest.lookup("batch/v1", "jobs")
PODS = rest.lookup("v1", "pods")

#: Pods by the uid of their controlling owner.
POD_CONTROLLER_INDEX = "job-controller/controller-uid"


def managed_here(job: Object) -> bool:
    """``spec.managedBy`` names this controller (or nobody): others' Jobs are left alone."""
    managed_by = (job.get("spec") or {}).get("managedBy")
    return managed_by in (None, "", js.JOB_CONTROLLER_NAME)


class JobController:
    """Creates, counts and cleans up the pods of Jobs."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.wall = podcontrol.WallClock(ctx.clock)
        self.recorder: events.EventRecorder = ctx.recorder_for("job-controller")
        self.jobs_api = ctx.client.resource(JOBS)
        self.pods_api = ctx.client.resource(PODS)
        self.jobs = ctx.informers.informer(JOBS)
        self.pods = ctx.informers.informer(PODS)
        self.pods.indexer.add_index(POD_CONTROLLER_INDEX, podcontrol.controller_uid_index,
                                    exist_ok=True)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="job", clock=ctx.clock)
        self.orphans: workqueue.WorkQueue[str] = workqueue.WorkQueue(
            name="job-orphan-pod", clock=ctx.clock)
        self.expectations = podcontrol.Expectations(ctx.clock)
        self.removals = jp.FinalizerExpectations()
        #: Pod-failure backoff per Job key, as upstream's ``backoffStore`` (in memory).
        self.backoff: dict[str, js.BackoffRecord] = {}
        self.written = podcontrol.StatusWrites()
        self.jobs.add_event_handler(on_add=self._job_added, on_update=self._job_updated,
                                    on_delete=self._job_deleted)
        self.pods.add_event_handler(on_add=self._pod_added, on_update=self._pod_updated,
                                    on_delete=self._pod_deleted)

    async def run(self, *, workers: int) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(workqueue.run_workers(self.queue, self.reconcile,
                                                        workers=workers))
                group.create_task(workqueue.run_workers(self.orphans, self.reconcile_orphan,
                                                        workers=1))
        finally:
            self.queue.shut_down()
            self.orphans.shut_down()

    # -- handlers (enqueue only) -------------------------------------------------------
    def _job_added(self, job: Object) -> None:
        self.queue.add(informer.key_of(job))

    def _job_updated(self, old: Object, new: Object) -> None:
        self.queue.add(informer.key_of(new))

    def _job_deleted(self, job: Object) -> None:
        self.queue.add(informer.key_of(job))
        for pod in self.pods.indexer.by_index(POD_CONTROLLER_INDEX, js.uid_of(job)):
            if js.has_tracking_finalizer(pod):
                self.orphans.add(informer.key_of(pod))

    def job_key_for(self, pod: Object) -> str | None:
        """The key of the cached Job controlling ``pod`` (same uid), or ``None``."""
        ref = podcontrol.controller_of(pod)
        if ref is None or ref.get("apiVersion") != "batch/v1":
            return None
        job = podcontrol.resolve_controller_ref(self.jobs.indexer, meta.namespace_of(pod), ref,
                                                "Job")
        return informer.key_of(job) if job is not None else None

    def _check_orphan(self, pod: Object, key: str | None) -> None:
        if not js.has_tracking_finalizer(pod):
            return
        job = self.jobs.indexer.get(key) if key else None
        if job is None or js.finished_condition(job):
            self.orphans.add(informer.key_of(pod))

    def _pod_added(self, pod: Object) -> None:
        key = self.job_key_for(pod)
        if key is not None:
            self.expectations.creation_observed(key)
            if js.is_deleting(pod):
                self.expectations.deletion_observed(key, informer.key_of(pod))
            self.queue.add(key)
        self._check_orphan(pod, key)

    def _pod_updated(self, old: Object, new: Object) -> None:
        key = self.job_key_for(new)
        old_key = self.job_key_for(old)
        if key is not None:
            if js.has_tracking_finalizer(old) and not js.has_tracking_finalizer(new):
                self.removals.observed(key, js.uid_of(new))
            if js.is_deleting(new):
                self.expectations.deletion_observed(key, informer.key_of(new))
            self.queue.add(key)
        if old_key is not None and old_key != key:
            self.queue.add(old_key)
        self._check_orphan(new, key)

    def _pod_deleted(self, pod: Object) -> None:
        key = self.job_key_for(pod)
        if key is not None:
            self.expectations.deletion_observed(key, informer.key_of(pod))
            self.removals.observed(key, js.uid_of(pod))
            self.queue.add(key)

    # -- reconcile -----------------------------------------------------------------------
    def pods_of(self, job: Object) -> list[Object]:
        """The Job's pods, from the cache: those whose controller reference is the Job."""
        return [p for p in self.pods.indexer.by_index(POD_CONTROLLER_INDEX, js.uid_of(job))
                if meta.namespace_of(p) == meta.namespace_of(job)]

    async def claim_pods(self, job: Object) -> list[Object]:
        """The Job's pods after adopting orphans its selector matches and releasing pods
        it controls that stopped matching (upstream ``getPodsForJob``)."""
        raw = (job.get("spec") or {}).get("selector")
        owned = self.pods_of(job)
        if not isinstance(raw, dict) or not raw:
            return owned  # a Job without a selector adopts nothing
        try:
            selector = labels.from_label_selector(raw)
        except labels.SelectorError:
            return owned
        orphans = [p for p in self.pods.indexer.by_index(informer.NAMESPACE_INDEX,
                                                         meta.namespace_of(job))
                   if podcontrol.controller_of(p) is None
                   and selector.matches(meta.labels_of(p))]
        refs = podcontrol.RefManager(self.pods_api, job, selector=selector,
                                     owner_ref=jp.controller_ref(job),
                                     recheck=podcontrol.owner_recheck(self.jobs_api, job))
        return await refs.claim([*owned, *orphans])

    async def reconcile(self, key: str) -> float | None:
        """One sync of the Job ``key``; returns when to look again (deadline, backoff)."""
        cached = self.jobs.indexer.get(key)
        if cached is None:
            self.expectations.forget(key)
            self.removals.forget(key)
            self.backoff.pop(key, None)
            self.written.forget(key)
            return None
        cached = self.written.fresher(key, cached)
        if not managed_here(cached):
            return None
        if js.finished_condition(cached):
            # Nothing more to do but let go of pods that still hold the finalizer.
            self.backoff.pop(key, None)
            for pod in self.pods_of(cached):
                if js.has_tracking_finalizer(pod):
                    self.orphans.add(informer.key_of(pod))
            return None
        job = copy.deepcopy(cached)
        pods = await self.claim_pods(job)
        return await job_sync.JobSync(self, key, job, pods).run()

    async def reconcile_orphan(self, key: str) -> None:
        """Remove the tracking finalizer of a pod no unfinished Job of ours controls."""
        pod = self.pods.indexer.get(key)
        if pod is None or not js.has_tracking_finalizer(pod):
            return
        ref = podcontrol.controller_of(pod)
        if ref is not None:
            if ref.get("kind") != "Job" or ref.get("apiVersion") != "batch/v1":
                return  # someone else's pod: its finalizers are its owner's business
            job = await self._current_job(meta.namespace_of(pod), str(ref.get("name")))
            if job is not None and js.uid_of(job) == ref.get("uid"):
                if not managed_here(job) or not js.finished_condition(job):
                    return  # the Job's own sync counts it first
        patch = jp.remove_finalizer_patch(pod)
        if patch is not None:
            try:
                await self.pods_api.patch(meta.name_of(pod), patch,
                                          namespace=meta.namespace_of(pod), type="strategic")
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise

    async def _current_job(self, namespace: str, name: str) -> Object | None:
        """The Job from the cache or, when the cache has not seen it, from the API."""
        job = self.jobs.indexer.get(f"{namespace}/{name}")
        if job is not None:
            return job
        try:
            return await self.jobs_api.get(name, namespace=namespace)
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return None
            raise

    # -- writes (called by JobSync) ----------------------------------------------------
    async def update_status(self, key: str, job: Object) -> Object:
        status = job.get("status") or {}
        for name in ("active", "succeeded", "failed"):
            if not status.get(name):
                status.pop(name, None)
        if not status.get("completedIndexes"):
            status.pop("completedIndexes", None)
        if not js.has_backoff_limit_per_index(job) and not status.get("failedIndexes"):
            status.pop("failedIndexes", None)  # a per-index Job shows "" as upstream
        updated: Object = await self.jobs_api.update_status(job)
        self.written.wrote(key, job, updated)
        return updated

    async def create_pods(self, key: str, job: Object, indexes: list[int | None], *,
                          replacing: dict[int, Object] | None = None,
                          ) -> tuple[int, Exception | None]:
        """Create one pod per entry (an index or ``None``) in slow-start batches; the
        expectation is raised first and lowered for every pod not created. ``replacing``
        names, per index, the failed pod a new one replaces."""
        self.expectations.expect_creations(key, len(indexes))
        pending = iter(indexes)
        replaced = replacing or {}

        def create_next() -> Awaitable[None]:
            index = next(pending)
            return self._create_pod(job, index,
                                    replaced.get(index) if index is not None else None)

        created, error = await podcontrol.slow_start_batch(len(indexes), 1, create_next)
        for _ in range(len(indexes) - created):
            self.expectations.creation_observed(key)
        if error is not None and podcontrol.namespace_terminating(error):
            return created, None  # every later create would fail the same way
        return created, error

    async def _create_pod(self, job: Object, index: int | None,
                          replacing: Object | None) -> None:
        try:
            pod = await self.pods_api.create(jp.new_pod(job, index, replacing),
                                             namespace=meta.namespace_of(job))
        except rest.ApiError as err:
            if not podcontrol.namespace_terminating(err):
                self.recorder.record(job, events.WARNING, "FailedCreate",
                                     f"Error creating: {err.message}")
            raise
        self.recorder.record(job, events.NORMAL, "SuccessfulCreate",
                             f"Created pod: {meta.name_of(pod)}")

    async def delete_job_pods(self, key: str, job: Object,
                              pods: list[Object]) -> tuple[int, int, Exception | None]:
        """Delete pods the Job no longer wants (suspension, too many), dropping their
        finalizer first so that they are not counted as failures. Returns (deleted,
        of which ready, first error)."""
        self.expectations.expect_deletions(key, [informer.key_of(p) for p in pods])

        async def one(pod: Object) -> None:
            try:
                patch = jp.remove_finalizer_patch(pod)
                if patch is not None:
                    self.removals.expect(key, [js.uid_of(pod)])
                    await self.pods_api.patch(meta.name_of(pod), patch,
                                              namespace=meta.namespace_of(pod), type="strategic")
                await self._delete_pod(job, pod)
            except rest.ApiError as err:
                self.expectations.deletion_observed(key, informer.key_of(pod))
                self.removals.observed(key, js.uid_of(pod))
                if not rest.is_not_found(err):
                    raise

        return await self._each(job, pods, one)

    async def delete_active_pods(self, job: Object,
                                 pods: list[Object]) -> tuple[int, int, Exception | None]:
        """Delete a finished Job's remaining pods, keeping their finalizers: the sync
        then counts them as failed and lets them go."""

        async def one(pod: Object) -> None:
            try:
                await self._delete_pod(job, pod)
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise

        return await self._each(job, pods, one)

    async def _each(self, job: Object, pods: list[Object],
                    fn: Callable[[Object], Awaitable[None]]) -> tuple[int, int, Exception | None]:
        results = await asyncio.gather(*(fn(p) for p in pods), return_exceptions=True)
        done = ready = 0
        error: Exception | None = None
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                error = error or result
                continue
            done += 1
            ready += 1 if js.is_ready(pod) else 0
        return done, ready, error

    async def _delete_pod(self, job: Object, pod: Object) -> None:
        try:
            await self.pods_api.delete(meta.name_of(pod), namespace=meta.namespace_of(pod),
                                       preconditions={"uid": js.uid_of(pod)})
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                self.recorder.record(job, events.WARNING, "FailedDelete",
                                     f"Error deleting: {err.message}")
            raise
        self.recorder.record(job, events.NORMAL, "SuccessfulDelete",
                             f"Deleted pod: {meta.name_of(pod)}")

    async def remove_finalizers(self, key: str,
                                pods: Iterable[Object]) -> tuple[set[str], Exception | None]:
        """Drop the tracking finalizer from ``pods`` (expected before asked); returns the
        uids that no longer hold it and the first error."""
        pods = list(pods)
        self.removals.expect(key, [js.uid_of(p) for p in pods])

        async def one(pod: Object) -> None:
            patch = jp.remove_finalizer_patch(pod)
            if patch is None:
                return
            try:
                await self.pods_api.patch(meta.name_of(pod), patch,
                                          namespace=meta.namespace_of(pod), type="strategic")
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    self.removals.observed(key, js.uid_of(pod))
                    raise

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        removed: set[str] = set()
        error: Exception | None = None
        for pod, result in zip(pods, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, Exception):
                error = error or result
            else:
                removed.add(js.uid_of(pod))
        return removed, error
