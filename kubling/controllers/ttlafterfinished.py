"""The TTL-after-finished controller: finished Jobs clean themselves up.

Upstream's ``pkg/controller/ttlafterfinished``: a Job with ``spec.ttlSecondsAfterFinished``
is deleted (``propagationPolicy: Background``, so the garbage collector removes its pods)
that many seconds after it finished -- the ``lastTransitionTime`` of its ``Complete`` or
``Failed`` condition. A Job not yet due is looked at again when it will be. Just before
deleting, the Job is read fresh from the API server rather than the cache, because a user
may have just changed the TTL, and the delete is made on the exact object read (a uid
precondition), so that a recreated Job of the same name is never deleted by mistake.
"""

from __future__ import annotations

import logging

from kubling.api.meta import Object
from kubling.client import informer, rest, workqueue
from kubling.controllers import manager, podcontrol

log = logging.getLogger(__name__)

JOBS = rest.lookup("batch/v1", "jobs")


def finish_time(job: Object) -> float | None:
    """When the Job finished: its true ``Complete`` or ``Failed`` condition's transition."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return podcontrol.parse_time(cond.get("lastTransitionTime"))
    return None


def _ttl(job: Object) -> int | None:
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    return ttl if isinstance(ttl, int) and not isinstance(ttl, bool) else None


def needs_cleanup(job: Object) -> bool:
    """Has a TTL, is finished, and is not already being deleted."""
    if (job.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if _ttl(job) is None:
        return False
    return any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
               for c in (job.get("status") or {}).get("conditions") or [])


class TTLAfterFinishedController:
    """Deletes finished Jobs whose ``ttlSecondsAfterFinished`` has run out."""

    def __init__(self, ctx: manager.ControllerContext) -> None:
        self.jobs_api = ctx.client.resource(JOBS)
        self.wall = podcontrol.WallClock(ctx.clock)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="ttl-after-finished",
                                                                   clock=ctx.clock)
        self.jobs = ctx.informers.informer(JOBS)
        self.jobs.add_event_handler(on_add=self._enqueue,
                                    on_update=lambda old, new: self._enqueue(new))

    def _enqueue(self, job: Object) -> None:
        if needs_cleanup(job):
            self.queue.add(informer.key_of(job))

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    def _time_left(self, job: Object) -> float | None:
        """Seconds until the Job expires (<= 0: now); ``None`` if it never will."""
        ttl = _ttl(job)
        finished = finish_time(job)
        if ttl is None or not needs_cleanup(job):
            return None
        if finished is None:
            # A finished condition without a time: upstream reports an error; treat it as
            # having just finished rather than deleting early.
            log.warning("job %s/%s: finished condition has no lastTransitionTime",
                        (job.get("metadata") or {}).get("namespace"),
                        (job.get("metadata") or {}).get("name"))
            finished = self.wall.now()
        return finished + ttl - self.wall.now()

    async def reconcile(self, key: str) -> float | None:
        namespace, name = informer.split_key(key)
        cached = self.jobs.indexer.get(key)
        if cached is None:
            return None
        left = self._time_left(cached)
        if left is None:
            return None
        if left > 0:
            return left
        try:
            fresh = await self.jobs_api.get(name, namespace=namespace)
        except rest.ApiError as err:
            if rest.is_not_found(err):
                return None
            raise
        left = self._time_left(fresh)
        if left is None:
            return None
        if left > 0:
            return left
        uid = str((fresh.get("metadata") or {}).get("uid") or "")
        log.info("job %s: ttlSecondsAfterFinished expired, deleting it", key)
        try:
            await self.jobs_api.delete(name, namespace=namespace,
                                       propagation_policy="Background",
                                       preconditions={"uid": uid} if uid else None)
        except rest.ApiError as err:
            if rest.is_not_found(err) or rest.is_conflict(err):
                return None  # gone, or replaced by a new Job of the same name
            raise
        return None
