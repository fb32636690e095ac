"""One sync of one Job: upstream's ``syncJob``, ``manageJob`` and
``trackJobStatusAndRemoveFinalizers``, in that order.

A ``JobSync`` is made per reconcile from a private copy of the cached Job and a snapshot of
its pods, decides, writes through the controller (``job.JobController``), and is thrown
away. The order of its writes is what makes counting exact: uids into
``uncountedTerminatedPods``, then finalizers off, then the uids into the counters, and a
terminal condition only once nothing is uncounted and no pod is still terminating —
which is why a finishing Job first shows ``SuccessCriteriaMet`` or ``FailureTarget``
and only then ``Complete`` or ``Failed``, as in Kubernetes 1.31+.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubling.api.meta import Object
from kubling.client import events
from kubling.controllers import job_pods as jp
from kubling.controllers import job_status as js
from kubling.controllers import podcontrol

if TYPE_CHECKING:
    from kubling.controllers.job import JobController

#: Upstream's ``MaxUncountedPods``: at most this many uids wait in the status at once.
MAX_UNCOUNTED_PODS = 500


class JobSync:
    def __init__(self, controller: JobController, key: str, job: Object,
                 pods: list[Object]) -> None:
        self.ctl = controller
        self.key = key
        self.job = job
        self.spec: dict[str, Any] = job.get("spec") or {}
        self.now: float = controller.wall.now()
        self.pods = pods
        self.indexed = js.is_indexed(job)
        self.completions: int | None = self.spec.get("completions")
        status = job.setdefault("status", {})
        uncounted = status.get("uncountedTerminatedPods") or {}
        self.uncounted_succeeded: list[str] = list(uncounted.get("succeeded") or [])
        self.uncounted_failed: list[str] = list(uncounted.get("failed") or [])
        self.expected_removals = controller.removals.pending(key)
        self.active_pods = [p for p in self.pods if js.is_active(p)]
        self.terminating = sum(1 for p in self.pods if js.is_terminating(p))
        self.succeeded_indexes: set[int] = set()
        self.per_index = js.has_backoff_limit_per_index(job)
        #: Indexes failed for good (``backoffLimitPerIndex``); None for other Jobs.
        self.failed_indexes: set[int] | None = None
        #: Per index, the failed pod whose replacement inherits its failure count.
        self.awaiting: dict[int, Object] = {}
        self.requeue: float | None = None
        self.backoff = controller.backoff.get(key, js.BackoffRecord())

    @property
    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.job.setdefault("status", {})
        return status

    def _requeue_in(self, seconds: float) -> None:
        if self.requeue is None or seconds < self.requeue:
            self.requeue = seconds

    def _counted_failure(self, pod: Object) -> bool:
        policy = self.spec.get("podFailurePolicy")
        return policy is None or js.match_pod_failure_policy(policy, pod).count_failed

    def _valid_index(self, pod: Object) -> bool:
        ix = js.completion_index(pod)
        return ix is not None and ix < (self.completions or 0)

    def _new_finished_pods(self) -> tuple[list[Object], list[Object]]:
        """Finished pods not yet in the status (``getNewFinishedPods``)."""
        skip = set(self.uncounted_succeeded) | set(self.uncounted_failed) | self.expected_removals
        succeeded: list[Object] = []
        failed: list[Object] = []
        for pod in self.pods:
            if not js.has_tracking_finalizer(pod) or js.uid_of(pod) in skip:
                continue
            if self.indexed and not self._valid_index(pod):
                continue
            if js.phase(pod) == "Succeeded":
                succeeded.append(pod)
            elif js.is_pod_failed(pod, self.job):
                failed.append(pod)
        return succeeded, failed

    # -- syncJob -----------------------------------------------------------------------
    async def run(self) -> float | None:
        status = self.status
        satisfied = self.ctl.expectations.satisfied(self.key)
        suspended = bool(self.spec.get("suspend"))
        new_succeeded, new_failed = self._new_finished_pods()
        succeeded = (int(status.get("succeeded") or 0) + len(new_succeeded)
                     + len(self.uncounted_succeeded))
        failed = (int(status.get("failed") or 0)
                  + sum(1 for p in new_failed if self._counted_failure(p))
                  + len(self.uncounted_failed))
        ready = sum(1 for p in self.active_pods if js.is_ready(p))
        self.backoff = self.backoff.next(
            [js.finished_time(p, self.now) for p in new_succeeded],
            [js.finished_time(p, self.now) for p in new_failed if self._counted_failure(p)])

        start_changed = False
        if not status.get("startTime") and not suspended:
            status["startTime"] = podcontrol.format_time(self.now)
            start_changed = True

        finished = self._finishing_condition(failed)
        if self.indexed:
            completions = self.completions or 0
            self.succeeded_indexes = js.parse_indexes(status.get("completedIndexes"),
                                                      completions)
            self.succeeded_indexes |= {
                ix for p in self.pods
                if js.phase(p) == "Succeeded" and (ix := js.completion_index(p)) is not None
                and ix < completions}
            succeeded = len(self.succeeded_indexes)
            if self.per_index:
                self.failed_indexes = js.failed_indexes(self.job, self.pods)
                if finished is None:
                    finished = self._per_index_condition()
                self.awaiting = jp.pods_awaiting_replacement(
                    self.job, self.pods, self.succeeded_indexes, self.failed_indexes, self.now)
            if finished is None:
                message = js.match_success_policy(self.job, self.succeeded_indexes)
                if message is not None:
                    finished = js.Condition(js.SUCCESS_CRITERIA_MET, js.REASON_SUCCESS_POLICY,
                                            message)

        active = len(self.active_pods)
        suspend_changed = False
        manage_error: Exception | None = None
        if finished is not None:
            deleted, deleted_ready, manage_error = await self.ctl.delete_active_pods(
                self.job, self.active_pods)
            if deleted != active or not satisfied:
                finished = None  # pods may remain that the cache has not shown yet
            active -= deleted
            self.terminating += deleted
            ready -= deleted_ready
        else:
            managed = False
            if satisfied and not js.is_deleting(self.job):
                active, ready, manage_error = await self._manage(active, ready, succeeded)
                managed = True
            if self.completions is None:
                complete = succeeded > 0 and active == 0
            else:
                complete = succeeded >= self.completions and active == 0
            if complete:
                finished = js.Condition(js.SUCCESS_CRITERIA_MET, js.REASON_COMPLETIONS_REACHED,
                                        js.MESSAGE_COMPLETIONS_REACHED)
            elif managed:
                suspend_changed = self._update_suspended(suspended, active)

        needs_update = (suspend_changed or start_changed
                        or active != int(status.get("active") or 0)
                        or ready != status.get("ready")
                        or self.terminating != status.get("terminating"))
        status["active"] = active
        status["ready"] = ready
        status["terminating"] = self.terminating
        await self._track(needs_update, finished)
        if manage_error is not None:
            raise manage_error
        return self.requeue

    def _finishing_condition(self, failed: int) -> js.Condition | None:
        """Why the Job is over, if it is: a condition already recorded, a ``FailJob`` rule,
        the backoff limit or the active deadline (in upstream's order)."""
        for type_ in (js.SUCCESS_CRITERIA_MET, js.FAILURE_TARGET):
            cond = podcontrol.find_condition(self.job, type_)
            if cond is not None and cond.get("status") == "True":
                return js.Condition(type_, str(cond.get("reason") or ""),
                                    str(cond.get("message") or ""))
        message = js.fail_job_message(self.job, self.pods)
        if message is not None:
            return js.Condition(js.FAILURE_TARGET, js.REASON_POD_FAILURE_POLICY, message)
        backoff_limit = int(self.spec.get("backoffLimit", 6))
        if failed > backoff_limit or self._past_backoff_limit_on_failure(backoff_limit):
            return js.Condition(js.FAILURE_TARGET, js.REASON_BACKOFF_LIMIT,
                                js.MESSAGE_BACKOFF_LIMIT)
        deadline = self.spec.get("activeDeadlineSeconds")
        started = podcontrol.parse_time(self.status.get("startTime"))
        if deadline is not None and started is not None and not self.spec.get("suspend"):
            left = float(deadline) - (self.now - started)
            if left <= 0:
                return js.Condition(js.FAILURE_TARGET, js.REASON_DEADLINE, js.MESSAGE_DEADLINE)
            self._requeue_in(left)
        return None

    def _per_index_condition(self) -> js.Condition | None:
        """Too many indexes failed, or every index is done and some failed."""
        failed = len(self.failed_indexes or ())
        max_failed = self.spec.get("maxFailedIndexes")
        if max_failed is not None and failed > int(max_failed):
            return js.Condition(js.FAILURE_TARGET, js.REASON_MAX_FAILED_INDEXES,
                                js.MESSAGE_MAX_FAILED_INDEXES)
        if failed > 0 and failed + len(self.succeeded_indexes) >= (self.completions or 0):
            return js.Condition(js.FAILURE_TARGET, js.REASON_FAILED_INDEXES,
                                js.MESSAGE_FAILED_INDEXES)
        return None

    def _awaits_replacement(self, pod: Object) -> bool:
        ix = js.completion_index(pod)
        kept = self.awaiting.get(ix) if ix is not None else None
        return kept is not None and js.uid_of(kept) == js.uid_of(pod)

    def _ready_indexes(self, indexes: list[int]) -> list[int]:
        """With ``backoffLimitPerIndex`` each index backs off on its own failures: the
        indexes whose backoff is over (requeueing for the soonest of the others)."""
        ready: list[int] = []
        for ix in indexes:
            last = self.awaiting.get(ix)
            left = 0.0
            if last is not None:
                left = js.backoff_remaining(sum(js.index_failure_counts(last)) + 1,
                                            js.finished_time(last, self.now), self.now)
            if left > 0:
                self._requeue_in(left)
            else:
                ready.append(ix)
        return ready

    def _past_backoff_limit_on_failure(self, backoff_limit: int) -> bool:
        """With ``restartPolicy: OnFailure`` failures are container restarts, not pods."""
        template_spec = (self.spec.get("template") or {}).get("spec") or {}
        if template_spec.get("restartPolicy") != "OnFailure":
            return False
        restarts = sum(js.restart_count(p) for p in self.pods
                       if js.phase(p) in ("Pending", "Running"))
        return restarts > 0 if backoff_limit == 0 else restarts >= backoff_limit

    def _update_suspended(self, suspended: bool, active: int) -> bool:
        status = self.status
        if suspended:
            changed = js.ensure_condition(status, js.SUSPENDED, "True", "JobSuspended",
                                          "Job suspended", self.now)
            if changed:
                self.ctl.recorder.record(self.job, events.NORMAL, "Suspended", "Job suspended")
            if active == 0 and self.terminating == 0 and status.get("startTime"):
                # A suspended Job is not running: its clock (and activeDeadlineSeconds)
                # starts again on resume, and its template's scheduling may change.
                del status["startTime"]
                changed = True
            return changed
        changed = js.ensure_condition(status, js.SUSPENDED, "False", "JobResumed",
                                      "Job resumed", self.now)
        if changed:
            self.ctl.recorder.record(self.job, events.NORMAL, "Resumed", "Job resumed")
            status["startTime"] = podcontrol.format_time(self.now)
        return changed

    # -- manageJob ---------------------------------------------------------------------
    async def _manage(self, active: int, ready: int,
                      succeeded: int) -> tuple[int, int, Exception | None]:
        """Create or delete pods towards the wanted number of active ones."""
        if self.spec.get("suspend"):
            doomed = jp.pods_for_removal(self.job, self.active_pods, len(self.active_pods),
                                         self.now)
            deleted, deleted_ready, error = await self.ctl.delete_job_pods(
                self.key, self.job, doomed)
            self.terminating += deleted
            return active - deleted, ready - deleted_ready, error

        parallelism = int(self.spec.get("parallelism", 1))
        if self.completions is None:
            # Without completions any success ends the Job: let what runs finish.
            want = active if succeeded > 0 else parallelism
        else:
            want = max(0, min(self.completions - succeeded, parallelism))

        doomed = jp.pods_for_removal(self.job, self.active_pods, max(0, active - want),
                                     self.now)
        doomed = doomed[: jp.MAX_POD_CHANGES_PER_SYNC]
        if doomed:
            deleted, deleted_ready, error = await self.ctl.delete_job_pods(
                self.key, self.job, doomed)
            self.terminating += deleted
            return active - deleted, ready - deleted_ready, error

        held = self.terminating if js.only_replace_failed(self.job) else 0
        missing = want - held - active
        if missing <= 0:
            return active, ready, None
        wait = 0.0 if self.per_index else self.backoff.remaining(self.now)
        if wait > 0:
            self._requeue_in(wait)
            return active, ready, None
        missing = min(missing, jp.MAX_POD_CHANGES_PER_SYNC)
        indexes: list[int | None]
        if self.indexed:
            pending = jp.pending_indexes(self.job, self.succeeded_indexes, self.pods, missing,
                                         self.failed_indexes)
            indexes = list(self._ready_indexes(pending) if self.per_index else pending)
        else:
            indexes = [None] * missing
        if not indexes:
            return active, ready, None
        created, error = await self.ctl.create_pods(self.key, self.job, indexes,
                                                    replacing=self.awaiting)
        return active + created, ready, error

    # -- trackJobStatusAndRemoveFinalizers -----------------------------------------------
    async def _track(self, needs_flush: bool, finished: js.Condition | None) -> None:
        status = self.status
        uncounted_s, uncounted_f = set(self.uncounted_succeeded), set(self.uncounted_failed)
        new_s, new_f = list(self.uncounted_succeeded), list(self.uncounted_failed)
        with_finalizer = set(self.expected_removals)
        to_release: list[Object] = []
        reached_max = False
        failing = finished is not None and finished.type != js.SUCCESS_CRITERIA_MET
        job_deleting = js.is_deleting(self.job)
        for pod in self.pods:
            uid = js.uid_of(pod)
            if not js.has_tracking_finalizer(pod):
                continue
            with_finalizer.add(uid)
            if uid in self.expected_removals:
                continue
            pod_failed = js.is_pod_failed(pod, self.job)
            succeeded = js.phase(pod) == "Succeeded"
            if not (job_deleting or finished is not None or succeeded or pod_failed):
                continue
            if not (job_deleting or finished is not None) and self._awaits_replacement(pod):
                continue  # its replacement must read its failure count first
            to_release.append(pod)
            if succeeded and uid not in uncounted_f:
                if not self.indexed and uid not in uncounted_s:
                    new_s.append(uid)
                    needs_flush = True
            elif (pod_failed or failing) and uid not in uncounted_f:
                if (not self.indexed or self._valid_index(pod)) and self._counted_failure(pod):
                    new_f.append(uid)
                    needs_flush = True
            if len(new_s) + len(new_f) >= MAX_UNCOUNTED_PODS:
                reached_max = True
                break
        if self.indexed:
            text = js.format_indexes(self.succeeded_indexes)
            if text != (status.get("completedIndexes") or ""):
                needs_flush = True
            status["completedIndexes"] = text
            status["succeeded"] = len(self.succeeded_indexes)
            if self.failed_indexes is not None:
                text = js.format_indexes(self.failed_indexes)
                if text != status.get("failedIndexes"):
                    needs_flush = True
                status["failedIndexes"] = text
        status["uncountedTerminatedPods"] = _uncounted(new_s, new_f)
        if finished is not None and finished.type in (js.FAILURE_TARGET,
                                                      js.SUCCESS_CRITERIA_MET):
            # Record why the Job ends before its pods' finalizers go.
            if js.ensure_condition(status, finished.type, "True", finished.reason,
                                   finished.message, self.now):
                needs_flush = True

        # flushUncountedAndRemoveFinalizers
        if needs_flush:
            await self._write_status()
            needs_flush = False
        self.ctl.backoff[self.key] = self.backoff
        error: Exception | None = None
        if to_release:
            released, error = await self.ctl.remove_finalizers(self.key, to_release)
            with_finalizer -= released
        if self._count_released(with_finalizer):
            needs_flush = True
        if error is not None:
            if needs_flush:
                await self._write_status()
            raise error

        final = None if reached_max else self._enact_finished(finished)
        if final is not None or needs_flush:
            await self._write_status()
        if final is not None:
            self._record_finished(final)

    def _count_released(self, with_finalizer: set[str]) -> bool:
        """Move uids whose pods no longer hold the finalizer into the counters."""
        status = self.status
        uncounted = status.get("uncountedTerminatedPods") or {}
        changed = False
        kept: dict[str, list[str]] = {}
        for field in ("succeeded", "failed"):
            uids = list(uncounted.get(field) or [])
            kept[field] = [u for u in uids if u in with_finalizer]
            moved = len(uids) - len(kept[field])
            if moved:
                changed = True
                if not (self.indexed and field == "succeeded"):
                    status[field] = int(status.get(field) or 0) + moved
        status["uncountedTerminatedPods"] = _uncounted(kept["succeeded"], kept["failed"])
        return changed

    def _enact_finished(self, finished: js.Condition | None) -> js.Condition | None:
        """Set ``Complete``/``Failed`` once every finished pod is counted and none is
        terminating; the interim condition's reason and message carry over."""
        if finished is None:
            return None
        uncounted = self.status.get("uncountedTerminatedPods") or {}
        if uncounted.get("succeeded") or uncounted.get("failed") or self.terminating > 0:
            return None
        final_type = js.COMPLETE if finished.type == js.SUCCESS_CRITERIA_MET else js.FAILED
        js.ensure_condition(self.status, final_type, "True", finished.reason, finished.message,
                            self.now)
        if final_type == js.COMPLETE:
            self.status["completionTime"] = podcontrol.format_time(self.now)
        return js.Condition(final_type, finished.reason, finished.message)

    def _record_finished(self, final: js.Condition) -> None:
        recorder = self.ctl.recorder
        if final.type == js.COMPLETE:
            succeeded = int(self.status.get("succeeded") or 0)
            if self.completions is not None and succeeded > self.completions:
                recorder.record(self.job, events.WARNING, "TooManySucceededPods",
                                "Too many succeeded pods running after completion count "
                                "reached")
            recorder.record(self.job, events.NORMAL, "Completed", "Job completed")
        else:
            recorder.record(self.job, events.WARNING, final.reason, final.message)

    async def _write_status(self) -> None:
        self.job = await self.ctl.update_status(self.key, self.job)


def _uncounted(succeeded: list[str], failed: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if succeeded:
        out["succeeded"] = succeeded
    if failed:
        out["failed"] = failed
    return out
