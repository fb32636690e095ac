"""NodePorts: host port conflicts, with 0.0.0.0 clashing with every address."""

from __future__ import annotations

from kubling.scheduler.interface import Code
from tests.scheduler.util import filter_statuses, make_node, make_pod

REASON = "node(s) didn't have free ports for the requested pod ports"


def port(host_port: int, protocol: str = "TCP", ip: str | None = None) -> dict[str, object]:
    p: dict[str, object] = {"containerPort": 80, "hostPort": host_port, "protocol": protocol}
    if ip:
        p["hostIP"] = ip
    return p


def test_conflicting_host_port_rejected() -> None:
    existing = make_pod("e", node_name="a", ports=[port(8080)])
    statuses = filter_statuses("NodePorts", make_pod("p", ports=[port(8080)]),
                               [make_node("a"), make_node("b")], [existing])
    assert statuses["a"].reasons == (REASON,)
    assert statuses["a"].code is Code.UNSCHEDULABLE
    assert statuses["b"].is_success


def test_other_protocol_or_port_is_free() -> None:
    existing = make_pod("e", node_name="a", ports=[port(8080)])
    for wanted in (port(8080, "UDP"), port(8081)):
        statuses = filter_statuses("NodePorts", make_pod("p", ports=[wanted]),
                                   [make_node("a")], [existing])
        assert statuses["a"].is_success


def test_specific_addresses_only_clash_with_same_or_wildcard() -> None:
    existing = make_pod("e", node_name="a", ports=[port(53, "UDP", "10.0.0.1")])
    same = make_pod("p", ports=[port(53, "UDP", "10.0.0.1")])
    other = make_pod("q", ports=[port(53, "UDP", "10.0.0.2")])
    wildcard = make_pod("r", ports=[port(53, "UDP")])
    nodes = [make_node("a")]
    assert not filter_statuses("NodePorts", same, nodes, [existing])["a"].is_success
    assert filter_statuses("NodePorts", other, nodes, [existing])["a"].is_success
    assert not filter_statuses("NodePorts", wildcard, nodes, [existing])["a"].is_success


def test_container_ports_without_host_port_never_clash() -> None:
    existing = make_pod("e", node_name="a", ports=[{"containerPort": 80}])
    pod = make_pod("p", ports=[{"containerPort": 80}])
    assert filter_statuses("NodePorts", pod, [make_node("a")], [existing])["a"].is_success
