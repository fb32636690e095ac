"""securityContext on real containers: what each field changes is read from inside the
container (``/proc/self/status``, ``/proc/sys``, a write to ``/``), with the real server, its
agent, runc and the offline busybox image.

- capabilities add/drop over the default set, and ``privileged`` (every capability, no
  seccomp filter, a writable /sys);
- ``allowPrivilegeEscalation: false`` → NoNewPrivs; unset → escalation allowed;
- seccomp: no profile → unconfined (the kubelet's default), ``RuntimeDefault`` → filtered
  (``unshare`` refused), ``Localhost`` → the node's profile file (one that refuses mkdir);
- ``readOnlyRootFilesystem`` refuses writes to ``/`` and keeps the volumes writable;
- sysctls: a safe one is set in the pod's network namespace; an unsafe one gets the pod
  rejected by the node as ``SysctlForbidden`` with the kubelet's message;
- ``runAsNonRoot``: the root busybox image is refused with the kubelet's
  CreateContainerConfigError message, and runs once ``runAsUser`` is not root.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import pod

# Capability bits (linux/capability.h).
CAP_CHOWN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN, CAP_SYS_TIME = 0, 12, 13, 21, 25

DENY_MKDIR = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("secctx")) as srv:
        profiles = srv.data_dir / "seccomp" / "profiles"
        profiles.mkdir(parents=True)
        (profiles / "deny-mkdir.json").write_text(json.dumps(DENY_MKDIR))
        yield srv


def _run(srv: AgentServer, name: str, script: str, *, pod_context: dict[str, Any] | None = None,
         context: dict[str, Any] | None = None, mounts: list[dict[str, Any]] | None = None,
         **spec: Any) -> None:
    container: dict[str, Any] = {"name": "main", "image": "busybox:latest",
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", script], "volumeMounts": mounts or []}
    if context is not None:
        container["securityContext"] = context
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                         "containers": [container], **spec}}
    if pod_context is not None:
        manifest["spec"]["securityContext"] = pod_context
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def _output(srv: AgentServer, name: str) -> str:
    """The pod's log once it has finished (it prints what the test looks at, then exits)."""
    wait_for(lambda: pod(srv, name).get("status", {}).get("phase") in ("Succeeded", "Failed"),
             30, f"pod {name} to finish")
    return str(srv.kubectl("logs", name).stdout)


def _status_field(text: str, field: str) -> str:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    raise AssertionError(f"{field} not in {text!r}")


def _caps(text: str) -> int:
    return int(_status_field(text, "CapEff"), 16)


