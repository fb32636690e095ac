"""The scheduling queue: which pending pod is tried next, and when a failed one is retried.

Three places, as upstream's ``PriorityQueue``:

* **activeQ** — ready now, popped by priority (high first), then by queue time (FIFO);
* **backoffQ** — failed recently, waiting out a per-pod exponential backoff (1s, 2s, 4s …
  capped at 10s by default) before going back to activeQ;
* **unschedulable** — no node fitted; they wait for a cluster event that could change that
  (a node added, a pod deleted …) and are flushed back after 5 minutes regardless.

A failed pod comes back through :meth:`add_unschedulable`; if a relevant cluster event
arrived *while* it was being scheduled, it goes to backoffQ instead of waiting for another
event that may never come (upstream's ``moveRequestCycle``).

Pure and synchronous, with an injectable clock (``time.monotonic`` by default): the wiring
owns the asyncio side — it wakes the scheduling loop when :meth:`pop` may succeed and calls
:meth:`flush` about once a second.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kubling.scheduler.nodeinfo import PodInfo

__all__ = [
    "ASSIGNED_POD_ADD",
    "ASSIGNED_POD_DELETE",
    "ASSIGNED_POD_UPDATE",
    "NODE_ADD",
    "NODE_UPDATE",
    "PVC_ADD",
    "PVC_UPDATE",
    "PV_ADD",
    "PV_UPDATE",
    "STORAGE_CLASS_ADD",
    "UNSCHEDULABLE_TIMEOUT",
    "WILDCARD",
    "ClusterEvent",
    "QueuedPodInfo",
    "SchedulingQueue",
]

DEFAULT_INITIAL_BACKOFF = 1.0
DEFAULT_MAX_BACKOFF = 10.0
DEFAULT_MAX_IN_UNSCHEDULABLE = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A change in the cluster (``resource`` x ``action``) that might let pods fit."""

    resource: str
    action: str

    def matches(self, other: ClusterEvent) -> bool:
        """True if a plugin registered for ``self`` cares about ``other`` (``*`` wildcards)."""
        return self.resource in ("*", other.resource) and self.action in ("*", other.action)


NODE_ADD = ClusterEvent("Node", "Add")
NODE_UPDATE = ClusterEvent("Node", "Update")
ASSIGNED_POD_ADD = ClusterEvent("Pod", "Add")
ASSIGNED_POD_UPDATE = ClusterEvent("Pod", "Update")
ASSIGNED_POD_DELETE = ClusterEvent("Pod", "Delete")
PVC_ADD = ClusterEvent("PersistentVolumeClaim", "Add")
PVC_UPDATE = ClusterEvent("PersistentVolumeClaim", "Update")
PV_ADD = ClusterEvent("PersistentVolume", "Add")
PV_UPDATE = ClusterEvent("PersistentVolume", "Update")
STORAGE_CLASS_ADD = ClusterEvent("StorageClass", "Add")
UNSCHEDULABLE_TIMEOUT = ClusterEvent("*", "UnschedulableTimeout")
WILDCARD = ClusterEvent("*", "*")

#: Which events can make a pod rejected by each plugin schedulable (upstream
#: ``EventsToRegister``); a pod rejected by an unlisted plugin moves on any event.
EVENTS_TO_REGISTER: Mapping[str, tuple[ClusterEvent, ...]] = {
    "NodeUnschedulable": (NODE_ADD, NODE_UPDATE),
    "NodeName": (NODE_ADD,),
    "TaintToleration": (NODE_ADD, NODE_UPDATE),
    "NodeAffinity": (NODE_ADD, NODE_UPDATE),
    "NodePorts": (ASSIGNED_POD_DELETE, NODE_ADD),
    "NodeResourcesFit": (ASSIGNED_POD_DELETE, ASSIGNED_POD_UPDATE, NODE_ADD, NODE_UPDATE),
    "VolumeBinding": (PVC_ADD, PVC_UPDATE, PV_ADD, PV_UPDATE, STORAGE_CLASS_ADD, NODE_ADD,
                      NODE_UPDATE),
    "PodTopologySpread": (ASSIGNED_POD_ADD, ASSIGNED_POD_UPDATE, ASSIGNED_POD_DELETE,
                          NODE_ADD, NODE_UPDATE),
    "InterPodAffinity": (ASSIGNED_POD_ADD, ASSIGNED_POD_UPDATE, ASSIGNED_POD_DELETE,
                         NODE_ADD, NODE_UPDATE),
}


@dataclasses.dataclass(slots=True)
class QueuedPodInfo:
    """A pending pod with its queue bookkeeping."""

    pod_info: PodInfo
    #: When it last entered a queue (activeQ order; backoff counts from here).
    timestamp: float
    initial_attempt_timestamp: float | None = None
    attempts: int = 0
    #: Plugins that rejected it last time: only events they registered move it back.
    unschedulable_plugins: frozenset[str] = frozenset()

    @property
    def pod(self) -> Mapping[str, Any]:
        return self.pod_info.pod

    @property
    def uid(self) -> str:
        return self.pod_info.uid


