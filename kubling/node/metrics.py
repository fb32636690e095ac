"""Resource usage of the node, its pods and their containers, as the kubelet serves it.

Two documents on the agent's :10250, both read straight from the cgroups the runtime made
(``/kubling[/burstable|/besteffort]/pod<uid>/<container>``, cgroup v1, v2 or the hybrid
of both):

- ``/metrics/resource``: the Prometheus text metrics-server scrapes for ``kubectl top``
  (``node_cpu_usage_seconds_total``, ``node_memory_working_set_bytes``, the same per pod and
  per container, ``container_start_time_seconds``, ``resource_scrape_error``), with the
  kubelet's names, help texts and millisecond timestamps;
- ``/stats/summary``: the kubelet's Summary API (node, pods, containers: cpu with
  ``usageNanoCores`` as the rate since the previous reading, memory, start times).

The working set is what the kubelet and cAdvisor call it: memory usage minus the inactive
file cache (what the kernel could reclaim at once), the figure the kubelet's eviction
thresholds use too.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from kubling.api.meta import Object
from kubling.node.runtime import cgroups
from kubling.node.sandbox import cgroup_parent, qos_class_of

__all__ = ["Sampler", "Usage", "cgroup_usage", "node_usage", "resource_metrics"]


@dataclasses.dataclass(frozen=True)
class Usage:
    """One reading: cumulative CPU time and memory, None where the kernel had no figure."""

    cpu_ns: int | None
    memory_usage: int | None
    working_set: int | None
    rss: int | None
    at_ns: int


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _flat(text: str | None) -> dict[str, int]:
    """A flat-keyed cgroup file ("key value" per line)."""
    values: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            values[key] = int(value)
    return values


def _memory(directory: Path, usage_file: str, inactive: str,
            rss: str) -> tuple[int | None, int | None, int | None]:
    """Usage, working set (usage less the inactive file cache) and RSS of one memory
    cgroup, given the file and memory.stat keys of its cgroup version."""
    text = (_read(directory / usage_file) or "").strip()
    if not text.isdigit():
        return None, None, None
    stat = _flat(_read(directory / "memory.stat"))
    usage = int(text)
    return usage, max(0, usage - stat.get(inactive, 0)), stat.get(rss)


def cgroup_usage(path: str, *, mounts: Path = Path("/proc/self/mounts"),
                 hierarchies: list[cgroups.Hierarchy] | None = None) -> Usage:
    """The usage of cgroup ``path`` (hierarchical: a pod's includes its containers');
    ``hierarchies`` read once for a whole document saves re-reading the mount table."""
    cpu: int | None = None
    usage: int | None = None
    working: int | None = None
    rss: int | None = None
    relative = path.strip("/")
    for h in hierarchies if hierarchies is not None else cgroups.hierarchies(mounts):
        directory = h.mountpoint / relative
        if h.version == 1 and "cpuacct" in h.controllers and cpu is None:
            text = (_read(directory / "cpuacct.usage") or "").strip()
            cpu = int(text) if text.isdigit() else None
        elif h.version == 1 and "memory" in h.controllers and usage is None:
            usage, working, rss = _memory(directory, "memory.usage_in_bytes",
                                          "total_inactive_file", "total_rss")
        elif h.version == 2:
            if cpu is None:
                stat = _flat(_read(directory / "cpu.stat"))
                cpu = stat["usage_usec"] * 1000 if "usage_usec" in stat else None
            if usage is None:
                usage, working, rss = _memory(directory, "memory.current", "inactive_file",
                                              "anon")
    return Usage(cpu, usage, working, rss, time.time_ns())


def node_usage(*, proc: Path = Path("/proc")) -> Usage:
    """The whole machine: CPU time from /proc/stat (every CPU's busy time), memory from
    /proc/meminfo (used minus the inactive file cache, as the root cgroup's working set)."""
    cpu: int | None = None
    for line in (_read(proc / "stat") or "").splitlines():
        if line.startswith("cpu "):
            fields = [int(f) for f in line.split()[1:] if f.isdigit()]
            # user nice system idle iowait irq softirq steal: busy = all but idle, iowait.
            busy = sum(fields[:8]) - sum(fields[3:5])
            cpu = busy * (1_000_000_000 // (os.sysconf("SC_CLK_TCK") or 100))
            break
    info = {}
    for line in (_read(proc / "meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            info[key] = int(value[0]) * 1024
    usage = working = rss = None
    if "MemTotal" in info and "MemFree" in info:
        usage = info["MemTotal"] - info["MemFree"]
        working = max(0, usage - info.get("Inactive(file)", 0))
        rss = info.get("AnonPages")
    return Usage(cpu, usage, working, rss, time.time_ns())


@dataclasses.dataclass(frozen=True)
class _Container:
    namespace: str
    pod: str
    uid: str
    name: str
    started: float | None
    parent: str  # the pod's cgroup


def _containers(pods: Iterable[Object]) -> list[_Container]:
    """The running containers of the node's pods (with their start times, from status)."""
    found = []
    for pod in pods:
        md = pod.get("metadata") or {}
        status = pod.get("status") or {}
        for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
            for cs in status.get(key) or []:
                running = (cs.get("state") or {}).get("running")
                if running is None:
                    continue
                found.append(_Container(md.get("namespace", ""), md.get("name", ""),
                                        md.get("uid", ""), cs.get("name", ""),
                                        _timestamp(running.get("startedAt")),
                                        cgroup_parent(md.get("uid", ""), qos_class_of(pod))))
    return found


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


_HELP = {
    "container_cpu_usage_seconds_total": (
        "counter", "Cumulative cpu time consumed by the container in core-seconds"),
    "container_memory_working_set_bytes": (
        "gauge", "Current working set of the container in bytes"),
    "container_start_time_seconds": (
        "gauge", "Start time of the container since unix epoch in seconds"),
    "node_cpu_usage_seconds_total": (
        "counter", "Cumulative cpu time consumed by the node in core-seconds"),
    "node_memory_working_set_bytes": ("gauge", "Current working set of the node in bytes"),
    "pod_cpu_usage_seconds_total": (
        "counter", "Cumulative cpu time consumed by the pod in core-seconds"),
    "pod_memory_working_set_bytes": ("gauge", "Current working set of the pod in bytes"),
    "resource_scrape_error": (
        "gauge", "1 if there was an error while getting container metrics, 0 otherwise"),
}


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for k, v in labels.items())
    return "{" + ",".join(escaped) + "}"


def resource_metrics(pods: Iterable[Object]) -> str:
    """The ``/metrics/resource`` document (Prometheus text format 0.0.4)."""
    samples: dict[str, list[str]] = {name: [] for name in _HELP}
    found = cgroups.hierarchies()

    def add(name: str, value: float | None, at_ns: int | None, **labels: str) -> None:
        if value is None:
            return
        stamp = f" {at_ns // 1_000_000}" if at_ns is not None else ""
        samples[name].append(f"{name}{_labels(**labels)} {value:.9g}{stamp}")

    node = node_usage()
    add("node_cpu_usage_seconds_total", _seconds(node.cpu_ns), node.at_ns)
    add("node_memory_working_set_bytes", node.working_set, node.at_ns)
    error = 0
    pods_seen: set[tuple[str, str, str]] = set()
    for c in sorted(_containers(pods), key=lambda c: (c.namespace, c.pod, c.name)):
        usage = cgroup_usage(f"{c.parent}/{c.name}", hierarchies=found)
        if usage.cpu_ns is None and usage.working_set is None:
            error = 1
            continue
        labels = {"container": c.name, "namespace": c.namespace, "pod": c.pod}
        add("container_cpu_usage_seconds_total", _seconds(usage.cpu_ns), usage.at_ns, **labels)
        add("container_memory_working_set_bytes", usage.working_set, usage.at_ns, **labels)
        add("container_start_time_seconds", c.started, None, **labels)
        if (c.namespace, c.pod, c.uid) not in pods_seen:
            pods_seen.add((c.namespace, c.pod, c.uid))
            pod_usage = cgroup_usage(c.parent, hierarchies=found)
            add("pod_cpu_usage_seconds_total", _seconds(pod_usage.cpu_ns), pod_usage.at_ns,
                namespace=c.namespace, pod=c.pod)
            add("pod_memory_working_set_bytes", pod_usage.working_set, pod_usage.at_ns,
                namespace=c.namespace, pod=c.pod)
    samples["resource_scrape_error"].append(f"resource_scrape_error {error}")
    lines = []
    for name, (kind, text) in _HELP.items():
        lines += [f"# HELP {name} [STABLE] {text}", f"# TYPE {name} {kind}", *samples[name]]
    return "\n".join(lines) + "\n"


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9


class Sampler:
    """The Summary API's ``usageNanoCores`` is a rate: each reading is compared with the
    previous one of the same cgroup (the first reading of a cgroup has no rate yet)."""

    def __init__(self) -> None:
        self._previous: dict[str, Usage] = {}
        #: Requests are served in threads; two at once must not interleave their readings.
        self._lock = threading.Lock()

    def _rate(self, key: str, usage: Usage) -> int | None:
        before = self._previous.get(key)
        self._previous[key] = usage
        if before is None or usage.cpu_ns is None or before.cpu_ns is None:
            return None
        elapsed = usage.at_ns - before.at_ns
        if elapsed <= 0:
            return None
        return max(0, (usage.cpu_ns - before.cpu_ns) * 1_000_000_000 // elapsed)

    def _stats(self, key: str, usage: Usage) -> dict[str, Object]:
        stamp = _rfc3339(usage.at_ns)
        cpu: Object = {"time": stamp}
        rate = self._rate(key, usage)
        if rate is not None:
            cpu["usageNanoCores"] = rate
        if usage.cpu_ns is not None:
            cpu["usageCoreNanoSeconds"] = usage.cpu_ns
        memory: Object = {"time": stamp}
        for field, value in (("usageBytes", usage.memory_usage),
                             ("workingSetBytes", usage.working_set), ("rssBytes", usage.rss)):
            if value is not None:
                memory[field] = value
        return {"cpu": cpu, "memory": memory}

    def summary(self, node_name: str, pods: Iterable[Object]) -> Object:
        """The ``/stats/summary`` document."""
        with self._lock:
            return self._summary(node_name, pods)

    def _summary(self, node_name: str, pods: Iterable[Object]) -> Object:
        pod_list = list(pods)
        found = cgroups.hierarchies()
        node: Object = {"nodeName": node_name, "startTime": _rfc3339(_boot_ns()),
                        **self._stats("node", node_usage())}
        available = _mem_available()
        if available is not None:
            node["memory"]["availableBytes"] = available
        by_pod: dict[str, Object] = {}
        for c in _containers(pod_list):
            entry = by_pod.get(c.uid)
            if entry is None:
                entry = by_pod[c.uid] = {
                    "podRef": {"name": c.pod, "namespace": c.namespace, "uid": c.uid},
                    "startTime": _pod_start(pod_list, c.uid), "containers": [],
                    **self._stats(c.uid, cgroup_usage(c.parent, hierarchies=found))}
            container: Object = {"name": c.name, **self._stats(
                f"{c.uid}/{c.name}", cgroup_usage(f"{c.parent}/{c.name}", hierarchies=found))}
            if c.started is not None:
                container["startTime"] = _rfc3339(int(c.started * 1e9))
            entry["containers"].append(container)
        live = {"node"} | set(by_pod) | {f"{c.uid}/{c.name}" for c in _containers(pod_list)}
        for key in set(self._previous) - live:
            del self._previous[key]
        return {"node": node, "pods": list(by_pod.values())}


def _pod_start(pods: list[Object], uid: str) -> str | None:
    for pod in pods:
        if (pod.get("metadata") or {}).get("uid") == uid:
            start = (pod.get("status") or {}).get("startTime")
            return start if isinstance(start, str) else None
    return None


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _boot_ns() -> int:
    uptime = (_read(Path("/proc/uptime")) or "0").split()[0]
    return time.time_ns() - int(float(uptime) * 1e9)


def _mem_available() -> int | None:
    for line in (_read(Path("/proc/meminfo")) or "").splitlines():
        if line.startswith("MemAvailable:"):
            value = line.split()[1]
            return int(value) * 1024 if value.isdigit() else None
    return None