def test_capabilities_add_and_drop(server: AgentServer) -> None:
    _run(server, "caps-default", "cat /proc/self/status")
    _run(server, "caps-changed", "cat /proc/self/status",
         context={"capabilities": {"add": ["NET_ADMIN", "SYS_TIME"], "drop": ["NET_RAW"]}})
    _run(server, "caps-none", "cat /proc/self/status",
         context={"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}})
    default = _caps(_output(server, "caps-default"))
    changed = _caps(_output(server, "caps-changed"))
    none = _caps(_output(server, "caps-none"))
    assert default & (1 << CAP_NET_RAW) and default & (1 << CAP_CHOWN)
    assert not default & (1 << CAP_NET_ADMIN) and not default & (1 << CAP_SYS_ADMIN)
    assert changed & (1 << CAP_NET_ADMIN) and changed & (1 << CAP_SYS_TIME)
    assert not changed & (1 << CAP_NET_RAW)
    assert changed & ~(1 << CAP_NET_ADMIN | 1 << CAP_SYS_TIME) == default & ~(1 << CAP_NET_RAW)
    assert none == 1 << CAP_CHOWN


def test_privileged(server: AgentServer) -> None:
    _run(server, "privileged", "cat /proc/self/status; touch /sys/kernel/profiling "
         "&& echo sys-writable", context={"privileged": True})
    out = _output(server, "privileged")
    assert _caps(out) & (1 << CAP_SYS_ADMIN)
    assert _status_field(out, "Seccomp") == "0"
    assert "sys-writable" in out


def test_no_new_privileges_follows_allow_privilege_escalation(server: AgentServer) -> None:
    _run(server, "nnp-off", "cat /proc/self/status",
         context={"allowPrivilegeEscalation": False})
    _run(server, "nnp-unset", "cat /proc/self/status")
    assert _status_field(_output(server, "nnp-off"), "NoNewPrivs") == "1"
    assert _status_field(_output(server, "nnp-unset"), "NoNewPrivs") == "0"


def test_seccomp_profiles(server: AgentServer) -> None:
    probe = "grep Seccomp: /proc/self/status; unshare -U true && echo unshare-ok; " \
            "mkdir /tmp/made && echo mkdir-ok; true"
    _run(server, "seccomp-unset", probe)
    _run(server, "seccomp-default", probe,
         pod_context={"seccompProfile": {"type": "RuntimeDefault"}})
    _run(server, "seccomp-unconfined", probe,
         pod_context={"seccompProfile": {"type": "RuntimeDefault"}},
         context={"seccompProfile": {"type": "Unconfined"}})
    _run(server, "seccomp-localhost", probe,
         context={"seccompProfile": {"type": "Localhost",
                                     "localhostProfile": "profiles/deny-mkdir.json"}})
    unset = _output(server, "seccomp-unset")
    assert "Seccomp:\t0" in unset and "mkdir-ok" in unset
    default = _output(server, "seccomp-default")
    assert "Seccomp:\t2" in default and "unshare-ok" not in default and "mkdir-ok" in default
    unconfined = _output(server, "seccomp-unconfined")
    assert "Seccomp:\t0" in unconfined
    local = _output(server, "seccomp-localhost")
    assert "Seccomp:\t2" in local and "mkdir-ok" not in local
    assert "Operation not permitted" in local


def test_missing_localhost_profile_is_a_config_error(server: AgentServer) -> None:
    _run(server, "seccomp-missing", "true",
         context={"seccompProfile": {"type": "Localhost", "localhostProfile": "nope.json"}})

    def waiting() -> dict[str, Any]:
        statuses = pod(server, "seccomp-missing").get("status", {}).get("containerStatuses")
        return dict((statuses or [{}])[0].get("state", {}).get("waiting") or {})

    state = wait_for(lambda: waiting().get("reason") == "CreateContainerConfigError"
                     and waiting(), 20, "CreateContainerConfigError")
    assert "seccomp" in state["message"] and "nope.json" in state["message"]


def test_read_only_root_filesystem(server: AgentServer) -> None:
    _run(server, "readonly-root",
         "touch /made 2>&1 || echo root-refused; touch /scratch/ok && echo volume-ok",
         context={"readOnlyRootFilesystem": True},
         mounts=[{"name": "scratch", "mountPath": "/scratch"}],
         volumes=[{"name": "scratch", "emptyDir": {}}])
    out = _output(server, "readonly-root")
    assert "Read-only file system" in out and "root-refused" in out
    assert "volume-ok" in out


def test_safe_sysctl_is_set_in_the_pod(server: AgentServer) -> None:
    _run(server, "sysctl-safe", "cat /proc/sys/net/ipv4/ip_local_port_range; "
         "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
         pod_context={"sysctls": [
             {"name": "net.ipv4.ip_local_port_range", "value": "40000 40100"},
             {"name": "net/ipv4/ip_unprivileged_port_start", "value": "80"}]})
    out = _output(server, "sysctl-safe").split()
    assert out == ["40000", "40100", "80"]


def test_unsafe_sysctl_rejects_the_pod(server: AgentServer) -> None:
    _run(server, "sysctl-unsafe", "sleep 60",
         pod_context={"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]})
    wait_for(lambda: pod(server, "sysctl-unsafe").get("status", {}).get("phase") == "Failed",
             20, "the pod to be rejected")
    status = pod(server, "sysctl-unsafe")["status"]
    assert status["reason"] == "SysctlForbidden"
    assert status["message"] == 'Pod was rejected: forbidden sysctl: "kernel.msgmax" not allowlisted'
    assert "podIP" not in status  # rejected before its sandbox was made
    events = server.kubectl("get", "events", "--field-selector",
                            "involvedObject.name=sysctl-unsafe", "-o",
                            "custom-columns=R:.reason,M:.message").stdout
    assert "SysctlForbidden" in events


def test_run_as_non_root(server: AgentServer) -> None:
    _run(server, "nonroot-refused", "id", context={"runAsNonRoot": True})
    _run(server, "nonroot-ok", "id -u", pod_context={"runAsNonRoot": True},
         context={"runAsUser": 1000})
    _run(server, "nonroot-uid0", "id", context={"runAsNonRoot": True, "runAsUser": 0})

    def waiting(name: str) -> dict[str, Any]:
        statuses = pod(server, name).get("status", {}).get("containerStatuses")
        return dict((statuses or [{}])[0].get("state", {}).get("waiting") or {})

    refused = wait_for(lambda: waiting("nonroot-refused").get("message"), 20,
                       "a CreateContainerConfigError")
    uid = pod(server, "nonroot-refused")["metadata"]["uid"]
    assert waiting("nonroot-refused")["reason"] == "CreateContainerConfigError"
    assert refused == ("container has runAsNonRoot and image will run as root "
                       f'(pod: "nonroot-refused_default({uid})", container: main)')
    uid0 = wait_for(lambda: waiting("nonroot-uid0").get("message"), 20, "uid 0 refused")
    assert uid0.startswith("container's runAsUser breaks non-root policy (pod: ")
    assert _output(server, "nonroot-ok").strip() == "1000"
