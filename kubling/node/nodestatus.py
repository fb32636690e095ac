"""The real machine as a Node: what the kubelet registers and keeps reporting.

The Node object is built from facts of this host (hostname, first IPv4 address, CPU count,
/proc/meminfo, free space of the data dir, /etc/os-release, runc's version), so that
``kubectl get nodes -o wide`` and ``describe node`` show what upstream's kubelet would. The
heartbeat is the Lease in ``kube-node-lease`` (every 10 s, which the node lifecycle
controller watches); the Node's status is rewritten every minute, as the kubelet's
``nodeStatusReportFrequency`` does when nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import platform
import socket
from pathlib import Path
from typing import cast

import kubling
from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import rest
from kubling.node.images.store import Image, ImageStore

log = logging.getLogger("kubling.node.status")

LEASE_RENEW_SECONDS = 10.0
LEASE_DURATION_SECONDS = 40
STATUS_REPORT_SECONDS = 60.0
KUBELET_PORT = 10250
MAX_PODS = 110
#: The kubelet's nodeStatusMaxImages: the largest images are listed, up to this many.
MAX_STATUS_IMAGES = 50

NODES = rest.lookup("v1", "nodes")
LEASES = rest.lookup("coordination.k8s.io/v1", "leases")

#: What a write through the API can fail with: an answer or no answer.
_API_FAILURES = cast(tuple[type[Exception], ...], (rest.ApiError, *rest.TRANSPORT_ERRORS))

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
         "s390x": "s390x"}


@dataclasses.dataclass(frozen=True)
class NodeFacts:
    """What this node says about itself; gathered once at start (`gather`)."""

    name: str
    internal_ip: str
    pod_cidr: str
    cpu: int
    memory_kib: int
    ephemeral_storage: int
    kernel: str
    os_image: str
    runtime_version: str
    architecture: str
    control_plane: bool = True
    kubelet_port: int = KUBELET_PORT


def gather(*, data_dir: Path, cluster_cidr: str, internal_ip: str,
           runtime_version: str, control_plane: bool = True,
           kubelet_port: int = KUBELET_PORT, name: str = "", pod_cidr: str = "") -> NodeFacts:
    """Read the host's facts (a few small files; call it off the event loop if you care)."""
    usage = os.statvfs(data_dir)
    return NodeFacts(
        name=name or socket.gethostname().lower(),
        internal_ip=internal_ip,
        pod_cidr=pod_cidr or first_subnet(cluster_cidr),
        cpu=os.cpu_count() or 1,
        memory_kib=_mem_total_kib(),
        ephemeral_storage=usage.f_blocks * usage.f_frsize,
        kernel=platform.release(),
        os_image=_os_image(),
        runtime_version=runtime_version,
        architecture=_ARCH.get(platform.machine(), platform.machine()),
        control_plane=control_plane,
        kubelet_port=kubelet_port,
    )


def first_subnet(cluster_cidr: str) -> str:
    """The server's own node takes the first /24 of the cluster CIDR (simulated nodes take
    theirs from the upper half, so the two never overlap)."""
    network = ipaddress.ip_network(cluster_cidr, strict=False)
    if network.version != 4 or network.prefixlen >= 24:
        return str(network)
    return str(ipaddress.IPv4Network((int(network.network_address), 24)))


def node_object(facts: NodeFacts) -> Object:
    labels = {"kubernetes.io/hostname": facts.name, "kubernetes.io/os": "linux",
              "kubernetes.io/arch": facts.architecture,
              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": facts.architecture}
    if facts.control_plane:
        labels["node-role.kubernetes.io/control-plane"] = "true"
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": facts.name, "labels": labels,
                     "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": facts.pod_cidr, "podCIDRs": [facts.pod_cidr]},
        "status": node_status(facts),
    }


def status_images(images: list[Image]) -> list[Object]:
    """``status.images`` as the kubelet reports it: the largest images first, each with
    its repo digests then its tags, and the size in bytes."""
    listed = sorted(images, key=lambda i: i.size, reverse=True)[:MAX_STATUS_IMAGES]
    return [{"names": [*i.repo_digests, *i.names], "sizeBytes": i.size}
            for i in listed if i.repo_digests or i.names]


