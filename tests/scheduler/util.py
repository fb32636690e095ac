"""Builders for the plain-dict nodes and pods the scheduler consumes, and plugin runners."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from kubling.scheduler.framework import Framework, PluginSpec, Profile
from kubling.scheduler.interface import SUCCESS, CycleState, Status
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.owners import OwnerSelectors
from kubling.scheduler.snapshot import Snapshot

Obj = dict[str, Any]


def make_node(
    name: str,
    *,
    cpu: str = "4",
    memory: str = "8Gi",
    pods: str = "110",
    labels: Mapping[str, str] | None = None,
    taints: Iterable[Obj] = (),
    unschedulable: bool = False,
    images: Iterable[Obj] = (),
    allocatable: Mapping[str, str] | None = None,
) -> Obj:
    alloc = {"cpu": cpu, "memory": memory, "pods": pods, **(allocatable or {})}
    spec: Obj = {}
    if taints:
        spec["taints"] = list(taints)
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name,
                     "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"allocatable": alloc, "images": list(images)},
    }


def make_pod(
    name: str,
    *,
    namespace: str = "default",
    cpu: str | None = None,
    memory: str | None = None,
    requests: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    node_name: str | None = None,
    priority: int | None = None,
    tolerations: Iterable[Obj] = (),
    affinity: Obj | None = None,
    node_selector: Mapping[str, str] | None = None,
    spread: Iterable[Obj] = (),
    ports: Iterable[Obj] = (),
    init_containers: Iterable[Obj] = (),
    overhead: Mapping[str, str] | None = None,
    image: str = "busybox",
    volumes: Iterable[Obj] = (),
    start_time: str | None = None,
    **spec_extra: Any,
) -> Obj:
    reqs: Obj = dict(requests or {})
    if cpu is not None:
        reqs["cpu"] = cpu
    if memory is not None:
        reqs["memory"] = memory
    container: Obj = {"name": "c", "image": image, "resources": {"requests": reqs}}
    if ports:
        container["ports"] = list(ports)
    spec: Obj = {"containers": [container], **spec_extra}
    for key, value in (
        ("nodeName", node_name), ("priority", priority), ("affinity", affinity),
        ("nodeSelector", node_selector), ("overhead", overhead),
    ):
        if value is not None:
            spec[key] = value
    if tolerations:
        spec["tolerations"] = list(tolerations)
    if spread:
        spec["topologySpreadConstraints"] = list(spread)
    if init_containers:
        spec["initContainers"] = list(init_containers)
    if volumes:
        spec["volumes"] = list(volumes)
    status: Obj = {"phase": "Running" if node_name else "Pending"}
    if start_time:
        status["startTime"] = start_time
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{namespace}-{name}",
                     "labels": dict(labels or {})},
        "spec": spec,
        "status": status,
    }


def framework(*names: str, weights: Mapping[str, int] | None = None, **profile: Any) -> Framework:
    """A framework running only ``names`` (all default plugins when none given)."""
    specs = tuple(PluginSpec(n, (weights or {}).get(n, 1)) for n in names) if names else None
    return Framework(Profile(plugins=specs, **profile), rng=random.Random(0))


def filter_statuses(
    plugin: str, pod: Obj, nodes: Iterable[Obj], pods: Iterable[Obj] = (), **snapshot_kw: Any
) -> dict[str, Status]:
    """Run one plugin's pre_filter and filter over every node; node name → status."""
    fw = framework(plugin)
    snapshot = Snapshot(nodes, pods, **snapshot_kw)
    info = PodInfo(pod)
    state = CycleState()
    result, status = fw.run_pre_filter_plugins(state, info, snapshot)
    out: dict[str, Status] = {}
    for node in snapshot.node_infos:
        if not status.is_success:
            out[node.name] = status
        elif result is not None and result.node_names is not None and (
            node.name not in result.node_names
        ):
            out[node.name] = Status.unschedulable("excluded by pre_filter", unresolvable=True)
        else:
            out[node.name] = fw.run_filter_plugins(state, info, node)
    return out


def reasons(statuses: Mapping[str, Status]) -> dict[str, tuple[str, ...]]:
    return {name: s.reasons for name, s in statuses.items() if s is not SUCCESS and s.reasons}


def scores(
    plugin: str, pod: Obj, nodes: Iterable[Obj], pods: Iterable[Obj] = (), *,
    owner_selectors: OwnerSelectors | None = None, **snapshot_kw: Any
) -> dict[str, int]:
    """One plugin's normalized scores over all nodes (no filtering); node name → score."""
    fw = framework(plugin)
    fw.owner_selectors = owner_selectors
    snapshot = Snapshot(nodes, pods, **snapshot_kw)
    info = PodInfo(pod)
    state = CycleState()
    totals = fw._prioritize(state, info, snapshot, list(snapshot.node_infos))
    return {n.name: t for n, t in zip(snapshot.node_infos, totals, strict=True)}
