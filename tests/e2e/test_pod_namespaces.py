"""Pod-level namespaces end to end: the containers of a pod share the sandbox's IPC and UTS
namespaces (pinned under /run/kubling/ns, the hostname set in the UTS one), hostIPC,
hostPID and hostNetwork use the node's, and ``shareProcessNamespace`` puts the pod in one
PID namespace whose PID 1 is the pod's init (``kubling.node.pause``). Deleting the pods
leaves no namespace file, mount or init container; an agent restart keeps them all.

A real server with its agent (tests/agent_fixture.py), the real kubectl, runc and the
offline busybox image. The restart and cleanup tests run last: they stop the module's
server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import pod, runc_ids, wait_running
from tests.server_fixture import REPO

NS_DIR = Path("/run/kubling/ns")
IMAGE = {"image": "busybox:latest", "imagePullPolicy": "IfNotPresent"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("podns")) as srv:
        yield srv


def _container(name: str, script: str) -> dict[str, Any]:
    return {"name": name, **IMAGE, "command": ["sh", "-c", script]}


def run_pod(srv: AgentServer, name: str, scripts: dict[str, str],
            **spec: Any) -> dict[str, Any]:
    """A running pod with one container per ``scripts`` entry."""
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 1,
                         "containers": [_container(c, s) for c, s in scripts.items()],
                         **spec}}
    srv.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: all(c.get("ready") for c in
                         pod(srv, name).get("status", {}).get("containerStatuses") or [{}]),
             60, f"pod {name}'s containers to be ready")
    return wait_running(srv, name)


def sh(srv: AgentServer, name: str, container: str, script: str) -> str:
    result = srv.kubectl("exec", name, "-c", container, "--", "sh", "-c", script, check=False)
    assert result.returncode == 0, result.stderr
    return str(result.stdout).strip()


def ns_links(srv: AgentServer, name: str, container: str) -> dict[str, str]:
    out = sh(srv, name, container, "for k in ipc uts pid net; do readlink /proc/self/ns/$k; "
             "done")
    return dict(zip(("ipc", "uts", "pid", "net"), out.splitlines(), strict=True))


def host_links() -> dict[str, str]:
    """The node's namespaces: the test's own, which are the agent's (the host's to it)."""
    return {kind: os.readlink(f"/proc/self/ns/{kind}") for kind in ("ipc", "uts", "pid", "net")}


def pinned(uid: str) -> list[Path]:
    return [p for p in (NS_DIR / "ipc" / f"kubling-{uid}", NS_DIR / "uts" / f"kubling-{uid}")
            if p.exists()]


def mounts_of(uid: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if uid in line]


def delete_and_wait(srv: AgentServer, *names: str) -> None:
    srv.kubectl("delete", "pods", *names, "--grace-period=1", "--wait=true", "--timeout=60s")


# -- tests -------------------------------------------------------------------------------


def test_containers_share_the_pods_ipc_and_uts_namespaces(server: AgentServer) -> None:
    first = run_pod(server, "pair", {"a": "sleep 3600", "b": "sleep 3600"})
    run_pod(server, "other", {"main": "sleep 3600"})
    uid = first["metadata"]["uid"]
    a, b = ns_links(server, "pair", "a"), ns_links(server, "pair", "b")
    other = ns_links(server, "other", "main")
    host = host_links()
    for kind in ("ipc", "uts", "net"):
        assert a[kind] == b[kind], kind
        assert a[kind] != other[kind], kind
        assert a[kind] != host[kind], kind
    # Without shareProcessNamespace each container has its own PID namespace.
    assert a["pid"] != b["pid"]
    # The pinned files are those namespaces.
    for kind in ("ipc", "uts"):
        target = NS_DIR / kind / f"kubling-{uid}"
        assert a[kind] == f"{kind}:[{os.stat(target).st_ino}]"
    # The hostname lives in the shared UTS namespace.
    assert sh(server, "pair", "a", "hostname") == "pair"
    assert sh(server, "pair", "b", "hostname") == "pair"
    assert sh(server, "pair", "b", "cat /etc/hostname") == "pair"


def test_ipc_objects_are_seen_across_containers(server: AgentServer) -> None:
    """busybox has no ipcmk; a POSIX message queue (/dev/mqueue is the IPC namespace's
    mqueue filesystem) shows the same sharing a SysV segment would."""
    wait_running(server, "pair")
    sh(server, "pair", "a", "touch /dev/mqueue/kubling-q")
    assert "kubling-q" in sh(server, "pair", "b", "ls /dev/mqueue").split()
    assert "kubling-q" not in sh(server, "other", "main", "ls /dev/mqueue").split()


def test_dev_shm_is_the_pods(server: AgentServer) -> None:
    """POSIX shared memory lives in /dev/shm: one 64 MiB tmpfs per pod, bound into each of
    its containers (containerd's sandbox /dev/shm); a hostIPC pod gets the node's."""
    wait_running(server, "pair")
    sh(server, "pair", "a", "echo shared > /dev/shm/kubling-seg")
    assert sh(server, "pair", "b", "cat /dev/shm/kubling-seg") == "shared"
    assert "kubling-seg" not in sh(server, "other", "main", "ls /dev/shm").split()
    size = sh(server, "pair", "b", "df -k /dev/shm | tail -1").split()[1]
    assert size == str(64 * 1024)
    marker = Path("/dev/shm") / f"kubling-host-shm-{os.getpid()}"
    marker.write_text("from the node")
    try:
        run_pod(server, "shm-hostipc", {"main": "sleep 3600"}, hostIPC=True)
        assert sh(server, "shm-hostipc", "main", f"cat /dev/shm/{marker.name}") == \
            "from the node"
    finally:
        marker.unlink()
        delete_and_wait(server, "shm-hostipc")


def test_hostname_and_subdomain(server: AgentServer) -> None:
    run_pod(server, "named", {"a": "sleep 3600", "b": "sleep 3600"},
            hostname="web-0", subdomain="web")
    assert sh(server, "named", "a", "hostname") == "web-0"
    assert sh(server, "named", "b", "hostname") == "web-0"
    assert "web-0.web.default.svc.cluster.local" in sh(server, "named", "b", "cat /etc/hosts")


def test_host_namespaces(server: AgentServer) -> None:
    host = host_links()
    made = run_pod(server, "hostipc", {"main": "sleep 3600"}, hostIPC=True, hostPID=True)
    links = ns_links(server, "hostipc", "main")
    assert links["ipc"] == host["ipc"]
    assert links["pid"] == host["pid"]
    assert links["uts"] != host["uts"]
    assert links["net"] != host["net"]
    assert not (NS_DIR / "ipc" / f"kubling-{made['metadata']['uid']}").exists()
    # hostPID: the node's processes are visible (this test's among them).
    assert sh(server, "hostipc", "main", f"cat /proc/{os.getpid()}/comm") == Path(
        "/proc/self/comm").read_text().strip()
    run_pod(server, "hostnet", {"main": "sleep 3600"}, hostNetwork=True)
    links = ns_links(server, "hostnet", "main")
    assert links["uts"] == host["uts"]
    assert links["net"] == host["net"]
    assert links["ipc"] != host["ipc"]
    assert sh(server, "hostnet", "main", "hostname") == os.uname().nodename


def test_share_process_namespace(server: AgentServer) -> None:
    made = run_pod(server, "shared", {"a": "sleep 3600", "b": "sleep 3601"},
                   shareProcessNamespace=True)
    a, b = ns_links(server, "shared", "a"), ns_links(server, "shared", "b")
    assert a["pid"] == b["pid"]
    assert a["pid"] != host_links()["pid"]
    # Each container sees the other's process; PID 1 is the pod's init, not a container.
    assert "sleep 3601" in sh(server, "shared", "a", "ps")
    assert "sleep 3600" in sh(server, "shared", "b", "ps")
    init = sh(server, "shared", "a", "tr '\\0' ' ' < /proc/1/cmdline")
    assert init == "/bin/sh /pause"
    assert sh(server, "shared", "a", "pidof sleep | tr ' ' '\\n' | grep -cx 1 || true") == "0"
    # The init reaps orphans: a detached child whose parent exited leaves no zombie.
    sh(server, "shared", "a", "(sleep 0.2 &) ; true")
    time.sleep(1)
    states = sh(server, "shared", "b", "cat /proc/[0-9]*/stat 2>/dev/null | awk '{print $3}'")
    assert "Z" not in states.split()
    # The init is no container of the pod's status.
    statuses = made["status"]["containerStatuses"]
    assert sorted(c["name"] for c in statuses) == ["a", "b"]
    assert f"{made['metadata']['uid']}_POD_0" in runc_ids(server)


def test_a_finished_shared_pid_pod_stops_its_init(server: AgentServer) -> None:
    manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shared-done"},
                "spec": {"restartPolicy": "Never", "shareProcessNamespace": True,
                         "terminationGracePeriodSeconds": 1,
                         "containers": [_container("main", "sleep 2")]}}
    server.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    wait_for(lambda: pod(server, "shared-done").get("status", {}).get("phase") == "Succeeded",
             30, "the pod to finish")
    uid = pod(server, "shared-done")["metadata"]["uid"]
    wait_for(lambda: f"{uid}_POD_0" not in runc_ids(server), 15, "its init to be removed")
    time.sleep(2)  # and it is not started again
    assert f"{uid}_POD_0" not in runc_ids(server)
    delete_and_wait(server, "shared-done")


def test_deleting_the_pods_leaves_no_namespace(server: AgentServer) -> None:
    names = ["pair", "other", "named", "shared", "hostipc", "hostnet"]
    uids = [pod(server, n)["metadata"]["uid"] for n in names if pod(server, n)]
    assert uids
    delete_and_wait(server, *names)
    for uid in uids:
        assert pinned(uid) == [], uid
        assert mounts_of(uid) == [], uid
        assert not [i for i in runc_ids(server) if i.startswith(uid)], uid
    # With no pod left, the pin directories' own mounts are gone too.
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(NS_DIR) in line]


def test_an_agent_restart_keeps_the_pods_namespaces(server: AgentServer) -> None:
    run_pod(server, "kept", {"a": "sleep 3600", "b": "sleep 3601"},
            shareProcessNamespace=True)
    before = {c: ns_links(server, "kept", c) for c in ("a", "b")}
    uid = pod(server, "kept")["metadata"]["uid"]
    state = subprocess.run(["runc", "--root", str(server.data_dir / "runtime" / "runc"),
                            "state", f"{uid}_POD_0"], capture_output=True, text=True,
                           check=True).stdout
    server.stop()
    server.start()
    time.sleep(3)  # the agent re-syncs the pod
    after = wait_running(server, "kept")
    assert [c["restartCount"] for c in after["status"]["containerStatuses"]] == [0, 0]
    assert {c: ns_links(server, "kept", c) for c in ("a", "b")} == before
    again = subprocess.run(["runc", "--root", str(server.data_dir / "runtime" / "runc"),
                            "state", f"{uid}_POD_0"], capture_output=True, text=True,
                           check=True).stdout
    assert json.loads(again)["pid"] == json.loads(state)["pid"]
    assert "sleep 3601" in sh(server, "kept", "a", "ps")
    # A container started after the restart joins the same namespaces (ephemeral debug
    # would too); the pod's hostname is unchanged.
    assert sh(server, "kept", "b", "hostname") == "kept"
    delete_and_wait(server, "kept")
    assert pinned(uid) == [] and mounts_of(uid) == []


def test_cleanup_removes_the_pods_namespaces(server: AgentServer) -> None:
    """``kubling server --cleanup`` (the server stopped, its pods left running) unpins the
    pods' namespaces and removes their init. Last: the server stays stopped."""
    made = run_pod(server, "left", {"a": "sleep 3600"}, shareProcessNamespace=True)
    uid = made["metadata"]["uid"]
    assert len(pinned(uid)) == 2
    server.stop()
    result = subprocess.run([sys.executable, "-m", "kubling.cli.main", "server", "--cleanup",
                             "--data-dir", str(server.data_dir)], capture_output=True,
                            text=True, cwd=REPO, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert f"pod namespaces: {NS_DIR}/ipc/kubling-{uid}" in result.stderr, result.stderr
    assert pinned(uid) == [] and mounts_of(uid) == []
    assert runc_ids(server) == []
