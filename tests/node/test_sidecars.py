"""Sidecars (init containers with ``restartPolicy: Always``) in the pod's status: phase,
conditions and the container statuses, as upstream's getPhase, the prober's
UpdatePodStatus and the condition generators compute them."""

from __future__ import annotations

import asyncio
import datetime
import types
from pathlib import Path
from typing import Any

from kubling.api.printers import pods as printers
from kubling.node import podstatus, podworker
from kubling.node.podstatus import ContainerView

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def running(name: str, *, init: bool = False, sidecar: bool = False,
            started: bool = True, ready: bool = True) -> ContainerView:
    return ContainerView(name=name, image="busybox", init=init, sidecar=sidecar,
                         running_since=NOW, waiting_reason="", probe_started=started,
                         probe_ready=ready)


def finished(name: str, code: int = 0, *, init: bool = False,
             sidecar: bool = False) -> ContainerView:
    return ContainerView(name=name, image="busybox", init=init, sidecar=sidecar,
                         waiting_reason="", terminated=podstatus.terminated(code))


def waiting(name: str, reason: str = "PodInitializing", *, init: bool = False,
            sidecar: bool = False) -> ContainerView:
    return ContainerView(name=name, image="busybox", init=init, sidecar=sidecar,
                         waiting_reason=reason)


def conditions(init: list[ContainerView], main: list[ContainerView],
               phase: str) -> dict[str, dict[str, object]]:
    return {c["type"]: c for c in podstatus.conditions(
        [], sandbox_ready=True, init=init, main=main, pod_phase=phase)}


def test_a_pod_waits_for_its_sidecar_to_start() -> None:
    sidecar = running("log", init=True, sidecar=True, started=False)
    main = waiting("app")
    assert podstatus.phase("Always", [sidecar], [main]) == "Pending"
    conds = conditions([sidecar], [main], "Pending")
    assert conds["Initialized"]["status"] == "False"
    assert conds["Initialized"]["message"] == "containers with incomplete status: [log]"
    sidecar.probe_started = True
    assert conditions([sidecar], [main], "Pending")["Initialized"]["status"] == "True"


def test_a_running_sidecar_counts_for_readiness() -> None:
    sidecar = running("log", init=True, sidecar=True, ready=False)
    main = running("app")
    assert podstatus.phase("Always", [sidecar], [main]) == "Running"
    conds = conditions([sidecar], [main], "Running")
    assert conds["Ready"]["status"] == "False"
    assert conds["ContainersReady"]["message"] == "containers with unready status: [log]"
    sidecar.probe_ready = True
    assert conditions([sidecar], [main], "Running")["Ready"]["status"] == "True"
    status = sidecar.to_status()
    assert (status["started"], status["ready"]) == (True, True)


def test_terminated_sidecars_do_not_decide_the_phase() -> None:
    killed = finished("log", 143, init=True, sidecar=True)
    assert podstatus.phase("Never", [killed], [finished("app")]) == "Succeeded"
    assert podstatus.phase("Never", [killed], [finished("app", 1)]) == "Failed"
    assert podstatus.phase("OnFailure", [killed], [finished("app")]) == "Succeeded"
    # While the sidecar still runs, the pod does too.
    alive = running("log", init=True, sidecar=True)
    assert podstatus.phase("Never", [alive], [finished("app")]) == "Running"


def test_a_restarting_sidecar_does_not_send_the_pod_back_to_pending() -> None:
    sidecar = waiting("log", "CrashLoopBackOff", init=True, sidecar=True)
    sidecar.last_terminated = podstatus.terminated(1)
    main = running("app")
    assert podstatus.phase("Always", [sidecar], [main]) == "Running"
    assert conditions([sidecar], [main], "Running")["Initialized"]["status"] == "True"


def test_a_succeeded_init_container_is_ready_and_not_started() -> None:
    init = finished("setup", init=True)
    status = init.to_status()
    assert (status["ready"], status["started"]) == (True, False)
    assert podstatus.phase("Always", [init], [waiting("app")]) == "Pending"
    assert podstatus.phase("Never", [finished("setup", 2, init=True)],
                           [waiting("app")]) == "Failed"


def test_terminal_conditions_say_why() -> None:
    done = conditions([], [finished("app")], "Succeeded")
    assert done["Initialized"]["reason"] == "PodCompleted"
    assert done["Ready"]["reason"] == done["ContainersReady"]["reason"] == "PodCompleted"
    failed = conditions([], [finished("app", 1)], "Failed")
    assert failed["Ready"]["reason"] == "PodFailed"


