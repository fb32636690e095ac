"""The scheduling framework: one profile's plugins run over one pod and one snapshot.

``Framework.schedule`` is upstream's ``schedulePod`` plus the PostFilter step of
``schedulingCycle``: pre_filter → filter (nodes sampled per ``percentageOfNodesToScore``,
starting where the previous cycle stopped so that load spreads over all nodes) →
post_filter (preemption) when nothing fits → pre_score → score → normalize → weights →
the highest total, ties broken at random. It is pure: it decides and reports, and the
wiring binds, assumes, deletes victims and writes ``nominatedNodeName``.

The filter loop is the hot path (hundreds of nodes x several plugins per pod), so the
framework resolves each profile to lists of bound methods once, and plugins return shared
``Status`` instances for the common cases.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kubling.scheduler import interface
from kubling.scheduler.interface import (
    MAX_NODE_SCORE,
    SUCCESS,
    Code,
    CycleState,
    FilterPlugin,
    Handle,
    NormalizeScorePlugin,
    Plugin,
    PostFilterPlugin,
    PostFilterResult,
    PreFilterExtensions,
    PreFilterPlugin,
    PreFilterResult,
    PreScorePlugin,
    ScorePlugin,
    Status,
)
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.owners import OwnerSelectors
from kubling.scheduler.snapshot import Snapshot

# The extension-point protocols live in ``interface`` (plugins import only that); they are
# re-exported here so that the framework module reads as the whole contract.
__all__ = [
    "DEFAULT_SCHEDULER_NAME",
    "MAX_NODE_SCORE",
    "NO_NODES_AVAILABLE",
    "Code",
    "CycleState",
    "FilterPlugin",
    "FitError",
    "Framework",
    "Handle",
    "NodeInfo",
    "NormalizeScorePlugin",
    "PluginFactory",
    "PluginSpec",
    "PodInfo",
    "PostFilterPlugin",
    "PostFilterResult",
    "PreFilterExtensions",
    "PreFilterPlugin",
    "PreFilterResult",
    "PreScorePlugin",
    "Profile",
    "ScheduleResult",
    "SchedulingError",
    "ScorePlugin",
    "Status",
    "num_feasible_nodes_to_find",
]

DEFAULT_SCHEDULER_NAME = "default-scheduler"
NO_NODES_AVAILABLE = "no nodes available to schedule pods"

#: Upstream's bounds for the adaptive percentage of nodes to score.
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5

#: A factory gets the plugin's arguments from the profile and the framework as its handle.
PluginFactory = Callable[[Mapping[str, Any], Handle], Plugin]


class SchedulingError(Exception):
    """A plugin failed with ``Code.ERROR``: the pod goes to backoff, not to unschedulable."""


@dataclasses.dataclass(frozen=True, slots=True)
class PluginSpec:
    """One enabled plugin: its registry name, its score weight, its arguments."""

    name: str
    weight: int = 1
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class Profile:
    """A ``KubeSchedulerProfile``: pods choose one by ``spec.schedulerName``.

    ``plugins=None`` means the default plugin set (``kubling.scheduler.plugins.DEFAULTS``).
    ``percentage_of_nodes_to_score`` of ``None`` or 0 selects upstream's adaptive formula.
    """

    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    plugins: tuple[PluginSpec, ...] | None = None
    percentage_of_nodes_to_score: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleResult:
    suggested_host: str
    evaluated_nodes: int
    feasible_nodes: int


@dataclasses.dataclass(slots=True)
class FitError:
    """No node fits; ``message`` is what upstream puts in the FailedScheduling event.

    When preemption found room, ``nominated_node`` and ``victims`` say where and at whose
    expense; the pod itself still goes back to the queue, as upstream.
    """

    pod: PodInfo
    num_all_nodes: int
    statuses: dict[str, Status]
    pre_filter_message: str = ""
    post_filter_message: str = ""
    unschedulable_plugins: frozenset[str] = frozenset()
    nominated_node: str | None = None
    victims: tuple[Mapping[str, Any], ...] = ()

    @property
    def message(self) -> str:
        if self.num_all_nodes == 0:
            return NO_NODES_AVAILABLE
        text = f"0/{self.num_all_nodes} nodes are available:"
        if self.pre_filter_message:
            text += f" {self.pre_filter_message}."
        else:
            histogram: dict[str, int] = {}
            for status in self.statuses.values():
                for reason in status.reasons:
                    histogram[reason] = histogram.get(reason, 0) + 1
            # Upstream sorts the rendered "count reason" strings, so "10 x" sorts before "2 y".
            lines = sorted(f"{count} {reason}" for reason, count in histogram.items())
            if lines:
                text += f" {', '.join(lines)}."
        if self.post_filter_message:
            text += " " + self.post_filter_message  # upstream adds no separator here
        return text

    def __str__(self) -> str:
        return self.message


def _one_by_one(
    score: Callable[[CycleState, PodInfo, NodeInfo], int],
) -> Callable[[CycleState, PodInfo, Sequence[NodeInfo]], list[int]]:
    """A plugin's per-node ``score`` as a whole-list scorer."""
    def score_nodes(state: CycleState, pod: PodInfo, nodes: Sequence[NodeInfo]) -> list[int]:
        return [score(state, pod, node) for node in nodes]
    return score_nodes


