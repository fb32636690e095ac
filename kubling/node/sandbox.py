"""A pod's sandbox: what its containers share, made before the first of them and removed
after the last.

kubling has no pause container: the sandbox is a named network namespace
(``kubling-<first 12 of the pod uid>``) attached to the pod network by CNI, the pod's IPC
and UTS namespaces pinned at ``/run/kubling/ns/{ipc,uts}/kubling-<pod uid>`` (the UTS one
carrying the pod's hostname, set when it is made; every container joins both, as they join
the pause container's under containerd), plus the pod's directory ``<data-dir>/pods/<uid>/`` holding the files every container bind-mounts
(``etc-hosts``, ``hostname``, ``resolv.conf``), the pod's volumes (``kubling.node.volumes``
sets them up; ``remove`` unmounts whatever is left of them), the containers' root
filesystems and their logs. A ``hostNetwork`` pod has no namespace and no CNI attachment:
it uses the node's address, and the node's UTS namespace (hostname); a ``hostIPC`` pod
has no IPC namespace of its own. A pod with ``shareProcessNamespace`` also gets an init
process (``kubling.node.pause``), whose PID namespace its containers join.

Both halves outlive the agent: a restarted agent finds the namespace by name and the pod's
addresses in the CNI cache (``CNI.cached_result``), so adopting a running pod changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from pathlib import Path

from kubling.api.meta import Object
from kubling.network import cni as cnilib
from kubling.network import netns
from kubling.node.images import rootfs
from kubling.node.runtime import cgroups
from kubling.node.volumes import tmpfs

log = logging.getLogger("kubling.node.sandbox")

CLUSTER_DOMAIN = "cluster.local"
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
#: Where the pods' pinned IPC and UTS namespaces live: ``<NS_DIR>/<kind>/kubling-<uid>``.
NS_DIR = Path("/run/kubling/ns")
#: The namespaces pinned per pod besides the network one.
POD_NAMESPACES = ("ipc", "uts")


class SandboxError(Exception):
    """The sandbox could not be made; the message is what FailedCreatePodSandBox says."""


@dataclasses.dataclass(frozen=True)
class Sandbox:
    """A ready sandbox: where its files are, which namespace to join, its addresses."""

    uid: str
    directory: Path
    netns_path: Path | None  # None: hostNetwork
    pod_ips: tuple[str, ...]
    ipc_path: Path | None = None  # None: hostIPC
    uts_path: Path | None = None  # None: hostNetwork (the node's hostname)
    #: The shared PID namespace (``/proc/<init pid>/ns/pid``) of a pod with
    #: ``shareProcessNamespace``; None: each container has its own (or hostPID).
    pid_ns: str | None = None
    #: The pod's cgroup (``cgroup_parent``: below its QoS class's); see ``cgroup``.
    cgroup_parent: str = ""
    #: The pod's /dev/shm, a tmpfs every container binds (POSIX shared memory lives there,
    #: beside the IPC namespace's System V objects); None: the host's (hostIPC).
    shm_path: Path | None = None

    @property
    def cgroup(self) -> str:
        """The pod's cgroup, BestEffort's when the sandbox was made without a class."""
        return self.cgroup_parent or cgroup_parent(self.uid, "BestEffort")

    @property
    def pod_ip(self) -> str:
        return self.pod_ips[0] if self.pod_ips else ""


def netns_name(uid: str) -> str:
    return f"{netns.PREFIX}{uid[:12]}"


def namespace_path(kind: str, uid: str) -> Path:
    """Where the pod's pinned ``ipc`` or ``uts`` namespace is."""
    return NS_DIR / kind / f"{netns.PREFIX}{uid}"


def pinned_uids() -> set[str]:
    """Pods that have a pinned IPC or UTS namespace on this host (of any agent's)."""
    uids: set[str] = set()
    for kind in POD_NAMESPACES:
        with contextlib.suppress(OSError):
            uids |= {p.name.removeprefix(netns.PREFIX) for p in (NS_DIR / kind).iterdir()
                     if p.name.startswith(netns.PREFIX)}
    return uids


def remove_all_namespaces() -> list[str]:
    """Unpin every pod IPC and UTS namespace kubling made (``kubling server --cleanup``)."""
    removed = []
    for uid in sorted(pinned_uids()):
        for kind in POD_NAMESPACES:
            target = namespace_path(kind, uid)
            if target.exists():
                netns.unpin(target)
                removed.append(str(target))
    for kind in POD_NAMESPACES:
        netns.release_dir(NS_DIR / kind)
    return removed


#: containerd's default size of a sandbox's /dev/shm (Docker's --shm-size default too).
SHM_SIZE = 64 * 1024 * 1024


def pod_dir(data_dir: Path, uid: str) -> Path:
    return data_dir / "pods" / uid


#: Where the pods of each QoS class live: the kubelet's cgroupfs layout (``kubepods/``,
#: ``kubepods/burstable/``, ``kubepods/besteffort/``) with ``/kubling`` as its root.
QOS_PARENTS = {"Guaranteed": "/kubling", "Burstable": "/kubling/burstable",
               "BestEffort": "/kubling/besteffort"}


