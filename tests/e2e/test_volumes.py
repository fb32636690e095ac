"""Volumes and environment sources end to end: a real server with its agent, the real
kubectl, runc and the offline busybox image. Each volume kind's content is read from inside
a pod (``kubectl logs`` of a pod that prints its files), a configMap update reaches a running
pod within seconds while a ``subPath`` mount keeps the old value, a missing configMap holds
a pod in ContainerCreating with upstream's FailedMount event until it is created, env comes
from configMaps, secrets, the downward API and ``envFrom`` with a prefix, and deleting a
pod leaves no mount and no directory behind.

The server comes from tests/agent_fixture.py (the host's one agent slot). The hostPath
directory is a temporary ``kubling-`` directory, removed at the end.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_fixture import AgentServer, agent_server, wait_for
from tests.e2e.test_node_agent import pod, wait_running
from tests.server_fixture import KublingServer


@pytest.fixture(scope="module")
def host_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="kubling-hostpath-"))
    (directory / "from-host.txt").write_text("hello from the node\n")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentServer]:
    with agent_server(tmp_path_factory.mktemp("volumes")) as srv:
        yield srv


def _apply(srv: KublingServer, *objects: dict[str, Any]) -> None:
    srv.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": list(objects)}))


def _pod(name: str, script: str, *, volumes: list[dict[str, Any]] | None = None,
         mounts: list[dict[str, Any]] | None = None, **container: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name, "tier": "test"},
                         "annotations": {"note": "volumes"}},
            "spec": {"terminationGracePeriodSeconds": 1, "volumes": volumes or [],
                     "containers": [{"name": "main", "image": "busybox:latest",
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", script],
                                     "volumeMounts": mounts or [], **container}]}}


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def logs(srv: KublingServer, name: str) -> str:
    result = srv.kubectl("logs", name, check=False)
    return result.stdout + result.stderr


def events(srv: KublingServer, name: str) -> str:
    return srv.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                       "-o", "custom-columns=REASON:.reason,MESSAGE:.message").stdout


def waiting(srv: KublingServer, name: str) -> dict[str, Any]:
    statuses = pod(srv, name).get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0].get("state", {}).get("waiting") or {})


FILES_SCRIPT = """
show() { echo "== $1"; cat "$1"; echo; }
show /cm/app.conf; show /cm/nested/mode.txt; ls -l /cm/nested/ | grep mode.txt
show /secret/user; show /secret/pass
grep " /secret " /proc/mounts | cut -d' ' -f3
show /downward/labels; show /downward/annotations; show /downward/name; show /downward/mem
show /projected/config; show /projected/password; show /projected/namespace
grep " /mem " /proc/mounts | cut -d' ' -f3,4
show /host/from-host.txt; echo written-by-pod > /host/from-pod.txt
show /single.conf
touch /cm/new 2>/dev/null || echo cm-is-read-only
echo done; sleep 3600
"""


@pytest.fixture(scope="module")
def files(server: KublingServer, host_dir: Path) -> KublingServer:
    volumes = [
        {"name": "cm", "configMap": {"name": "app-config", "items": [
            {"key": "app.conf", "path": "app.conf"},
            {"key": "mode", "path": "nested/mode.txt", "mode": 0o400}]}},
        {"name": "secret", "secret": {"secretName": "app-secret"}},
        {"name": "downward", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "main",
                                                 "resource": "limits.memory",
                                                 "divisor": "1Mi"}}]}},
        {"name": "projected", "projected": {"sources": [
            {"configMap": {"name": "app-config", "items": [{"key": "app.conf",
                                                            "path": "config"}]}},
            {"secret": {"name": "app-secret", "items": [{"key": "pass",
                                                         "path": "password"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
        {"name": "host", "hostPath": {"path": str(host_dir), "type": "Directory"}},
    ]
    mounts = [{"name": "cm", "mountPath": "/cm"},
              {"name": "secret", "mountPath": "/secret"},
              {"name": "downward", "mountPath": "/downward"},
              {"name": "projected", "mountPath": "/projected"},
              {"name": "mem", "mountPath": "/mem"},
              {"name": "host", "mountPath": "/host"},
              {"name": "cm", "mountPath": "/single.conf", "subPath": "app.conf"}]
    _apply(server, _config_map("app-config", {"app.conf": "color=blue", "mode": "strict"}),
           _secret("app-secret", {"user": "admin", "pass": "s3cret"}),
           _pod("files", FILES_SCRIPT, volumes=volumes, mounts=mounts,
                resources={"limits": {"memory": "64Mi"}}))
    return server


def test_each_volume_kind_is_seen_inside_the_pod(files: KublingServer, host_dir: Path) -> None:
    wait_running(files, "files", 30)
    wait_for(lambda: "done" in logs(files, "files"), 15, "the pod to print its files")
    text = logs(files, "files")
    assert "== /cm/app.conf\ncolor=blue\n" in text
    assert "== /cm/nested/mode.txt\nstrict\n" in text and "-r--------" in text
    assert "== /secret/user\nadmin\n" in text and "== /secret/pass\ns3cret\n" in text
    assert "\ntmpfs\n" in text  # the secret is on a tmpfs
    assert '== /downward/labels\napp="files"\ntier="test"\n' in text
    assert '== /downward/annotations\n' in text and 'note="volumes"' in text
    assert "== /downward/name\nfiles\n" in text and "== /downward/mem\n64\n" in text
    assert "== /projected/config\ncolor=blue\n" in text
    assert "== /projected/password\ns3cret\n" in text
    assert "== /projected/namespace\ndefault\n" in text
    assert "tmpfs rw,nosuid,nodev,relatime,size=8192k" in text or "size=8192k" in text
    assert "== /host/from-host.txt\nhello from the node\n" in text
    assert "== /single.conf\ncolor=blue\n" in text
    assert "cm-is-read-only" in text
    assert (host_dir / "from-pod.txt").read_text() == "written-by-pod\n"


WATCH_SCRIPT = """
last=
while true; do
  v="$(cat /cfg/color)|$(cat /single)|$(cat /info/tier)"
  if [ "$v" != "$last" ]; then echo "seen $v"; last="$v"; fi
  sleep 0.2
