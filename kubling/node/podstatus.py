"""A pod's status from what the node knows about its containers (the kubelet's
``generateAPIPodStatus`` and ``getPhase``), as a pure function of values.

The pod worker keeps one ``ContainerView`` per container of the spec; this module turns
them into ``containerStatuses`` / ``initContainerStatuses``, the phase and the conditions,
keeping each condition's ``lastTransitionTime`` while its status does not change.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object


@dataclasses.dataclass
class ContainerView:
    """One container as the worker last saw it. Exactly one of waiting / running /
    terminated describes its current state."""

    name: str
    image: str
    init: bool = False
    restart_count: int = 0
    container_id: str = ""
    image_ref: str = ""
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    running_since: datetime.datetime | None = None
    terminated: Object | None = None
    last_terminated: Object | None = None
    #: What the probes say about the running attempt (True when it has no such probe).
    probe_started: bool = True
    probe_ready: bool = True

    @property
    def running(self) -> bool:
        return self.running_since is not None

    @property
    def started(self) -> bool:
        """Running and past its startup probe (``containerStatuses[].started``)."""
        return self.running and self.probe_started

    @property
    def ready(self) -> bool:
        """Started and passing its readiness probe: what Ready/ContainersReady count."""
        return self.started and self.probe_ready and not self.init

    @property
    def succeeded(self) -> bool:
        return self.terminated is not None and self.terminated.get("exitCode") == 0

    def set_waiting(self, reason: str, message: str = "") -> None:
        self.waiting_reason, self.waiting_message = reason, message
        self.running_since = None

    def to_status(self) -> Object:
        state: Object
        if self.running_since is not None:
            state = {"running": {"startedAt": rfc3339(self.running_since)}}
        elif self.terminated is not None and not self.waiting_reason:
            state = {"terminated": dict(self.terminated)}
        else:
            waiting: Object = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        status: Object = {
            "name": self.name, "image": self.image, "imageID": self.image_ref,
            "ready": self.ready, "started": self.started,
            "restartCount": self.restart_count, "state": state,
            "lastState": {"terminated": dict(self.last_terminated)}
            if self.last_terminated else {},
        }
        if self.container_id:
            status["containerID"] = f"runc://{self.container_id}"
        return status


def rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated(exit_code: int, *, reason: str = "", message: str = "", container_id: str = "",
               started: datetime.datetime | None = None,
               finished: datetime.datetime | None = None) -> Object:
    """A ``ContainerStateTerminated``: reason Completed / Error unless given (StartError,
    OOMKilled)."""
    now = datetime.datetime.now(datetime.UTC)
    state: Object = {"exitCode": exit_code,
                     "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                     "startedAt": rfc3339(started or finished or now),
                     "finishedAt": rfc3339(finished or now)}
    if message:
        state["message"] = message
    if container_id:
        state["containerID"] = f"runc://{container_id}"
    return state


def phase(restart_policy: str, init: list[ContainerView], main: list[ContainerView]) -> str:
    """Upstream's getPhase: a container waiting after a termination counts as stopped (it is
    being restarted), so a crash-looping pod of restartPolicy Always stays Running."""
    for view in init:
        if view.succeeded:
            continue
        if view.terminated is not None and restart_policy == "Never" and not view.running:
            return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for view in main:
        if view.running:
            running += 1
        elif view.terminated is not None and not view.waiting_reason:
            stopped += 1
            succeeded += view.succeeded
        elif view.last_terminated is not None or view.terminated is not None:
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"


def conditions(previous: list[Object], *, sandbox_ready: bool, init: list[ContainerView],
               main: list[ContainerView], pod_phase: str) -> list[Object]:
    """PodReadyToStartContainers, Initialized, Ready, ContainersReady and PodScheduled
    (kept from the scheduler's write), in upstream's order."""
    wanted: list[tuple[str, bool, str, str]] = [
        ("PodReadyToStartContainers", sandbox_ready, "", "")]
    incomplete = [v.name for v in init if not v.succeeded]
    wanted.append(("Initialized", not incomplete, "" if not incomplete else
                   "ContainersNotInitialized",
                   f"containers with incomplete status: [{' '.join(incomplete)}]"
                   if incomplete else ""))
    unready = [v.name for v in main if not v.ready]
    if pod_phase in ("Succeeded", "Failed"):
        reason, message = "PodCompleted", ""
    else:
        reason = "ContainersNotReady" if unready else ""
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    ready = not unready and pod_phase == "Running"
    wanted.append(("Ready", ready, reason if not ready else "", message if not ready else ""))
    wanted.append(("ContainersReady", ready, reason if not ready else "",
                   message if not ready else ""))
    old = {c.get("type"): c for c in previous}
    out: list[Object] = []
    now = meta.now()
    for type_, ok, reason, message in wanted:
        status = "True" if ok else "False"
        before = old.get(type_)
        since = before.get("lastTransitionTime") if before and before.get(
            "status") == status else now
        condition: Object = {"type": type_, "status": status, "lastProbeTime": None,
                             "lastTransitionTime": since}
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        out.append(condition)
    if "PodScheduled" in old:
        out.append(old["PodScheduled"])
    return out


def pod_status(pod: Object, *, sandbox_ready: bool, pod_ips: tuple[str, ...], host_ip: str,
               init: list[ContainerView], main: list[ContainerView],
               terminal_phase: str | None = None) -> Object:
    """The whole ``status`` the worker writes (merge patch: lists are replaced whole)."""
    current: Object = pod.get("status") or {}
    restart_policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    pod_phase = terminal_phase or phase(restart_policy, init, main)
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions(current.get("conditions") or [], sandbox_ready=sandbox_ready,
                                 init=init, main=main, pod_phase=pod_phase),
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "startTime": current.get("startTime") or meta.now(),
        "containerStatuses": [v.to_status() for v in main],
    }
    if init:
        status["initContainerStatuses"] = [v.to_status() for v in init]
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    if current.get("qosClass"):
        status["qosClass"] = current["qosClass"]
    return status
