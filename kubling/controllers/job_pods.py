"""The Job controller's pods: what a new pod looks like, which pods go first, and the
finalizer removals in flight. Pure functions and one bookkeeping class; no I/O.
The helpers every pod-owning controller shares are in ``podcontrol``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.controllers import job_status as js
from kubling.controllers import podcontrol

#: Upstream's cap on pods created or deleted in one sync.
MAX_POD_CHANGES_PER_SYNC = 500
_MAX_GENERATED_NAME_PREFIX = 58  # 63 minus the 5 random characters the API server adds


def controller_ref(job: Object) -> Object:
    """The ownerReference that makes the Job the pod's controller."""
    return podcontrol.controller_ref(job, api_version="batch/v1", kind="Job")


def _index_generate_name(job_name: str, index: int) -> str:
    suffix = f"-{index}-"
    prefix = job_name + suffix
    if len(prefix) > _MAX_GENERATED_NAME_PREFIX:
        prefix = job_name[: _MAX_GENERATED_NAME_PREFIX - len(suffix)] + suffix
    return prefix


def _add_index_env(container: dict[str, Any]) -> None:
    env: list[dict[str, Any]] = container.setdefault("env", [])
    if any(isinstance(e, dict) and e.get("name") == js.COMPLETION_INDEX_ENV for e in env):
        return
    field_path = f"metadata.labels['{js.COMPLETION_INDEX_ANNOTATION}']"
    env.append({"name": js.COMPLETION_INDEX_ENV,
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": field_path}}})


def new_pod(job: Object, index: int | None = None, replacing: Object | None = None) -> Object:
    """A pod from the Job's template (upstream ``GetPodFromTemplate``) plus the Job's
    additions: the tracking finalizer (so a finished pod cannot vanish before the Job
    counted it) and, for an Indexed Job, the completion index as annotation, label,
    ``JOB_COMPLETION_INDEX`` (through the downward API) and hostname ``<job>-<index>``.
    With ``backoffLimitPerIndex`` the pod also carries its index's failure counts, one
    more than the failed pod it is ``replacing``."""
    name = meta.name_of(job)
    template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
    generate_name = f"{name}-"
    tmeta = template.setdefault("metadata", {})
    finalizers: list[str] = tmeta.setdefault("finalizers", [])
    if js.JOB_TRACKING_FINALIZER not in finalizers:
        finalizers.append(js.JOB_TRACKING_FINALIZER)
    if index is not None:
        pod_spec = template.setdefault("spec", {})
        for key in ("initContainers", "containers"):
            for container in pod_spec.get(key) or []:
                if isinstance(container, dict):
                    _add_index_env(container)
        annotations: dict[str, str] = tmeta.setdefault("annotations", {})
        annotations[js.COMPLETION_INDEX_ANNOTATION] = str(index)
        if js.has_backoff_limit_per_index(job):
            counted, ignored = js.replacement_failure_counts(job, replacing)
            annotations[js.INDEX_FAILURE_COUNT_ANNOTATION] = str(counted)
            if ignored:
                annotations[js.INDEX_IGNORED_FAILURE_COUNT_ANNOTATION] = str(ignored)
        tmeta.setdefault("labels", {})[js.COMPLETION_INDEX_ANNOTATION] = str(index)
        pod_spec["hostname"] = f"{name}-{index}"
        generate_name = _index_generate_name(name, index)
    return podcontrol.pod_from_template(template, namespace=meta.namespace_of(job),
                                        generate_name=generate_name,
                                        owner_ref=controller_ref(job))


def remove_finalizer_patch(pod: Object) -> dict[str, Any] | None:
    """A strategic merge patch dropping the tracking finalizer, guarded by the pod's uid
    so that a namesake created meanwhile is not touched; ``None`` when it has none."""
    if not js.has_tracking_finalizer(pod):
        return None
    return {"metadata": {"uid": js.uid_of(pod),
                         "$deleteFromPrimitiveList/finalizers": [js.JOB_TRACKING_FINALIZER]}}


def pods_for_removal(job: Object, active: list[Object], at_least: int,
                     now: float) -> list[Object]:
    """Active pods to delete: for an Indexed Job first those whose index is unusable,
    already completed or duplicated, then ``at_least`` in all, cheapest to lose first
    (upstream's ``ActivePods`` ranking)."""
    chosen: list[Object] = []
    rest = list(active)
    if js.is_indexed(job):
        completions = int((job.get("spec") or {}).get("completions") or 0)
        done = js.parse_indexes((job.get("status") or {}).get("completedIndexes"), completions)
        by_index: dict[int, list[Object]] = {}
        rest = []
        for pod in active:
            ix = js.completion_index(pod)
            if ix is None or ix >= completions or ix in done:
                chosen.append(pod)
            else:
                by_index.setdefault(ix, []).append(pod)
        for pods in by_index.values():
            # Keep the one furthest along; the others are duplicates.
            extra = podcontrol.pods_to_delete(pods, active, len(pods) - 1, now)
            chosen.extend(extra)
            rest.extend(p for p in pods if not any(p is e for e in extra))
    if len(chosen) < at_least:
        chosen.extend(podcontrol.pods_to_delete(rest, active, at_least - len(chosen), now))
    return chosen


def pending_indexes(job: Object, succeeded: set[int], pods: Iterable[Object],
                    count: int, failed: set[int] | None = None) -> list[int]:
    """The first ``count`` indexes below ``completions`` that neither succeeded, nor failed
    for good, nor have a pod at work (a terminating one counts as at work when only failed
    pods are replaced)."""
    completions = int((job.get("spec") or {}).get("completions") or 0)
    taken = set(succeeded) | (failed or set())
    keep_terminating = js.only_replace_failed(job)
    for pod in pods:
        ix = js.completion_index(pod)
        if ix is not None and (js.is_active(pod) or (keep_terminating
                                                     and js.is_terminating(pod))):
            taken.add(ix)
    found: list[int] = []
    for ix in range(completions):
        if len(found) >= count:
            break
        if ix not in taken:
            found.append(ix)
    return found


def pods_awaiting_replacement(job: Object, pods: Iterable[Object], succeeded: set[int],
                              failed: set[int], now: float) -> dict[int, Object]:
    """Per index still to run, its latest failed pod, kept (finalizer on) until the
    replacement exists so that the replacement can carry the failure count on
    (``getPodsWithDelayedDeletionPerIndex``)."""
    pods = list(pods)
    completions = int((job.get("spec") or {}).get("completions") or 0)
    active = {ix for p in pods if js.is_active(p) and (ix := js.completion_index(p)) is not None}
    latest: dict[int, Object] = {}
    for pod in pods:
        ix = js.completion_index(pod)
        if (ix is None or ix >= completions or not js.has_tracking_finalizer(pod)
                or not js.is_pod_failed(pod, job) or ix in succeeded or ix in failed
                or ix in active):
            continue
        previous = latest.get(ix)
        if previous is None or (sum(js.index_failure_counts(previous))
                                <= sum(js.index_failure_counts(pod))
                                and js.finished_time(pod, now)
                                >= js.finished_time(previous, now)):
            latest[ix] = pod
    return latest


# -- expectations ----------------------------------------------------------------------


class FinalizerExpectations:
    """Pods (by uid) whose tracking finalizer a Job's sync has asked to remove and the
    informer has not yet shown without it (upstream ``uidTrackingExpectations``).

    Recorded before the patch; observed by the pod handlers. A sync skips these pods, so
    one that the cache still shows with its finalizer is not counted a second time.
    Creations and deletions are tracked by ``podcontrol.Expectations``.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, set[str]] = {}

    def expect(self, key: str, uids: Iterable[str]) -> None:
        self._by_key.setdefault(key, set()).update(uids)

    def observed(self, key: str, uid: str) -> None:
        uids = self._by_key.get(key)
        if uids is not None:
            uids.discard(uid)
            if not uids:
                del self._by_key[key]

    def pending(self, key: str) -> set[str]:
        return set(self._by_key.get(key, ()))

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