def qos_class_of(pod: Object) -> str:
    """The QoS class the API server gave the pod at create (immutable); BestEffort for a
    pod that has none."""
    qos = (pod.get("status") or {}).get("qosClass")
    return qos if qos in QOS_PARENTS else "BestEffort"


def cgroup_parent(uid: str, qos_class: str) -> str:
    """The pod's cgroup, parent of its containers' (cgroupfs style, below /kubling)."""
    return f"{QOS_PARENTS.get(qos_class, QOS_PARENTS['BestEffort'])}/pod{uid}"


class SandboxManager:
    """Makes and removes sandboxes. One instance per agent; the CNI object serialises the
    operations on one pod, and a pod worker never runs two operations on its pod at once."""

    def __init__(self, *, data_dir: Path, cni: cnilib.CNI, node_ip: str) -> None:
        self.data_dir = data_dir
        self.cni = cni
        self.node_ip = node_ip

    async def ensure(self, pod: Object, *, cluster_dns: str | None) -> Sandbox:
        """The pod's sandbox, made now or found again (agent restart). Raises SandboxError;
        a failed attempt leaves nothing behind."""
        md, spec = pod["metadata"], pod.get("spec") or {}
        uid = md["uid"]
        directory = pod_dir(self.data_dir, uid)
        ipc_path, uts_path = await asyncio.to_thread(_pod_namespaces, pod, directory)
        shm_path = None if spec.get("hostIPC") else directory / "shm"
        if shm_path is not None:
            try:
                await asyncio.to_thread(tmpfs.mount, shm_path, size=SHM_SIZE, mode=0o1777)
            except OSError as err:
                _unpin_pod_namespaces(uid)
                raise SandboxError(f"cannot mount the pod's /dev/shm: {err}") from err
        try:
            if spec.get("hostNetwork"):
                ips: tuple[str, ...] = (self.node_ip,)
                target: Path | None = None
            else:
                target, ips = await self._network(pod)
        except SandboxError:
            _unpin_pod_namespaces(uid)
            raise
        try:
            await asyncio.to_thread(_write_files, directory, pod, ips[0] if ips else "",
                                    cluster_dns)
        except OSError as err:
            raise SandboxError(f"cannot write the pod's files in {directory}: {err}") from err
        return Sandbox(uid, directory, target, ips, ipc_path=ipc_path, uts_path=uts_path,
                       cgroup_parent=cgroup_parent(uid, qos_class_of(pod)), shm_path=shm_path)

    async def _network(self, pod: Object) -> tuple[Path, tuple[str, ...]]:
        md = pod["metadata"]
        uid, name = md["uid"], netns_name(md["uid"])
        cached = await self.cni.cached_result(uid)
        if cached is not None and netns.exists(name):
            return netns.path(name), tuple(cached.pod_ips)
        if cached is not None:  # namespace lost (reboot): release the old attachment first
            with contextlib.suppress(cnilib.CNIError):
                await self.cni.delete(uid)
        if netns.exists(name):
            netns.delete(name)
        try:
            target = await asyncio.to_thread(netns.create, name)
        except OSError as err:
            raise SandboxError(f"cannot create network namespace {name}: {err}") from err
        try:
            result = await self.cni.add(uid, target, pod_namespace=md.get("namespace", ""),
                                        pod_name=md["name"], pod_uid=uid)
        except (cnilib.CNIError, OSError) as err:
            netns.delete(name)
            raise SandboxError(f"failed to set up sandbox network: {err}") from err
        if not result.pod_ips:
            await self.cni.delete(uid, target)
            netns.delete(name)
            raise SandboxError("the network plugin gave the pod no address")
        return target, tuple(result.pod_ips)

    async def remove(self, uid: str) -> None:
        """Undo everything `ensure` and the containers left: CNI DEL, the namespace, every
        mount below the pod dir, the pod dir, the pod cgroup. Idempotent; containers must be
        deleted first."""
        name = netns_name(uid)
        target = netns.path(name)
        try:
            await self.cni.delete(uid, target if netns.exists(name) else None)
        except (cnilib.CNIError, OSError) as err:
            log.warning("pod %s: CNI DEL failed: %s", uid, err)
        netns.delete(name)
        _unpin_pod_namespaces(uid)
        directory = pod_dir(self.data_dir, uid)
        if directory.exists():
            await asyncio.to_thread(rootfs.unmount_rootfs, directory)
        for qos_class in QOS_PARENTS:  # after a restart the pod object may be gone
            with contextlib.suppress(OSError):
                cgroups.remove_cgroup(cgroup_parent(uid, qos_class))

    def known_pod_dirs(self) -> list[str]:
        """UIDs that have a pod directory here (for garbage collection after a restart)."""
        try:
            return [p.name for p in (self.data_dir / "pods").iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []


def _pod_namespaces(pod: Object, directory: Path) -> tuple[Path | None, Path | None]:
    """The pod's IPC and UTS namespaces, pinned now or found again (agent restart); None
    for the host's (hostIPC; hostNetwork, as upstream gives such a pod the node's UTS
    namespace). Raises SandboxError, leaving neither behind.

    The pod directory is made first: it is what a restarted agent's leftover reconciliation
    finds a gone pod by (``known_pod_dirs``), so namespaces never outlive it unnoticed."""
    spec, uid = pod.get("spec") or {}, pod["metadata"]["uid"]
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SandboxError(f"cannot make the pod's directory {directory}: {err}") from err
    hostname = hostname_of(pod)
    wanted = {"ipc": not spec.get("hostIPC"), "uts": not spec.get("hostNetwork")}
    paths: dict[str, Path | None] = {}
    for kind in POD_NAMESPACES:
        target = namespace_path(kind, uid)
        if not wanted[kind]:
            paths[kind] = None
            continue
        paths[kind] = target
        if netns.is_ns_path(target):
            continue
        try:
            netns.pin_new(target, kind, inside=(lambda: socket.sethostname(hostname))
                          if kind == "uts" else None)
        except OSError as err:
            _unpin_pod_namespaces(uid)
            raise SandboxError(f"cannot create the pod's {kind} namespace: {err}") from err
    return paths["ipc"], paths["uts"]


def _unpin_pod_namespaces(uid: str) -> None:
    for kind in POD_NAMESPACES:
        netns.unpin(namespace_path(kind, uid))
        netns.release_dir(NS_DIR / kind)  # the last pod gone: no kubling mount left


def _write_files(directory: Path, pod: Object, pod_ip: str, cluster_dns: str | None) -> None:
    md, spec = pod["metadata"], pod.get("spec") or {}
    directory.mkdir(parents=True, exist_ok=True)
    hostname = hostname_of(pod)
    (directory / "hostname").write_text(hostname + "\n")
    (directory / "etc-hosts").write_text(etc_hosts(pod, pod_ip))
    (directory / "resolv.conf").write_text(
        resolv_conf(spec, md.get("namespace") or "default", cluster_dns))


def hostname_of(pod: Object) -> str:
    """spec.hostname, else the pod's name (cut to 63 characters, as the kubelet does)."""
    spec = pod.get("spec") or {}
    return str(spec.get("hostname") or pod["metadata"]["name"])[:63]


def etc_hosts(pod: Object, pod_ip: str) -> str:
    """The kubelet's managed /etc/hosts: localhost lines, the pod's own name, hostAliases."""
    spec = pod.get("spec") or {}
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
             "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    if spec.get("hostNetwork"):
        with contextlib.suppress(OSError):
            return Path("/etc/hosts").read_text()
    if pod_ip:
        name = hostname_of(pod)
        subdomain = spec.get("subdomain")
        if subdomain:
            namespace = pod["metadata"].get("namespace") or "default"
            fqdn = f"{name}.{subdomain}.{namespace}.svc.{CLUSTER_DOMAIN}"
            lines.append(f"{pod_ip}\t{fqdn}\t{name}")
        else:
            lines.append(f"{pod_ip}\t{name}")
    for alias in spec.get("hostAliases") or []:
        names = "\t".join(alias.get("hostnames") or [])
        if alias.get("ip") and names:
            lines.append(f"# Entries added by HostAliases.\n{alias['ip']}\t{names}")
    return "\n".join(lines) + "\n"


def resolv_conf(spec: Object, namespace: str, cluster_dns: str | None) -> str:
    """ClusterFirst (the default) points at the cluster DNS service when there is one;
    Default, hostNetwork pods and clusters without DNS get the node's own resolv.conf;
    None uses only spec.dnsConfig."""
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(spec.get("hostNetwork"))
    cluster_first = policy == "ClusterFirstWithHostNet" or (
        policy == "ClusterFirst" and not host_network)
    nameservers: list[str]
    searches: list[str]
    options: list[str]
    if policy == "None":
        nameservers, searches, options = [], [], []
    elif cluster_first and cluster_dns:
        nameservers = [cluster_dns]
        searches = [f"{namespace}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        options = ["ndots:5"]
    else:
        nameservers, searches, options = _host_resolv()
    config = spec.get("dnsConfig") or {}
    nameservers += [n for n in config.get("nameservers") or [] if n not in nameservers]
    searches += [s for s in config.get("searches") or [] if s not in searches]
    for option in config.get("options") or []:
        text = option.get("name", "") + (f":{option['value']}" if option.get("value") else "")
        options = [o for o in options if o.split(":")[0] != option.get("name")] + [text]
    lines = [f"nameserver {n}" for n in nameservers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:32]))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def _host_resolv() -> tuple[list[str], list[str], list[str]]:
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    with contextlib.suppress(OSError):
        for line in HOST_RESOLV_CONF.read_text().splitlines():
            fields = line.split()
            if not fields or fields[0].startswith(("#", ";")):
                continue
            if fields[0] == "nameserver" and len(fields) > 1:
                nameservers.append(fields[1])
            elif fields[0] in ("search", "domain"):
                searches = fields[1:]
            elif fields[0] == "options":
                options += fields[1:]
    return nameservers, searches, options