done
"""


def test_a_config_map_update_reaches_a_running_pod(server: KublingServer) -> None:
    _apply(server, _config_map("live", {"color": "red"}),
           _pod("watcher", WATCH_SCRIPT,
                volumes=[{"name": "cfg", "configMap": {"name": "live"}},
                         {"name": "info", "downwardAPI": {"items": [
                             {"path": "tier",
                              "fieldRef": {"fieldPath": "metadata.labels['tier']"}}]}}],
                mounts=[{"name": "cfg", "mountPath": "/cfg"},
                        {"name": "cfg", "mountPath": "/single", "subPath": "color"},
                        {"name": "info", "mountPath": "/info"}]))
    wait_running(server, "watcher", 30)
    wait_for(lambda: "seen red|red|test" in logs(server, "watcher"), 10, "the first value")
    server.kubectl("patch", "configmap", "live", "--type=merge",
                   "-p", '{"data": {"color": "green"}}')
    started = time.monotonic()
    wait_for(lambda: "seen green|red|test" in logs(server, "watcher"), 10, "the update")
    took = time.monotonic() - started
    print(f"configMap update seen inside the pod after {took:.2f}s")
    assert took < 5
    # A subPath mount pins the version it was made from, as upstream.
    assert "green|green" not in logs(server, "watcher")
    # Labels reach downward API files when the pod changes.
    server.kubectl("label", "pod", "watcher", "tier=relabelled", "--overwrite")
    wait_for(lambda: "seen green|red|relabelled" in logs(server, "watcher"), 5,
             "the new label in the downward API file")


def test_a_missing_config_map_holds_the_pod_until_it_exists(server: KublingServer) -> None:
    _apply(server, _pod("waits", "cat /cfg/key; echo; sleep 3600",
                        volumes=[{"name": "cfg", "configMap": {"name": "late"}}],
                        mounts=[{"name": "cfg", "mountPath": "/cfg"}]))
    wait_for(lambda: "FailedMount" in events(server, "waits"), 20, "a FailedMount event")
    assert ('MountVolume.SetUp failed for volume "cfg" : configmap "late" not found'
            in events(server, "waits"))
    assert waiting(server, "waits").get("reason") == "ContainerCreating"
    row = server.kubectl("get", "pod", "waits", "--no-headers").stdout.split()
    assert row[2] == "ContainerCreating"
    _apply(server, _config_map("late", {"key": "arrived"}))
    wait_running(server, "waits", 20)
    wait_for(lambda: "arrived" in logs(server, "waits"), 10, "the file")


ENV_SCRIPT = "env | sort; echo done; sleep 3600"


def test_env_from_config_maps_secrets_and_the_downward_api(server: KublingServer) -> None:
    env = [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "env-config",
                                                                  "key": "greeting"}}},
           {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "env-secret",
                                                               "key": "password"}}},
           {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
           {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
           {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
           {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory",
                                                                 "divisor": "1Mi"}}},
           {"name": "MESSAGE", "value": "$(GREETING) from $(POD_NAME)"}]
    env_from = [{"configMapRef": {"name": "env-config"}, "prefix": "CFG_"},
                {"secretRef": {"name": "env-secret"}}]
    _apply(server, _config_map("env-config", {"greeting": "hello", "1badkey": "x"}),
           _secret("env-secret", {"password": "hunter2"}),
           _pod("env", ENV_SCRIPT, env=env, envFrom=env_from,
                resources={"limits": {"memory": "32Mi"}}))
    obj = wait_running(server, "env", 30)
    wait_for(lambda: "done" in logs(server, "env"), 10, "the environment")
    text = logs(server, "env").splitlines()
    for line in ("GREETING=hello", "PASSWORD=hunter2", "POD_NAME=env",
                 f"POD_IP={obj['status']['podIP']}", f"NODE={obj['spec']['nodeName']}",
                 "MEM_MI=32", "MESSAGE=hello from env", "CFG_greeting=hello",
                 "CFG_1badkey=x", "password=hunter2"):
        assert line in text


def test_invalid_env_from_keys_are_skipped_with_an_event(server: KublingServer) -> None:
    _apply(server, _pod("badkeys", ENV_SCRIPT,
                        envFrom=[{"configMapRef": {"name": "env-config"}}]))
    wait_for(lambda: "done" in logs(server, "badkeys"), 30, "the environment")
    assert "greeting=hello" in logs(server, "badkeys").splitlines()
    assert ("Keys [1badkey] from the EnvFrom configMap default/env-config were skipped since "
            "they are considered invalid environment variable names.") in " ".join(
                events(server, "badkeys").split())


def test_a_missing_env_key_is_a_create_container_config_error(server: KublingServer) -> None:
    _apply(server, _pod("badenv", ENV_SCRIPT, env=[
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-config",
                                                        "key": "nope"}}}]))
    wait_for(lambda: waiting(server, "badenv").get("reason") == "CreateContainerConfigError",
             30, "CreateContainerConfigError")
    assert waiting(server, "badenv")["message"] == \
        "couldn't find key nope in ConfigMap default/env-config"
    row = server.kubectl("get", "pod", "badenv", "--no-headers").stdout.split()
    assert row[2] == "CreateContainerConfigError"


def test_a_claim_bound_to_a_host_path_volume(server: KublingServer, host_dir: Path) -> None:
    """The course's PersistentVolume example: the pod and its claim come first and wait
    (the claim says no volume is available, the pod that its claim is not bound); the
    administrator's hostPath volume then arrives, the binder binds it and the pod runs."""
    claim_dir = host_dir / "claim"
    _apply(server,
           {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "example-pvc"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "10Gi"}}}})
    manifest = _pod("claims", "echo kept > /data/out; cat /data/out; sleep 3600",
                    volumes=[{"name": "data",
                              "persistentVolumeClaim": {"claimName": "example-pvc"}}],
                    mounts=[{"name": "data", "mountPath": "/data"}])
    _apply(server, manifest)
    wait_for(lambda: "no persistent volumes available for this claim" in " ".join(
        server.kubectl("describe", "pvc", "example-pvc").stdout.split()), 20,
        "the claim's FailedBinding event")
    _apply(server,
           {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "example-pv"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": str(claim_dir), "type": "DirectoryOrCreate"}}})
    row = wait_for(lambda: (out := server.kubectl("get", "pvc", "example-pvc",
                                                  "--no-headers").stdout.split())
                   and out[1] == "Bound" and out, 20, "the claim to be bound")
    assert row[2:5] == ["example-pv", "10Gi", "RWO"]
    wait_running(server, "claims", 40)
    wait_for(lambda: (claim_dir / "out").exists(), 10, "the file on the volume")
    assert (claim_dir / "out").read_text() == "kept\n"


def test_a_local_volume_is_given_to_the_fs_group(server: KublingServer, host_dir: Path) -> None:
    """A claim bound to a ``local`` PersistentVolume: the kubelet gives the volume (and what
    is already in it) to the pod's fsGroup, so a non-root user of that group can write."""
    local_dir = host_dir / "local"
    (local_dir / "old").mkdir(parents=True)
    (local_dir / "old" / "data.txt").write_text("before\n")
    os.chmod(local_dir, 0o755)
    os.chmod(local_dir / "old", 0o755)
    os.chmod(local_dir / "old" / "data.txt", 0o644)
    node = server.kubectl("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}").stdout
    _apply(server,
           {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "local-pv"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "storageClassName": "manual", "local": {"path": str(local_dir)},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In",
                          "values": [node]}]}]}}}},
           {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "local-claim"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                     "resources": {"requests": {"storage": "1Gi"}}}})
    manifest = _pod("local-fsgroup", "echo new > /data/new.txt && echo more >> "
                    "/data/old/data.txt && echo wrote; sleep 3600",
                    volumes=[{"name": "data",
                              "persistentVolumeClaim": {"claimName": "local-claim"}}],
                    mounts=[{"name": "data", "mountPath": "/data"}])
    manifest["spec"]["securityContext"] = {"runAsUser": 1000, "fsGroup": 4321}
    _apply(server, manifest)
    wait_for(lambda: "wrote" in logs(server, "local-fsgroup"), 40, "the pod to write")
    for path in (local_dir, local_dir / "old", local_dir / "old" / "data.txt",
                 local_dir / "new.txt"):
        assert path.stat().st_gid == 4321, path
    assert local_dir.stat().st_mode & 0o2070 == 0o2070
    assert (local_dir / "old" / "data.txt").read_text() == "before\nmore\n"


