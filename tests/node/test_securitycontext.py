"""The kubelet's reading of securityContext: seccomp selection and profile conversion,
sysctl names and admission, NoNewPrivs, runAsNonRoot messages (pure functions; the e2e
tests in tests/e2e/test_security_context.py check the same fields inside real containers)."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import pytest

from kubling.node import securitycontext as sc
from kubling.node.runtime import RUNTIME_DEFAULT


def _pod(pod_ctx: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"securityContext": pod_ctx or {}, **spec}}


def test_seccomp_container_over_pod_and_unconfined_default(tmp_path: Path) -> None:
    pod = _pod({"seccompProfile": {"type": "RuntimeDefault"}})
    assert sc.seccomp(_pod(), {}, tmp_path) is None
    assert sc.seccomp(pod, {}, tmp_path) == RUNTIME_DEFAULT
    unconfined = {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}
    assert sc.seccomp(pod, unconfined, tmp_path) is None
    assert sc.seccomp(pod, {"securityContext": {"privileged": True}}, tmp_path) is None


def test_localhost_profile_from_docker_format(tmp_path: Path) -> None:
    arch = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}[platform.machine()]
    (tmp_path / "p.json").write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": arch, "subArchitectures": ["SCMP_ARCH_X86"]},
                    {"architecture": "SCMP_ARCH_S390X"}],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW",
                      "comment": "dropped", "includes": {}},
                     {"name": "exit", "action": "SCMP_ACT_ALLOW"}]}))
    container = {"securityContext": {"seccompProfile": {"type": "Localhost",
                                                        "localhostProfile": "p.json"}}}
    assert sc.seccomp(_pod(), container, tmp_path) == {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "architectures": [arch, "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["exit"], "action": "SCMP_ACT_ALLOW"}]}


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.json", None, "no such file or directory"),
    ("bad.json", "{not json", "cannot load"),
    ("empty.json", "{}", "defaultAction is required"),
    ("../escape.json", "{}", "invalid localhostProfile"),
])
def test_bad_localhost_profiles(tmp_path: Path, name: str, content: str | None,
                                message: str) -> None:
    root = tmp_path / "seccomp"
    root.mkdir()
    if content is not None:
        (root / name).write_text(content)
    container = {"securityContext": {"seccompProfile": {"type": "Localhost",
                                                        "localhostProfile": name}}}
    with pytest.raises(sc.SecurityContextError, match=message):
        sc.seccomp(_pod(), container, root)


def test_no_new_privileges_only_when_escalation_is_refused() -> None:
    assert sc.no_new_privileges({"securityContext": {"allowPrivilegeEscalation": False}})
    assert not sc.no_new_privileges({"securityContext": {"allowPrivilegeEscalation": True}})
    assert not sc.no_new_privileges({})


def test_sysctl_names_and_admission() -> None:
    pod = _pod({"sysctls": [{"name": "net/ipv4/ip_local_port_range", "value": "1 2"},
                            {"name": "kernel.shm_rmid_forced", "value": "1"}]})
    assert sc.sysctls(pod) == {"net.ipv4.ip_local_port_range": "1 2",
                               "kernel.shm_rmid_forced": "1"}
    assert sc.forbidden_sysctl(pod) is None
    assert sc.forbidden_sysctl(_pod({"sysctls": [{"name": "vm.swappiness", "value": "1"}]})) \
        == 'forbidden sysctl: "vm.swappiness" not allowlisted'
    host = _pod({"sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]},
                hostNetwork=True)
    assert sc.forbidden_sysctl(host) == \
        'forbidden sysctl: "net.ipv4.tcp_syncookies" not allowed with host net enabled'
    ipc = _pod({"sysctls": [{"name": "kernel.shm_rmid_forced", "value": "1"}]}, hostIPC=True)
    assert sc.forbidden_sysctl(ipc) == \
        'forbidden sysctl: "kernel.shm_rmid_forced" not allowed with host ipc enabled'


def test_run_as_non_root_messages() -> None:
    pod = _pod({"runAsNonRoot": True})
    who = '(pod: "p_ns(u-1)", container: c)'
    container = {"name": "c"}
    with pytest.raises(sc.SecurityContextError) as err:
        sc.verify_run_as_non_root(pod, container, 0, "")
    assert str(err.value) == f"container has runAsNonRoot and image will run as root {who}"
    with pytest.raises(sc.SecurityContextError) as err:
        sc.verify_run_as_non_root(pod, container, 101, "nginx")
    assert str(err.value) == ("container has runAsNonRoot and image has non-numeric user "
                              f"(nginx), cannot verify user is non-root {who}")
    with pytest.raises(sc.SecurityContextError, match="runAsUser breaks non-root policy"):
        sc.verify_run_as_non_root(pod, {"name": "c", "securityContext": {"runAsUser": 0}}, 0, "")
    sc.verify_run_as_non_root(pod, container, 1000, "1000:1000")
    sc.verify_run_as_non_root(_pod(), container, 0, "")
    sc.verify_run_as_non_root(pod, {"name": "c", "securityContext": {"runAsNonRoot": False}},
                              0, "")
