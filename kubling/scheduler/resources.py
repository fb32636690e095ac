"""Resource amounts as the scheduler counts them: integers, parsed once.

The scheduler compares the same few quantity strings (``100m``, ``128Mi``) millions of times,
so quantities are turned into integers once — CPU in millicores, everything else in units,
both rounded up like upstream's ``MilliValue()``/``Value()`` — and cached by their text.

``kubling.api`` keeps an exact ``Fraction`` parser private to its validation package; the
scheduler needs integers and a cache, so it has this small parser of its own.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

__all__ = [
    "CPU",
    "DEFAULT_MEMORY_REQUEST",
    "DEFAULT_MILLI_CPU_REQUEST",
    "EPHEMERAL_STORAGE",
    "MEMORY",
    "PODS",
    "Resource",
    "amount",
    "parse_quantity",
    "pod_requests",
]

CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"

#: What scoring assumes a container uses when it requests nothing (upstream ``schedutil``),
#: so that best-effort pods still spread instead of piling onto one node.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|([a-zA-Z]*))")
_SUFFIX: dict[str, Fraction] = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}


def parse_quantity(text: str) -> Fraction:
    """The exact amount of a ``resource.Quantity`` string; ``ValueError`` if it is not one."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid quantity {text!r}")
    number, exponent, suffix = match.groups()
    if exponent is not None:
        return Fraction(number) * Fraction(10) ** int(exponent[1:])
    scale = _SUFFIX.get(suffix or "")
    if scale is None:
        raise ValueError(f"invalid quantity suffix in {text!r}")
    return Fraction(number) * scale


@functools.lru_cache(maxsize=4096)
def _amount_of_text(name: str, text: str) -> int:
    value = parse_quantity(text)
    return math.ceil(value * 1000) if name == CPU else math.ceil(value)


def amount(name: str, quantity: Any) -> int:
    """``quantity`` of resource ``name`` as the scheduler's integer (millicores for CPU).

    Unparseable values count as zero: validation rejects them at the API, and the scheduler
    must not crash on an object that slipped through (e.g. written before validation existed).
    """
    if isinstance(quantity, bool):
        return 0
    if isinstance(quantity, int | float):
        return math.ceil(quantity * 1000) if name == CPU else math.ceil(quantity)
    if not isinstance(quantity, str):
        return 0
    try:
        return _amount_of_text(name, quantity)
    except ValueError:
        return 0


