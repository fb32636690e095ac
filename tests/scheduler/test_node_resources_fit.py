"""NodeResourcesFit: every shortfall reported; LeastAllocated scoring."""

from __future__ import annotations

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod, scores


def test_fits_when_requests_fit_in_what_is_left() -> None:
    existing = make_pod("e", node_name="a", cpu="3", memory="6Gi")
    statuses = filter_statuses("NodeResourcesFit", make_pod("p", cpu="1", memory="2Gi"),
                               [make_node("a")], [existing])
    assert statuses["a"].is_success


def test_every_insufficient_resource_is_listed() -> None:
    existing = make_pod("e", node_name="a", cpu="3500m", memory="7Gi",
                        requests={"ephemeral-storage": "9Gi"})
    pod = make_pod("p", cpu="1", memory="2Gi", requests={"ephemeral-storage": "2Gi"})
    node = make_node("a", allocatable={"ephemeral-storage": "10Gi"})
    status = filter_statuses("NodeResourcesFit", pod, [node], [existing])["a"]
    assert status.reasons == (
        "Insufficient cpu", "Insufficient memory", "Insufficient ephemeral-storage")
    assert status.code is Code.UNSCHEDULABLE  # evicting pods would help


def test_request_larger_than_the_node_is_unresolvable() -> None:
    status = filter_statuses("NodeResourcesFit", make_pod("p", cpu="5"), [make_node("a")])["a"]
    assert status.reasons == ("Insufficient cpu",)
    assert status.code is Code.UNSCHEDULABLE_AND_UNRESOLVABLE


def test_too_many_pods() -> None:
    existing = [make_pod(f"e{i}", node_name="a") for i in range(2)]
    status = filter_statuses("NodeResourcesFit", make_pod("p"), [make_node("a", pods="2")],
                             existing)["a"]
    assert status.reasons == ("Too many pods",)


def test_extended_resources() -> None:
    node = make_node("a", allocatable={"example.com/gpu": "1"})
    ok = filter_statuses("NodeResourcesFit", make_pod("p", requests={"example.com/gpu": "1"}),
                         [node])
    assert ok["a"].is_success
    too_many = filter_statuses(
        "NodeResourcesFit", make_pod("p", requests={"example.com/gpu": "2"}), [node])
    assert too_many["a"].reasons == ("Insufficient example.com/gpu",)
    absent = filter_statuses(
        "NodeResourcesFit", make_pod("p", requests={"example.com/fpga": "1"}), [node])
    assert absent["a"].reasons == ("Insufficient example.com/fpga",)


def test_init_containers_and_overhead_count() -> None:
    pod = make_pod("p", cpu="100m", overhead={"cpu": "100m"}, init_containers=[
        {"name": "i", "resources": {"requests": {"cpu": "3950m"}}}])
    # max(100m, 3950m) + 100m overhead = 4050m > 4 cpu
    status = filter_statuses("NodeResourcesFit", pod, [make_node("a")])["a"]
    assert status.reasons == ("Insufficient cpu",)


def test_least_allocated_score_uses_upstream_formula() -> None:
    nodes = [make_node("empty"), make_node("half")]
    existing = make_pod("e", node_name="half", cpu="2", memory="4Gi")
    # empty: cpu (4000-1000)*100/4000 = 75, memory (8-2)/8 = 75 -> 75
    # half: cpu (4000-3000)/4000 = 25, memory (8-6)/8 = 25 -> 25
    got = scores("NodeResourcesFit", make_pod("p", cpu="1", memory="2Gi"), nodes, [existing])
    assert got == {"empty": 75, "half": 25}


def test_best_effort_pods_score_with_default_requests() -> None:
    nodes = [make_node("a", cpu="1", memory="1Gi")]
    # 100m of 1000m -> 90; 200Mi of 1024Mi -> (1024-200)*100//1024 = 80 -> (90+80)//2 = 85
    assert scores("NodeResourcesFit", make_pod("p"), nodes) == {"a": 85}
