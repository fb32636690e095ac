"""Termination messages and the end of a finished pod, with real runc and kubectl: what a
container writes to its terminationMessagePath becomes ``state.terminated.message``;
``FallbackToLogsOnError`` uses the log's tail instead when the file is empty and the
container failed; a restarted container starts with an empty file; and a debugger left
running in a pod whose containers finished is stopped with them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import pod


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("termination")) as srv:
        yield srv


def _run(srv: AgentServer, name: str, script: str, *, policy: str = "Never",
         volumes: list[dict[str, Any]] | None = None, **container: Any) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": policy, "terminationGracePeriodSeconds": 1,
                         "volumes": volumes or [],
                         "containers": [{"name": "main", "image": "busybox:latest",
                                         "imagePullPolicy": "IfNotPresent",
                                         "command": ["sh", "-c", script], **container}]}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _terminated(srv: AgentServer, name: str, key: str = "containerStatuses",
                field: str = "state") -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        statuses = pod(srv, name).get("status", {}).get(key) or [{}]
        return statuses[0].get(field, {}).get("terminated")

    return dict(wait_for(done, 30, f"{name} to terminate"))


def test_the_message_file_becomes_the_terminated_message(server: AgentServer) -> None:
    _run(server, "says-bye", "echo -n 'bye now' > /dev/termination-log; exit 3")
    state = _terminated(server, "says-bye")
    assert (state["exitCode"], state["reason"], state["message"]) == (3, "Error", "bye now")
    described = server.kubectl("describe", "pod", "says-bye").stdout
    assert "Message:      bye now" in described or "Message:  bye now" in described


def test_a_custom_path_written_by_a_non_root_user(server: AgentServer) -> None:
    _run(server, "custom-path", "echo done-as-$(id -u) > /tmp/status/message",
         terminationMessagePath="/tmp/status/message", securityContext={"runAsUser": 1000})
    state = _terminated(server, "custom-path")
    assert state["exitCode"] == 0 and state["message"] == "done-as-1000\n"


def test_fallback_to_logs_on_error_only(server: AgentServer) -> None:
    _run(server, "falls-back", "for i in 1 2 3; do echo step $i; done; exit 1",
         terminationMessagePolicy="FallbackToLogsOnError")
    _run(server, "no-fallback", "echo fine; exit 0",
         terminationMessagePolicy="FallbackToLogsOnError")
    _run(server, "file-policy", "echo broken; exit 1")
    assert _terminated(server, "falls-back")["message"] == "step 1\nstep 2\nstep 3\n"
    assert "message" not in _terminated(server, "no-fallback")
    assert "message" not in _terminated(server, "file-policy")


def test_each_restart_starts_with_an_empty_file(server: AgentServer) -> None:
    """The first attempt writes a message and fails; the second writes nothing: its
    terminated state has no message, the first one's stays in lastState."""
    _run(server, "restarts", "if [ -e /data/again ]; then exit 0; fi; touch /data/again; "
         "echo first-try > /dev/termination-log; exit 2", policy="OnFailure",
         volumes=[{"name": "data", "emptyDir": {}}],
         volumeMounts=[{"name": "data", "mountPath": "/data"}])
    wait_for(lambda: pod(server, "restarts").get("status", {}).get("phase") == "Succeeded",
             60, "the second attempt to succeed")
    status = pod(server, "restarts")["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert "message" not in status["state"]["terminated"]
    assert status["lastState"]["terminated"]["message"] == "first-try\n"


def test_a_debugger_stops_when_the_pod_finishes(server: AgentServer) -> None:
    _run(server, "short-lived", "sleep 6")
    wait_for(lambda: pod(server, "short-lived").get("status", {}).get("phase") == "Running",
             20, "the pod to run")
    server.kubectl("debug", "short-lived", "--image=busybox:latest", "-c", "dbg",
                   "--image-pull-policy=IfNotPresent", "--profile=general", "--",
                   "sleep", "3600")
    wait_for(lambda: pod(server, "short-lived").get("status", {}).get("phase") == "Succeeded",
             30, "the pod to finish")
    state = _terminated(server, "short-lived", key="ephemeralContainerStatuses")
    assert state["exitCode"] in (137, 143)