def test_a_deadline_is_not_a_disruption() -> None:
    status = podstatus.pod_status(
        {"metadata": {}, "spec": {}, "status": {}}, sandbox_ready=True, pod_ips=(),
        host_ip="192.0.2.1", init=[], main=[finished("app", 137)], terminal_phase="Failed",
        reason="DeadlineExceeded", message="Pod was active on the node longer than the "
        "specified deadline")
    assert status["reason"] == "DeadlineExceeded"
    assert not [c for c in status["conditions"] if c["type"] == "DisruptionTarget"]


def _pod(init: list[ContainerView], main: list[ContainerView],
         phase: str) -> dict[str, object]:
    spec = {"initContainers": [{"name": v.name, **({"restartPolicy": "Always"}
                                                   if v.sidecar else {})} for v in init],
            "containers": [{"name": v.name} for v in main], "restartPolicy": "Never"}
    pod = {"metadata": {"name": "p"}, "spec": spec, "status": {}}
    pod["status"] = podstatus.pod_status(pod, sandbox_ready=True, pod_ips=(),
                                         host_ip="192.0.2.1", init=init, main=main,
                                         terminal_phase=phase)
    return pod


def test_the_status_column_walks_through_upstreams_sequence() -> None:
    setup, sidecar, app = "setup", "log", "app"
    steps = [
        ([waiting(setup, init=True), waiting(sidecar, init=True, sidecar=True)],
         [waiting(app)], None, "0/2", "Init:0/2"),
        ([running(setup, init=True), waiting(sidecar, init=True, sidecar=True)],
         [waiting(app)], None, "0/2", "Init:0/2"),
        ([finished(setup, init=True), running(sidecar, init=True, sidecar=True,
                                               started=False)],
         [waiting(app)], None, "0/2", "Init:1/2"),
        ([finished(setup, init=True), running(sidecar, init=True, sidecar=True)],
         [waiting(app)], None, "1/2", "PodInitializing"),
        ([finished(setup, init=True), running(sidecar, init=True, sidecar=True)],
         [running(app)], None, "2/2", "Running"),
        ([finished(setup, init=True), finished(sidecar, 143, init=True, sidecar=True)],
         [finished(app)], None, "0/2", "Completed"),
    ]
    for init, main, phase, ready, status in steps:
        pod = _pod(init, main, phase or podstatus.phase("Never", init, main))
        cells = printers.summarize(pod)
        assert (cells[0], cells[1]) == (ready, status), (pod["status"], cells)


# -- the pod worker's termination ordering -------------------------------------------------

UID = "0" * 8 + "-0000-0000-0000-" + "0" * 12


class _Runtime:
    """Records when each container gets its stop signal and when it exits."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, float]] = []

    async def state(self, container_id: str) -> Any:
        return types.SimpleNamespace(status="running")

    async def stop(self, container_id: str, grace: float, *, sig: int) -> int:
        name = container_id.split("_")[1]
        self.log.append(("signal", name, grace))
        await asyncio.sleep(0.05)
        self.log.append(("exited", name, grace))
        return 0


def test_sidecars_stop_after_the_main_containers_last_first(tmp_path: Path) -> None:
    runtime = _Runtime()
    ctx: Any = types.SimpleNamespace(
        runtime=runtime, data_dir=tmp_path,
        recorder=types.SimpleNamespace(record=lambda *args: None),
        volumes=types.SimpleNamespace(for_pod=lambda *args, **kwargs: None))
    pod = {"metadata": {"name": "p", "namespace": "default", "uid": UID},
           "spec": {"initContainers": [{"name": "first", "restartPolicy": "Always"},
                                       {"name": "setup"},
                                       {"name": "second", "restartPolicy": "Always"}],
                    "containers": [{"name": "app"}, {"name": "helper"}]}}
    worker = podworker.PodWorker(ctx, UID, pod, [])
    ids = [f"{UID}_{name}_0" for name in ("first", "second", "app", "helper")]
    asyncio.run(worker._stop_in_order(pod, ids, 10.0))
    signals = [name for what, name, _ in runtime.log if what == "signal"]
    assert set(signals[:2]) == {"app", "helper"} and signals[2:] == ["second", "first"]
    events = [(what, name) for what, name, _ in runtime.log]
    assert events.index(("exited", "app")) < events.index(("signal", "second"))
    assert events.index(("exited", "second")) < events.index(("signal", "first"))
    # A sidecar's grace is what is left after its turn came, never under two seconds.
    graces = {name: grace for what, name, grace in runtime.log if what == "signal"}
    assert graces["app"] == 10.0 and 9.0 < graces["first"] < graces["second"] < 10.0
