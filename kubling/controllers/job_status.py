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
    """Sorted indexes as ranges: {1, 3, 4, 5} → ``"1,3-5"``."""
    parts: list[str] = []
    ordered = sorted(set(indexes))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
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
    """When the pod finished (seconds since the epoch): its containers' latest
    ``finishedAt``, else ``default``."""
    status = pod.get("status") or {}
    latest: float | None = None
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key) or []:
            terminated = ((cs or {}).get("state") or {}).get("terminated") or {}
            at = podcontrol.parse_time(terminated.get("finishedAt"))
            if at is not None and (latest is None or at > latest):
                latest = at
    return latest or default


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


# -- backoff ---------------------------------------------------------------------------


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
        if self.failures == 0 or self.last_failure is None:
            return 0.0
        delay = min(DEFAULT_BACKOFF * 2.0 ** min(self.failures - 1, 30), MAX_BACKOFF)
        elapsed = now - self.last_failure
        return max(0.0, delay - elapsed)
