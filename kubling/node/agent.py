"""The node agent (kubling's kubelet) for the machine it runs on.

``NodeAgent.run`` registers the Node, writes the default CNI configuration when the conf dir
has none, watches the pods bound to this node (a field-selected informer) and runs one
``PodWorker`` per pod uid. Before the first worker starts it reconciles what a previous run
left: containers of pods still bound here are adopted as they are (a restart of the agent
restarts no container), everything of pods that are gone (containers, mounts, pod dirs, CNI
attachments and their namespaces) is removed.

The agent talks to the cluster only through the API client, so the same code serves the
server's own node and, later, ``kubling agent`` on another machine.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
from pathlib import Path

from kubling.api.meta import Object
from kubling.client import events, informer, rest
from kubling.network import cni as cnilib
from kubling.node import containers, kubeletserver, logrotate, logs, nodestatus, pressure
from kubling.node.backoff import Backoff
from kubling.node.imagepull import ImageManager
from kubling.node.images.service import images_in_use
from kubling.node.images.store import ImageStore
from kubling.node.podworker import PodWorker, WorkerContext
from kubling.node.runtime import ContainerRuntimeError, Runtime
from kubling.node.sandbox import SandboxManager
from kubling.node.volumes import VolumeManager

log = logging.getLogger("kubling.node.agent")

PODS = rest.lookup("v1", "pods")
SERVICES = rest.lookup("v1", "services")
#: How long the answer to "is there a cluster DNS service?" is reused.
DNS_LOOKUP_TTL = 30.0
#: The kubelet's ImageGCPeriod.
IMAGE_GC_PERIOD_SECONDS = 300.0
#: How long a stopping agent waits for pods being removed to be removed.
TERMINATION_GRACE_ON_EXIT = 5.0


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    data_dir: Path
    node_ip: str
    cluster_cidr: str = "10.42.0.0/16"
    cni_conf_dir: Path = Path("/etc/cni/net.d")
    cni_bin_dirs: tuple[Path, ...] = cnilib.DEFAULT_BIN_DIRS
    control_plane: bool = True
    #: The HTTPS port of the agent's server (logs, later exec/port-forward): the Node's
    #: ``daemonEndpoints.kubeletEndpoint.Port``, where the API server reaches it.
    kubelet_port: int = nodestatus.KUBELET_PORT
    #: Its certificates; None serves nothing (the API server cannot reach this node).
    kubelet_tls: kubeletserver.KubeletTLS | None = None
    #: The Node's name ('' = this host's name) and pod network ('' = the first /24 of
    #: ``cluster_cidr``, the server's own node); a joined agent gets both when it joins.
    node_name: str = ""
    pod_cidr: str = ""
    #: The kubelet's containerLogMaxSize / containerLogMaxFiles and ``--eviction-hard``.
    log_rotate: logrotate.LogRotatePolicy = logrotate.DEFAULT_POLICY
    eviction_hard: tuple[pressure.Threshold, ...] = pressure.DEFAULT_THRESHOLDS


class NodeAgent:
    """Runs until cancelled; cancelling leaves every container running."""

    def __init__(self, client: rest.Client, config: AgentConfig, store: ImageStore) -> None:
        self.client = client
        self.config = config
        self.store = store
        self.runtime = Runtime(config.data_dir / "runtime")
        self.cni = cnilib.CNI(config.cni_conf_dir, config.cni_bin_dirs,
                              cache_dir=config.data_dir / "cni" / "cache")
        self._workers: dict[str, PodWorker] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._ctx: WorkerContext | None = None
        self._adopted: dict[str, list[containers.ContainerId]] = {}
        self._dns: tuple[float, str | None] = (0.0, None)

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the node agent stopped")
            raise

    async def _run(self) -> None:
        facts = await asyncio.to_thread(
            nodestatus.gather, data_dir=self.config.data_dir,
            cluster_cidr=self.config.cluster_cidr, internal_ip=self.config.node_ip,
            runtime_version=await _runc_version(), control_plane=self.config.control_plane,
            kubelet_port=self.config.kubelet_port, name=self.config.node_name,
            pod_cidr=self.config.pod_cidr, eviction_hard=self.config.eviction_hard)
        monitor = pressure.PressureMonitor(
            self.config.eviction_hard, observe=functools.partial(
                pressure.observe, data_dir=self.config.data_dir, image_dir=self.store.root))
        await asyncio.to_thread(monitor.synchronize)
        recorder = events.EventRecorder(self.client, "kubelet", facts.name)
        reporter = nodestatus.NodeReporter(self.client, facts, self.store,
                                           pressure=lambda: monitor.conditions,
                                           recorder=recorder)
        monitor.on_change = reporter.poke
        await reporter.register()
        await asyncio.to_thread(cnilib.ensure_default_config, self.config.cni_conf_dir,
                                facts.pod_cidr, data_dir=self.config.data_dir)
        volumes = VolumeManager(self.client,
                                allocatable=nodestatus.node_status(facts)["allocatable"])
        self._ctx = WorkerContext(
            pods=self.client.resource(PODS), runtime=self.runtime,
            sandboxes=SandboxManager(data_dir=self.config.data_dir, cni=self.cni,
                                     node_ip=self.config.node_ip),
            images=ImageManager(store=self.store, client=self.client,
                                data_dir=self.config.data_dir, recorder=recorder,
                                on_pulled=reporter.poke),
            store=self.store, recorder=recorder, node_name=facts.name,
            node_ip=self.config.node_ip, data_dir=self.config.data_dir,
            crash_backoff=Backoff(), volumes=volumes, cluster_dns=self._cluster_dns)
        pods = informer.Informer(self.client, PODS,
                                 field_selector=f"spec.nodeName={facts.name}")
        pods.start()
        server = await self._serve()
        try:
            await pods.wait_for_sync()
            await self._reconcile_leftovers({p["metadata"]["uid"] for p in pods.indexer.list()})
            pods.add_event_handler(on_add=self._on_pod, on_update=lambda _o, n: self._on_pod(n),
                                   on_delete=self._on_delete)
            log.info("node agent ready: node %s, pod CIDR %s", facts.name, facts.pod_cidr)
            loops = [asyncio.create_task(self._image_gc(reporter), name="image-gc"),
                     asyncio.create_task(monitor.run(), name="node-pressure"),
                     asyncio.create_task(logrotate.ContainerLogManager(
                         data_dir=self.config.data_dir, bundles=self.runtime.bundles,
                         exits=self.runtime.exits, policy=self.config.log_rotate).run(),
                         name="container-log-rotation")]
            try:
                await reporter.run()
            finally:
                for loop in loops:
                    loop.cancel()
        finally:
            await self._let_terminations_finish()
            for task in self._tasks.values():
                task.cancel()
            for task in list(self._tasks.values()):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await pods.stop()
            await volumes.close()
            await recorder.close()
            if server is not None:
                await server.stop()

    async def _let_terminations_finish(self) -> None:
        """On the way out, give workers that are removing a deleted pod a few seconds to
        finish: cancelled half-way they would leave its mounts behind until the next
        start (running pods are left running, as always)."""
        ending = [self._tasks[uid] for uid, worker in self._workers.items()
                  if worker.terminating and uid in self._tasks]
        if ending:
            await asyncio.wait(ending, timeout=TERMINATION_GRACE_ON_EXIT)

    async def _serve(self) -> kubeletserver.KubeletServer | None:
        """Start the HTTPS server; a port in use costs logs, never the pods."""
        if self.config.kubelet_tls is None:
            return None
        server = kubeletserver.KubeletServer(self, self.config.kubelet_tls,
                                             port=self.config.kubelet_port)
        try:
            await server.start()
        except OSError as err:
            log.warning("node agent server disabled: cannot listen on :%d (%s) — kubectl "
                        "logs will not reach this node; free the port or pass "
                        "--kubelet-port", self.config.kubelet_port, err.strerror or err)
            return None
        return server

    # -- what the HTTPS server asks (kubeletserver.KubeletHost) -------------------------

    @property
    def node_name(self) -> str:
        return self._ctx.node_name if self._ctx is not None else ""

    def running_pods(self) -> list[Object]:
        return [worker.last_pod for worker in self._workers.values()]

    def log_target(self, namespace: str, name: str, container: str, *,
                   previous: bool) -> logs.LogTarget:
        for uid, worker in self._workers.items():
            md = worker.last_pod["metadata"]
            if md.get("name") == name and md.get("namespace", "") == namespace:
                return logs.locate(worker.last_pod, worker.container_statuses(), container,
                                   previous=previous,
                                   pod_dir=self.config.data_dir / "pods" / uid)
        raise logs.LogsError(404, f'pod "{name}" does not exist')

    def container_finished(self, container_id: str) -> bool:
        return ((self.runtime.exits / container_id).exists()
                or not (self.runtime.bundles / container_id).is_dir())

    async def _image_gc(self, reporter: nodestatus.NodeReporter) -> None:
        """The kubelet's image garbage collection, every five minutes: above the high
        disk threshold, unused images go, least recently used first."""
        while True:
            await asyncio.sleep(IMAGE_GC_PERIOD_SECONDS)
            try:
                removed = await asyncio.to_thread(
                    self.store.garbage_collect, images_in_use(self.config.data_dir))
            except OSError as err:
                log.warning("image garbage collection failed: %s", err)
                continue
            for image in removed:
                log.info("image garbage collection removed %s (%d bytes)",
                         ", ".join(image.names) or image.id, image.size)
            if removed:
                reporter.poke()

    # -- pods -------------------------------------------------------------------------

    def _on_pod(self, pod: Object) -> None:
        uid = pod["metadata"]["uid"]
        pod.setdefault("kind", "Pod")
        pod.setdefault("apiVersion", "v1")
        worker = self._workers.get(uid)
        if worker is not None:
            worker.update(pod)
        elif uid not in self._finished:
            self._spawn(uid, pod)

    def _on_delete(self, pod: Object) -> None:
        uid = pod["metadata"]["uid"]
        worker = self._workers.get(uid)
        if worker is not None:
            worker.update(None)
        elif uid not in self._finished and (self.config.data_dir / "pods" / uid).exists():
            self._spawn(uid, pod).update(None)

    def _spawn(self, uid: str, pod: Object) -> PodWorker:
        assert self._ctx is not None
        worker = PodWorker(self._ctx, uid, pod, self._adopted.pop(uid, []))
        self._workers[uid] = worker
        task = asyncio.create_task(worker.run(), name=f"pod-worker-{uid}")
        self._tasks[uid] = task
        task.add_done_callback(lambda _t: self._worker_done(uid, worker))
        return worker

    def _worker_done(self, uid: str, worker: PodWorker) -> None:
        if self._workers.get(uid) is worker:
            del self._workers[uid]
            self._tasks.pop(uid, None)
            self._finished[uid] = None
            while len(self._finished) > 10_000:
                self._finished.popitem(last=False)

    async def _cluster_dns(self) -> str | None:
        """The kube-dns Service's address when the cluster has one (ClusterFirst pods then
        resolve through it); None sends them to the node's resolvers."""
        checked, address = self._dns
        if time.monotonic() - checked < DNS_LOOKUP_TTL:
            return address
        try:
            service = await self.client.resource(SERVICES).get("kube-dns",
                                                               namespace="kube-system")
            ip = (service.get("spec") or {}).get("clusterIP")
            address = ip if ip and ip != "None" else None
        except rest.ApiError:
            address = None
        self._dns = (time.monotonic(), address)
        return address

    # -- what a previous run left -----------------------------------------------------

    async def _reconcile_leftovers(self, bound: set[str]) -> None:
        """Adopt the containers of pods still bound here; remove every trace of others."""
        assert self._ctx is not None
        try:
            states = await self.runtime.list()
        except ContainerRuntimeError as err:
            log.warning("cannot list containers: %s", err)
            states = []
        stale: set[str] = set()
        for state in states:
            cid = containers.ContainerId.parse(state.id)
            if cid is not None and cid.uid in bound:
                self._adopted.setdefault(cid.uid, []).append(cid)
                continue
            with contextlib.suppress(ContainerRuntimeError):
                await self.runtime.stop(state.id, 0)
            await self.runtime.delete(state.id)
            if cid is not None:
                stale.add(cid.uid)
        stale |= {uid for uid in self._ctx.sandboxes.known_pod_dirs() if uid not in bound}
        stale |= {p.stem for p in _cached_attachments(self.cni.cache_dir)
                  if p.stem not in bound}
        for uid in sorted(stale):
            try:
                await self._ctx.sandboxes.remove(uid)
                log.info("removed what was left of pod %s", uid)
            except Exception as err:  # keep going: one stuck mount must not block the node
                log.warning("cannot clean up pod %s: %s", uid, err)


def _cached_attachments(cache_dir: Path) -> list[Path]:
    try:
        return [p for p in cache_dir.iterdir() if p.suffix == ".json"]
    except FileNotFoundError:
        return []


async def _runc_version() -> str:
    """``runc://<version>``, what containerRuntimeVersion shows."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "runc", "--version", stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL)
        out, _ = await proc.communicate()
    except OSError:
        return "runc://unknown"
    first = out.decode(errors="replace").splitlines()[:1]
    version = first[0].split()[-1] if first and first[0].split() else "unknown"
    return f"runc://{version}"
