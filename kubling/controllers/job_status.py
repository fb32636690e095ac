"""The pure half of the Job controller: reading pods and Job status, no I/O.

Everything here is a function of its arguments (and of the time passed in), so the rules
that decide a Job's fate — which pods count as failed, what a pod failure policy says,
when a condition changes, how long to back off — can be read and tested on their own.
``job.py`` holds the loop that applies them through the API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.controllers import podcontrol

JOB_TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
#: Failures of an index so far, carried from a failed pod to its replacement
#: (``backoffLimitPerIndex``); failures a pod failure policy ignored are counted apart.
INDEX_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_FAILURE_COUNT_ANNOTATION = "batch.kubernetes.io/job-index-ignored-failure-count"
#: ``spec.managedBy`` of Jobs this controller reconciles (absent means the same).
JOB_CONTROLLER_NAME = "kubernetes.io/job-controller"

#: Pod-failure backoff: 10 s doubling per failure since the last success, capped at 6 min.
DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 360.0

# Condition types and reasons, in upstream's words.
COMPLETE = "Complete"
FAILED = "Failed"
SUSPENDED = "Suspended"
FAILURE_TARGET = "FailureTarget"
SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
REASON_DEADLINE = "DeadlineExceeded"
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"
REASON_COMPLETIONS_REACHED = "CompletionsReached"
REASON_MAX_FAILED_INDEXES = "MaxFailedIndexesExceeded"
REASON_FAILED_INDEXES = "FailedIndexes"
REASON_SUCCESS_POLICY = "SuccessPolicy"
MESSAGE_MAX_FAILED_INDEXES = "Job has exceeded the specified maximal number of failed indexes"
MESSAGE_FAILED_INDEXES = "Job has failed indexes"
MESSAGE_BACKOFF_LIMIT = "Job has reached the specified backoff limit"
MESSAGE_DEADLINE = "Job was active longer than specified deadline"
MESSAGE_COMPLETIONS_REACHED = "Reached expected number of succeeded pods"


# -- conditions ------------------------------------------------------------------------


def condition_true(job: Object, type_: str) -> bool:
    cond = podcontrol.find_condition(job, type_)
    return cond is not None and cond.get("status") == "True"


def finished_condition(job: Object) -> str:
    """``Complete`` or ``Failed`` when the Job is over (upstream ``IsJobFinished``), else ``""``."""
    for type_ in (COMPLETE, FAILED):
        if condition_true(job, type_):
            return type_
    return ""


@dataclasses.dataclass(frozen=True)
class Condition:
    """A condition the controller means to set (``status`` is always ``True``)."""

    type: str
    reason: str
    message: str


def new_condition(type_: str, status: str, reason: str, message: str,
                  now: float) -> dict[str, Any]:
    stamp = podcontrol.format_time(now)
    cond: dict[str, Any] = {"type": type_, "status": status, "lastProbeTime": stamp,
                            "lastTransitionTime": stamp}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


def ensure_condition(status: dict[str, Any], type_: str, cond_status: str, reason: str,
                     message: str, now: float) -> bool:
    """Upstream ``ensureJobConditionStatus``: replace the condition of ``type_`` when its
    status, reason or message differ; add it only when it is not ``False`` (a Job never
    grows a ``Suspended=False`` it did not have). Returns whether anything changed."""
    conditions: list[dict[str, Any]] = status.setdefault("conditions", [])
    for i, cond in enumerate(conditions):
        if cond.get("type") == type_:
            if (cond.get("status"), cond.get("reason", ""), cond.get("message", "")) != (
                    cond_status, reason, message):
                conditions[i] = new_condition(type_, cond_status, reason, message, now)
                return True
            return False
    if cond_status == "False":
        if not conditions:
            del status["conditions"]
        return False
    conditions.append(new_condition(type_, cond_status, reason, message, now))
    return True


# -- completion indexes ----------------------------------------------------------------


def parse_indexes(text: Any, completions: int) -> set[int]:
    """``"1,3-5"`` → {1, 3, 4, 5}, dropping what is malformed or not below ``completions``."""
    found: set[int] = set()
    if not isinstance(text, str):
        return found
    for part in text.split(","):
        first, sep, last = part.strip().partition("-")
        try:
            lo = int(first)
            hi = int(last) if sep else lo
        except ValueError:
            continue
        found.update(i for i in range(max(lo, 0), min(hi, completions - 1) + 1))
    return found


def format_indexes(indexes: Iterable[int]) -> str:
    """Sorted indexes as ranges: {1, 3, 4, 5} → ``"1,3-5"``, {1, 2} → ``"1,2"``."""
    parts: list[str] = []
    ordered = sorted(set(indexes))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if i == j:
            parts.append(str(ordered[i]))
        else:  # two neighbours are listed, longer runs are ranges (upstream's String())
            parts.append(f"{ordered[i]}{',' if j == i + 1 else '-'}{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def completion_index(pod: Object) -> int | None:
    """The pod's completion index (annotation, else label); ``None`` when unusable."""
    md = pod.get("metadata") or {}
    for source in (md.get("annotations"), md.get("labels")):
        value = (source or {}).get(COMPLETION_INDEX_ANNOTATION)
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def is_indexed(job: Object) -> bool:
    return (job.get("spec") or {}).get("completionMode") == "Indexed"


