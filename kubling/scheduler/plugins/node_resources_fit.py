"""NodeResourcesFit: a pod fits where its requests fit in allocatable minus what the pods
already there request; scoring prefers the least allocated node (or, configured with
``scoringStrategy.type: MostAllocated``, the most allocated one, to bin-pack).

Every shortfall is reported (``Insufficient cpu``, ``Insufficient memory``, ``Too many pods``,
``Insufficient example.com/gpu``), and a request larger than the node's whole allocatable is
``UnschedulableAndUnresolvable``, because evicting pods there cannot help.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubling.scheduler.interface import SUCCESS, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.plugins import resource_allocation

NAME = "NodeResourcesFit"


def insufficient(pod: PodInfo, node: NodeInfo) -> Status:
    """Every resource the node lacks for ``pod``; SUCCESS when it fits."""
    req, alloc, used = pod.requests, node.allocatable, node.requested
    reasons: list[str] = []
    unresolvable = False
    if len(node.pods) + 1 > alloc.allowed_pods:
        reasons.append("Too many pods")
    for label, want, have, cap in (
        ("cpu", req.milli_cpu, used.milli_cpu, alloc.milli_cpu),
        ("memory", req.memory, used.memory, alloc.memory),
        ("ephemeral-storage", req.ephemeral_storage, used.ephemeral_storage,
         alloc.ephemeral_storage),
        *((name, want, used.scalar.get(name, 0), alloc.scalar.get(name, 0))
          for name, want in req.scalar.items()),
    ):
        if want > 0 and want > cap - have:
            reasons.append(f"Insufficient {label}")
            unresolvable = unresolvable or want > cap
    if not reasons:
        return SUCCESS
    return Status.unschedulable(*reasons, unresolvable=unresolvable)


class NodeResourcesFit:
    name = NAME

    def __init__(self, args: Mapping[str, Any]) -> None:
        strategy = args.get("scoringStrategy") or {}
        self._specs = resource_allocation.parse_resources(strategy)
        self._most = strategy.get("type") == "MostAllocated"
        self._default = [s.name for s in self._specs] == ["cpu", "memory"] and all(
            s.weight == 1 for s in self._specs
        )

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        # The common case in a few comparisons; the full report only for a misfit.
        req, alloc, used = pod.requests, node.allocatable, node.requested
        if (
            len(node.pods) < alloc.allowed_pods
            and req.milli_cpu <= alloc.milli_cpu - used.milli_cpu
            and req.memory <= alloc.memory - used.memory
            and req.ephemeral_storage <= alloc.ephemeral_storage - used.ephemeral_storage
            and not req.scalar
        ):
            return SUCCESS
        return insufficient(pod, node)

    def score_nodes(
        self, state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]
    ) -> list[int]:
        """``score`` for every node: the default case's loop inlined, same arithmetic."""
        if not self._default or self._most:
            return [self.score(state, pod, node) for node in nodes]
        pod_cpu, pod_mem = pod.non_zero_cpu, pod.non_zero_memory
        scores = []
        for node in nodes:
            alloc = node.allocatable
            cpu_cap, mem_cap = alloc.milli_cpu, alloc.memory
            if cpu_cap and mem_cap:  # both weights count: the common case
                cpu = node.non_zero_cpu + pod_cpu
                mem = node.non_zero_memory + pod_mem
                scores.append(((0 if cpu > cpu_cap else (cpu_cap - cpu) * 100 // cpu_cap)
                               + (0 if mem > mem_cap else (mem_cap - mem) * 100 // mem_cap))
                              // 2)
            else:
                scores.append(self.score(state, pod, node))
        return scores

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        if self._default and not self._most:
            # LeastAllocated over cpu and memory, weight 1 each: inlined for the hot loop.
            cpu_cap = node.allocatable.milli_cpu
            mem_cap = node.allocatable.memory
            cpu = node.non_zero_cpu + pod.non_zero_cpu
            mem = node.non_zero_memory + pod.non_zero_memory
            total = weights = 0
            if cpu_cap:
                total += 0 if cpu > cpu_cap else (cpu_cap - cpu) * 100 // cpu_cap
                weights += 1
            if mem_cap:
                total += 0 if mem > mem_cap else (mem_cap - mem) * 100 // mem_cap
                weights += 1
            return total // weights if weights else 0
        pairs = [
            resource_allocation.allocatable_and_requested(node, pod, s.name, use_requested=False)
            for s in self._specs
        ]
        if self._most:
            return resource_allocation.most_allocated(pairs, self._specs)
        return resource_allocation.least_allocated(pairs, self._specs)


def new(args: Mapping[str, Any], handle: Handle) -> NodeResourcesFit:
    return NodeResourcesFit(args)
