"""Volume kinds without a server: configMap/secret items and modes, optional sources,
upstream's error texts, the downward API's formatting and resource units, projected
tokens (requested, bound to the pod, renewed at 80 % of their life), hostPath type checks,
memory-backed directories, and what a pod references."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from kubling.node.images import rootfs
from kubling.node.volumes import (
    VolumeManager,
    configmap,
    downwardapi,
    emptydir,
    hostpath,
    plugin,
    projected,
    referenced,
    secret,
    sources,
    tmpfs,
    tokens,
)


class FakeObjects(sources.ObjectCache):
    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.objects = objects

    async def get(self, ref: sources.Ref) -> dict[str, Any]:
        obj = self.objects.get((ref.kind, ref.name))
        if obj is None:
            raise sources.SourceNotFound(f'{ref.kind} "{ref.name}" not found')
        return obj

    def register(self, uid: str, refs: Any, on_change: Any) -> None:
        self.registered = {uid: set(refs)}

    def unregister(self, uid: str) -> None:
        self.registered = {}


class FakeAccounts:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def create(self, body: dict[str, Any], **where: str) -> dict[str, Any]:
        self.requests.append({"body": body, **where})
        seconds = body["spec"]["expirationSeconds"]
        return {"spec": {"expirationSeconds": seconds},
                "status": {"token": f"token-{len(self.requests)}",
                           "expirationTimestamp": "2030-01-01T01:00:00Z"}}


class FakeClient:
    def __init__(self) -> None:
        self.accounts = FakeAccounts()

    def resource(self, _rt: object) -> FakeAccounts:
        return self.accounts


POD: dict[str, Any] = {
    "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                 "labels": {"app": "web", "tier": "front"},
                 "annotations": {"note": 'say "hi"\n'}},
    "spec": {"serviceAccountName": "builder", "nodeName": "n1",
             "containers": [{"name": "main", "resources": {
                 "limits": {"memory": "64Mi", "cpu": "250m"},
                 "requests": {"memory": "32Mi", "cpu": "250m"}}},
                            {"name": "side"}]},
}
ALLOCATABLE = {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"}
CONFIG = {"metadata": {"name": "cfg"}, "data": {"a.conf": "A", "b.conf": "B"},
          "binaryData": {"bin": base64.b64encode(b"\x00\x01").decode()}}
SECRET = {"metadata": {"name": "creds"},
          "data": {"user": base64.b64encode(b"admin").decode(),
                   "pass": base64.b64encode(b"s3cret").decode()}}


def _host(clock: list[float] | None = None) -> tuple[plugin.Host, FakeClient]:
    client = FakeClient()
    manager = tokens.TokenManager(client,  # type: ignore[arg-type]
                                  clock=(lambda: clock[0]) if clock else lambda: 0.0)
    objects = FakeObjects({("configmap", "cfg"): CONFIG, ("secret", "creds"): SECRET})
    return plugin.Host(objects=objects, tokens=manager, allocatable=ALLOCATABLE), client


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_config_map_projects_every_key_with_the_default_mode(tmp_path: Path) -> None:
    host, _ = _host()
    volume = configmap.ConfigMapVolume(
        {"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o400}}, tmp_path, host)
    _run(volume.set_up(POD))
    directory = tmp_path / "volumes" / "kubernetes.io~configmap" / "c"
    assert volume.host_path == directory and volume.read_only
    assert (directory / "a.conf").read_text() == "A"
    assert (directory / "bin").read_bytes() == b"\x00\x01"
    assert (directory / "a.conf").stat().st_mode & 0o777 == 0o400


def test_items_map_keys_to_paths_with_their_own_mode(tmp_path: Path) -> None:
    host, _ = _host()
    source = {"name": "cfg", "defaultMode": 0o644,
              "items": [{"key": "a.conf", "path": "conf/app.conf", "mode": 0o600}]}
    payload = _run(configmap.configmap_payload(source, POD, host, default_mode=0o644))
    assert list(payload) == ["conf/app.conf"]
    assert payload["conf/app.conf"].mode == 0o600 and payload["conf/app.conf"].data == b"A"


def test_missing_sources_and_keys_say_what_upstream_says(tmp_path: Path) -> None:
    host, _ = _host()
    with pytest.raises(plugin.VolumeError, match=r'^configmap "nope" not found$'):
        _run(configmap.configmap_payload({"name": "nope"}, POD, host, default_mode=None))
    assert _run(configmap.configmap_payload({"name": "nope", "optional": True}, POD, host,
                                            default_mode=None)) == {}
    with pytest.raises(plugin.VolumeError,
                       match=r"^configmap references non-existent config key: zz$"):
        _run(configmap.configmap_payload({"name": "cfg", "items": [{"key": "zz", "path": "z"}]},
                                         POD, host, default_mode=None))
    with pytest.raises(plugin.VolumeError, match=r'^secret "nope" not found$'):
        _run(secret.secret_payload({"name": "nope"}, POD, host, default_mode=None))
    with pytest.raises(plugin.VolumeError, match=r"^references non-existent secret key: zz$"):
        _run(secret.secret_payload({"name": "creds", "items": [{"key": "zz", "path": "z"}]},
                                   POD, host, default_mode=None))


def test_secret_volume_is_decoded_on_a_tmpfs(tmp_path: Path) -> None:
    host, _ = _host()
    volume = secret.SecretVolume({"name": "s", "secret": {"secretName": "creds"}}, tmp_path,
                                 host)
    try:
        _run(volume.set_up(POD))
        assert rootfs.is_mounted(volume.host_path)
        assert (volume.host_path / "pass").read_text() == "s3cret"
    finally:
        _run(volume.tear_down())
    assert not rootfs.is_mounted(volume.host_path) and not volume.host_path.exists()


def test_memory_empty_dir_is_a_sized_tmpfs(tmp_path: Path) -> None:
    directory = tmp_path / "mem"
    tmpfs.mount(directory, size=1 << 20)
    try:
        with open("/proc/self/mountinfo") as mountinfo:
            line = next(x for x in mountinfo if f" {directory} " in x)
        assert tmpfs.MOUNT_SOURCE in line and "size=1024k" in line
    finally:
        tmpfs.unmount(directory)
    assert not directory.exists()


def test_memory_empty_dir_size_is_the_smallest_bound(tmp_path: Path) -> None:
    host, _ = _host()
    def size(source: dict[str, Any], pod: dict[str, Any]) -> int | None:
        volume = emptydir.EmptyDirVolume({"name": "m", "emptyDir": source}, tmp_path, host)
        return volume.memory_size(pod)
    medium = {"medium": "Memory"}
    assert size(medium, POD) == 4 << 30  # "side" has no limit: the node's allocatable
    limited = {"spec": {"containers": [{"name": "a", "resources": {"limits": {
        "memory": "64Mi"}}}]}}
    assert size(medium, limited) == 64 << 20
    assert size({**medium, "sizeLimit": "8Mi"}, limited) == 8 << 20
    assert size({**medium, "sizeLimit": "1Gi"}, limited) == 64 << 20


def test_downward_api_fields_and_maps_format_as_upstream() -> None:
    assert downwardapi.field_value(POD, "metadata.name") == "web"
    assert downwardapi.field_value(POD, "metadata.labels") == 'app="web"\ntier="front"'
    assert downwardapi.field_value(POD, "metadata.annotations") == 'note="say \\"hi\\"\\n"'
    assert downwardapi.field_value(POD, "metadata.labels['tier']") == "front"
    assert downwardapi.field_value(POD, "metadata.labels['none']") == ""
    assert downwardapi.field_value(POD, "status.podIPs", pod_ips=["10.42.0.5", "fd00::5"]) \
        == "10.42.0.5,fd00::5"
    assert downwardapi.field_value(POD, "spec.serviceAccountName") == "builder"
    with pytest.raises(downwardapi.FieldError):
        downwardapi.field_value(POD, "spec.nothing")


@pytest.mark.parametrize(("container", "resource", "divisor", "expected"), [
    ("main", "limits.memory", None, str(64 * 1024 * 1024)),
    ("main", "limits.memory", "1Mi", "64"),
    ("main", "requests.memory", "1M", "34"),  # 33.55 MB, rounded up
    ("main", "limits.cpu", None, "1"),  # 0.25 cores rounded up
    ("main", "limits.cpu", "1m", "250"),
    ("side", "limits.cpu", None, "2"),  # no limit: the node's allocatable
    ("side", "limits.memory", "1Gi", "4"),
    ("side", "requests.cpu", None, "0"),
])
def test_resource_fields_in_divisor_units(container: str, resource: str, divisor: str | None,
                                          expected: str) -> None:
    assert downwardapi.resource_value(POD, container, resource, divisor,
                                      allocatable=ALLOCATABLE) == expected


def test_downward_api_volume_items(tmp_path: Path) -> None:
    host, _ = _host()
    items = [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
             {"path": "mem", "resourceFieldRef": {"containerName": "main",
                                                  "resource": "limits.memory",
                                                  "divisor": "1Mi"}, "mode": 0o444}]
    payload = downwardapi.items_payload(items, POD, host, default_mode=0o644)
    assert payload["labels"].data == b'app="web"\ntier="front"' and payload["labels"].mode == 0o644
    assert payload["mem"].data == b"64" and payload["mem"].mode == 0o444


def test_projected_token_is_bound_to_the_pod_and_renewed_at_80_percent(tmp_path: Path) -> None:
    now = [0.0]
    host, client = _host(now)
    volume = projected.ProjectedVolume({"name": "kube-api-access-x", "projected": {
        "defaultMode": 0o644, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3600, "path": "token"}},
            {"configMap": {"name": "cfg", "items": [{"key": "a.conf", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
        tmp_path, host)
    expires = 1893459600.0  # 2030-01-01T01:00:00Z
    now[0] = expires - 3600
    try:
        _run(volume.set_up(POD))
        directory = volume.host_path
        assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("..")) == [
            "ca.crt", "namespace", "token"]
        assert (directory / "token").read_text() == "token-1"
        assert (directory / "namespace").read_text() == "shop"
        request = client.accounts.requests[0]
        assert request["namespace"] == "shop" and request["name"] == "builder"
        assert request["subresource"] == "token"
        assert request["body"]["spec"]["boundObjectRef"] == {
            "apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u-1"}
        now[0] += 0.79 * 3600
        _run(volume.set_up(POD))
        assert len(client.accounts.requests) == 1
        now[0] += 0.02 * 3600
        _run(volume.set_up(POD))
        assert len(client.accounts.requests) == 2
        assert (directory / "token").read_text() == "token-2"
    finally:
        _run(volume.tear_down())


def test_host_path_types(tmp_path: Path) -> None:
    made = tmp_path / "made" / "deep"
    hostpath.check_type(str(made), "DirectoryOrCreate")
    assert made.is_dir()
    hostpath.check_type(str(tmp_path / "f"), "FileOrCreate")
    assert (tmp_path / "f").is_file() and (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    with pytest.raises(plugin.VolumeError,
                       match=rf"^hostPath type check failed: {tmp_path}/f is not a directory$"):
        hostpath.check_type(str(tmp_path / "f"), "Directory")
    with pytest.raises(plugin.VolumeError, match=r"is not a file$"):
        hostpath.check_type(str(made), "File")
    with pytest.raises(plugin.VolumeError, match=r"is not a socket file$"):
        hostpath.check_type(str(tmp_path / "missing"), "Socket")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "s.sock"))
    try:
        hostpath.check_type(str(tmp_path / "s.sock"), "Socket")
    finally:
        sock.close()
    with pytest.raises(plugin.VolumeError, match=r"^Weird is an invalid volume type$"):
        hostpath.check_type(str(made), "Weird")
    hostpath.check_type(str(tmp_path / "untyped"), "")
    assert (tmp_path / "untyped").is_dir()


def test_references_cover_volumes_projections_and_env() -> None:
    pod = {"metadata": {"namespace": "ns"}, "spec": {
        "volumes": [{"name": "a", "configMap": {"name": "c1"}},
                    {"name": "b", "secret": {"secretName": "s1"}},
                    {"name": "p", "projected": {"sources": [{"configMap": {"name": "c2"}},
                                                            {"secret": {"name": "s2"}}]}}],
        "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s3"}}]}],
        "containers": [{"name": "m", "env": [
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c3", "key": "k"}}}],
            "envFrom": [{"configMapRef": {"name": "c4"}}]}]}}
    got = {(r.kind, r.name) for r in referenced(pod)}
    assert got == {("configmap", "c1"), ("configmap", "c2"), ("configmap", "c3"),
                   ("configmap", "c4"), ("secret", "s1"), ("secret", "s2"), ("secret", "s3")}


def test_pod_volumes_report_failed_mounts_and_become_ready(tmp_path: Path) -> None:
    async def main() -> None:
        objects = FakeObjects({})
        manager = VolumeManager(FakeClient(), allocatable=ALLOCATABLE,  # type: ignore[arg-type]
                                objects=objects)
        woken: list[int] = []
        volumes = manager.for_pod("u-1", tmp_path, wake=lambda: woken.append(1))
        pod = {**POD, "spec": {**POD["spec"], "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "app"}},
            {"name": "odd", "gitRepo": {"repository": "x"}}]}}
        failures = await volumes.set_up(pod)
        assert not volumes.ready
        assert 'MountVolume.SetUp failed for volume "config" : configmap "app" not found' \
            in failures
        assert any("no volume plugin matched" in f for f in failures)
        assert set(volumes.mounted()) == {"scratch"}
        assert os.stat(volumes.mounted()["scratch"].host_path).st_mode & 0o777 == 0o777
        objects.objects[("configmap", "app")] = CONFIG
        pod["spec"]["volumes"] = pod["spec"]["volumes"][:2]
        assert await volumes.set_up(pod) == []
        assert volumes.ready and volumes.mounted()["config"].read_only
        await volumes.tear_down()
        assert not (tmp_path / "volumes" / "kubernetes.io~configmap" / "config").exists()

    _run(main())


def test_fs_group_owns_file_and_empty_dir_volumes(tmp_path: Path) -> None:
    host, _ = _host()
    pod = {**POD, "spec": {**POD["spec"], "securityContext": {"fsGroup": 2000}}}
    config = configmap.ConfigMapVolume(
        {"name": "c", "configMap": {"name": "cfg", "defaultMode": 0o400}}, tmp_path, host)
    scratch = emptydir.EmptyDirVolume({"name": "e", "emptyDir": {}}, tmp_path, host)
    _run(config.set_up(pod))
    _run(scratch.set_up(pod))
    info = (config.host_path / "a.conf").stat()
    assert (info.st_gid, info.st_mode & 0o7777) == (2000, 0o440)
    data_dir = (config.host_path / "..data").resolve().stat()
    assert data_dir.st_gid == 2000 and data_dir.st_mode & 0o2000
    info = scratch.host_path.stat()
    assert (info.st_gid, info.st_mode & 0o7777) == (2000, 0o2777)


def test_disk_empty_dir_over_its_size_limit_is_reported(tmp_path: Path) -> None:
    host, _ = _host()
    volume = emptydir.EmptyDirVolume({"name": "cache", "emptyDir": {"sizeLimit": "1Mi"}},
                                     tmp_path, host)
    _run(volume.set_up(POD))
    (volume.host_path / "small").write_bytes(b"x" * 4096)
    assert volume.exceeded() == ""
    (volume.host_path / "big").write_bytes(os.urandom(2 << 20))
    assert emptydir.disk_usage(volume.host_path) >= 2 << 20
    assert volume.exceeded() == 'Usage of EmptyDir volume "cache" exceeds the limit "1Mi". '


def test_an_evicted_pod_says_why_in_its_status() -> None:
    from kubling.node import podstatus

    status = podstatus.pod_status(
        {"metadata": {}, "spec": {}, "status": {}}, sandbox_ready=True, pod_ips=(),
        host_ip="192.0.2.1", init=[], main=[], terminal_phase="Failed", reason="Evicted",
        message="Usage of EmptyDir volume ...")
    assert (status["phase"], status["reason"]) == ("Failed", "Evicted")
    disruption = [c for c in status["conditions"] if c["type"] == "DisruptionTarget"]
    assert disruption and disruption[0]["reason"] == "TerminationByKubelet"