class Resource:
    """A bundle of amounts: the shape of a node's allocatable and of a pod's requests.

    Mutable on purpose: ``NodeInfo.requested`` is updated in place as pods are assumed and
    forgotten, which is what makes a scheduling cycle O(nodes) instead of O(pods).
    """

    __slots__ = ("allowed_pods", "ephemeral_storage", "memory", "milli_cpu", "scalar")

    def __init__(
        self,
        milli_cpu: int = 0,
        memory: int = 0,
        ephemeral_storage: int = 0,
        allowed_pods: int = 0,
        scalar: dict[str, int] | None = None,
    ) -> None:
        self.milli_cpu = milli_cpu
        self.memory = memory
        self.ephemeral_storage = ephemeral_storage
        self.allowed_pods = allowed_pods
        self.scalar: dict[str, int] = scalar if scalar is not None else {}

    @classmethod
    def from_list(cls, resources: Mapping[str, Any] | None) -> Resource:
        """Parse a ``ResourceList`` (``{"cpu": "4", "memory": "8Gi", ...}``)."""
        res = cls()
        if resources:
            for name, quantity in resources.items():
                res.set(name, amount(name, quantity))
        return res

    def get(self, name: str) -> int:
        if name == CPU:
            return self.milli_cpu
        if name == MEMORY:
            return self.memory
        if name == EPHEMERAL_STORAGE:
            return self.ephemeral_storage
        if name == PODS:
            return self.allowed_pods
        return self.scalar.get(name, 0)

    def set(self, name: str, value: int) -> None:
        if name == CPU:
            self.milli_cpu = value
        elif name == MEMORY:
            self.memory = value
        elif name == EPHEMERAL_STORAGE:
            self.ephemeral_storage = value
        elif name == PODS:
            self.allowed_pods = value
        else:
            self.scalar[name] = value

    def add(self, other: Resource, sign: int = 1) -> None:
        """Add (or with ``sign=-1`` subtract) ``other`` in place."""
        self.milli_cpu += sign * other.milli_cpu
        self.memory += sign * other.memory
        self.ephemeral_storage += sign * other.ephemeral_storage
        self.allowed_pods += sign * other.allowed_pods
        for name, value in other.scalar.items():
            self.scalar[name] = self.scalar.get(name, 0) + sign * value

    def set_max(self, other: Resource) -> None:
        """Each amount becomes the larger of the two (init containers run one at a time)."""
        self.milli_cpu = max(self.milli_cpu, other.milli_cpu)
        self.memory = max(self.memory, other.memory)
        self.ephemeral_storage = max(self.ephemeral_storage, other.ephemeral_storage)
        self.allowed_pods = max(self.allowed_pods, other.allowed_pods)
        for name, value in other.scalar.items():
            self.scalar[name] = max(self.scalar.get(name, 0), value)

    def copy(self) -> Resource:
        return Resource(
            self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pods,
            dict(self.scalar),
        )

    def is_zero(self) -> bool:
        return not (
            self.milli_cpu or self.memory or self.ephemeral_storage or any(self.scalar.values())
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resource):
            return NotImplemented
        mine = {k: v for k, v in self.scalar.items() if v}
        theirs = {k: v for k, v in other.scalar.items() if v}
        return (self.milli_cpu, self.memory, self.ephemeral_storage, self.allowed_pods, mine) == (
            other.milli_cpu, other.memory, other.ephemeral_storage, other.allowed_pods, theirs
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"Resource(milli_cpu={self.milli_cpu}, memory={self.memory}, "
            f"ephemeral_storage={self.ephemeral_storage}, allowed_pods={self.allowed_pods}, "
            f"scalar={self.scalar})"
        )


def _container_requests(container: Mapping[str, Any], non_missing: bool) -> Resource:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    res = Resource.from_list(requests)
    if non_missing:
        # Upstream overrides only *missing* requests: an explicit "0" stays zero.
        if CPU not in requests:
            res.milli_cpu = DEFAULT_MILLI_CPU_REQUEST
        if MEMORY not in requests:
            res.memory = DEFAULT_MEMORY_REQUEST
    return res


def _dicts(items: Any) -> Iterable[Mapping[str, Any]]:
    return (c for c in items or () if isinstance(c, Mapping))


def pod_requests(pod: Mapping[str, Any], *, non_missing: bool = False) -> Resource:
    """What the pod needs from a node (upstream ``resourcehelper.PodRequests``).

    App containers and sidecars (init containers with ``restartPolicy: Always``) run together,
    so their requests add up; ordinary init containers run one at a time, each alongside the
    sidecars started before it, so the pod needs the larger of the two; overhead comes on top.
    ``non_missing`` substitutes scoring's defaults for containers that request nothing.
    """
    spec = pod.get("spec") or {}
    reqs = Resource()
    for container in _dicts(spec.get("containers")):
        reqs.add(_container_requests(container, non_missing))
    sidecars = Resource()
    init_max = Resource()
    for container in _dicts(spec.get("initContainers")):
        creqs = _container_requests(container, non_missing)
        if container.get("restartPolicy") == "Always":
            reqs.add(creqs)
            sidecars.add(creqs)
            running = sidecars.copy()
        else:
            running = creqs
            running.add(sidecars)
        init_max.set_max(running)
    reqs.set_max(init_max)
    overhead = spec.get("overhead")
    if overhead:
        reqs.add(Resource.from_list(overhead))
    return reqs