# -- pods ------------------------------------------------------------------------------


phase = podcontrol.phase_of
uid_of = podcontrol.uid_of
#: ``metadata.deletionTimestamp`` is set (on any object).
is_deleting = podcontrol.is_terminating
#: Neither finished nor being deleted (``IsPodActive``).
is_active = podcontrol.is_pod_active
is_ready = podcontrol.is_pod_ready


def is_terminating(pod: Object) -> bool:
    """Being deleted but not finished: a pod ``status.terminating`` counts."""
    return is_deleting(pod) and not podcontrol.is_pod_terminal(pod)


def has_tracking_finalizer(pod: Object) -> bool:
    return JOB_TRACKING_FINALIZER in ((pod.get("metadata") or {}).get("finalizers") or [])


def only_replace_failed(job: Object) -> bool:
    """``podReplacementPolicy: Failed``: a terminating pod is neither replaced nor failed."""
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or spec.get("podFailurePolicy") is not None


def is_pod_failed(pod: Object, job: Object) -> bool:
    """Upstream ``isPodFailed``: the Failed phase, or — unless only failed pods are replaced
    — a deletion before success, so that pods removed from under the Job (evicted, deleted
    by hand, lost with their node) count as failures instead of vanishing."""
    if phase(pod) == "Failed":
        return True
    if only_replace_failed(job):
        return False
    return is_deleting(pod) and phase(pod) != "Succeeded"


def finished_time(pod: Object, default: float) -> float:
    """When the pod finished (seconds since the epoch), as upstream's ``getFinishedTime``
    reads it: its containers' latest ``finishedAt``, else when it stopped being Ready,
    else its deletion time less the grace period, else its creation; ``default`` only for
    a pod with none of these."""
    status = pod.get("status") or {}
    latest: float | None = None
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key) or []:
            terminated = ((cs or {}).get("state") or {}).get("terminated") or {}
            at = podcontrol.parse_time(terminated.get("finishedAt"))
            if at is not None and (latest is None or at > latest):
                latest = at
    if latest is not None:
        return latest
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "False":
            at = podcontrol.parse_time(cond.get("lastTransitionTime"))
            if at is not None:
                return at
    md = pod.get("metadata") or {}
    deleted = podcontrol.parse_time(md.get("deletionTimestamp"))
    if deleted is not None:
        return deleted - float(md.get("deletionGracePeriodSeconds") or 0)
    return podcontrol.parse_time(md.get("creationTimestamp")) or default


def restart_count(pod: Object) -> int:
    status = pod.get("status") or {}
    return sum(int((cs or {}).get("restartCount") or 0)
               for key in ("containerStatuses", "initContainerStatuses")
               for cs in status.get(key) or [])