def node_status(facts: NodeFacts, images: list[Image] | None = None) -> Object:
    capacity = {"cpu": str(facts.cpu), "memory": f"{facts.memory_kib}Ki",
                "ephemeral-storage": f"{facts.ephemeral_storage // 1024}Ki",
                "pods": str(MAX_PODS)}
    version = f"v{kubling.KUBERNETES_VERSION}"
    return {
        "capacity": capacity, "allocatable": dict(capacity),
        "images": status_images(images or []),
        "conditions": conditions(),
        "addresses": [{"type": "InternalIP", "address": facts.internal_ip},
                      {"type": "Hostname", "address": facts.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.kubelet_port}},
        "nodeInfo": {"architecture": facts.architecture, "operatingSystem": "linux",
                     "osImage": facts.os_image, "kernelVersion": facts.kernel,
                     "containerRuntimeVersion": facts.runtime_version,
                     "kubeletVersion": version, "kubeProxyVersion": version,
                     "machineID": _machine_id(), "systemUUID": "", "bootID": _boot_id()},
    }


def conditions() -> list[Object]:
    now = meta.now()
    healthy = [("MemoryPressure", "False", "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available"),
               ("DiskPressure", "False", "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure"),
               ("PIDPressure", "False", "KubeletHasSufficientPID",
                "kubelet has sufficient PID available"),
               ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
    return [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now,
             "lastTransitionTime": now} for t, s, r, m in healthy]


class NodeReporter:
    """Registers the Node, then renews its Lease and reports its status until cancelled."""

    def __init__(self, client: rest.Client, facts: NodeFacts, store: ImageStore) -> None:
        self.facts = facts
        self.store = store
        self.nodes = client.resource(NODES)
        self.leases = client.resource(LEASES)
        self._changed = asyncio.Event()

    def poke(self) -> None:
        """Report status soon (an image was pulled): not only once a minute."""
        self._changed.set()

    async def _status(self) -> Object:
        return node_status(self.facts, await asyncio.to_thread(self.store.images))

    async def register(self) -> Object:
        """Create the Node (or take over the one a previous start made) with fresh status."""
        node = node_object(self.facts)
        try:
            created = await self.nodes.create(node)
        except rest.ApiError as err:
            if not rest.is_already_exists(err):
                raise
            created = await self.nodes.get(self.facts.name)
            created.setdefault("spec", {}).setdefault("podCIDR", self.facts.pod_cidr)
            created["spec"].setdefault("podCIDRs", [self.facts.pod_cidr])
            created["metadata"].setdefault("labels", {}).update(node["metadata"]["labels"])
            created = await self.nodes.update(created)
        created["status"] = await self._status()
        updated: Object = await self.nodes.update_status(created)
        await self._renew_lease()
        return updated

    async def run(self) -> None:
        """Heartbeat forever: a transient API failure is retried at the next tick."""
        loop = asyncio.get_running_loop()
        last_report = loop.time()
        last_lease = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), LEASE_RENEW_SECONDS)
            if loop.time() - last_lease >= LEASE_RENEW_SECONDS:
                with contextlib.suppress(*_API_FAILURES):
                    await self._renew_lease()
                last_lease = loop.time()
            if self._changed.is_set() or loop.time() - last_report >= STATUS_REPORT_SECONDS:
                self._changed.clear()
                try:
                    await self._report_status()
                    last_report = loop.time()
                except _API_FAILURES as err:
                    log.warning("node status update failed: %s", err)

    async def _report_status(self) -> None:
        status = await self._status()
        await self.nodes.patch(self.facts.name, {"status": status}, subresource="status",
                               type="strategic")

    async def _renew_lease(self) -> None:
        name, namespace = self.facts.name, "kube-node-lease"
        now = meta.now_micro()
        try:
            lease = await self.leases.get(name, namespace=namespace)
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
            await self.leases.create({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"holderIdentity": name,
                         "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                         "renewTime": now}}, namespace=namespace)
            return
        lease["spec"]["renewTime"] = now
        lease["spec"]["holderIdentity"] = name
        await self.leases.update(lease, namespace=namespace)


def _mem_total_kib(path: Path = Path("/proc/meminfo")) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _os_image(path: Path = Path("/etc/os-release")) -> str:
    values: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip('"')
    return values.get("PRETTY_NAME", "Linux")


def _machine_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/etc/machine-id").read_text().strip()
    return ""


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""

