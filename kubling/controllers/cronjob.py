"""The CronJob controller: starts Jobs on a schedule (upstream ``pkg/controller/cronjob``,
the v2 controller).

Handlers only enqueue: a CronJob's changes enqueue its key, and a Job's changes enqueue
the CronJob that controls it. ``reconcile`` deletes finished Jobs beyond the history
limits, brings ``status.active`` in line with the Jobs that exist, starts the run that is
due (if any, and only the latest one when several were missed), writes the status once,
and returns the delay until the next scheduled time, which the work queue turns into the
next reconcile — there is no polling loop.

A Job's name is ``<cronjob>-<scheduled time in minutes since the epoch>``: the API
server's AlreadyExists is the lock that stops a run from starting twice, even across a
restart between creating the Job and recording it in the status.
"""

from __future__ import annotations

import copy
import datetime
import logging
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, informer, rest, workqueue
from kubling.controllers import cronjob_schedule as cron
from kubling.controllers import job_status as js
from kubling.controllers import podcontrol
from kubling.controllers.manager import ControllerContext

log = logging.getLogger(__name__)

CRONJOBS = rest.lookup("batch/v1", "cronjobs")
JOBS = rest.lookup("batch/v1", "jobs")
SCHEDULED_TIMESTAMP_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"
#: Jobs by the uid of their controlling owner.
JOB_CONTROLLER_INDEX = "cronjob-controller/controller-uid"
#: Requeue this long after the scheduled time, so that a slightly fast clock does not
#: wake the CronJob just before its run is due.
NEXT_SCHEDULE_DELTA = 0.1


