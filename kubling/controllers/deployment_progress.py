"""A Deployment's status and conditions, computed from its ReplicaSets (upstream
``sync.go``'s ``calculateStatus`` and ``progress.go``).

Pure functions: the time comes in as arguments, so whether a rollout counts as complete,
progressing or timed out can be read and tested on its own. ``deployment_rollout`` writes
what they return.
"""

from __future__ import annotations

import copy

from kubling.api import meta
from kubling.api.meta import Object
from kubling.controllers import deployment_util as util


def calculate_status(d: Object, all_rss: list[Object], new: Object | None,
                     stamp: str) -> Object:
    """Counts summed over the ReplicaSets, the Deployment's other conditions kept, and
    ``Available`` set from ``replicas - maxUnavailable``."""
    available = util.sum_status(all_rss, "availableReplicas")
    old_status = d.get("status") or {}
    status = util.status_counts(
        observedGeneration=int(meta.metadata(d).get("generation") or 0),
        replicas=util.sum_status(all_rss, "replicas"),
        updatedReplicas=util.status_int(new, "replicas"),
        readyReplicas=util.sum_status(all_rss, "readyReplicas"),
        availableReplicas=available,
        unavailableReplicas=max(0, util.sum_replicas(all_rss) - available),
    )
    if old_status.get("collisionCount") is not None:
        status["collisionCount"] = old_status["collisionCount"]
    conditions = copy.deepcopy(old_status.get("conditions") or [])
    if conditions:
        status["conditions"] = conditions
    if available >= util.replicas(d) - util.max_unavailable(d):
        cond = util.new_condition(util.AVAILABLE, "True", util.MINIMUM_REPLICAS_AVAILABLE,
                                  "Deployment has minimum availability.", stamp)
    else:
        cond = util.new_condition(util.AVAILABLE, "False", util.MINIMUM_REPLICAS_UNAVAILABLE,
                                  "Deployment does not have minimum availability.", stamp)
    util.set_condition(status, cond)
    return status


def rollout_status(d: Object, all_rss: list[Object], new: Object | None, *, now: float,
                   stamp: str) -> Object:
    """``calculate_status`` plus ``Progressing`` (complete, progressing, or past the
    deadline) and the ReplicaSets' ``ReplicaFailure`` (``syncRolloutStatus``)."""
    status = calculate_status(d, all_rss, new, stamp)
    if not util.has_progress_deadline(d):
        util.remove_condition(status, util.PROGRESSING)
    current = util.get_condition(d.get("status") or {}, util.PROGRESSING)
    # A finished rollout stays finished until the next one; no estimate needed.
    complete_before = (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
                       and current is not None and current.get("reason") == util.NEW_RS_AVAILABLE)
    which = (f"ReplicaSet {util.quote(meta.name_of(new))}" if new is not None
             else f"Deployment {util.quote(meta.name_of(d))}")
    if util.has_progress_deadline(d) and not complete_before:
        if util.deployment_complete(d, status):
            util.set_condition(status, util.new_condition(
                util.PROGRESSING, "True", util.NEW_RS_AVAILABLE,
                f"{which} has successfully progressed.", stamp))
        elif util.deployment_progressing(d, status):
            # Progress moves lastUpdateTime (the deadline counts from it) even when the
            # reason stays the same, which set_condition alone would not do.
            cond = util.new_condition(util.PROGRESSING, "True", util.RS_UPDATED,
                                      f"{which} is progressing.", stamp)
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                util.remove_condition(status, util.PROGRESSING)
            util.set_condition(status, cond)
        elif util.deployment_timed_out(d, status, now):
            util.set_condition(status, util.new_condition(
                util.PROGRESSING, "False", util.TIMED_OUT,
                f"{which} has timed out progressing.", stamp))
    failure = replica_failure(all_rss, new)
    if failure is not None:
        util.set_condition(status, failure)
    else:
        util.remove_condition(status, util.REPLICA_FAILURE)
    return status


def stuck_requeue(d: Object, status: Object, now: float) -> float | None:
    """When to look again at a rollout that shows no progress, so that it times out on
    time rather than at the next unrelated event (``requeueStuckDeployment``)."""
    current = util.get_condition(d.get("status") or {}, util.PROGRESSING)
    if current is None or util.deployment_complete(d, status):
        return None
    deadline = util.progress_deadline_at(d, d.get("status") or {})
    return None if deadline is None else max(0.0, deadline - now) + 1.0


def replica_failure(all_rss: list[Object], new: Object | None) -> Object | None:
    """A ReplicaSet's ReplicaFailure condition, the new one's first, as the Deployment's."""
    ordered = ([new] if new is not None else []) + [rs for rs in all_rss if rs is not new]
    for rs in ordered:
        cond = util.get_condition(rs.get("status") or {}, util.REPLICA_FAILURE)
        if cond is not None:
            return {"type": util.REPLICA_FAILURE, "status": cond.get("status"),
                    "lastUpdateTime": cond.get("lastTransitionTime"),
                    "lastTransitionTime": cond.get("lastTransitionTime"),
                    "reason": cond.get("reason"), "message": cond.get("message")}
    return None