# -- pod failure policy ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PolicyVerdict:
    """What a pod failure policy says about one failed pod (``matchPodFailurePolicy``)."""

    action: str | None = None  # the matching rule's action; None when no rule matched
    count_failed: bool = True  # does the failure count towards backoffLimit?
    message: str | None = None  # set for FailJob: the Job's failure message


def match_pod_failure_policy(policy: Any, pod: Object) -> PolicyVerdict:
    """The first rule that matches ``pod`` decides: ``Ignore`` does not count the failure,
    ``Count`` and ``FailIndex`` count it, ``FailJob`` fails the Job with a message naming
    the container (exit codes) or the condition."""
    if not isinstance(policy, dict):
        return PolicyVerdict()
    for position, rule in enumerate(policy.get("rules") or []):
        action = str(rule.get("action") or "")
        on_exit = rule.get("onExitCodes")
        what: str | None = None
        if isinstance(on_exit, dict):
            container = _matching_container(pod, on_exit)
            if container is None:
                continue
            code = ((container.get("state") or {}).get("terminated") or {}).get("exitCode")
            what = (f"Container {container.get('name')} for pod {meta.namespace_of(pod)}/"
                    f"{meta.name_of(pod)} failed with exit code {code}")
        elif isinstance(rule.get("onPodConditions"), list):
            cond_type = _matching_condition(pod, rule["onPodConditions"])
            if cond_type is None:
                continue
            what = (f"Pod {meta.namespace_of(pod)}/{meta.name_of(pod)} has condition "
                    f"{cond_type}")
        else:
            continue
        if action == "Ignore":
            return PolicyVerdict(action, False)
        if action == "FailJob":
            return PolicyVerdict(action, True, f"{what} matching FailJob rule at index {position}")
        return PolicyVerdict(action, True)
    return PolicyVerdict()


def _matching_container(pod: Object, requirement: dict[str, Any]) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    wanted = requirement.get("containerName")
    operator = requirement.get("operator")
    values = set(requirement.get("values") or [])
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key) or []:
            terminated = ((cs or {}).get("state") or {}).get("terminated")
            if not isinstance(terminated, dict):
                continue
            if wanted and cs.get("name") != wanted:
                continue
            code = terminated.get("exitCode")
            if not isinstance(code, int) or code == 0:
                continue
            if (operator == "In" and code in values) or (operator == "NotIn"
                                                          and code not in values):
                return dict(cs)
    return None


def _matching_condition(pod: Object, patterns: list[Any]) -> str | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        for pattern in patterns:
            if (isinstance(pattern, dict) and cond.get("type") == pattern.get("type")
                    and cond.get("status") == pattern.get("status", "True")):
                return str(cond.get("type"))
    return None


def fail_job_message(job: Object, pods: Iterable[Object]) -> str | None:
    """The message of the first failed pod a ``FailJob`` rule matches (``getFailJobMessage``)."""
    policy = (job.get("spec") or {}).get("podFailurePolicy")
    if policy is None:
        return None
    for pod in pods:
        if is_pod_failed(pod, job):
            verdict = match_pod_failure_policy(policy, pod)
            if verdict.message is not None:
                return verdict.message
    return None


# -- per-index failures and success policies ---------------------------------------------


def has_backoff_limit_per_index(job: Object) -> bool:
    return (job.get("spec") or {}).get("backoffLimitPerIndex") is not None


def _count_annotation(pod: Object, key: str) -> int:
    """A failure-count annotation; garbage (a user may write anything) reads as 0."""
    text = meta.annotations_of(pod).get(key)
    try:
        value = int(str(text))
    except ValueError:
        return 0
    return value if 0 <= value <= 2**31 - 1 else 0


def index_failure_counts(pod: Object) -> tuple[int, int]:
    """(counted, ignored) failures of the pod's index before this pod."""
    return (_count_annotation(pod, INDEX_FAILURE_COUNT_ANNOTATION),
            _count_annotation(pod, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION))