def _rfc3339(when: datetime.datetime) -> str:
    """Go's ``time.RFC3339``: ``Z`` for UTC, else the numeric offset."""
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    offset = when.utcoffset()
    if not offset:
        return text + "Z"
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{text}{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _rfc1123z(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


def _time(value: Any) -> datetime.datetime | None:
    seconds = podcontrol.parse_time(value)
    return None if seconds is None else datetime.datetime.fromtimestamp(seconds, datetime.UTC)


def _job_ref(job: Object) -> dict[str, str]:
    md = job.get("metadata") or {}
    return {"kind": "Job", "namespace": str(md.get("namespace") or ""),
            "name": str(md.get("name") or ""), "uid": str(md.get("uid") or ""),
            "apiVersion": "batch/v1", "resourceVersion": str(md.get("resourceVersion") or "")}


def _active(cj: Object) -> list[dict[str, Any]]:
    status: dict[str, Any] = cj.setdefault("status", {})
    active: list[dict[str, Any]] = status.setdefault("active", [])
    return active


def _in_active(cj: Object, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in _active(cj))


def _remove_active(cj: Object, uid: str) -> None:
    cj["status"]["active"] = [ref for ref in _active(cj) if ref.get("uid") != uid]


class CronJobController:
    """Creates Jobs from CronJobs when their schedule says so, and prunes old ones."""

    def __init__(self, ctx: ControllerContext) -> None:
        self.wall = podcontrol.WallClock(ctx.clock)
        self.recorder: events.EventRecorder = ctx.recorder_for("cronjob-controller")
        self.cronjobs_api = ctx.client.resource(CRONJOBS)
        self.jobs_api = ctx.client.resource(JOBS)
        self.cronjobs = ctx.informers.informer(CRONJOBS)
        self.jobs = ctx.informers.informer(JOBS)
        self.jobs.indexer.add_index(JOB_CONTROLLER_INDEX, podcontrol.controller_uid_index,
                                    exist_ok=True)
        self.queue: workqueue.WorkQueue[str] = workqueue.WorkQueue(name="cronjob",
                                                                   clock=ctx.clock)
        self.written = podcontrol.StatusWrites()
        self.cronjobs.add_event_handler(
            on_add=self._enqueue, on_update=lambda old, new: self._enqueue(new),
            on_delete=self._enqueue)
        self.jobs.add_event_handler(on_add=self._job_changed, on_update=self._job_updated,
                                    on_delete=self._job_changed)

    async def run(self, *, workers: int) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=workers)

    def now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.wall.now(), datetime.UTC)

    # -- handlers (enqueue only) ---------------------------------------------------------
    def _enqueue(self, cronjob: Object) -> None:
        self.queue.add(informer.key_of(cronjob))

    def _owner_key(self, job: Object) -> str | None:
        ref = podcontrol.controller_of(job)
        owner = podcontrol.resolve_controller_ref(self.cronjobs.indexer, meta.namespace_of(job),
                                                  ref, "CronJob")
        return informer.key_of(owner) if owner is not None else None

    def _job_changed(self, job: Object) -> None:
        key = self._owner_key(job)
        if key is not None:
            self.queue.add(key)

    def _job_updated(self, old: Object, new: Object) -> None:
        self._job_changed(new)
        old_key = self._owner_key(old)
        if old_key is not None and old_key != self._owner_key(new):
            self.queue.add(old_key)

    # -- reconcile -----------------------------------------------------------------------
    async def reconcile(self, key: str) -> float | None:
        """Sync one CronJob; return the seconds until its next scheduled time."""
        cached = self.cronjobs.indexer.get(key)
        if cached is None:
            self.written.forget(key)
            return None
        cj = copy.deepcopy(self.written.fresher(key, cached))
        uid = js.uid_of(cj)
        jobs = [j for j in self.jobs.indexer.by_index(JOB_CONTROLLER_INDEX, uid)
                if meta.namespace_of(j) == meta.namespace_of(cj)]
        changed = await self._clean_up_finished(cj, jobs)
        requeue, synced, error = await self._sync(cj, jobs)
        if changed or synced:
            status = cj.setdefault("status", {})
            if not status.get("active"):
                status.pop("active", None)
            updated = await self.cronjobs_api.update_status(cj)
            self.written.wrote(key, cj, updated)
        if requeue is not None:
            return requeue
        if error is not None:
            raise error
        return None

    async def _clean_up_finished(self, cj: Object, jobs: list[Object]) -> bool:
        """Delete the oldest finished Jobs beyond ``successfulJobsHistoryLimit`` and
        ``failedJobsHistoryLimit`` (oldest by ``startTime``)."""
        spec = cj.get("spec") or {}
        changed = False
        for outcome, limit_field in (("Complete", "successfulJobsHistoryLimit"),
                                     ("Failed", "failedJobsHistoryLimit")):
            limit = spec.get(limit_field)
            if limit is None:
                continue
            finished = [j for j in jobs if js.finished_condition(j) == outcome]
            excess = len(finished) - int(limit)
            if excess <= 0:
                continue
            finished.sort(key=lambda j: (
                (j.get("status") or {}).get("startTime") is None,
                str((j.get("status") or {}).get("startTime") or ""), meta.name_of(j)))
            for job in finished[:excess]:
                if await self._delete_job(cj, job):
                    changed = True
        return changed

    async def _delete_job(self, cj: Object, job: Object) -> bool:
        try:
            await self.jobs_api.delete(meta.name_of(job), namespace=meta.namespace_of(job),
                                       propagation_policy="Background")
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                self.recorder.record(cj, events.WARNING, "FailedDelete", f"Deleted job: {err}")
                log.warning("cannot delete job %s/%s of cronjob %s: %s",
                            meta.namespace_of(job), meta.name_of(job), meta.name_of(cj), err)
                return False
        _remove_active(cj, js.uid_of(job))
        self.recorder.record(cj, events.NORMAL, "SuccessfulDelete",
                             f"Deleted job {meta.name_of(job)}")
        return True

    async def _sync(self, cj: Object,
                    jobs: list[Object]) -> tuple[float | None, bool, Exception | None]:
        """Upstream ``syncCronJob``: (requeue after, status changed, error)."""
        now = self.now()
        changed = await self._reconcile_active(cj, jobs)
        spec = cj.get("spec") or {}
        if js.is_deleting(cj) or spec.get("suspend"):
            return None, changed, None
        time_zone = spec.get("timeZone")
        try:
            cron.zone(time_zone)
        except ValueError as err:
            self.recorder.record(cj, events.WARNING, "UnknownTimeZone",
                                 f'invalid timeZone: "{time_zone}": {err}')
            return None, changed, None
        text = str(spec.get("schedule") or "")
        if "TZ" in text:
            self.recorder.record(cj, events.WARNING, "UnsupportedSchedule",
                                 f'CRON_TZ or TZ used in schedule "{text}" is not officially '
                                 "supported, see https://kubernetes.io/docs/concepts/workloads/"
                                 "controllers/cron-jobs/ for more details")
        try:
            schedule = cron.parse(text, None if "TZ" in text else time_zone)
        except ValueError as err:
            self.recorder.record(cj, events.WARNING, "UnparseableSchedule",
                                 f'unparseable schedule: "{text}" : {err}')
            return None, changed, None

        status = cj.get("status") or {}
        created = _time((cj.get("metadata") or {}).get("creationTimestamp")) or now
        last = _time(status.get("lastScheduleTime"))
        deadline = spec.get("startingDeadlineSeconds")
        try:
            due = cron.most_recent(schedule, created=created, last_scheduled=last, now=now,
                                   starting_deadline=deadline)
        except ValueError as err:
            self.recorder.record(cj, events.WARNING, "InvalidSchedule",
                                 f"invalid schedule: {text} : {err}")
            return None, changed, None
        if due.missed > cron.TOO_MANY_MISSED:
            self.recorder.record(cj, events.WARNING, "TooManyMissedTimes",
                                 "too many missed start times. Set or decrease "
                                 ".spec.startingDeadlineSeconds or check clock skew")
        requeue = self._next_in(cj, schedule, now, created)
        scheduled = due.time
        if scheduled is None:
            return requeue, changed, None
        if deadline is not None and scheduled + datetime.timedelta(seconds=deadline) < now:
            self.recorder.record(cj, events.WARNING, "MissSchedule",
                                 f"Missed scheduled time to start a job: {_rfc1123z(scheduled)}")
            return requeue, changed, None
        name = cron.job_name(meta.name_of(cj), scheduled)
        if any(ref.get("name") == name for ref in _active(cj)) or last == scheduled:
            return requeue, changed, None  # this run was started already
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and _active(cj):
            self.recorder.record(cj, events.NORMAL, "JobAlreadyActive",
                                 "Not starting job because prior execution is running and "
                                 "concurrency policy is Forbid")
            return requeue, changed, None
        if policy == "Replace":
            for ref in list(_active(cj)):
                try:
                    running = await self.jobs_api.get(str(ref.get("name")),
                                                      namespace=meta.namespace_of(cj))
                except rest.ApiError as err:
                    self.recorder.record(cj, events.WARNING, "FailedGet", f"Get job: {err}")
                    return None, changed, err
                if not await self._delete_job(cj, running):
                    return None, changed, RuntimeError(
                        f"could not replace job {meta.namespace_of(cj)}/{ref.get('name')}")
                changed = True

        started, error = await self._create_job(cj, name, scheduled)
        if started is None:
            return (requeue if error is None else None), changed, error
        _active(cj).append(_job_ref(started))
        cj.setdefault("status", {})["lastScheduleTime"] = podcontrol.format_time(
            scheduled.timestamp())
        return self._next_in(cj, schedule, now, created), True, None

    async def _reconcile_active(self, cj: Object, jobs: list[Object]) -> bool:
        """Drop finished and vanished Jobs from ``status.active``; note success times."""
        changed = False
        status = cj.setdefault("status", {})
        children = {js.uid_of(j) for j in jobs}
        for job in jobs:
            uid = js.uid_of(job)
            outcome = js.finished_condition(job)
            found = _in_active(cj, uid)
            if not found and not outcome:
                fresh = await self.cronjobs_api.get(meta.name_of(cj),
                                                    namespace=meta.namespace_of(cj))
                if _in_active(fresh, uid):
                    continue  # our cache lags our own status write
                self.recorder.record(cj, events.WARNING, "UnexpectedJob",
                                     "Saw a job that the controller did not create or forgot: "
                                     f"{meta.name_of(job)}")
            elif found and outcome:
                _remove_active(cj, uid)
                self.recorder.record(cj, events.NORMAL, "SawCompletedJob",
                                     f"Saw completed job: {meta.name_of(job)}, "
                                     f"condition: {outcome}")
                changed = True
            elif outcome:
                completed = _time((job.get("status") or {}).get("completionTime"))
                last = _time(status.get("lastSuccessfulTime"))
                if completed is not None and (last is None or completed > last):
                    status["lastSuccessfulTime"] = podcontrol.format_time(completed.timestamp())
                    changed = True
        for ref in list(_active(cj)):
            if ref.get("uid") in children:
                continue
            try:
                await self.jobs_api.get(str(ref.get("name")),
                                        namespace=str(ref.get("namespace") or
                                                      meta.namespace_of(cj)))
            except rest.ApiError as err:
                if not rest.is_not_found(err):
                    raise
                self.recorder.record(cj, events.NORMAL, "MissingJob",
                                     f"Active job went missing: {ref.get('name')}")
                _remove_active(cj, str(ref.get("uid")))
                changed = True
        return changed

    def _next_in(self, cj: Object, schedule: cron.Schedule, now: datetime.datetime,
                 created: datetime.datetime) -> float:
        """Seconds from ``now`` to the activation after the latest due one
        (``nextScheduleTimeDuration``), plus a little."""
        last = _time((cj.get("status") or {}).get("lastScheduleTime"))
        try:
            due = cron.most_recent(schedule, created=created, last_scheduled=last, now=now)
            base = due.time or due.earliest
        except ValueError:
            base = now
        return (schedule.next(base) - now).total_seconds() + NEXT_SCHEDULE_DELTA

    async def _create_job(self, cj: Object, name: str, scheduled: datetime.datetime,
                          ) -> tuple[Object | None, Exception | None]:
        """Create the run's Job; an existing one of ours (a retry after a crash or a
        failed status write) is taken as created."""
        spec = cj.get("spec") or {}
        template = spec.get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        annotations = dict(tmeta.get("annotations") or {})
        annotations[SCHEDULED_TIMESTAMP_ANNOTATION] = _rfc3339(
            scheduled.astimezone(cron.zone(spec.get("timeZone"))))
        body: Object = {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": meta.namespace_of(cj),
                         "labels": dict(tmeta.get("labels") or {}),
                         "annotations": annotations,
                         "ownerReferences": [podcontrol.controller_ref(
                             cj, api_version="batch/v1", kind="CronJob")]},
            "spec": copy.deepcopy(template.get("spec") or {}),
        }
        try:
            created: Object = await self.jobs_api.create(body, namespace=meta.namespace_of(cj))
        except rest.ApiError as err:
            if podcontrol.namespace_terminating(err):
                return None, err
            if not rest.is_already_exists(err):
                self.recorder.record(cj, events.WARNING, "FailedCreate",
                                     f"Error creating job: {err}")
                return None, err
            try:
                existing = await self.jobs_api.get(name, namespace=meta.namespace_of(cj))
            except rest.ApiError as get_err:
                return None, get_err
            ref = podcontrol.controller_of(existing)
            if (ref is None or ref.get("uid") != js.uid_of(cj)
                    or _in_active(cj, js.uid_of(existing))):
                return None, None  # someone else's, or already recorded
            return existing, None
        self.recorder.record(cj, events.NORMAL, "SuccessfulCreate",
                             f"Created job {meta.name_of(created)}")
        return created, None