def test_the_service_account_volume_is_mounted(server: KublingServer) -> None:
    """Needs the API server to inject kube-api-access-* and serve TokenRequest."""
    _apply(server, _pod("sa", "cd /var/run/secrets/kubernetes.io/serviceaccount && "
                              "cat namespace; echo; head -c 3 token; echo; "
                              "grep -c BEGIN ca.crt; sleep 3600"))
    obj = wait_running(server, "sa", 30)
    names = [v["name"] for v in obj["spec"].get("volumes") or []]
    assert any(n.startswith("kube-api-access-") for n in names), names
    wait_for(lambda: len(logs(server, "sa").splitlines()) >= 3, 10, "the token files")
    assert logs(server, "sa").splitlines()[:2] == ["default", "eyJ"]


def test_fs_group_owns_the_volumes_as_in_upstreams_demo(server: KublingServer) -> None:
    """Upstream's security-context-demo: the process runs as 1000:3000 with 2000 as an extra
    group, and the emptyDir (and what it writes there) belongs to group 2000."""
    manifest = _pod("fsgroup", "id; ls -ld /data/demo | cut -c1-10; ls -ln /data/demo -d | "
                               "awk '{print \"gid=\" $4}'; touch /data/demo/f; "
                               "ls -ln /data/demo/f | awk '{print \"file-gid=\" $4}'; "
                               "cat /cfg/app.conf; echo; echo done; sleep 3600",
                    volumes=[{"name": "sec-ctx-vol", "emptyDir": {}},
                             {"name": "cfg", "configMap": {"name": "app-config"}}],
                    mounts=[{"name": "sec-ctx-vol", "mountPath": "/data/demo"},
                            {"name": "cfg", "mountPath": "/cfg"}])
    manifest["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 3000,
                                           "fsGroup": 2000}
    _apply(server, _config_map("app-config", {"app.conf": "color=blue"}), manifest)
    wait_for(lambda: "done" in logs(server, "fsgroup"), 30, "the pod's output")
    text = logs(server, "fsgroup")
    assert "uid=1000 gid=3000 groups=2000" in text
    assert "drwxrwsrwx" in text and "gid=2000" in text and "file-gid=2000" in text
    assert "color=blue" in text  # a 0644 file, group-readable by 2000


