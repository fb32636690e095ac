"""The pod row: the READY / STATUS / RESTARTS cells users read to know what a pod does.

STATUS is not a field but upstream's summary of phase, init containers, container states
and deletion, computed in a fixed order (``printPod``): the pod's reason, then the first
init container that has not succeeded, then the containers from last to first, then
deletion. Reproducing that order exactly is what makes ``CrashLoopBackOff``, ``Init:0/1``
or ``Terminating`` appear when a Kubernetes user expects them.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from kubling.api.meta import Object
from kubling.api.printers import common

COLUMNS: list[common.Column] = [
    common.NAME,
    common.column("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    common.column("Status", "The aggregate status of the containers in this pod."),
    common.column(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the "
        "last container in this pod has restarted.",
    ),
    common.AGE,
    common.wide("IP", "podIP address allocated to the pod. Routable at least within the cluster."),
    common.wide("Node", "NodeName indicates in which node this pod is scheduled."),
    common.wide(
        "Nominated Node",
        "nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    common.wide(
        "Readiness Gates",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
]

#: ``node.NodeUnreachablePodReason``: the node controller's mark on pods of a lost node.
_NODE_LOST = "NodeLost"


@dataclasses.dataclass(slots=True)
class _Tally:
    """The running state of ``printPod``'s walk over the container statuses."""

    reason: str
    ready: int = 0
    restarts: int = 0
    last_restart: datetime.datetime | None = None
    sidecar_restarts: int = 0
    sidecar_last_restart: datetime.datetime | None = None

    def restarted(self, status: Mapping[str, Any], *, sidecar: bool = False) -> None:
        count = common.integer(status.get("restartCount"))
        finished = common.parse_time(
            common.dig(status, "lastState", "terminated", "finishedAt")
        )
        self.restarts += count
        self.last_restart = _later(self.last_restart, finished)
        if sidecar:
            self.sidecar_restarts += count
            self.sidecar_last_restart = _later(self.sidecar_last_restart, finished)


def _later(
    current: datetime.datetime | None, candidate: datetime.datetime | None
) -> datetime.datetime | None:
    if candidate is None:
        return current
    return candidate if current is None or candidate > current else current


def _is_sidecar(container: Mapping[str, Any] | None) -> bool:
    """A restartable init container (``restartPolicy: Always``): a sidecar since 1.29."""
    return container is not None and container.get("restartPolicy") == "Always"


def _state(status: Mapping[str, Any], which: str) -> Mapping[str, Any] | None:
    value = common.dig(status, "state", which)
    return value if isinstance(value, Mapping) else None


def _terminated_reason(terminated: Mapping[str, Any], prefix: str) -> str:
    reason = common.text(terminated.get("reason"))
    if reason:
        return prefix + reason
    signal = common.integer(terminated.get("signal"))
    if signal:
        return f"{prefix}Signal:{signal}"
    return f"{prefix}ExitCode:{common.integer(terminated.get('exitCode'))}"


def _walk_init_containers(pod: Object, tally: _Tally) -> bool:
    """Count init restarts and find the first unfinished init container; True while the
    pod is still initializing (its STATUS then names the init step)."""
    init_specs = common.dicts(common.dig(pod, "spec", "initContainers"))
    by_name = {common.text(c.get("name")): c for c in init_specs}
    statuses = common.dicts(common.dig(pod, "status", "initContainerStatuses"))
    for index, status in enumerate(statuses):
        sidecar = _is_sidecar(by_name.get(common.text(status.get("name"))))
        tally.restarted(status, sidecar=sidecar)
        terminated = _state(status, "terminated")
        waiting = _state(status, "waiting")
        if terminated is not None and common.integer(terminated.get("exitCode")) == 0:
            continue
        if sidecar and status.get("started") is True:
            if status.get("ready") is True:
                tally.ready += 1
            continue
        if terminated is not None:
            tally.reason = _terminated_reason(terminated, "Init:")
        elif waiting is not None and common.text(waiting.get("reason")) not in (
            "",
            "PodInitializing",
        ):
            tally.reason = "Init:" + common.text(waiting.get("reason"))
        else:
            tally.reason = f"Init:{index}/{len(init_specs)}"
        return True
    return False


