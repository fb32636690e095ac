"""NodeResourcesBalancedAllocation: prefer nodes used evenly across cpu and memory."""

from __future__ import annotations

from tests.scheduler.util import make_node, make_pod, scores


def test_balanced_node_scores_higher() -> None:
    nodes = [make_node("even"), make_node("skewed")]
    existing = [make_pod("e1", node_name="even", cpu="1", memory="2Gi"),
                make_pod("e2", node_name="skewed", cpu="3", memory="0")]
    pod = make_pod("p", cpu="1", memory="2Gi")
    # even: cpu 2/4=.5, mem 4/8=.5 -> 100; skewed: cpu 1.0, mem .25 -> (1-.375)*100 = 62
    assert scores("NodeResourcesBalancedAllocation", pod, nodes, existing) == {
        "even": 100, "skewed": 62}


def test_best_effort_pod_is_skipped() -> None:
    nodes = [make_node("a"), make_node("b")]
    existing = [make_pod("e", node_name="b", cpu="3")]
    assert scores("NodeResourcesBalancedAllocation", make_pod("p"), nodes, existing) == {
        "a": 0, "b": 0}
