"""The pure half of the Deployment controller (upstream ``pkg/controller/deployment/util``).

Functions of their arguments only — ReplicaSets and Deployments as plain dicts, the time
passed in — so the arithmetic of a rollout (surge and unavailability fenceposts, revision
numbers, proportional scaling, conditions) can be read and tested on its own.
``deployment_rollout`` applies them through the API.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.controllers import podcontrol

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
POD_TEMPLATE_HASH = "pod-template-hash"
#: Deployment annotations never copied to its ReplicaSets (all others are, change-cause too).
SKIPPED_ANNOTATIONS = frozenset(
    {LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, ROLLBACK_TO})
#: Upstream caps the revision-history annotation at this many characters.
MAX_REVISION_HISTORY_CHARS = 2000

# Condition types and reasons, in upstream's words.
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
FAILED_RS_CREATE = "ReplicaSetCreateError"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"

_MAX_INT32 = 2**31 - 1


def quote(text: str) -> str:
    """Go's ``%q`` for the names in messages: double quotes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- fields ---------------------------------------------------------------------------------


def spec(obj: Object | None) -> Object:
    return (obj or {}).get("spec") or {}


def replicas(obj: Object | None) -> int:
    value = spec(obj).get("replicas")
    return int(value) if isinstance(value, int) else (0 if obj is None else 1)


def status_int(obj: Object | None, name: str) -> int:
    value = ((obj or {}).get("status") or {}).get(name)
    return int(value) if isinstance(value, int) else 0


def annotations_of(obj: Object) -> dict[str, str]:
    found = meta.metadata(obj).get("annotations")
    return found if isinstance(found, dict) else {}


def is_rolling(d: Object) -> bool:
    strategy = (spec(d).get("strategy") or {}).get("type") or "RollingUpdate"
    return bool(strategy == "RollingUpdate")


def has_progress_deadline(d: Object) -> bool:
    value = spec(d).get("progressDeadlineSeconds")
    return isinstance(value, int) and value != _MAX_INT32


def revision_history_limit(d: Object) -> int | None:
    value = spec(d).get("revisionHistoryLimit")
    return int(value) if isinstance(value, int) else None


