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
from collections.abc import Callable
from pathlib import Path
from typing import cast

import kubling
from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import events, rest
from kubling.node import pressure
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
    #: The hard eviction thresholds: what they keep free is not allocatable.
    eviction_hard: tuple[pressure.Threshold, ...] = ()


def gather(*, data_dir: Path, cluster_cidr: str, internal_ip: str,
           runtime_version: str, control_plane: bool = True,
           kubelet_port: int = KUBELET_PORT, name: str = "", pod_cidr: str = "",
           eviction_hard: tuple[pressure.Threshold, ...] = ()) -> NodeFacts:
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
        eviction_hard=eviction_hard,
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


def node_status(facts: NodeFacts, images: list[Image] | None = None, *,
                under_pressure: frozenset[str] = frozenset(),
                previous_conditions: list[Object] | None = None) -> Object:
    capacity = {"cpu": str(facts.cpu), "memory": f"{facts.memory_kib}Ki",
                "ephemeral-storage": f"{facts.ephemeral_storage // 1024}Ki",
                "pods": str(MAX_PODS)}
    version = f"v{kubling.KUBERNETES_VERSION}"
    return {
        "capacity": capacity, "allocatable": allocatable(facts, capacity),
        "images": status_images(images or []),
        "conditions": conditions(under_pressure, previous_conditions),
        "addresses": [{"type": "InternalIP", "address": facts.internal_ip},
                      {"type": "Hostname", "address": facts.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.kubelet_port}},
        "nodeInfo": {"architecture": facts.architecture, "operatingSystem": "linux",
                     "osImage": facts.os_image, "kernelVersion": facts.kernel,
                     "containerRuntimeVersion": facts.runtime_version,
                     "kubeletVersion": version, "kubeProxyVersion": version,
                     "machineID": _machine_id(), "systemUUID": "", "bootID": _boot_id()},
    }


#: condition type → (status, reason, message) without pressure, then with it: the kubelet's
#: MemoryPressureCondition, DiskPressureCondition and PIDPressureCondition setters.
_PRESSURE_CONDITIONS: dict[str, tuple[tuple[str, str, str], tuple[str, str, str]]] = {
    "MemoryPressure": (("False", "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available"),
                       ("True", "KubeletHasInsufficientMemory",
                        "kubelet has insufficient memory available")),
    "DiskPressure": (("False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                     ("True", "KubeletHasDiskPressure", "kubelet has disk pressure")),
    "PIDPressure": (("False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    ("True", "KubeletHasInsufficientPID",
                     "kubelet has insufficient PID available")),
}


#: (condition, status) → the event the kubelet records when a condition turns so.
_STATUS_EVENTS = {
    ("MemoryPressure", "False"): "NodeHasSufficientMemory",
    ("MemoryPressure", "True"): "NodeHasInsufficientMemory",
    ("DiskPressure", "False"): "NodeHasNoDiskPressure",
    ("DiskPressure", "True"): "NodeHasDiskPressure",
    ("PIDPressure", "False"): "NodeHasSufficientPID",
    ("PIDPressure", "True"): "NodeHasInsufficientPID",
    ("Ready", "True"): "NodeReady",
}


def allocatable(facts: NodeFacts, capacity: dict[str, str]) -> dict[str, str]:
    """Capacity less what the hard eviction thresholds keep free, as the kubelet's node
    allocatable reservation does: ``memory.available`` from memory, ``nodefs.available``
    from ephemeral storage (a percentage of the capacity). Kept in Ki when it divides, in
    bytes otherwise, as the Quantity arithmetic upstream prints it."""
    out = dict(capacity)
    for resource, signal, total in (
            ("memory", "memory.available", facts.memory_kib * 1024),
            ("ephemeral-storage", "nodefs.available", facts.ephemeral_storage // 1024 * 1024)):
        reserved = sum(t.value(total) for t in facts.eviction_hard if t.signal == signal)
        if reserved:
            left = max(0, total - int(reserved))
            out[resource] = f"{left // 1024}Ki" if left % 1024 == 0 else str(left)
    return out


def conditions(under_pressure: frozenset[str] = frozenset(),
               previous: list[Object] | None = None) -> list[Object]:
    """The node's conditions: a pressure condition is True while ``under_pressure`` (from
    ``pressure.PressureMonitor``) names it. Every heartbeat is now; a transition time stays
    what ``previous`` says while the status is unchanged, as the kubelet's setters keep it."""
    now = meta.now()
    before = {c.get("type"): c for c in previous or []}
    wanted = [(kind, *_PRESSURE_CONDITIONS[kind][kind in under_pressure])
              for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")]
    wanted.append(("Ready", "True", "KubeletReady", "kubelet is posting ready status"))
    out: list[Object] = []
    for kind, status, reason, message in wanted:
        old = before.get(kind) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        out.append({"type": kind, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": now, "lastTransitionTime": since or now})
    return out


class NodeReporter:
    """Registers the Node, then renews its Lease and reports its status until cancelled."""

    def __init__(self, client: rest.Client, facts: NodeFacts, store: ImageStore, *,
                 pressure: Callable[[], frozenset[str]] = frozenset,
                 recorder: events.EventRecorder | None = None) -> None:
        self.facts = facts
        self.store = store
        self._pressure = pressure
        self._recorder = recorder
        self._conditions: list[Object] = []
        self.nodes = client.resource(NODES)
        self.leases = client.resource(LEASES)
        self._changed = asyncio.Event()

    def poke(self) -> None:
        """Report status soon (an image was pulled, a pressure condition changed): not
        only once a minute."""
        self._changed.set()

    async def _status(self) -> Object:
        status = node_status(self.facts, await asyncio.to_thread(self.store.images),
                             under_pressure=self._pressure(),
                             previous_conditions=self._conditions)
        self._record_transitions(self._conditions, status["conditions"])
        self._conditions = status["conditions"]
        return status

    def _record_transitions(self, before: list[Object], after: list[Object]) -> None:
        """The kubelet's node status events (``NodeHasDiskPressure``, ``NodeReady``, ...),
        one per condition that changed, the first report included, about the Node."""
        if self._recorder is None:
            return
        old = {c.get("type"): c.get("status") for c in before}
        name = self.facts.name
        ref = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "uid": name}}
        for condition in after:
            kind, status = condition["type"], condition["status"]
            reason = _STATUS_EVENTS.get((kind, status))
            if reason is not None and old.get(kind) != status:
                self._recorder.record(ref, "Normal", reason,
                                      f"Node {name} status is now: {reason}")

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
            # The kubelet's setters start from the stored Node: a condition whose status
            # has not changed keeps its lastTransitionTime (and records no event).
            self._conditions = list((created.get("status") or {}).get("conditions") or [])
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

