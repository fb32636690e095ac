"""Simulated nodes (like kwok): Nodes that exist only in the API, for tests and scale.

Each simulated node registers a Node object with its capacity, renews its Lease in
``kube-node-lease`` every 10 s, and moves the pods bound to it through their lifecycle
without running anything: Pending → Running and Ready (with a pod IP from the node's
pod CIDR); pods of Jobs (restartPolicy OnFailure/Never) succeed after ``job_duration``;
a pod being deleted is confirmed gone once its grace period has passed (capped by
``max_grace``), as a kubelet would. Everything goes through ``kubling.client``, so the
same code drives any cluster (``kubling simulate``) or the server's own
(``kubling server --simulated-nodes N``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import platform
from typing import Any

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import informer, rest

log = logging.getLogger("kubling.node.simulated")

LEASE_RENEW_SECONDS = 10.0
KUBLING_SIMULATED = "kubling.io/simulated"


@dataclasses.dataclass(frozen=True)
class SimulatedNodeConfig:
    prefix: str = "kubling-sim"
    count: int = 1
    cpu: str = "4"
    memory: str = "8Gi"
    pods: int = 110
    ephemeral_storage: str = "100Gi"
    pod_cidr: str = "10.42.0.0/16"
    first_subnet: int = 128  # simulated nodes take /24s from the upper half of the CIDR
    job_duration: float = 1.0
    max_grace: float = 2.0


def node_names(cfg: SimulatedNodeConfig) -> list[str]:
    return [f"{cfg.prefix}-{i}" for i in range(cfg.count)]


def _subnet(cfg: SimulatedNodeConfig, index: int) -> ipaddress.IPv4Network:
    """The index-th /24 of the pod CIDR, starting at ``first_subnet`` (wrapping around)."""
    network = ipaddress.IPv4Network(cfg.pod_cidr, strict=False)
    if network.prefixlen >= 24:
        return network
    count = 2 ** (24 - network.prefixlen)
    offset = ((cfg.first_subnet + index) % count) * 256
    return ipaddress.IPv4Network((int(network.network_address) + offset, 24))


def node_object(cfg: SimulatedNodeConfig, index: int) -> Object:
    name = f"{cfg.prefix}-{index}"
    capacity = {"cpu": cfg.cpu, "memory": cfg.memory, "pods": str(cfg.pods),
                "ephemeral-storage": cfg.ephemeral_storage}
    cidr = str(_subnet(cfg, index))
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "type": "kubling-simulated",
            KUBLING_SIMULATED: "true"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"capacity": capacity, "allocatable": dict(capacity),
                   "conditions": _conditions(), "addresses": [
                       {"type": "InternalIP", "address": str(_subnet(cfg, index)[1])},
                       {"type": "Hostname", "address": name}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
                   "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                                "osImage": "kubling simulated node",
                                "kernelVersion": platform.release(),
                                "containerRuntimeVersion": "simulated://0",
                                "kubeletVersion": "v1.32.0", "kubeProxyVersion": "v1.32.0",
                                "machineID": "", "systemUUID": "", "bootID": ""}},
    }


def _conditions() -> list[Object]:
    now = meta.now()
    healthy = [("MemoryPressure", "False", "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available"),
               ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
               ("PIDPressure", "False", "KubeletHasSufficientPID",
                "kubelet has sufficient PID available"),
               ("Ready", "True", "KubeletReady", "kubelet is posting ready status")]
    return [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now,
             "lastTransitionTime": now} for t, s, r, m in healthy]


class SimulatedNodes:
    """Run ``cfg.count`` simulated nodes until cancelled."""

    def __init__(self, client: rest.Client, cfg: SimulatedNodeConfig) -> None:
        self.client = client
        self.cfg = cfg
        self.nodes = client.resource(rest.lookup("v1", "nodes"))
        self.pods = client.resource(rest.lookup("v1", "pods"))
        self.leases = client.resource(rest.lookup("coordination.k8s.io/v1", "leases"))
        self._names = set(node_names(cfg))
        self._ips: dict[str, int] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()
        self._stopping: set[str] = set()
        #: Each node's pod subnet and host address, computed once (not per pod).
        self._subnets = {f"{cfg.prefix}-{i}": _subnet(cfg, i) for i in range(cfg.count)}
        self._host_ips = {name: str(net[1]) for name, net in self._subnets.items()}
        self._informer: informer.Informer | None = None
        #: Each node's Lease as its last renewal stored it.
        self._leases: dict[str, Object] = {}

    async def run(self) -> None:
        await self._register()
        pods = informer.Informer(self.client, rest.lookup("v1", "pods"))
        pods.add_event_handler(on_add=self._enqueue, on_update=lambda _o, n: self._enqueue(n),
                               on_delete=lambda _o: None)
        self._informer = pods
        pods.start()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._heartbeat())
                for _ in range(4):
                    group.create_task(self._worker())
        finally:
            await pods.stop()

    def _enqueue(self, pod: Object) -> None:
        if (pod.get("spec") or {}).get("nodeName") not in self._names:
            return
        key = f"{meta.namespace_of(pod)}/{meta.name_of(pod)}"
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    async def _register(self) -> None:
        for index in range(self.cfg.count):
            node = node_object(self.cfg, index)
            try:
                created = await self.nodes.create(node)
            except rest.ApiError as err:
                if not rest.is_already_exists(err):
                    raise
                created = await self.nodes.get(meta.name_of(node))
            created["status"] = node["status"]
            await self.nodes.update_status(created)

    async def _heartbeat(self) -> None:
        while True:
            for name in sorted(self._names):
                with contextlib.suppress(*rest.TRANSPORT_ERRORS, rest.ApiError):
                    await self._renew(name)
            await asyncio.sleep(LEASE_RENEW_SECONDS)

    async def _renew(self, name: str) -> None:
        """Renew the node's Lease from the copy the last renewal returned, as the kubelet
        does (one PUT per renewal); read it first only when there is no such copy or the
        PUT lost to another writer."""
        now = meta.now_micro()
        lease = self._leases.pop(name, None)
        if lease is not None:
            lease["spec"]["renewTime"] = now
            try:
                self._leases[name] = await self.leases.update(lease, namespace="kube-node-lease")
                return
            except rest.ApiError as err:
                if not (rest.is_conflict(err) or rest.is_not_found(err)):
                    raise
        try:
            lease = await self.leases.get(name, namespace="kube-node-lease")
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
            self._leases[name] = await self.leases.create({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                         "renewTime": now}}, namespace="kube-node-lease")
            return
        lease["spec"]["renewTime"] = now
        self._leases[name] = await self.leases.update(lease, namespace="kube-node-lease")

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._pending.discard(key)
            try:
                await self._sync(key)
            except rest.ApiError as err:
                if not rest.is_not_found(err) and not rest.is_conflict(err):
                    log.warning("simulated pod %s: %s", key, err)
                    self._later(key, 1.0)
            except rest.TRANSPORT_ERRORS:
                self._later(key, 1.0)

    def _later(self, key: str, delay: float) -> None:
        asyncio.get_running_loop().call_later(delay, self._requeue, key)

    def _requeue(self, key: str) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    async def _sync(self, key: str) -> None:
        assert self._informer is not None
        pod = self._informer.indexer.get(key)
        if pod is None:
            return
        namespace, name = key.split("/", 1)
        md = pod["metadata"]
        if md.get("deletionTimestamp"):
            grace = min(float(md.get("deletionGracePeriodSeconds") or 0), self.cfg.max_grace)
            if grace > 0 and key not in self._stopping:
                self._stopping.add(key)  # "stop the containers", then confirm
                self._later(key, grace)
                return
            self._stopping.discard(key)
            await self.pods.delete(name, namespace=namespace, grace_period_seconds=0,
                                   preconditions={"uid": md["uid"]})
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in (None, "Pending"):
            await self._start(pod)
            if _runs_to_completion(pod):
                self._later(key, self.cfg.job_duration)
        elif phase == "Running" and _runs_to_completion(pod):
            await self._finish(pod)

    def _pod_ip(self, node_name: str) -> str:
        count = self._ips.get(node_name, 1) + 1
        self._ips[node_name] = count
        subnet = self._subnets[node_name]
        return str(subnet[count % (subnet.num_addresses - 2) + 1])

    async def _start(self, pod: Object) -> None:
        now = meta.now()
        spec = pod.get("spec") or {}
        ip = self._pod_ip(spec["nodeName"])
        host_ip = self._host_ips[spec["nodeName"]]
        conditions = [{"type": t, "status": "True", "lastProbeTime": None,
                       "lastTransitionTime": now}
                      for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                                "ContainersReady", "PodScheduled")]
        status: dict[str, Any] = {
            "phase": "Running", "conditions": conditions, "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": now, "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
            "containerStatuses": [_running(c, now) for c in spec.get("containers") or []],
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [_terminated(c, now, 0, "Completed")
                                               for c in spec["initContainers"]]
        await self.pods.patch(meta.name_of(pod), {"status": status},
                              namespace=meta.namespace_of(pod), subresource="status")

    async def _finish(self, pod: Object) -> None:
        now = meta.now()
        spec = pod.get("spec") or {}
        status = {
            "phase": "Succeeded",
            "conditions": [{"type": t, "status": "False" if t in ("Ready", "ContainersReady")
                            else "True", "lastProbeTime": None, "lastTransitionTime": now,
                            **({"reason": "PodCompleted"} if t in ("Ready", "ContainersReady")
                               else {})}
                           for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": [_terminated(c, now, 0, "Completed")
                                  for c in spec.get("containers") or []],
        }
        await self.pods.patch(meta.name_of(pod), {"status": status},
                              namespace=meta.namespace_of(pod), subresource="status")


def _runs_to_completion(pod: Object) -> bool:
    return (pod.get("spec") or {}).get("restartPolicy") in ("Never", "OnFailure")


def _running(container: Object, now: str) -> Object:
    return {"name": container.get("name"), "image": container.get("image"),
            "imageID": "", "containerID": f"simulated://{container.get('name')}",
            "ready": True, "started": True, "restartCount": 0,
            "state": {"running": {"startedAt": now}}}


def _terminated(container: Object, now: str, code: int, reason: str) -> Object:
    return {"name": container.get("name"), "image": container.get("image"),
            "imageID": "", "containerID": f"simulated://{container.get('name')}",
            "ready": False, "started": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason,
                                     "startedAt": now, "finishedAt": now}}}
