"""Resource scoring strategies shared by NodeResourcesFit and BalancedAllocation.

Upstream's formulas, integer arithmetic included (``(capacity - requested) * 100 //
capacity``), so that kubling ranks nodes the way kube-scheduler would.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from kubling.scheduler import resources
from kubling.scheduler.interface import MAX_NODE_SCORE
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo

DEFAULT_RESOURCES = ((resources.CPU, 1), (resources.MEMORY, 1))


@dataclasses.dataclass(frozen=True, slots=True)
class ResourceSpec:
    name: str
    weight: int


def parse_resources(args: Mapping[str, Any]) -> tuple[ResourceSpec, ...]:
    raw = args.get("resources")
    if not raw:
        return tuple(ResourceSpec(n, w) for n, w in DEFAULT_RESOURCES)
    return tuple(ResourceSpec(str(r["name"]), int(r.get("weight") or 1)) for r in raw)


def allocatable_and_requested(
    node: NodeInfo, pod: PodInfo, name: str, *, use_requested: bool
) -> tuple[int, int]:
    """(allocatable, requested-including-this-pod) for one resource.

    Without ``use_requested`` CPU and memory count containers that request nothing at the
    scoring defaults (upstream's ``NonZeroRequested``), so best-effort pods still spread.
    An extended resource the pod does not request is left out: ``(0, 0)``.
    """
    if name == resources.CPU:
        if use_requested:
            return node.allocatable.milli_cpu, node.requested.milli_cpu + pod.requests.milli_cpu
        return node.allocatable.milli_cpu, node.non_zero_cpu + pod.non_zero_cpu
    if name == resources.MEMORY:
        if use_requested:
            return node.allocatable.memory, node.requested.memory + pod.requests.memory
        return node.allocatable.memory, node.non_zero_memory + pod.non_zero_memory
    wanted = pod.requests.get(name)
    if name != resources.EPHEMERAL_STORAGE and wanted == 0:
        return 0, 0
    return node.allocatable.get(name), node.requested.get(name) + wanted


def least_allocated(
    pairs: Sequence[tuple[int, int]], specs: Sequence[ResourceSpec]
) -> int:
    """Weighted mean of each resource's free share (upstream ``leastResourceScorer``)."""
    total = weights = 0
    for (allocatable, requested), spec in zip(pairs, specs, strict=True):
        if allocatable == 0:
            continue
        score = 0 if requested > allocatable else (
            (allocatable - requested) * MAX_NODE_SCORE // allocatable
        )
        total += score * spec.weight
        weights += spec.weight
    return total // weights if weights else 0


def most_allocated(pairs: Sequence[tuple[int, int]], specs: Sequence[ResourceSpec]) -> int:
    """Weighted mean of each resource's used share (upstream ``mostResourceScorer``)."""
    total = weights = 0
    for (allocatable, requested), spec in zip(pairs, specs, strict=True):
        if allocatable == 0:
            continue
        used = min(requested, allocatable)
        total += used * MAX_NODE_SCORE // allocatable * spec.weight
        weights += spec.weight
    return total // weights if weights else 0


def balanced(pairs: Sequence[tuple[int, int]]) -> int:
    """100 x (1 - standard deviation of the used shares) (upstream ``balancedResourceScorer``)."""
    fractions = [min(r / a, 1.0) for a, r in pairs if a]
    if len(fractions) == 2:
        std = abs(fractions[0] - fractions[1]) / 2
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    else:
        std = 0.0
    return int((1 - std) * MAX_NODE_SCORE)