def replacement_failure_counts(job: Object, failed_pod: Object | None) -> tuple[int, int]:
    """The counts a replacement for ``failed_pod`` starts with: its own plus its failure,
    counted or ignored as the pod failure policy says (``getNewIndexFailureCounts``)."""
    if failed_pod is None:
        return 0, 0
    counted, ignored = index_failure_counts(failed_pod)
    policy = (job.get("spec") or {}).get("podFailurePolicy")
    if policy is not None and not match_pod_failure_policy(policy, failed_pod).count_failed:
        return counted, ignored + 1
    return counted + 1, ignored


def is_index_failed(job: Object, pod: Object) -> bool:
    """Does this failed pod fail its whole index? A ``FailIndex`` rule says so at once;
    otherwise a counted failure when the index already failed ``backoffLimitPerIndex``
    times (``isIndexFailed``)."""
    if not is_pod_failed(pod, job):
        return False
    spec = job.get("spec") or {}
    policy = spec.get("podFailurePolicy")
    if policy is not None:
        verdict = match_pod_failure_policy(policy, pod)
        if verdict.action == "FailIndex":
            return True
        if not verdict.count_failed:
            return False
    return index_failure_counts(pod)[0] >= int(spec.get("backoffLimitPerIndex") or 0)


def failed_indexes(job: Object, pods: Iterable[Object]) -> set[int]:
    """Indexes in ``status.failedIndexes`` plus those failed since (pods still holding
    the tracking finalizer)."""
    completions = int((job.get("spec") or {}).get("completions") or 0)
    found = parse_indexes((job.get("status") or {}).get("failedIndexes"), completions)
    for pod in pods:
        ix = completion_index(pod)
        if (ix is not None and ix < completions and has_tracking_finalizer(pod)
                and is_index_failed(job, pod)):
            found.add(ix)
    return found


def match_success_policy(job: Object, succeeded: set[int]) -> str | None:
    """The message of the first success policy rule the succeeded indexes meet
    (``Matched rules at index N``), or ``None``."""
    spec = job.get("spec") or {}
    policy = spec.get("successPolicy")
    if not isinstance(policy, dict) or not succeeded:
        return None
    completions = int(spec.get("completions") or 0)
    for position, rule in enumerate(policy.get("rules") or []):
        if not isinstance(rule, dict):
            continue
        wanted_text, count = rule.get("succeededIndexes"), rule.get("succeededCount")
        if wanted_text is not None:
            wanted = parse_indexes(wanted_text, completions)
            if not wanted:
                continue
            done = len(wanted & succeeded)
            met = done >= int(count) if count is not None else done == len(wanted)
        else:
            met = count is not None and len(succeeded) >= int(count)
        if met:
            return f"Matched rules at index {position}"
    return None


# -- backoff ---------------------------------------------------------------------------


def backoff_remaining(failures: int, last_failure: float | None, now: float) -> float:
    """Seconds until a replacement may start after ``failures`` consecutive failures, the
    latest at ``last_failure``: 10 s doubling per failure, capped at 6 min."""
    if failures <= 0 or last_failure is None:
        return 0.0
    delay = min(DEFAULT_BACKOFF * 2.0 ** min(failures - 1, 30), MAX_BACKOFF)
    return max(0.0, delay - (now - last_failure))


@dataclasses.dataclass(frozen=True)
class BackoffRecord:
    """Failures since the last success and when the latest happened (upstream's
    ``backoffRecord``); kept in memory per Job, as upstream keeps it."""

    failures: int = 0
    last_failure: float | None = None

    def next(self, succeeded_at: list[float], failed_at: list[float]) -> BackoffRecord:
        """The record after pods that newly finished: a success resets the streak, and
        only failures after the latest success count."""
        failed = sorted(failed_at)
        if not succeeded_at:
            if not failed:
                return self
            return BackoffRecord(self.failures + len(failed), failed[-1])
        last_success = max(succeeded_at)
        after = [t for t in failed if t > last_success]
        return BackoffRecord(len(after), after[-1] if after else None)

    def remaining(self, now: float) -> float:
        """Seconds to wait before creating a replacement pod (0 when none)."""
        return backoff_remaining(self.failures, self.last_failure, now)