def _spec_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether an update could change the scheduling outcome (not just status/versions)."""
    def strip(pod: Mapping[str, Any]) -> Any:
        meta = {k: v for k, v in (pod.get("metadata") or {}).items()
                if k not in ("resourceVersion", "generation", "managedFields")}
        return meta, pod.get("spec")
    return bool(strip(old) != strip(new))


class SchedulingQueue:
    """activeQ, backoffQ and the unschedulable pool; every pod is in at most one of them."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_in_unschedulable: float = DEFAULT_MAX_IN_UNSCHEDULABLE,
        events_to_register: Mapping[str, Iterable[ClusterEvent]] | None = None,
    ) -> None:
        self._clock = clock
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_in_unschedulable = max_in_unschedulable
        events = EVENTS_TO_REGISTER if events_to_register is None else events_to_register
        self._events = {name: tuple(evs) for name, evs in events.items()}
        self._seq = itertools.count()
        self._active: list[tuple[int, float, int, str]] = []  # heap; stale entries skipped
        self._active_entry: dict[str, tuple[int, float, int, str]] = {}
        self._backoff: list[tuple[float, int, str]] = []
        self._backoff_entry: dict[str, tuple[float, int, str]] = {}
        self._unschedulable: dict[str, QueuedPodInfo] = {}
        self._infos: dict[str, QueuedPodInfo] = {}
        #: Pods being scheduled now, with the newest version an update delivered meanwhile.
        self._in_flight: dict[str, PodInfo | None] = {}
        #: Scheduling cycle counter; a move request during a cycle is remembered.
        self.scheduling_cycle = 0
        self._move_request_cycle = -1

    # -- introspection -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._active_entry) + len(self._backoff_entry) + len(self._unschedulable)

    def pending(self) -> dict[str, list[str]]:
        """Pod keys per sub-queue (for tests and the debug endpoint)."""
        def key(uid: str) -> str:
            return self._infos[uid].pod_info.key

        return {
            "active": sorted(key(u) for u in self._active_entry),
            "backoff": sorted(key(u) for u in self._backoff_entry),
            "unschedulable": sorted(key(u) for u in self._unschedulable),
        }

    # -- informer events for pending pods ----------------------------------------------

    def add(self, pod: Mapping[str, Any] | PodInfo) -> None:
        """A new pending pod: straight to activeQ."""
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        now = self._clock()
        self._remove_everywhere(info.uid)
        self._push_active(QueuedPodInfo(info, now, initial_attempt_timestamp=None))

    def update(self, pod: Mapping[str, Any] | PodInfo) -> None:
        """A pending pod changed. In activeQ/backoffQ it is updated in place; an unschedulable
        pod whose spec or labels changed gets another try (backoffQ if still backing off)."""
        info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        qpi = self._infos.get(info.uid)
        if qpi is None:
            if info.uid in self._in_flight:
                self._in_flight[info.uid] = info  # applied when the cycle hands it back
            else:
                self.add(info)
            return
        old = qpi.pod_info
        qpi.pod_info = info
        if info.uid in self._active_entry:
            self._remove_everywhere(info.uid)
            self._push_active(qpi)  # priority may have changed; timestamp is kept
        elif info.uid in self._unschedulable and _spec_changed(old.pod, info.pod):
            del self._unschedulable[info.uid]
            self._requeue(qpi)

    def delete(self, pod: Mapping[str, Any] | PodInfo) -> None:
        uid = pod.uid if isinstance(pod, PodInfo) else PodInfo(pod).uid
        self._remove_everywhere(uid)
        self._infos.pop(uid, None)
        self._in_flight.pop(uid, None)

    # -- the scheduling loop -----------------------------------------------------------

    def pop(self) -> QueuedPodInfo | None:
        """The next pod to schedule, or None if activeQ is empty (after flushing backoff)."""
        self._flush_backoff_completed()
        while self._active:
            entry = heapq.heappop(self._active)
            uid = entry[3]
            if self._active_entry.get(uid) != entry:
                continue  # superseded or removed
            del self._active_entry[uid]
            qpi = self._infos.pop(uid)
            qpi.attempts += 1
            if qpi.initial_attempt_timestamp is None:
                qpi.initial_attempt_timestamp = self._clock()
            self.scheduling_cycle += 1
            self._in_flight[uid] = None
            return qpi
        return None

    def done(self, uid: str) -> None:
        """The cycle for ``uid`` ended (bound, or handed back via :meth:`add_unschedulable`)."""
        self._in_flight.pop(uid, None)

    def add_unschedulable(
        self, qpi: QueuedPodInfo, pod_scheduling_cycle: int,
        unschedulable_plugins: Iterable[str] = (),
    ) -> None:
        """Hand back a pod whose cycle failed (no fit, or an error with no plugins named).

        ``pod_scheduling_cycle`` is :attr:`scheduling_cycle` as it was right after the pop.
        """
        if qpi.uid not in self._in_flight:
            return  # deleted meanwhile
        updated = self._in_flight.pop(qpi.uid)
        if updated is not None:
            qpi.pod_info = updated
        qpi.timestamp = self._clock()
        qpi.unschedulable_plugins = frozenset(unschedulable_plugins)
        if (
            self._move_request_cycle >= pod_scheduling_cycle
            or not qpi.unschedulable_plugins
            or updated is not None
        ):
            # An event may already have freed room during the cycle, the pod changed, or
            # it was an error: retry after backoff rather than wait for the next event.
            self._push_backoff(qpi)
        else:
            self._infos[qpi.uid] = qpi
            self._unschedulable[qpi.uid] = qpi

    def move_all_to_active_or_backoff(
        self, event: ClusterEvent, *, pre_check: Callable[[QueuedPodInfo], bool] | None = None
    ) -> int:
        """A cluster event happened: retry the unschedulable pods it may help. Returns how
        many moved. ``pre_check`` may veto pods (e.g. a new node's taints they don't tolerate).
        """
        moved = 0
        for uid, qpi in list(self._unschedulable.items()):
            if not self._interested(qpi, event):
                continue
            if pre_check is not None and not pre_check(qpi):
                continue
            del self._unschedulable[uid]
            self._requeue(qpi)
            moved += 1
        self._move_request_cycle = self.scheduling_cycle
        return moved

    def flush(self) -> None:
        """Periodic housekeeping: finished backoffs to activeQ; pods unschedulable for too
        long get another try (something unobserved may have changed)."""
        self._flush_backoff_completed()
        now = self._clock()
        stale = [
            qpi for qpi in self._unschedulable.values()
            if now - qpi.timestamp >= self._max_in_unschedulable
        ]
        for qpi in stale:
            del self._unschedulable[qpi.uid]
            self._requeue(qpi)

    def backoff_duration(self, qpi: QueuedPodInfo) -> float:
        """initial x 2^(attempts-1), capped (upstream ``calculateBackoffDuration``)."""
        duration = self._initial_backoff
        for _ in range(1, qpi.attempts):
            duration *= 2
            if duration >= self._max_backoff:
                return self._max_backoff
        return min(duration, self._max_backoff)

    def backoff_expiry(self, qpi: QueuedPodInfo) -> float:
        return qpi.timestamp + self.backoff_duration(qpi)

    def next_backoff_expiry(self) -> float | None:
        """When the earliest backing-off pod becomes ready (for the wiring's timer)."""
        while self._backoff and self._backoff_entry.get(self._backoff[0][2]) != self._backoff[0]:
            heapq.heappop(self._backoff)
        return self._backoff[0][0] if self._backoff else None

    # -- internals ---------------------------------------------------------------------

    def _interested(self, qpi: QueuedPodInfo, event: ClusterEvent) -> bool:
        if event.action == "UnschedulableTimeout" or not qpi.unschedulable_plugins:
            return True
        for plugin in qpi.unschedulable_plugins:
            registered = self._events.get(plugin)
            if registered is None or any(r.matches(event) for r in registered):
                return True
        return False

    def _requeue(self, qpi: QueuedPodInfo) -> None:
        if self.backoff_expiry(qpi) > self._clock():
            self._push_backoff(qpi)
        else:
            self._push_active(qpi)

    def _push_active(self, qpi: QueuedPodInfo) -> None:
        entry = (-qpi.pod_info.priority, qpi.timestamp, next(self._seq), qpi.uid)
        self._infos[qpi.uid] = qpi
        self._active_entry[qpi.uid] = entry
        heapq.heappush(self._active, entry)

    def _push_backoff(self, qpi: QueuedPodInfo) -> None:
        entry = (self.backoff_expiry(qpi), next(self._seq), qpi.uid)
        self._infos[qpi.uid] = qpi
        self._backoff_entry[qpi.uid] = entry
        heapq.heappush(self._backoff, entry)

    def _flush_backoff_completed(self) -> None:
        now = self._clock()
        while self._backoff:
            expiry, _, uid = entry = self._backoff[0]
            if self._backoff_entry.get(uid) != entry:
                heapq.heappop(self._backoff)
                continue
            if expiry > now:
                break
            heapq.heappop(self._backoff)
            del self._backoff_entry[uid]
            self._push_active(self._infos[uid])

    def _remove_everywhere(self, uid: str) -> None:
        self._active_entry.pop(uid, None)
        self._backoff_entry.pop(uid, None)
        self._unschedulable.pop(uid, None)
