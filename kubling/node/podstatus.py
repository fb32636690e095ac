"""A pod's status from what the node knows about its containers (the kubelet's
``generateAPIPodStatus`` and ``getPhase``), as a pure function of values.

The pod worker keeps one ``ContainerView`` per container of the spec; this module turns
them into ``containerStatuses`` / ``initContainerStatuses``, the phase and the conditions,
keeping each condition's ``lastTransitionTime`` while its status does not change.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
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
    #: An init container with ``restartPolicy: Always``: a sidecar, which keeps running
    #: beside the main containers and counts towards the pod's readiness.
    sidecar: bool = False
    #: An ephemeral container (``kubectl debug``): never restarted, never ready, left out
    #: of the pod's phase and conditions, and reported without ``started`` as upstream.
    ephemeral: bool = False
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
        """Started and passing its readiness probe (main containers and sidecars); a
        regular init container is ready once it succeeded, as upstream's prober says."""
        if self.ephemeral:
            return False
        if self.init and not self.sidecar:
            return self.succeeded and self.is_terminated
        return self.started and self.probe_ready

    @property
    def succeeded(self) -> bool:
        return self.terminated is not None and self.terminated.get("exitCode") == 0

    @property
    def is_terminated(self) -> bool:
        """Its state is ``terminated`` (not waiting to be restarted, not running)."""
        return not self.running and self.terminated is not None and not self.waiting_reason

    @property
    def is_waiting(self) -> bool:
        return not self.running and not self.is_terminated

    @property
    def ever_ran(self) -> bool:
        """It ran at least once (running now, or a termination is on record)."""
        return self.running or self.terminated is not None or self.last_terminated is not None

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
        if self.ephemeral:
            del status["started"]  # the prober, which sets it, never sees these
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
    """Upstream's getPhase. A container waiting after a termination counts as stopped (it is
    being restarted), so a crash-looping pod of restartPolicy Always stays Running. Sidecars
    keep the pod Pending until they are started (unless a main container already ran), count
    as running while they run, and are ignored once terminated: a pod whose main containers
    finished is Succeeded or Failed by those alone."""
    pending_regular = pending_sidecars = failed_init = 0
    for view in init:
        if view.sidecar:
            continue
        if view.running:
            pending_regular += 1
        elif view.is_terminated:
            failed_init += not view.succeeded
        elif view.last_terminated is not None:
            failed_init += view.last_terminated.get("exitCode") != 0
        else:
            pending_regular += 1
    running = waiting = stopped = succeeded = 0
    for view in init:
        if not view.sidecar:
            continue
        if view.running:
            pending_sidecars += not view.started
            running += 1
        elif view.is_waiting and view.last_terminated is None and view.terminated is None:
            pending_sidecars += 1
            waiting += 1
    for view in main:
        if view.running:
            running += 1
        elif view.is_terminated:
            stopped += 1
            succeeded += view.succeeded
        elif view.last_terminated is not None or view.terminated is not None:
            stopped += 1
        else:
            waiting += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    initialized = any(view.ever_ran for view in main)
    if pending_regular or (pending_sidecars and not initialized) or waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
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
    # Regular init containers must have succeeded and sidecars started; once a main
    # container ran, the pod stays initialized while a sidecar restarts.
    incomplete = [v.name for v in init if not (v.started if v.sidecar else v.ready)]
    if pod_phase == "Succeeded" or any(v.ever_ran for v in main):
        incomplete = []
    wanted.append(("Initialized", not incomplete, "ContainersNotInitialized" if incomplete
                   else "PodCompleted" if pod_phase == "Succeeded" else "",
                   f"containers with incomplete status: [{' '.join(incomplete)}]"
                   if incomplete else ""))
    unready = [v.name for v in [*(v for v in init if v.sidecar), *main] if not v.ready]
    if pod_phase in ("Succeeded", "Failed"):
        reason = "PodCompleted" if pod_phase == "Succeeded" else "PodFailed"
        message = ""
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
               ephemeral: Sequence[ContainerView] = (), terminal_phase: str | None = None,
               reason: str = "", message: str = "") -> Object:
    """The whole ``status`` the worker writes (merge patch: lists are replaced whole);
    ``reason``/``message`` explain a pod the node failed (``Evicted``,
    ``DeadlineExceeded``). Ephemeral containers are reported and nothing else: they count
    neither for the phase nor for readiness."""
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
    if ephemeral:
        status["ephemeralContainerStatuses"] = [v.to_status() for v in ephemeral]
    if pod_ips:
        status["podIP"] = pod_ips[0]
        status["podIPs"] = [{"ip": ip} for ip in pod_ips]
    if current.get("qosClass"):
        status["qosClass"] = current["qosClass"]
    if reason:
        status["reason"], status["message"] = reason, message
        if reason == "Evicted":  # the eviction manager's mark; a deadline leaves none
            status["conditions"].append(_disruption_target(current, message))
    return status


def _disruption_target(current: Object, message: str) -> Object:
    """The DisruptionTarget condition upstream adds to a pod the kubelet evicts."""
    for condition in current.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget":
            return dict(condition)
    return {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
            "lastTransitionTime": meta.now(), "reason": "TerminationByKubelet",
            "message": message}