def test_a_disk_empty_dir_over_its_size_limit_evicts_the_pod(server: KublingServer) -> None:
    _apply(server, _pod("hog", "dd if=/dev/zero of=/cache/fill bs=1M count=3; echo full; "
                               "sleep 3600",
                        volumes=[{"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}}],
                        mounts=[{"name": "cache", "mountPath": "/cache"}]))
    wait_for(lambda: pod(server, "hog").get("status", {}).get("reason") == "Evicted", 40,
             "the eviction")
    status = pod(server, "hog")["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == 'Usage of EmptyDir volume "cache" exceeds the limit "1Mi". '
    assert "Evicted" in events(server, "hog")
    wait_for(lambda: (pod(server, "hog")["status"]["containerStatuses"][0]["state"]
                      .get("terminated")), 15, "the container to be killed")
    pod_dir = server.data_dir / "pods" / pod(server, "hog")["metadata"]["uid"]
    server.kubectl("delete", "pod", "hog", "--timeout=30s")  # a Failed pod goes at once
    wait_for(lambda: not _kubling_mounts_below(pod_dir) and not pod_dir.exists(), 15,
             "the evicted pod's mounts and files to go")


def _kubling_mounts_below(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if f" {path}" in line]


def test_volumes_are_torn_down_with_the_pod(files: KublingServer, host_dir: Path) -> None:
    obj = wait_running(files, "files", 30)
    pod_dir = files.data_dir / "pods" / obj["metadata"]["uid"]
    assert _kubling_mounts_below(pod_dir / "volumes")  # the secret, projected and mem tmpfs
    files.kubectl("delete", "pod", "files", "--timeout=30s")
    assert not _kubling_mounts_below(pod_dir)
    assert not pod_dir.exists()
    assert (host_dir / "from-host.txt").exists()  # a host path is the node's, never removed
