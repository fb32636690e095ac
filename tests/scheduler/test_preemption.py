"""Preemption: victims, the choice of node, PDBs, eligibility, and upstream's messages."""

from __future__ import annotations

import random
from typing import Any

from kubling.scheduler import preemption
from kubling.scheduler.framework import FitError
from kubling.scheduler.interface import Status
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.preemption import Candidate, pick_one_node
from kubling.scheduler.snapshot import Snapshot
from tests.scheduler.util import framework, make_node, make_pod


def low(name: str, node: str, cpu: str = "1", priority: int = 0, **kw: Any) -> dict[str, Any]:
    return make_pod(name, node_name=node, cpu=cpu, priority=priority, **kw)


def schedule(pod: dict[str, Any], nodes: list[dict[str, Any]], pods: list[dict[str, Any]],
             **kw: Any) -> FitError:
    result = framework().schedule(pod, Snapshot(nodes, pods, **kw))
    assert isinstance(result, FitError)
    return result


def victim_names(result: FitError) -> list[str]:
    return sorted(v["metadata"]["name"] for v in result.victims)


def test_evicts_just_enough_lower_priority_pods() -> None:
    pods = [low("v1", "a", priority=1), low("v2", "a", priority=2),
            low("v3", "a", priority=3), low("v4", "a", priority=4)]
    result = schedule(make_pod("vip", cpu="2", priority=100), [make_node("a")], pods)
    assert result.nominated_node == "a"
    assert victim_names(result) == ["v1", "v2"]  # the most important are reprieved first
    assert result.message == "0/1 nodes are available: 1 Insufficient cpu."


def test_prefers_the_node_with_the_least_important_victims() -> None:
    nodes = [make_node("a", cpu="2"), make_node("b", cpu="2"), make_node("c", cpu="2")]
    pods = [low("a1", "a", cpu="2", priority=50),
            low("b1", "b", priority=10), low("b2", "b", priority=10),
            low("c1", "c", cpu="2", priority=10)]
    result = schedule(make_pod("vip", cpu="2", priority=100), nodes, pods)
    # b and c both have highest victim priority 10; c sacrifices fewer priority points.
    assert (result.nominated_node, victim_names(result)) == ("c", ["c1"])


def test_pdb_violations_are_avoided_when_possible() -> None:
    nodes = [make_node("a", cpu="1"), make_node("b", cpu="1")]
    pods = [low("guarded", "a", priority=0, labels={"app": "db"}),
            low("free", "b", priority=5)]
    pdb = {"metadata": {"name": "db", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"app": "db"}}},
           "status": {"disruptionsAllowed": 0}}
    result = schedule(make_pod("vip", cpu="1", priority=100), nodes, pods, pdbs=[pdb])
    assert (result.nominated_node, victim_names(result)) == ("b", ["free"])


def test_equal_priority_pods_are_not_victims() -> None:
    nodes = [make_node("a", cpu="1"), make_node("b", cpu="1")]
    pods = [low("x", "a"), low("y", "b")]
    result = schedule(make_pod("p", cpu="1"), nodes, pods)
    assert result.nominated_node is None
    assert result.message == (
        "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: "
        "2 No preemption victims found for incoming pod.")


def test_mixed_statuses_in_the_preemption_message() -> None:
    nodes = [make_node("a", cpu="1"), make_node("cp", taints=[
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])]
    result = schedule(make_pod("p", cpu="1"), nodes, [low("x", "a")])
    assert result.message == (
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
        "{node-role.kubernetes.io/control-plane: }. preemption: 0/2 nodes are available: "
        "1 No preemption victims found for incoming pod, "
        "1 Preemption is not helpful for scheduling.")


def test_preemption_policy_never() -> None:
    pod = make_pod("p", cpu="1", priority=100, preemptionPolicy="Never")
    result = schedule(pod, [make_node("a", cpu="1")], [low("x", "a")])
    assert result.nominated_node is None
    assert result.message == (
        "0/1 nodes are available: 1 Insufficient cpu. "
        "preemption: not eligible due to preemptionPolicy=Never.")


def test_not_eligible_while_earlier_victims_terminate() -> None:
    dying = low("x", "a", cpu="1")
    dying["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    pod = make_pod("p", cpu="1", priority=100)
    pod["status"]["nominatedNodeName"] = "a"
    result = schedule(pod, [make_node("a", cpu="1")], [dying])
    assert result.message.endswith(
        "preemption: not eligible due to a terminating pod on the nominated node.")


def test_preempting_removes_an_anti_affinity_conflict() -> None:
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    pods = [low("web", "a", cpu="100m", labels={"app": "web"}),
            low("other", "a", cpu="100m")]
    result = schedule(make_pod("vip", priority=100, affinity=anti), [make_node("a")], pods)
    assert (result.nominated_node, victim_names(result)) == ("a", ["web"])


def test_unresolvable_nodes_are_skipped() -> None:
    snapshot = Snapshot([make_node("a")], [low("x", "a")])
    statuses = {"a": Status.unschedulable("node(s) were unschedulable", unresolvable=True)}
    result = preemption.preempt(framework(), _state(), PodInfo(make_pod("p", priority=9)),
                                snapshot, statuses, rng=random.Random(0))
    assert result.nominated_node is None
    assert result.status.message == (
        "0/1 nodes are available: 1 Preemption is not helpful for scheduling.")


def _state() -> Any:
    from kubling.scheduler.interface import CycleState

    return CycleState()


def _candidate(node: str, *priorities: int, start: str = "", pdb: int = 0) -> Candidate:
    victims = tuple(PodInfo(make_pod(f"{node}-{i}", priority=p, start_time=start or None))
                    for i, p in enumerate(priorities))
    return Candidate(node, victims, pdb)


def test_pick_one_node_criteria_in_upstream_order() -> None:
    assert pick_one_node([_candidate("a", 1, pdb=1), _candidate("b", 9)]).node == "b"
    assert pick_one_node([_candidate("a", 9), _candidate("b", 1, 1, 1)]).node == "b"
    assert pick_one_node([_candidate("a", 5, 5), _candidate("b", 5, 1)]).node == "b"
    assert pick_one_node([_candidate("a", -5, -5), _candidate("b", -5)]).node == "b"
    older = _candidate("a", 5, start="2024-01-01T00:00:00Z")
    newer = _candidate("b", 5, start="2024-06-01T00:00:00Z")
    assert pick_one_node([older, newer]).node == "b"  # evict the most recently started
    assert pick_one_node([_candidate("a", 5), _candidate("b")]).node == "b"  # no victims
