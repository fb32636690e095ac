"""The framework: the filter → score pipeline, node sampling, and upstream's FitError text."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import pytest

from kubling.scheduler import framework as fw_mod
from kubling.scheduler.framework import (
    FitError,
    Framework,
    PluginSpec,
    Profile,
    ScheduleResult,
    SchedulingError,
    num_feasible_nodes_to_find,
)
from kubling.scheduler.interface import SUCCESS, CycleState, Handle, Status
from kubling.scheduler.nodeinfo import NodeInfo, PodInfo
from kubling.scheduler.snapshot import Snapshot
from tests.scheduler.util import framework, make_node, make_pod

CONTROL_PLANE = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def test_fit_error_message_matches_upstream_for_a_mixed_case() -> None:
    snapshot = Snapshot([
        make_node("cp1", taints=[CONTROL_PLANE]),
        make_node("cp2", taints=[CONTROL_PLANE]),
        make_node("worker", cpu="2"),
    ])
    result = framework().schedule(make_pod("big", cpu="3"), snapshot)
    assert isinstance(result, FitError)
    assert result.message == (
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }. preemption: 0/3 nodes are available: "
        "3 Preemption is not helpful for scheduling.")
    assert result.unschedulable_plugins == {"TaintToleration", "NodeResourcesFit"}


def test_fit_error_sorts_rendered_reasons_as_strings_like_upstream() -> None:
    nodes = [make_node(f"u{i}", unschedulable=True) for i in range(10)]
    nodes += [make_node(f"t{i}", taints=[CONTROL_PLANE]) for i in range(2)]
    result = framework().schedule(make_pod("p"), Snapshot(nodes))
    assert isinstance(result, FitError)
    # "10 ..." sorts before "2 ..." because upstream sorts the formatted strings.
    assert result.message.startswith(
        "0/12 nodes are available: 10 node(s) were unschedulable, 2 node(s) had untolerated "
        "taint {node-role.kubernetes.io/control-plane: }.")


def test_fit_error_without_nodes() -> None:
    result = framework().schedule(make_pod("p"), Snapshot())
    assert isinstance(result, FitError)
    assert result.message == "no nodes available to schedule pods"


def test_scoring_picks_the_least_allocated_node() -> None:
    nodes = [make_node(n) for n in ("busy", "idle", "half")]
    pods = [make_pod("b", node_name="busy", cpu="3", memory="6Gi"),
            make_pod("h", node_name="half", cpu="2", memory="4Gi")]
    for seed in range(5):
        fw = Framework(rng=random.Random(seed))
        result = fw.schedule(make_pod("p", cpu="500m", memory="512Mi"), Snapshot(nodes, pods))
        assert isinstance(result, ScheduleResult)
        assert result.suggested_host == "idle"
        assert result.feasible_nodes == 3


def test_single_feasible_node_is_chosen_without_scoring() -> None:
    snapshot = Snapshot([make_node("a"), make_node("b", unschedulable=True)])
    result = framework().schedule(make_pod("p"), snapshot)
    assert result == ScheduleResult("a", evaluated_nodes=2, feasible_nodes=1)


def test_ties_are_broken_at_random() -> None:
    snapshot = Snapshot([make_node(f"n{i}") for i in range(4)])
    fw = Framework(rng=random.Random(42))
    chosen = set()
    for _ in range(40):
        result = fw.schedule(make_pod("p", cpu="100m"), snapshot)
        assert isinstance(result, ScheduleResult)
        chosen.add(result.suggested_host)
    assert chosen == {"n0", "n1", "n2", "n3"}


@pytest.mark.parametrize(("nodes", "percentage", "expected"), [
    (50, None, 50),       # fewer than 100 nodes: all of them
    (99, 10, 99),
    (100, None, 100),     # 50% of 100 is 50, but never fewer than 100
    (1000, None, 420),    # 50 - 1000/125 = 42%
    (5000, None, 500),    # 50 - 40 = 10%
    (6000, None, 300),    # 50 - 48 = 2% -> floored at 5%
    (1000, 20, 200),      # the profile's own percentage
    (1000, 5, 100),       # ... but still at least 100 nodes
    (1000, 100, 1000),
])
def test_num_feasible_nodes_to_find(nodes: int, percentage: int | None, expected: int) -> None:
    assert num_feasible_nodes_to_find(percentage, nodes) == expected


def test_filtering_stops_after_enough_feasible_nodes_and_rotates_start() -> None:
    snapshot = Snapshot([make_node(f"n{i:03d}") for i in range(200)])
    fw = framework("NodeResourcesFit", percentage_of_nodes_to_score=10)  # 10% -> min 100
    first = fw.schedule(make_pod("p"), snapshot)
    assert isinstance(first, ScheduleResult)
    assert (first.evaluated_nodes, first.feasible_nodes) == (100, 100)
    assert first.suggested_host < "n100"
    second = fw.schedule(make_pod("q"), snapshot)
    assert isinstance(second, ScheduleResult)
    assert second.suggested_host >= "n100"  # the next cycle starts where this one stopped


def test_filtering_records_rejections_and_keeps_going() -> None:
    nodes = [make_node(f"n{i:03d}", unschedulable=i < 150) for i in range(200)]
    result = framework().schedule(make_pod("p"), Snapshot(nodes))
    assert isinstance(result, ScheduleResult)
    assert result.feasible_nodes == 50
    assert result.evaluated_nodes == 200


def test_pre_filter_result_narrows_nodes_and_names_the_plugin() -> None:
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}
    snapshot = Snapshot([make_node("a"), make_node("b", cpu="1"), make_node("c")])
    result = framework().schedule(make_pod("p", cpu="2", affinity=affinity), snapshot)
    assert isinstance(result, FitError)
    assert result.message.startswith(
        "0/3 nodes are available: 1 Insufficient cpu, "
        "2 node(s) didn't satisfy plugin(s) [NodeAffinity].")


def test_nominated_node_is_tried_first() -> None:
    nodes = [make_node("a"), make_node("b"), make_node("c")]
    pods = [make_pod("x", node_name="a", cpu="3")]
    pod = make_pod("p", cpu="100m")
    pod["status"]["nominatedNodeName"] = "a"
    result = framework().schedule(pod, Snapshot(nodes, pods))
    assert result == ScheduleResult("a", evaluated_nodes=1, feasible_nodes=1)


def test_room_reserved_for_nominated_pods_of_higher_priority() -> None:
    snapshot = Snapshot([make_node("a", cpu="1"), make_node("b", cpu="1")])
    snapshot.add_nominated_pod(PodInfo(make_pod("vip", cpu="800m", priority=100)), "a")
    result = framework().schedule(make_pod("p", cpu="500m", priority=0), snapshot)
    assert isinstance(result, ScheduleResult) and result.suggested_host == "b"
    higher = framework().schedule(make_pod("q", cpu="500m", priority=1000), Snapshot(
        [make_node("a", cpu="1")]))
    assert isinstance(higher, ScheduleResult)


class _Boom:
    name = "Boom"

    def filter(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> Status:
        return Status.error("disk on fire")


class _PreferB:
    name = "PreferB"

    def score(self, state: CycleState, pod: PodInfo, node: NodeInfo) -> int:
        return 100 if node.name == "b" else 0


def _registry(**extra: Any) -> Mapping[str, fw_mod.PluginFactory]:
    from kubling.scheduler import plugins

    def factory(cls: Any) -> fw_mod.PluginFactory:
        def new(args: Mapping[str, Any], handle: Handle) -> Any:
            return cls()
        return new
    return {**plugins.REGISTRY, **{k: factory(v) for k, v in extra.items()}}


def test_plugin_error_raises_scheduling_error() -> None:
    fw = Framework(Profile(plugins=(PluginSpec("Boom"),)), _registry(Boom=_Boom))
    with pytest.raises(SchedulingError, match="disk on fire"):
        fw.schedule(make_pod("p"), Snapshot([make_node("a")]))


def test_weights_multiply_scores() -> None:
    profile = Profile(plugins=(PluginSpec("NodeResourcesFit", weight=1),
                               PluginSpec("PreferB", weight=5)))
    fw = Framework(profile, _registry(PreferB=_PreferB), rng=random.Random(0))
    snapshot = Snapshot([make_node("a"), make_node("b")],
                        [make_pod("x", node_name="b", cpu="3")])
    result = fw.schedule(make_pod("p", cpu="100m"), snapshot)
    assert isinstance(result, ScheduleResult) and result.suggested_host == "b"


def test_unknown_plugin_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="not registered"):
        Framework(Profile(plugins=(PluginSpec("Nope"),)))


def test_plugins_are_sorted_by_extension_point() -> None:
    fw = Framework()
    assert [p.name for p in fw.filter_plugins][:3] == [
        "NodeUnschedulable", "NodeName", "TaintToleration"]
    assert {p.name for p in fw.post_filter_plugins} == {"DefaultPreemption"}
    state, pod, snapshot = CycleState(), PodInfo(make_pod("p")), Snapshot([make_node("a")])
    assert fw.run_pre_filter_plugins(state, pod, snapshot) == (None, SUCCESS)
    assert fw.run_filter_plugins(state, pod, snapshot.node_infos[0]) is SUCCESS


def test_assume_updates_the_snapshot_for_the_next_cycle() -> None:
    snapshot = Snapshot([make_node("a", cpu="1")])
    fw = framework()
    first = PodInfo(make_pod("p1", cpu="600m"))
    result = fw.schedule(first, snapshot)
    assert isinstance(result, ScheduleResult)
    snapshot.assume(first, result.suggested_host)
    second = fw.schedule(make_pod("p2", cpu="600m"), snapshot)
    assert isinstance(second, FitError)
    assert second.message.startswith("0/1 nodes are available: 1 Insufficient cpu.")
    snapshot.remove_pod(first)
    assert isinstance(fw.schedule(make_pod("p2", cpu="600m"), snapshot), ScheduleResult)