def num_feasible_nodes_to_find(percentage: int | None, num_all_nodes: int) -> int:
    """How many feasible nodes are enough (upstream ``numFeasibleNodesToFind``).

    Under 100 nodes every node is checked. Otherwise the percentage is the profile's, or
    adaptive: 50% minus 1% per 125 nodes, floored at 5%; and never fewer than 100 nodes.
    """
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND:
        return num_all_nodes
    pct = percentage or 0
    if pct <= 0:
        pct = max(50 - num_all_nodes // 125, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    if pct >= 100:
        return num_all_nodes
    return max(num_all_nodes * pct // 100, MIN_FEASIBLE_NODES_TO_FIND)


class Framework:
    """One profile, instantiated: plugin instances sorted by extension point."""

    def __init__(
        self,
        profile: Profile | None = None,
        registry: Mapping[str, PluginFactory] | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        from kubling.scheduler import plugins  # the registry imports plugin modules

        self.profile = profile or Profile()
        self.rng = rng or random.Random()
        #: Set by the scheduler once its Service and controller caches run.
        self.owner_selectors: OwnerSelectors | None = None
        registry = plugins.REGISTRY if registry is None else registry
        specs = self.profile.plugins if self.profile.plugins is not None else plugins.DEFAULTS
        self.plugins: list[Plugin] = []
        self._weights: dict[str, int] = {}
        for spec in specs:
            if spec.name not in registry:
                raise ValueError(f"plugin {spec.name!r} is not registered")
            self.plugins.append(registry[spec.name](spec.args, self))
            self._weights[spec.name] = spec.weight or 1
        self.pre_filter_plugins = [
            p for p in self.plugins if isinstance(p, interface.PreFilterPlugin)
        ]
        self.filter_plugins = [p for p in self.plugins if isinstance(p, interface.FilterPlugin)]
        self.extension_plugins = [
            p for p in self.plugins if isinstance(p, interface.PreFilterExtensions)
        ]
        self.post_filter_plugins = [
            p for p in self.plugins if isinstance(p, interface.PostFilterPlugin)
        ]
        self.pre_score_plugins = [
            p for p in self.plugins if isinstance(p, interface.PreScorePlugin)
        ]
        self.score_plugins = [p for p in self.plugins if isinstance(p, interface.ScorePlugin)]
        # Resolved once: runtime protocol checks are far too slow for every cycle.
        self._scorers = [
            (
                p.name,
                p.score_nodes if isinstance(p, interface.BatchScorePlugin)
                else _one_by_one(p.score),
                self._weights[p.name],
                p.normalize_score if isinstance(p, interface.NormalizeScorePlugin) else None,
            )
            for p in self.score_plugins
        ]
        self._next_start = 0

    @property
    def scheduler_name(self) -> str:
        return self.profile.scheduler_name

    # -- the cycle ---------------------------------------------------------------------

    def schedule(
        self, pod: Mapping[str, Any] | PodInfo, snapshot: Snapshot
    ) -> ScheduleResult | FitError:
        """Pick a node for ``pod``. Raises :class:`SchedulingError` if a plugin errs."""
        pod_info = pod if isinstance(pod, PodInfo) else PodInfo(pod)
        state = CycleState()
        if not snapshot.node_infos:
            return FitError(pod_info, 0, {})
        feasible, evaluated, fit_error = self._find_nodes_that_fit(state, pod_info, snapshot)
        if fit_error is not None:
            self._run_post_filter(state, pod_info, snapshot, fit_error)
            return fit_error
        if len(feasible) == 1:
            return ScheduleResult(feasible[0].name, evaluated, 1)
        totals = self._prioritize(state, pod_info, snapshot, feasible)
        return ScheduleResult(self._select_host(feasible, totals), evaluated, len(feasible))

    def _find_nodes_that_fit(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[list[NodeInfo], int, FitError | None]:
        """(feasible nodes, how many nodes were evaluated, the FitError if none is feasible)."""
        all_nodes = snapshot.node_infos
        result, status = self.run_pre_filter_plugins(state, pod, snapshot)
        if not status.is_success:
            if status.code is Code.ERROR:
                raise SchedulingError(status.message)
            return [], 0, FitError(
                pod, len(all_nodes), dict.fromkeys((n.name for n in all_nodes), status),
                pre_filter_message=status.message,
                unschedulable_plugins=frozenset({status.plugin}),
            )
        statuses: dict[str, Status] = {}
        nodes = all_nodes
        if result is not None and result.node_names is not None:
            plugins = " ".join(sorted(result.plugins))
            absent = Status(
                Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                (f"node(s) didn't satisfy plugin(s) [{plugins}]",),
                plugin=plugins,
            )
            nodes = [n for n in all_nodes if n.name in result.node_names]
            for node in all_nodes:
                if node.name not in result.node_names:
                    statuses[node.name] = absent
        feasible: list[NodeInfo] = []
        nominated_name = ((pod.pod.get("status") or {}).get("nominatedNodeName")) or ""
        nominated_node = snapshot.get(nominated_name) if nominated_name else None
        if nominated_node is not None and nominated_node in nodes:
            # Preemption made room there for this pod: try it first, as upstream does.
            if self.run_filter_plugins_with_nominated_pods(
                state, pod, nominated_node, snapshot
            ).is_success:
                feasible = [nominated_node]
        if not feasible:
            feasible = self._filter_nodes(state, pod, snapshot, nodes, statuses)
        evaluated = len(feasible) + len(statuses)
        if feasible:
            return feasible, evaluated, None
        plugins_failed = frozenset(s.plugin for s in statuses.values() if s.plugin)
        return [], evaluated, FitError(
            pod, len(all_nodes), statuses, unschedulable_plugins=plugins_failed
        )

    def _filter_nodes(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: Sequence[NodeInfo],
        statuses: dict[str, Status],
    ) -> list[NodeInfo]:
        """Walk the nodes round-robin from the last start until enough of them fit."""
        count = len(nodes)
        if count == 0:
            return []
        wanted = num_feasible_nodes_to_find(self.profile.percentage_of_nodes_to_score, count)
        filters = [
            (p.name, p.filter) for p in self.filter_plugins if p.name not in state.skip_filter
        ]
        nominated = snapshot.nominated
        start = self._next_start % count
        feasible: list[NodeInfo] = []
        processed = 0
        for node in (*nodes[start:], *nodes[:start]):
            processed += 1
            if nominated and node.name in nominated:
                status = self.run_filter_plugins_with_nominated_pods(state, pod, node, snapshot)
            else:
                status = SUCCESS
                for name, run in filters:
                    result = run(state, pod, node)
                    if result.code:  # Code.SUCCESS is 0: any other code stops the chain
                        status = result.with_plugin(name)
                        break
            if status.code is Code.SUCCESS:
                feasible.append(node)
                if len(feasible) >= wanted:
                    break
            elif status.code is Code.ERROR:
                raise SchedulingError(f"running filter on node {node.name}: {status.message}")
            else:
                statuses[node.name] = status
        self._next_start = (start + processed) % count
        return feasible

    def _prioritize(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, nodes: list[NodeInfo]
    ) -> list[int]:
        for pre in self.pre_score_plugins:
            status = pre.pre_score(state, pod, snapshot, nodes)
            if status.code is Code.SKIP:
                state.skip_score.add(pre.name)
            elif not status.is_success:
                raise SchedulingError(f"{pre.name} pre_score: {status.message}")
        totals = [0] * len(nodes)
        for name, run, weight, normalize in self._scorers:
            if name in state.skip_score:
                continue
            scores = run(state, pod, nodes)
            if normalize is not None:
                normalize(state, pod, nodes, scores)
            totals = [t + s * weight for t, s in zip(totals, scores, strict=True)]
        return totals

    def _select_host(self, nodes: list[NodeInfo], totals: list[int]) -> str:
        """The highest total; among equal totals one is chosen uniformly at random (upstream
        samples a reservoir; picking from the list of ties is the same distribution)."""
        best = max(totals)
        ties = [i for i, total in enumerate(totals) if total == best]
        return nodes[ties[0] if len(ties) == 1 else self.rng.choice(ties)].name

    def _run_post_filter(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot, fit_error: FitError
    ) -> None:
        messages = []
        for plugin in self.post_filter_plugins:
            result, status = plugin.post_filter(state, pod, snapshot, fit_error.statuses)
            if status.is_success:
                if result is not None and result.nominated_node:
                    fit_error.nominated_node = result.nominated_node
                    fit_error.victims = result.victims
                fit_error.post_filter_message = ""
                return
            if status.code is Code.ERROR:
                raise SchedulingError(f"{plugin.name} post_filter: {status.message}")
            if status.message:
                messages.append(status.message)
        fit_error.post_filter_message = ", ".join(messages)

    # -- extension-point runners (also the Handle that plugins get) ----------------------

    def run_pre_filter_plugins(
        self, state: CycleState, pod: PodInfo, snapshot: Snapshot
    ) -> tuple[PreFilterResult | None, Status]:
        merged: PreFilterResult | None = None
        for plugin in self.pre_filter_plugins:
            result, status = plugin.pre_filter(state, pod, snapshot)
            if status.code is Code.SKIP:
                state.skip_filter.add(plugin.name)
                continue
            if not status.is_success:
                return None, status.with_plugin(plugin.name)
            if result is not None and result.node_names is not None:
                result = dataclasses.replace(result, plugins=(plugin.name,))
                merged = result if merged is None else merged.merge(result)
        if merged is not None and merged.node_names is not None and not merged.node_names:
            return None, Status(
                Code.UNSCHEDULABLE_AND_UNRESOLVABLE,
                ("node(s) didn't satisfy plugin(s) simultaneously",),
            )
        return merged, SUCCESS

    def run_filter_plugins(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        for plugin in self.filter_plugins:
            if plugin.name in state.skip_filter:
                continue
            status = plugin.filter(state, pod, node)
            if status.code:
                return status.with_plugin(plugin.name)
        return SUCCESS

    def run_filter_plugins_with_nominated_pods(
        self, state: CycleState, pod: PodInfo, node: NodeInfo, snapshot: Snapshot
    ) -> Status:
        """Filters as if higher-or-equal priority pods nominated to ``node`` were there.

        Run twice when such pods exist, as upstream: with them (room is reserved for them)
        and without them (an affinity must not rely on pods that may never arrive).
        """
        nominated = [
            p for p in snapshot.nominated.get(node.name, ())
            if p.priority >= pod.priority and p.uid != pod.uid
        ]
        if not nominated:
            return self.run_filter_plugins(state, pod, node)
        state_with = state.clone()
        node_with = node.clone()
        for other in nominated:
            node_with.add_pod(other)
            status = self.run_pre_filter_extension_add_pod(
                state_with, pod, other, node_with, snapshot
            )
            if not status.is_success:
                return status
        status = self.run_filter_plugins(state_with, pod, node_with)
        if not status.is_success:
            return status
        return self.run_filter_plugins(state, pod, node)

    def run_pre_filter_extension_add_pod(
        self, state: CycleState, pod: PodInfo, pod_to_add: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status:
        for plugin in self.extension_plugins:
            if plugin.name in state.skip_filter:
                continue
            status = plugin.add_pod(state, pod, pod_to_add, node, snapshot)
            if not status.is_success:
                return status.with_plugin(plugin.name)
        return SUCCESS

    def run_pre_filter_extension_remove_pod(
        self, state: CycleState, pod: PodInfo, pod_to_remove: PodInfo, node: NodeInfo,
        snapshot: Snapshot,
    ) -> Status:
        for plugin in self.extension_plugins:
            if plugin.name in state.skip_filter:
                continue
            status = plugin.remove_pod(state, pod, pod_to_remove, node, snapshot)
            if not status.is_success:
                return status.with_plugin(plugin.name)
        return SUCCESS
