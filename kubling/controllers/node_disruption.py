"""Zone-aware pacing of NoExecute taints: upstream's ``--node-eviction-rate`` and friends.

Tainting a node ``NoExecute`` evicts its pods, so the node lifecycle controller does it at
a limited pace per zone (``topology.kubernetes.io/region`` + ``zone``), and holds back when
the trouble looks like its own (a network split) rather than the nodes':

- a zone is in *full disruption* when none of its nodes is Ready, in *partial disruption*
  when more than two and at least ``unhealthy_zone_threshold`` (55 %) of them are not
  Ready, else *normal*;
- normal and fully disrupted zones taint at ``eviction_qps`` (0.1/s, burst 1); a partially
  disrupted zone at ``secondary_eviction_qps`` (0.01/s) if it has more than
  ``large_cluster_size`` (50) nodes, else not at all;
- when every zone is fully disrupted the controller assumes it is the one cut off: it
  stops tainting and lifts the NoExecute taints it set ("master disruption mode"), until
  some node is Ready again.

Pure bookkeeping on the controller's clock; ``nodelifecycle`` feeds it each node's zone
and readiness and asks before adding a taint.
"""

from __future__ import annotations

import dataclasses
import enum
import math

from kubling.api.meta import Object

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
_BETA_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"
_BETA_REGION_LABEL = "failure-domain.beta.kubernetes.io/region"


def zone_of(node: Object) -> str:
    """The node's zone key, region and zone joined as upstream's ``GetZoneKey`` joins
    them ("" for a node with neither label)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    region = labels.get(REGION_LABEL) or labels.get(_BETA_REGION_LABEL) or ""
    zone = labels.get(ZONE_LABEL) or labels.get(_BETA_ZONE_LABEL) or ""
    return f"{region}:\x00:{zone}" if region or zone else ""


class ZoneState(enum.Enum):
    INITIAL = "Initial"
    NORMAL = "Normal"
    FULL_DISRUPTION = "FullDisruption"
    PARTIAL_DISRUPTION = "PartialDisruption"


class Transition(enum.Enum):
    """What a refresh changed for the whole cluster."""

    NONE = "none"
    ENTERED_MASTER_DISRUPTION = "entered"
    EXITED_MASTER_DISRUPTION = "exited"


@dataclasses.dataclass
class _TokenBucket:
    """``qps`` tokens a second, at most one stored (upstream's burst of 1)."""

    qps: float
    tokens: float = 1.0
    at: float | None = None

    def take(self, now: float) -> float:
        """0 when a token was taken now, else seconds until one is (``inf``: never)."""
        if self.qps <= 0:
            return math.inf
        if self.at is not None:
            self.tokens = min(1.0, self.tokens + (now - self.at) * self.qps)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.qps


class ZoneStates:
    """Per-zone readiness counts, states and taint rate limiters."""

    def __init__(self, *, eviction_qps: float = 0.1, secondary_eviction_qps: float = 0.01,
                 unhealthy_zone_threshold: float = 0.55, large_cluster_size: int = 50) -> None:
        self.eviction_qps = eviction_qps
        self.secondary_eviction_qps = secondary_eviction_qps
        self.unhealthy_zone_threshold = unhealthy_zone_threshold
        self.large_cluster_size = large_cluster_size
        self._nodes: dict[str, tuple[str, bool]] = {}
        self.states: dict[str, ZoneState] = {}
        self._limiters: dict[str, _TokenBucket] = {}
        self.master_disruption = False
        self._dirty = False

    def observe(self, node: str, zone: str, ready: bool) -> None:
        if self._nodes.get(node) != (zone, ready):
            self._nodes[node] = (zone, ready)
            self._dirty = True

    def forget(self, node: str) -> None:
        if self._nodes.pop(node, None) is not None:
            self._dirty = True

    def _counts(self) -> dict[str, tuple[int, int]]:
        counts: dict[str, tuple[int, int]] = {}
        for zone, ready in self._nodes.values():
            good, bad = counts.get(zone, (0, 0))
            counts[zone] = (good + 1, bad) if ready else (good, bad + 1)
        return counts

    def _state(self, ready: int, not_ready: int) -> ZoneState:
        if ready == 0 and not_ready > 0:
            return ZoneState.FULL_DISRUPTION
        if not_ready > 2 and not_ready / (ready + not_ready) >= self.unhealthy_zone_threshold:
            return ZoneState.PARTIAL_DISRUPTION
        return ZoneState.NORMAL

    def _qps(self, state: ZoneState, size: int) -> float:
        if state is ZoneState.PARTIAL_DISRUPTION:
            return self.secondary_eviction_qps if size > self.large_cluster_size else 0.0
        return self.eviction_qps

    def _set_limiter(self, zone: str, qps: float) -> None:
        limiter = self._limiters.get(zone)
        if limiter is None:
            self._limiters[zone] = _TokenBucket(qps)
        elif limiter.qps != qps:
            limiter.qps = qps
            limiter.tokens = min(limiter.tokens, 1.0)

    def refresh(self) -> Transition:
        """Recompute the zones' states after readiness changed (upstream
        ``handleDisruption``); cheap when nothing did."""
        if not self._dirty:
            return Transition.NONE
        self._dirty = False
        counts = self._counts()
        new = {zone: self._state(*c) for zone, c in counts.items()}
        for zone in list(self.states):
            if zone not in counts:
                del self.states[zone]
                self._limiters.pop(zone, None)
        for zone in new:
            self.states.setdefault(zone, ZoneState.INITIAL)
        all_now = bool(new) and all(s is ZoneState.FULL_DISRUPTION for s in new.values())
        all_before = all(s is ZoneState.FULL_DISRUPTION for s in self.states.values())
        if all_now and all_before:
            return Transition.NONE
        if all_now:
            for zone in self.states:
                self._set_limiter(zone, 0.0)
                self.states[zone] = ZoneState.FULL_DISRUPTION
            self.master_disruption = True
            return Transition.ENTERED_MASTER_DISRUPTION
        exiting = all_before and self.master_disruption
        for zone, state in new.items():
            if exiting or self.states[zone] is not state or zone not in self._limiters:
                self._set_limiter(zone, self._qps(state, sum(counts[zone])))
                self.states[zone] = state
        if exiting:
            self.master_disruption = False
            return Transition.EXITED_MASTER_DISRUPTION
        return Transition.NONE

    def may_taint(self, zone: str, now: float) -> float:
        """0 when a NoExecute taint may go on a node of ``zone`` now (the token is
        spent), else how long to wait (``inf`` when the zone does not taint at all)."""
        if self.master_disruption:
            return math.inf
        limiter = self._limiters.get(zone)
        if limiter is None:
            limiter = self._limiters[zone] = _TokenBucket(self.eviction_qps)
        return limiter.take(now)