# -- surge and unavailability ---------------------------------------------------------------


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """``intstr.GetScaledValueFromIntOrPercent``: ``3`` → 3; ``"25%"`` of ``total``,
    rounded up or down."""
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    text = str(value).strip()
    try:
        if not text.endswith("%"):
            return int(text)
        scaled = int(text[:-1]) * total
    except ValueError:
        return 0
    return -(-scaled // 100) if round_up else scaled // 100


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """Surge rounds up, unavailability down; both zero would deadlock, so one may be
    unavailable."""
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, round_up=True)
    unavailable = scaled_value(max_unavailable if max_unavailable is not None else 0, desired,
                               round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling_params(d: Object) -> tuple[Any, Any]:
    rolling = (spec(d).get("strategy") or {}).get("rollingUpdate") or {}
    return rolling.get("maxSurge", "25%"), rolling.get("maxUnavailable", "25%")


def max_surge(d: Object) -> int:
    if not is_rolling(d):
        return 0
    surge, _ = resolve_fenceposts(*_rolling_params(d), replicas(d))
    return surge


def max_unavailable(d: Object) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    _, unavailable = resolve_fenceposts(*_rolling_params(d), replicas(d))
    return min(unavailable, replicas(d))


# -- ReplicaSets ------------------------------------------------------------------------------


def sum_replicas(rss: Iterable[Object]) -> int:
    """Desired pods of the ReplicaSets (``spec.replicas``)."""
    return sum(replicas(rs) for rs in rss)


def sum_status(rss: Iterable[Object], field: str) -> int:
    return sum(status_int(rs, field) for rs in rss)


def active(rss: Iterable[Object]) -> list[Object]:
    return [rs for rs in rss if replicas(rs) > 0]


def by_creation(rss: Iterable[Object]) -> list[Object]:
    """Oldest first (name breaks ties), upstream's ``ReplicaSetsByCreationTimestamp``."""
    return sorted(rss, key=lambda rs: (str(meta.metadata(rs).get("creationTimestamp") or ""),
                                       meta.name_of(rs)))


def revision(obj: Object) -> int:
    try:
        return int(annotations_of(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: Iterable[Object]) -> int:
    return max((revision(rs) for rs in rss), default=0)


def by_revision(rss: Iterable[Object]) -> list[Object]:
    """Lowest revision first; creation time breaks ties (``ReplicaSetsByRevision``)."""
    return sorted(rss, key=lambda rs: (revision(rs),
                                       str(meta.metadata(rs).get("creationTimestamp") or ""),
                                       meta.name_of(rs)))


def compute_hash(template: Object, collision_count: int | None) -> str:
    """The ``pod-template-hash``: FNV-1a of the template (canonical JSON) and the collision
    count, written as upstream's ``SafeEncodeString`` of the decimal number."""
    data = podcontrol.canonical_json(template)
    if collision_count is not None:
        data += int(collision_count).to_bytes(4, "little", signed=False)
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return podcontrol.safe_encode(str(h))


def _normalized(value: Any) -> Any:
    """JSON with empty values dropped: upstream compares templates semantically, where a
    missing field, ``null`` and an empty string, list or map are all the same."""
    if isinstance(value, dict):
        cleaned = {k: _normalized(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def equal_ignore_hash(a: Object, b: Object) -> bool:
    """Whether two pod templates are the same but for the ``pod-template-hash`` label."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for template in (a, b):
        (template.get("metadata") or {}).get("labels", {}).pop(POD_TEMPLATE_HASH, None)
    return bool(_normalized(a) == _normalized(b))


def find_new_rs(d: Object, rss: Sequence[Object]) -> Object | None:
    """The ReplicaSet whose template is the Deployment's; the oldest if several are."""
    template = spec(d).get("template") or {}
    for rs in by_creation(rss):
        if equal_ignore_hash(spec(rs).get("template") or {}, template):
            return rs
    return None


def find_active_or_latest(new: Object | None, olds: Sequence[Object]) -> Object | None:
    """The one ReplicaSet with pods, or the newest if none has; ``None`` if several do."""
    if new is None and not olds:
        return None
    newest_first = list(reversed(by_creation(olds)))
    running = active([*newest_first, *([new] if new is not None else [])])
    if len(running) == 1:
        return running[0]
    if not running:
        return new if new is not None else newest_first[0]
    return None


def is_saturated(d: Object, rs: Object | None) -> bool:
    """The new ReplicaSet has all the Deployment's pods, and all of them available."""
    if rs is None:
        return False
    desired = annotations_of(rs).get(DESIRED_REPLICAS)
    return (replicas(rs) == replicas(d) and desired == str(replicas(d))
            and status_int(rs, "availableReplicas") == replicas(d))


# -- annotations -----------------------------------------------------------------------------


def copy_annotations(d: Object, rs: Object) -> bool:
    """Copy the Deployment's annotations (all but ``SKIPPED_ANNOTATIONS``) onto ``rs``."""
    target = meta.metadata(rs).setdefault("annotations", {})
    changed = False
    for key, value in annotations_of(d).items():
        if key in SKIPPED_ANNOTATIONS or target.get(key) == value:
            continue
        target[key] = value
        changed = True
    return changed


def set_replicas_annotations(rs: Object, desired: int, maximum: int) -> bool:
    target = meta.metadata(rs).setdefault("annotations", {})
    wanted = {DESIRED_REPLICAS: str(desired), MAX_REPLICAS: str(maximum)}
    changed = any(target.get(k) != v for k, v in wanted.items())
    target.update(wanted)
    return changed


def replicas_annotations_need_update(rs: Object, desired: int, maximum: int) -> bool:
    current = annotations_of(rs)
    return current.get(DESIRED_REPLICAS) != str(desired) or current.get(MAX_REPLICAS) != str(maximum)


def set_new_rs_annotations(d: Object, rs: Object, new_revision: str, *, exists: bool) -> bool:
    """Copy annotations, raise the revision (remembering the old one in the history), and
    on a new ReplicaSet set the replicas annotations. Returns whether anything changed."""
    changed = copy_annotations(d, rs)
    target = meta.metadata(rs).setdefault("annotations", {})
    old_revision = target.get(REVISION, "")
    try:
        old_number = int(old_revision) if old_revision else 0
        new_number = int(new_revision)
    except ValueError:
        old_number, new_number = 0, 0
    if old_number < new_number:
        target[REVISION] = new_revision
        changed = True
        if old_revision:
            history = [r for r in target.get(REVISION_HISTORY, "").split(",") if r]
            history.append(old_revision)
            while history and len(",".join(history)) > MAX_REVISION_HISTORY_CHARS:
                history.pop(0)
            target[REVISION_HISTORY] = ",".join(history)
    if not exists:
        desired = replicas(d)
        changed = set_replicas_annotations(rs, desired, desired + max_surge(d)) or changed
    return changed


# -- scaling ---------------------------------------------------------------------------------


def new_rs_new_replicas(d: Object, all_rss: Sequence[Object], new_rs: Object) -> int:
    """How big the new ReplicaSet may be now (upstream ``NewRSNewReplicas``)."""
    if not is_rolling(d):
        return replicas(d)
    current = sum_replicas(all_rss)
    max_total = replicas(d) + max_surge(d)
    if current >= max_total:
        return replicas(new_rs)
    scale_up = min(max_total - current, replicas(d) - replicas(new_rs))
    return replicas(new_rs) + scale_up


def _round_half_away(value: float) -> int:
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def rs_proportion(rs: Object, d: Object, to_add: int, added: int) -> int:
    """This ReplicaSet's share of ``to_add`` replicas when a rollout is scaled
    (``GetReplicaSetProportion``): its size relative to the size the Deployment had."""
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    if replicas(d) == 0:
        fraction = -replicas(rs)
    else:
        deployment_replicas = replicas(d) + max_surge(d)
        try:
            annotated = int(annotations_of(rs).get(MAX_REPLICAS, ""))
        except ValueError:
            annotated = status_int(d, "replicas")
        if annotated <= 0:
            fraction = 0
        else:
            fraction = _round_half_away(replicas(rs) * deployment_replicas / annotated) \
                - replicas(rs)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


# -- conditions and status -------------------------------------------------------------------


def get_condition(status: Object, type_: str) -> Object | None:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_:
            return cond
    return None


def new_condition(type_: str, status: str, reason: str, message: str, stamp: str) -> Object:
    return {"type": type_, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def set_condition(status: Object, cond: Object) -> None:
    """Upstream ``SetDeploymentCondition``: same status and reason is no change; same
    status keeps the transition time; the new condition goes last."""
    current = get_condition(status, cond["type"])
    if current is not None and current.get("status") == cond["status"] \
            and current.get("reason") == cond["reason"]:
        return
    if current is not None and current.get("status") == cond["status"]:
        cond["lastTransitionTime"] = current.get("lastTransitionTime")
    remove_condition(status, cond["type"])
    status.setdefault("conditions", []).append(cond)


def remove_condition(status: Object, type_: str) -> None:
    kept = [c for c in status.get("conditions") or [] if c.get("type") != type_]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def deployment_complete(d: Object, status: Object) -> bool:
    want = replicas(d)
    return (int(status.get("updatedReplicas") or 0) == want
            and int(status.get("replicas") or 0) == want
            and int(status.get("availableReplicas") or 0) == want
            and int(status.get("observedGeneration") or 0)
            >= int(meta.metadata(d).get("generation") or 0))


def deployment_progressing(d: Object, status: Object) -> bool:
    """Any sign of progress since the status ``d`` carries."""
    old = d.get("status") or {}

    def get(s: Object, k: str) -> int:
        return int(s.get(k) or 0)

    old_old = get(old, "replicas") - get(old, "updatedReplicas")
    new_old = get(status, "replicas") - get(status, "updatedReplicas")
    return (get(status, "updatedReplicas") > get(old, "updatedReplicas") or new_old < old_old
            or get(status, "readyReplicas") > get(old, "readyReplicas")
            or get(status, "availableReplicas") > get(old, "availableReplicas"))


def progress_deadline_at(d: Object, status: Object) -> float | None:
    """When the rollout times out if nothing moves (``None``: no deadline applies)."""
    if not has_progress_deadline(d):
        return None
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") in (NEW_RS_AVAILABLE, TIMED_OUT):
        return None
    since = podcontrol.parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return None
    return since + int(spec(d)["progressDeadlineSeconds"])


def deployment_timed_out(d: Object, status: Object, now: float) -> bool:
    cond = get_condition(status, PROGRESSING)
    if not has_progress_deadline(d) or cond is None:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    deadline = progress_deadline_at(d, status)
    return deadline is not None and deadline < now


def status_counts(**counts: int) -> Object:
    """A status with upstream's ``omitempty``: zero counts are left out."""
    return {k: v for k, v in counts.items() if v}
