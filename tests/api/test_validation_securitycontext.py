"""securityContext validation with upstream's field paths and messages."""

from __future__ import annotations

from typing import Any

from tests.api.test_validation import ctr, pod_errors

SYSCTL_MSG = ("must have at most 253 characters and match regex "
              r"([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?")


def container_errors(**context: Any) -> list[str]:
    return pod_errors(containers=[ctr(securityContext=context)])


def test_valid_contexts() -> None:
    assert container_errors(runAsUser=1000, runAsGroup=0, allowPrivilegeEscalation=False,
                            capabilities={"add": ["NET_ADMIN"], "drop": ["ALL"]},
                            seccompProfile={"type": "RuntimeDefault"}) == []
    assert pod_errors(securityContext={
        "fsGroup": 2000, "supplementalGroups": [1, 2], "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/a.json"},
        "sysctls": [{"name": "net.ipv4.ip_local_port_range", "value": "1 2"},
                    {"name": "kernel/shm_rmid_forced", "value": "1"}]}) == []


def test_seccomp_profile() -> None:
    prefix = "spec.containers[0].securityContext.seccompProfile"
    assert container_errors(seccompProfile={"type": "Bogus"}) == [
        f'{prefix}.type: Unsupported value: "Bogus": supported values: "Localhost", '
        '"RuntimeDefault", "Unconfined"']
    assert container_errors(seccompProfile={"type": "Localhost"}) == [
        f"{prefix}.localhostProfile: Required value: must be set when seccomp type is Localhost"]
    assert container_errors(seccompProfile={"type": "RuntimeDefault",
                                            "localhostProfile": "x.json"}) == [
        f'{prefix}.localhostProfile: Invalid value: "x.json": can only be set when seccomp '
        "type is Localhost"]
    assert pod_errors(securityContext={"seccompProfile": {
        "type": "Localhost", "localhostProfile": "../../etc/x.json"}}) == [
        'spec.securityContext.seccompProfile.localhostProfile: Invalid value: '
        '"../../etc/x.json": must not contain \'..\'']
    assert pod_errors(securityContext={"seccompProfile": {
        "type": "Localhost", "localhostProfile": "/etc/x.json"}}) == [
        'spec.securityContext.seccompProfile.localhostProfile: Invalid value: '
        '"/etc/x.json": must be a relative path']


def test_ids_in_range() -> None:
    assert container_errors(runAsUser=-1) == [
        "spec.containers[0].securityContext.runAsUser: Invalid value: -1: must be between 0 "
        "and 2147483647, inclusive"]
    assert pod_errors(securityContext={"fsGroup": 2147483648, "supplementalGroups": [-5]}) == [
        "spec.securityContext.fsGroup: Invalid value: 2147483648: must be between 0 and "
        "2147483647, inclusive",
        "spec.securityContext.supplementalGroups[0]: Invalid value: -5: must be between 0 and "
        "2147483647, inclusive"]


def test_privilege_escalation_conflicts() -> None:
    (privileged,) = container_errors(allowPrivilegeEscalation=False, privileged=True)
    assert privileged.startswith("spec.containers[0].securityContext: Invalid value: ")
    assert privileged.endswith(
        "cannot set `allowPrivilegeEscalation` to false and `privileged` to true")
    (sys_admin,) = container_errors(allowPrivilegeEscalation=False,
                                    capabilities={"add": ["CAP_SYS_ADMIN"]})
    assert sys_admin.endswith(
        "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN")


def test_sysctls() -> None:
    assert pod_errors(securityContext={"sysctls": [
        {"name": "Bad_Name", "value": "1"}, {"name": "", "value": "1"},
        {"name": "kernel.shm_rmid_forced", "value": "1"},
        {"name": "kernel/shm_rmid_forced", "value": "0"}]}) == [
        f'spec.securityContext.sysctls[0].name: Invalid value: "Bad_Name": {SYSCTL_MSG}',
        "spec.securityContext.sysctls[1].name: Required value",
        'spec.securityContext.sysctls[3].name: Duplicate value: "kernel/shm_rmid_forced"']
    assert pod_errors(hostNetwork=True, securityContext={"sysctls": [
        {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}) == [
        'spec.securityContext.sysctls[0].name: Invalid value: "net.ipv4.tcp_syncookies": '
        "may not be specified when 'hostNetwork' is true"]


def test_enumerations() -> None:
    assert container_errors(procMount="Weird") == [
        'spec.containers[0].securityContext.procMount: Unsupported value: "Weird": '
        'supported values: "Default", "Unmasked"']
    assert pod_errors(securityContext={"fsGroupChangePolicy": "Sometimes"}) == [
        'spec.securityContext.fsGroupChangePolicy: Unsupported value: "Sometimes": '
        'supported values: "OnRootMismatch", "Always"']


def test_review_gaps() -> None:
    """Upstream's words for a seccompProfile without a type, Unmasked /proc without a user
    namespace, and IPC sysctls with hostIPC."""
    assert container_errors(seccompProfile={}) == [
        "spec.containers[0].securityContext.seccompProfile.type: Required value: type is "
        "required when seccompProfile is set"]
    assert container_errors(procMount="Unmasked") == [
        'spec.containers[0].securityContext.procMount: Invalid value: "Unmasked": '
        "`hostUsers` must be false to use `Unmasked`"]
    assert pod_errors(hostUsers=False, containers=[ctr(securityContext={
        "procMount": "Unmasked"})]) == []
    assert pod_errors(hostIPC=True, securityContext={"sysctls": [
        {"name": "kernel.shm_rmid_forced", "value": "1"},
        {"name": "net.ipv4.tcp_syncookies", "value": "1"}]}) == [
        'spec.securityContext.sysctls[0].name: Invalid value: "kernel.shm_rmid_forced": '
        "may not be specified when 'hostIPC' is true"]
