"""ServiceLB: the pure assignment, then the controller against a real API server with nodes
registered by hand (no agent: only the Service status is under test here; the e2e module
``tests/e2e/test_services.py`` checks that the published address routes)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubling.client import clock as clocks
from kubling.client import rest
from kubling.controllers import servicelb
from tests.client.helpers import eventually, make_namespace, run
from tests.controllers.test_podgc import controller_running, private_server
from tests.server_fixture import KublingServer

SERVICES = rest.lookup("v1", "services")
NODES = rest.lookup("v1", "nodes")
EVENTS = rest.lookup("v1", "events")
NS = "lb"


def node(name: str, ip: str, *, ready: bool = True, external: str = "",
         labels: dict[str, str] | None = None) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "status": {"addresses": addresses, "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def service(name: str, *ports: int, created: str = "2026-01-01T00:00:00Z",
            lb_class: str = "", svc_type: str = "LoadBalancer", ingress: bool = False,
            node_port: int = 0, labels: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": svc_type, "ports": [
        {"port": p, "protocol": "TCP", **({"nodePort": node_port} if node_port else {})}
        for p in ports]}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    status = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]} if ingress else {}}
    return {"metadata": {"name": name, "namespace": NS, "creationTimestamp": created,
                         "labels": labels or {}}, "spec": spec, "status": status}


# -- the pure assignment -----------------------------------------------------------------


def test_every_ready_node_serves_a_free_port() -> None:
    nodes = [node("a", "10.0.0.1"), node("b", "10.0.0.2"), node("c", "10.0.0.3", ready=False)]
    result = servicelb.assign([service("web", 80, 443)], nodes)
    assert result == {f"{NS}/web": servicelb.Assignment(("a", "b"))}


def test_a_port_goes_to_the_service_holding_it_then_the_oldest() -> None:
    nodes = [node("a", "10.0.0.1")]
    older = service("older", 80, created="2026-01-01T00:00:00Z")
    newer = service("newer", 80, 8080, created="2026-01-02T00:00:00Z")
    other = service("udp-ok", 81, created="2026-01-03T00:00:00Z")
    result = servicelb.assign([newer, older, other], nodes)
    assert result[f"{NS}/older"].nodes == ("a",)
    assert result[f"{NS}/newer"].nodes == ()
    assert result[f"{NS}/newer"].reason == f"port 80/TCP is used by service {NS}/older"
    assert result[f"{NS}/udp-ok"].nodes == ("a",)
    holding = service("newer", 80, created="2026-01-02T00:00:00Z", ingress=True)
    result = servicelb.assign([holding, older], nodes)
    assert result[f"{NS}/newer"].nodes == ("a",) and result[f"{NS}/older"].nodes == ()


def test_other_classes_and_other_types_are_not_ours() -> None:
    nodes = [node("a", "10.0.0.1")]
    result = servicelb.assign([service("metallb", 80, lb_class="metallb.io/x"),
                               service("plain", 80, svc_type="ClusterIP"),
                               service("mine", 80)], nodes)
    assert list(result) == [f"{NS}/mine"] and result[f"{NS}/mine"].nodes == ("a",)


def test_node_ports_and_the_enablelb_label_and_pools() -> None:
    nodes = [node("a", "10.0.0.1", labels={servicelb.ENABLE_LB_LABEL: "true",
                                           servicelb.LB_POOL_LABEL: "edge"}),
             node("b", "10.0.0.2", labels={servicelb.ENABLE_LB_LABEL: "false"}),
             node("c", "10.0.0.3")]
    nodeport = service("np", 8080, svc_type="NodePort", node_port=30080)
    result = servicelb.assign([nodeport, service("web", 30080), service("self", 30081,
                                                                        node_port=30081)],
                              nodes)
    assert result[f"{NS}/web"].nodes == ()
    assert "port 30080/TCP is used by the node port of service lb/np" in result[f"{NS}/web"].reason
    assert result[f"{NS}/self"].nodes == ("a",)  # its own node port is no conflict
    pooled = servicelb.assign([service("p", 80, labels={servicelb.LB_POOL_LABEL: "core"})], nodes)
    assert pooled[f"{NS}/p"] == servicelb.Assignment((), "no ready node can serve load "
                                                         "balancers in pool 'core'")


def test_ingress_prefers_external_addresses_and_honours_local_policy() -> None:
    nodes = {"a": node("a", "10.0.0.1", external="203.0.113.1"), "b": node("b", "10.0.0.2")}
    svc = service("web", 80)
    assignment = servicelb.Assignment(("a", "b"))
    assert servicelb.ingress_for(svc, assignment, nodes, []) == [
        {"ip": "203.0.113.1", "ipMode": "VIP"}]
    del nodes["a"]["status"]["addresses"][2]
    assert [i["ip"] for i in servicelb.ingress_for(svc, assignment, nodes, [])] == [
        "10.0.0.1", "10.0.0.2"]
    svc["spec"]["externalTrafficPolicy"] = "Local"
    slices = [{"endpoints": [{"addresses": ["10.42.0.5"], "nodeName": "b",
                              "conditions": {"ready": True}},
                             {"addresses": ["10.42.0.6"], "nodeName": "a",
                              "conditions": {"ready": False}}]}]
    assert servicelb.ingress_for(svc, assignment, nodes, slices) == [
        {"ip": "10.0.0.2", "ipMode": "VIP"}]


# -- the controller ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with private_server(tmp_path_factory.mktemp("servicelb")) as started:
        yield started


def _lb(name: str, port: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ports": [{"port": port, "targetPort": 8080}], **spec}}


def test_the_controller_publishes_node_addresses_and_reports_conflicts(
        server: KublingServer) -> None:
    async def scenario() -> None:
        async with controller_running(server, servicelb.ServiceLBController,
                                      clocks.REAL) as (_, client):
            await make_namespace(client, NS)
            nodes = client.resource(NODES)
            created = await nodes.create(node("lb-node", "192.0.2.10"))
            created["status"] = node("lb-node", "192.0.2.10")["status"]
            await nodes.update_status(created)
            services = client.resource(SERVICES)
            await services.create(_lb("first", 80), namespace=NS)
            await services.create(_lb("other-class", 80, loadBalancerClass="example.com/lb"),
                                  namespace=NS)

            async def ingress(name: str) -> list[Any]:
                svc = await services.get(name, namespace=NS)
                return list(((svc.get("status") or {}).get("loadBalancer") or {})
                            .get("ingress") or [])

            async def published() -> bool:
                return await ingress("first") == [{"ip": "192.0.2.10", "ipMode": "VIP"}]

            await eventually(published, timeout=10)
            await services.create(_lb("second", 80), namespace=NS)

            async def warned() -> bool:
                found = await client.resource(EVENTS).list(
                    namespace=NS, field_selector="involvedObject.name=second")
                return any(e["reason"] == "UnAvailableLoadBalancer" and
                           f"port 80/TCP is used by service {NS}/first" in e["message"]
                           for e in found["items"])

            await eventually(warned, timeout=10)
            assert await ingress("second") == [] and await ingress("other-class") == []
            # The holder goes: the port passes to the waiting Service.
            await services.delete("first", namespace=NS)

            async def moved() -> bool:
                return await ingress("second") == [{"ip": "192.0.2.10", "ipMode": "VIP"}]

            await eventually(moved, timeout=10)
            # No longer a load balancer: the published address is withdrawn.
            await services.patch("second", {"spec": {"type": "ClusterIP"}}, namespace=NS)

            async def withdrawn() -> bool:
                return await ingress("second") == []

            await eventually(withdrawn, timeout=10)

    run(scenario(), timeout=60)