def _walk_containers(pod: Object, tally: _Tally) -> None:
    """Main containers, last to first, so the first container's state wins the reason."""
    tally.restarts = tally.sidecar_restarts
    tally.last_restart = tally.sidecar_last_restart
    has_running = False
    for status in reversed(common.dicts(common.dig(pod, "status", "containerStatuses"))):
        tally.restarted(status)
        waiting = _state(status, "waiting")
        terminated = _state(status, "terminated")
        if waiting is not None and common.text(waiting.get("reason")):
            tally.reason = common.text(waiting.get("reason"))
        elif terminated is not None:
            tally.reason = _terminated_reason(terminated, "")
        elif status.get("ready") is True and _state(status, "running") is not None:
            has_running = True
            tally.ready += 1
    if tally.reason == "Completed" and has_running:
        conditions = common.dig(pod, "status", "conditions")
        tally.reason = "Running" if common.condition_true(conditions, "Ready") else "NotReady"


def _initial_reason(pod: Object) -> str:
    status = common.mapping(pod.get("status"))
    reason = common.text(status.get("reason")) or common.text(status.get("phase"))
    for cond in common.dicts(status.get("conditions")):
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    return reason


def _deletion_reason(pod: Object, reason: str) -> str:
    if not common.is_deleting(pod):
        return reason
    status = common.mapping(pod.get("status"))
    if status.get("reason") == _NODE_LOST:
        return "Unknown"
    if status.get("phase") not in ("Failed", "Succeeded"):
        return "Terminating"
    return reason


def _total_containers(pod: Object) -> int:
    spec = common.mapping(pod.get("spec"))
    sidecars = sum(1 for c in common.dicts(spec.get("initContainers")) if _is_sidecar(c))
    return common.length(spec.get("containers")) + sidecars


def summarize(pod: Object) -> tuple[str, str, str]:
    """The READY, STATUS and RESTARTS cells, e.g. ``("1/2", "CrashLoopBackOff", "3 (2m ago)")``."""
    tally = _Tally(reason=_initial_reason(pod))
    initializing = _walk_init_containers(pod, tally)
    conditions = common.dig(pod, "status", "conditions")
    if not initializing or common.condition_true(conditions, "Initialized"):
        _walk_containers(pod, tally)
    reason = _deletion_reason(pod, tally.reason)
    restarts = str(tally.restarts)
    if tally.restarts and tally.last_restart is not None:
        restarts = f"{tally.restarts} ({common.since(tally.last_restart)} ago)"
    return f"{tally.ready}/{_total_containers(pod)}", reason, restarts


def _pod_ip(status: Mapping[str, Any]) -> str:
    """The first of ``podIPs``; older writers set only ``podIP``."""
    first = common.text(common.dig(status, "podIPs", 0, "ip"))
    return first or common.text(status.get("podIP")) or "<none>"


def _readiness_gates(pod: Object) -> str:
    gates = common.dicts(common.dig(pod, "spec", "readinessGates"))
    if not gates:
        return "<none>"
    conditions = common.dicts(common.dig(pod, "status", "conditions"))
    passed = 0
    for gate in gates:
        for cond in conditions:
            if cond.get("type") == gate.get("conditionType"):
                passed += cond.get("status") == "True"
                break
    return f"{passed}/{len(gates)}"


def cells(pod: Object) -> list[Any]:
    ready, reason, restarts = summarize(pod)
    status = common.mapping(pod.get("status"))
    return [
        common.name(pod),
        ready,
        reason,
        restarts,
        common.age(pod),
        _pod_ip(status),
        common.text(common.dig(pod, "spec", "nodeName")) or "<none>",
        common.text(status.get("nominatedNodeName")) or "<none>",
        _readiness_gates(pod),
    ]


PRINTERS: dict[tuple[str, str], common.Printer] = {("", "Pod"): (COLUMNS, cells)}
