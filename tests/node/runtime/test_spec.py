"""OCI runtime specs from ContainerConfig: pure unit tests, no runc."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubling.node.runtime.seccomp import runtime_default_profile
from kubling.node.runtime.spec import (
    ALL_CAPABILITIES,
    DEFAULT_CAPABILITIES,
    DEFAULT_MASKED_PATHS,
    DEFAULT_PATH,
    DEFAULT_READONLY_PATHS,
    HOST,
    RUNTIME_DEFAULT,
    ContainerConfig,
    Device,
    Mount,
    Namespaces,
    Resources,
    SpecError,
    capabilities,
    held_capabilities,
    oci_spec,
)


def config(**changes: Any) -> ContainerConfig:
    base: dict[str, Any] = {"id": "c1", "rootfs": Path("/r/rootfs"), "args": ["sh"]}
    return ContainerConfig(**{**base, **changes})


def mount_at(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    [found] = [m for m in spec["mounts"] if m["destination"] == destination]
    return found


def test_minimal_spec_has_the_expected_shape() -> None:
    spec = oci_spec(config())
    assert spec["ociVersion"] == "1.0.2"
    assert spec["root"] == {"path": "/r/rootfs", "readonly": False}
    process = spec["process"]
    assert process["args"] == ["sh"]
    assert process["cwd"] == "/"
    assert process["user"] == {"uid": 0, "gid": 0}
    assert process["terminal"] is False
    assert process["noNewPrivileges"] is False
    assert process["env"] == ["PATH=" + DEFAULT_PATH]  # runc needs PATH to find "sh"
    assert spec["linux"]["cgroupsPath"] == "/kubling/c1"
    assert "hostname" not in spec
    assert "seccomp" not in spec["linux"]


def test_default_mounts() -> None:
    spec = oci_spec(config())
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup",
    ]
    assert mount_at(spec, "/proc")["type"] == "proc"
    assert mount_at(spec, "/dev/pts")["type"] == "devpts"
    assert "ro" in mount_at(spec, "/sys")["options"]
    assert "ro" in mount_at(spec, "/sys/fs/cgroup")["options"]
    for m in spec["mounts"]:
        assert set(m) == {"destination", "type", "source", "options"}


def test_user_mounts_bind_tmpfs_and_override() -> None:
    spec = oci_spec(
        config(
            mounts=[
                Mount.bind("/host/data/sub", "/data/sub", readonly=True),
                Mount.bind("/host/data", "/data"),
                Mount.tmpfs("/dev/shm", size=1 << 20),
            ]
        )
    )
    data, sub = mount_at(spec, "/data"), mount_at(spec, "/data/sub")
    assert data == {"destination": "/data", "type": "bind", "source": "/host/data",
                    "options": ["rbind", "rprivate", "rw"]}
    assert sub["options"] == ["rbind", "rprivate", "ro"]
    destinations = [m["destination"] for m in spec["mounts"]]
    assert destinations.index("/data") < destinations.index("/data/sub")  # parent first
    shm = mount_at(spec, "/dev/shm")  # the caller's replaces the default, exactly once
    assert shm["type"] == "tmpfs" and "size=1048576" in shm["options"]


def test_default_capabilities() -> None:
    caps = oci_spec(config())["process"]["capabilities"]
    assert len(DEFAULT_CAPABILITIES) == 14
    assert caps["bounding"] == list(DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert "inheritable" not in caps and "ambient" not in caps


@pytest.mark.parametrize(
    ("add", "drop", "has", "lacks"),
    [
        (["NET_ADMIN"], [], ["CAP_NET_ADMIN", "CAP_CHOWN"], []),
        (["cap_sys_time"], ["chown"], ["CAP_SYS_TIME"], ["CAP_CHOWN"]),
        ([], ["ALL"], [], list(DEFAULT_CAPABILITIES)),
        (["NET_BIND_SERVICE"], ["ALL"], ["CAP_NET_BIND_SERVICE"], ["CAP_CHOWN"]),
        (["ALL"], [], list(ALL_CAPABILITIES), []),
        (["ALL"], ["SYS_ADMIN"], ["CAP_NET_ADMIN"], ["CAP_SYS_ADMIN"]),
        (["NET_ADMIN"], ["NET_ADMIN"], [], ["CAP_NET_ADMIN"]),  # drop wins, as in containerd
    ],
)
def test_capability_add_and_drop(
    add: list[str], drop: list[str], has: list[str], lacks: list[str]
) -> None:
    caps = oci_spec(config(cap_add=add, cap_drop=drop))["process"]["capabilities"]["bounding"]
    assert set(has) <= set(caps)
    assert not set(lacks) & set(caps)
    assert len(caps) == len(set(caps))


def test_privileged() -> None:
    spec = oci_spec(config(privileged=True, cap_drop=["ALL"], seccomp=RUNTIME_DEFAULT))
    assert spec["process"]["capabilities"]["bounding"] == held_capabilities()
    assert len(ALL_CAPABILITIES) == 41
    linux = spec["linux"]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux
    assert "seccomp" not in linux
    assert linux["resources"]["devices"][-1] == {"allow": True, "access": "rwm"}
    assert "rw" in mount_at(spec, "/sys")["options"]
    assert any(d["path"] == "/dev/null" and d["type"] == "c" for d in linux["devices"])


def test_held_capabilities_reads_the_bounding_set(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t0000000000003001\n")
    assert held_capabilities(status) == ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_NET_RAW"]


def test_masked_and_readonly_paths() -> None:
    linux = oci_spec(config())["linux"]
    assert linux["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert "/proc/kcore" in linux["maskedPaths"]
    assert linux["readonlyPaths"] == list(DEFAULT_READONLY_PATHS)
    unmasked = oci_spec(config(masked_paths=[], readonly_paths=[]))["linux"]
    assert "maskedPaths" not in unmasked and "readonlyPaths" not in unmasked


def test_readonly_rootfs_and_no_new_privileges() -> None:
    spec = oci_spec(config(readonly_rootfs=True, no_new_privileges=True))
    assert spec["root"]["readonly"] is True
    assert spec["process"]["noNewPrivileges"] is True


def test_user_env_cwd_and_terminal() -> None:
    process = oci_spec(
        config(uid=1000, gid=2000, additional_gids=[3000, 4000], env=["PATH=/x", "A=b"],
               cwd="/work", terminal=True, oom_score_adj=500)
    )["process"]
    assert process["user"] == {"uid": 1000, "gid": 2000, "additionalGids": [3000, 4000]}
    assert process["env"] == ["PATH=/x", "A=b"]  # a PATH of its own is kept
    assert process["cwd"] == "/work"
    assert process["terminal"] is True
    assert process["oomScoreAdj"] == 500


def test_new_namespaces_by_default() -> None:
    spec = oci_spec(config(hostname="web-0"))
    assert spec["linux"]["namespaces"] == [
        {"type": "mount"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "pid"},
    ]
    assert spec["hostname"] == "web-0"


def test_joined_and_host_namespaces() -> None:
    spec = oci_spec(
        config(
            hostname="ignored",
            namespaces=Namespaces(
                network="/run/netns/kubling-pod1", ipc="/proc/42/ns/ipc", uts="/proc/42/ns/uts",
                pid=HOST,
            ),
        )
    )
    assert spec["linux"]["namespaces"] == [
        {"type": "mount"},
        {"type": "network", "path": "/run/netns/kubling-pod1"},
        {"type": "ipc", "path": "/proc/42/ns/ipc"},
        {"type": "uts", "path": "/proc/42/ns/uts"},
    ]
    assert "hostname" not in spec  # runc refuses a hostname without a private UTS namespace


def test_resources_mapping() -> None:
    res = oci_spec(
        config(
            cgroups_path="/kubling/pod123/app",
            resources=Resources(cpu_shares=512, cpu_quota=50_000, cpu_period=100_000,
                                memory_limit=64 << 20, pids_limit=100),
        )
    )["linux"]
    assert res["cgroupsPath"] == "/kubling/pod123/app"
    resources = res["resources"]
    assert resources["cpu"] == {"shares": 512, "quota": 50_000, "period": 100_000}
    assert resources["memory"]["limit"] == 64 << 20
    assert resources["memory"].get("swap", 64 << 20) == 64 << 20  # no swap beyond the limit
    assert resources["pids"] == {"limit": 100}
    assert resources["devices"][0] == {"allow": False, "access": "rwm"}


def test_no_resources_no_limits() -> None:
    resources = oci_spec(config())["linux"]["resources"]
    assert set(resources) == {"devices"}


def test_explicit_swap_and_devices() -> None:
    linux = oci_spec(
        config(
            resources=Resources(memory_limit=100, memory_swap=300),
            devices=[Device("/dev/fuse", "c", 10, 229)],
        )
    )["linux"]
    assert linux["resources"]["memory"] == {"limit": 100, "swap": 300}
    assert linux["devices"] == [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229,
                                 "fileMode": 0o666, "uid": 0, "gid": 0}]
    assert {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"} in (
        linux["resources"]["devices"]
    )


def test_sysctls_and_annotations() -> None:
    spec = oci_spec(config(sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
                           annotations={"io.kubernetes.pod.name": "p"}))
    assert spec["linux"]["sysctl"] == {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert spec["annotations"] == {"io.kubernetes.pod.name": "p"}


def test_runtime_default_seccomp() -> None:
    seccomp = oci_spec(config(seccomp=RUNTIME_DEFAULT))["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    refused = seccomp["syscalls"][0]
    assert refused["action"] == "SCMP_ACT_ERRNO"
    for name in ("keyctl", "kexec_load", "init_module", "mount", "unshare", "setns", "ptrace"):
        assert name in refused["names"]
    clone_rules = [r for r in seccomp["syscalls"] if r["names"] == ["clone"]]
    assert len(clone_rules) == 7  # one per CLONE_NEW* flag
    assert any(r["names"] == ["clone3"] and r["errnoRet"] == 38 for r in seccomp["syscalls"])


def test_runtime_default_seccomp_follows_added_capabilities() -> None:
    plain = runtime_default_profile("x86_64", DEFAULT_CAPABILITIES)
    admin = runtime_default_profile("x86_64", [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    assert "mount" in plain["syscalls"][0]["names"]
    assert "mount" not in admin["syscalls"][0]["names"]
    assert "keyctl" in admin["syscalls"][0]["names"]  # keyrings are never namespaced
    assert not any(r["names"] == ["clone"] for r in admin["syscalls"])
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


def test_custom_seccomp_profile_passes_through() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    assert oci_spec(config(seccomp=profile))["linux"]["seccomp"] == profile


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"id": "bad/id"}, "container id"),
        ({"args": []}, "no command"),
        ({"cwd": "relative"}, "absolute"),
        ({"mounts": [Mount.bind("/a", "rel")]}, "absolute"),
        ({"namespaces": Namespaces(network="netns-name")}, "network namespace"),
        ({"cgroups_path": "/system.slice/x"}, "/kubling"),
        ({"cgroups_path": "/kubling/../x"}, "/kubling"),
        ({"cgroups_path": "kubling/x"}, "/kubling"),
    ],
)
def test_invalid_configs_are_refused(changes: dict[str, Any], words: str) -> None:
    with pytest.raises(SpecError, match=words):
        oci_spec(config(**changes))


def test_capabilities_helper_never_duplicates() -> None:
    caps = capabilities(["CHOWN", "CAP_CHOWN", "chown"], [])
    assert caps.count("CAP_CHOWN") == 1
