"""Whole-list scoring (``score_nodes``) gives exactly the per-node ``score`` of each node,
and the snapshot's lists of nodes hosting affinity pods stay right as pods come and go."""

from __future__ import annotations

from typing import Any

from kubling.scheduler.interface import BatchScorePlugin, CycleState
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.plugins.balanced_allocation import BalancedAllocation
from kubling.scheduler.plugins.node_resources_fit import NodeResourcesFit
from kubling.scheduler.snapshot import Snapshot
from tests.scheduler.util import make_node, make_pod


def _cluster() -> Snapshot:
    """Nodes empty, half full, full, overcommitted, skewed, and without cpu or memory."""
    nodes = [make_node("empty"), make_node("half"), make_node("full"), make_node("over"),
             make_node("cpu-heavy"), make_node("mem-heavy"),
             make_node("no-cpu", cpu="0"), make_node("no-mem", memory="0"),
             make_node("odd", cpu="3", memory="7Gi")]
    pods = [make_pod("h", node_name="half", cpu="2", memory="4Gi"),
            make_pod("f", node_name="full", cpu="4", memory="8Gi"),
            make_pod("o", node_name="over", cpu="6", memory="9Gi"),
            make_pod("c", node_name="cpu-heavy", cpu="3500m", memory="100Mi"),
            make_pod("m", node_name="mem-heavy", cpu="100m", memory="7Gi"),
            make_pod("b", node_name="odd", cpu="1", memory="333Mi"),
            make_pod("e", node_name="odd")]
    return Snapshot(nodes, pods)


def _pods() -> list[PodInfo]:
    return [PodInfo(make_pod("p1", cpu="100m", memory="128Mi")),
            PodInfo(make_pod("p2", cpu="1", memory="5Gi")),
            PodInfo(make_pod("p3")),  # best effort: the non-zero defaults count
            PodInfo(make_pod("p4", cpu="3")),
            PodInfo(make_pod("p5", memory="1Gi"))]


def _same_scores(plugin: Any) -> None:
    assert isinstance(plugin, BatchScorePlugin)
    snapshot = _cluster()
    for pod in _pods():
        state = CycleState()
        expected = [plugin.score(state, pod, node) for node in snapshot.node_infos]
        assert plugin.score_nodes(state, pod, snapshot.node_infos) == expected, pod.name


def test_least_allocated_batch_matches_per_node() -> None:
    _same_scores(NodeResourcesFit({}))


def test_most_allocated_batch_matches_per_node() -> None:
    _same_scores(NodeResourcesFit({"scoringStrategy": {"type": "MostAllocated"}}))


def test_weighted_resources_batch_matches_per_node() -> None:
    _same_scores(NodeResourcesFit({"scoringStrategy": {"resources": [
        {"name": "cpu", "weight": 3}, {"name": "memory", "weight": 1}]}}))


def test_balanced_allocation_batch_matches_per_node() -> None:
    _same_scores(BalancedAllocation({}))


def test_affinity_node_lists_follow_pods() -> None:
    snapshot = Snapshot([make_node("a"), make_node("b")], [])
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    plain = PodInfo(make_pod("plain", node_name="a"))
    spread = PodInfo(make_pod("spread", node_name="b", affinity=anti))
    assert snapshot.nodes_with_affinity_pods() == []
    snapshot.add_pod(plain)
    assert snapshot.nodes_with_required_anti_affinity_pods() == []
    snapshot.add_pod(spread)
    assert [n.name for n in snapshot.nodes_with_affinity_pods()] == ["b"]
    assert [n.name for n in snapshot.nodes_with_required_anti_affinity_pods()] == ["b"]
    snapshot.add_pod(spread, "a")  # moved
    assert [n.name for n in snapshot.nodes_with_required_anti_affinity_pods()] == ["a"]
    snapshot.remove_pod(plain)
    assert [n.name for n in snapshot.nodes_with_affinity_pods()] == ["a"]
    snapshot.remove_pod(spread)
    assert snapshot.nodes_with_affinity_pods() == []
    snapshot.add_pod(spread, "b")
    snapshot.update_node(make_node("b", cpu="8"))  # a new NodeInfo keeps its pods
    listed = snapshot.nodes_with_affinity_pods()
    assert [n.name for n in listed] == ["b"] and listed[0] is snapshot.get("b")
