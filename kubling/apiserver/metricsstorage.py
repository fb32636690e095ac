"""The resource metrics kept between scrapes: the last two points of every node and
container, and the usage computed from them (metrics-server's ``storage`` package).

A kubelet reports cumulative CPU time, so a usage rate needs two readings: what
``metrics.k8s.io`` serves is ``(cpu₂ - cpu₁) / (t₂ - t₁)`` in nanocores over the window
``t₂ - t₁``, and the working set of the newer reading. A point replaces the stored ones
only when it is newer; a container that restarted (its start time is after the stored
point) starts over. Each scrape replaces the whole set, so a deleted pod or a vanished
node is gone after the next one.

Written by the scraper and read by the API handlers on the same event loop: no locks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

__all__ = ["Batch", "MetricsPoint", "MetricsStorage", "Usage", "binary_si", "nanocores"]

#: A container started less than one resolution ago but at least this long before its
#: first point gets a synthetic previous point (zero CPU at its start time), so that it
#: shows usage one scrape earlier; closer to the start the rate would be too noisy.
FRESH_CONTAINER_MIN_WINDOW_NS = 10 * 1_000_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class MetricsPoint:
    """One reading: cumulative CPU (ns) and working set (bytes) at ``timestamp_ns``; a
    container's ``start_time_ns`` (0 when unknown) tells a restart from a new reading."""

    timestamp_ns: int
    cpu_ns: int
    memory_bytes: int
    start_time_ns: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """What the API serves: the rate over ``window_ns`` ending at ``timestamp_ns``."""

    timestamp_ns: int
    window_ns: int
    nanocores: int
    memory_bytes: int


@dataclasses.dataclass(slots=True)
class Batch:
    """One scrape of one or more nodes: node points by node name, container points by
    (namespace, pod) then container name."""

    nodes: dict[str, MetricsPoint] = dataclasses.field(default_factory=dict)
    pods: dict[tuple[str, str], dict[str, MetricsPoint]] = dataclasses.field(
        default_factory=dict)

    def merge(self, other: Batch) -> None:
        self.nodes.update(other.nodes)
        for ref, containers in other.pods.items():
            self.pods.setdefault(ref, {}).update(containers)


def usage(last: MetricsPoint, prev: MetricsPoint) -> Usage | None:
    """The usage between two points of one node or container; None when the counter went
    backwards or no time passed (nothing honest to report)."""
    window = last.timestamp_ns - prev.timestamp_ns
    if last.cpu_ns < prev.cpu_ns or window <= 0:
        return None
    rate = (last.cpu_ns - prev.cpu_ns) * 1_000_000_000 // window
    return Usage(last.timestamp_ns, window, rate, last.memory_bytes)


def _previous(new: MetricsPoint, last: MetricsPoint | None,
              prev: MetricsPoint | None) -> MetricsPoint | None:
    """Which point to keep as the previous one once ``new`` is the last."""
    if last is None or new.start_time_ns >= last.timestamp_ns:
        return None  # first reading, or restarted since the stored one
    if new.timestamp_ns > last.timestamp_ns:
        return last
    if prev is not None and prev.timestamp_ns < new.timestamp_ns:
        return prev  # the same reading again: keep the window we had
    return None


class MetricsStorage:
    """The last two points per node and container; ``store`` takes a complete scrape."""

    def __init__(self, *, resolution_ns: int = 15 * 1_000_000_000) -> None:
        self.resolution_ns = resolution_ns
        self._nodes_last: dict[str, MetricsPoint] = {}
        self._nodes_prev: dict[str, MetricsPoint] = {}
        self._pods_last: dict[tuple[str, str], dict[str, MetricsPoint]] = {}
        self._pods_prev: dict[tuple[str, str], dict[str, MetricsPoint]] = {}

    def store(self, batch: Batch) -> None:
        nodes_prev: dict[str, MetricsPoint] = {}
        for name, point in batch.nodes.items():
            kept = _previous(point, self._nodes_last.get(name), self._nodes_prev.get(name))
            if kept is not None:
                nodes_prev[name] = kept
        pods_prev: dict[tuple[str, str], dict[str, MetricsPoint]] = {}
        for ref, containers in batch.pods.items():
            last_pod = self._pods_last.get(ref) or {}
            prev_pod = self._pods_prev.get(ref) or {}
            kept_containers: dict[str, MetricsPoint] = {}
            for name, point in containers.items():
                kept = self._fresh_start(point)
                if kept is None:
                    kept = _previous(point, last_pod.get(name), prev_pod.get(name))
                if kept is not None:
                    kept_containers[name] = kept
            if kept_containers:
                pods_prev[ref] = kept_containers
        self._nodes_last, self._nodes_prev = dict(batch.nodes), nodes_prev
        self._pods_last = {ref: dict(c) for ref, c in batch.pods.items()}
        self._pods_prev = pods_prev

    def _fresh_start(self, point: MetricsPoint) -> MetricsPoint | None:
        """A container's start as its previous point (zero CPU), when it started within
        the last resolution but long enough ago for the rate to mean something."""
        since = point.timestamp_ns - point.start_time_ns
        if point.start_time_ns and FRESH_CONTAINER_MIN_WINDOW_NS <= since < self.resolution_ns:
            return MetricsPoint(point.start_time_ns, 0, point.memory_bytes,
                                point.start_time_ns)
        return None

    def node(self, name: str) -> Usage | None:
        last, prev = self._nodes_last.get(name), self._nodes_prev.get(name)
        if last is None or prev is None:
            return None
        return usage(last, prev)

    def pod(self, namespace: str, name: str) -> list[tuple[str, Usage]] | None:
        """(container, usage) sorted by container name; None when the pod has none yet."""
        last_pod = self._pods_last.get((namespace, name))
        prev_pod = self._pods_prev.get((namespace, name))
        if not last_pod or not prev_pod:
            return None
        found = []
        for container in sorted(last_pod):
            prev = prev_pod.get(container)
            computed = usage(last_pod[container], prev) if prev is not None else None
            if computed is not None:
                found.append((container, computed))
        return found or None

    def node_names(self) -> Iterable[str]:
        return self._nodes_last.keys()


def nanocores(value: int) -> str:
    """A CPU rate in nanocores as its canonical ``resource.Quantity`` (DecimalSI, scale
    -9): ``123456789n``, ``200m``, ``1``, ``1500m``."""
    if value == 0:
        return "0"
    exponent = -9
    while value % 10 == 0:
        value //= 10
        exponent += 1
    while exponent % 3:
        value *= 10
        exponent -= 1
    suffix = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P",
              18: "E"}
    if exponent in suffix:
        return f"{value}{suffix[exponent]}"
    return f"{value}e{exponent}"


def binary_si(value: int) -> str:
    """Bytes as their canonical ``resource.Quantity`` (BinarySI): ``12345Ki``, ``1Mi``;
    below 1024 or not a multiple of 1024, the plain decimal form as Go writes it."""
    if -1024 < value < 1024:
        return _decimal_si(value)
    exponent = 0
    while value % 1024 == 0 and exponent < 6:
        value //= 1024
        exponent += 1
    return f"{value}{('', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei')[exponent]}"


def _decimal_si(value: int) -> str:
    """An integer as a DecimalSI quantity (``512``, ``1k``)."""
    if value == 0:
        return "0"
    exponent = 0
    while value % 1000 == 0:
        value //= 1000
        exponent += 3
    return f"{value}{({0: '', 3: 'k'})[exponent]}"
