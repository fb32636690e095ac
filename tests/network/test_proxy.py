"""The nftables service proxy: rendering checked by ``nft -c``, behaviour on a real kernel.

The kernel tests build a miniature node (``proxy_topology``): two pod namespaces on a test
bridge with echo servers that answer with their name and the address they saw, an outside
client namespace, and a test table ``kubling-t<tag>``; they connect through the rules and
look at who answered. Nothing is mocked. The last test runs ``ServiceProxy`` against a real
``kubling server``. Every table, link, namespace, route and process made here is removed,
and the module checks that no table of its own is left.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubling.client import rest
from kubling.network.proxy import Endpoint, ServicePort, ServiceProxy, build, build_state, nft
from kubling.network.proxy.ruleset import render
from tests.network.proxy_topology import Topology, ask
from tests.server_fixture import running_server


@pytest.fixture(autouse=True, scope="module")
def _root() -> None:
    """The rules are checked in the kernel: without root these tests fail, not skip."""
    if os.geteuid() != 0:
        pytest.fail("nftables and network namespaces need root: run the tests as root")


def nft_check(script: str) -> None:
    result = subprocess.run(["nft", "-c", "-f", "-"], input=script, text=True,
                            capture_output=True, check=False)
    assert result.returncode == 0, result.stderr + "\n" + script[:3000]


def svc(name: str, ip: str, *endpoints: Endpoint, port: int = 80, **kwargs: Any) -> ServicePort:
    return ServicePort(namespace="default", name=name, port_name="http",
                       protocol=kwargs.pop("protocol", "tcp"), port=port, cluster_ips=(ip,),
                       endpoints=tuple(endpoints), **kwargs)


def who(answers: list[str]) -> collections.Counter[str]:
    return collections.Counter(a.split()[0] if not a.startswith("error") else a for a in answers)


# -- the model: API objects to state ----------------------------------------------------------


def _service(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name},
            "spec": {"clusterIP": "10.43.0.5", "ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"}], **spec}}


def _slice(service: str, *endpoints: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": f"{service}-x",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "dns", "port": 5353, "protocol": "UDP"}],
            "endpoints": list(endpoints), **extra}


def test_build_state_resolves_ports_by_name_and_reads_conditions() -> None:
    slices = [
        _slice("web", {"addresses": ["10.42.0.2"], "nodeName": "n1"},
               {"addresses": ["10.42.0.3"], "conditions": {"ready": False, "serving": True,
                                                            "terminating": True}}),
        _slice("headless", {"addresses": ["10.42.0.9"]}),
        {**_slice("web", {"addresses": ["fd00::1"]}), "addressType": "IPv6"},
    ]
    services = [
        _service("web", type="NodePort", sessionAffinity="ClientIP",
                 externalTrafficPolicy="Local", externalIPs=["192.0.2.50"],
                 ports=[{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]),
        _service("headless", clusterIP="None"),
        {"metadata": {"namespace": "ns", "name": "ext"},
         "spec": {"type": "ExternalName", "externalName": "example.com"}},
    ]
    state = build_state(services, slices, node_name="n1", node_ips=["192.0.2.2", "::1"])
    assert state.node_ips == ("192.0.2.2",)
    (port,) = state.services
    assert (port.key, port.port, port.node_port) == ("ns/web/tcp/http", 80, 30080)
    assert port.affinity_timeout == 10800 and port.external_local
    assert port.external_ips == ("192.0.2.50",)
    assert port.endpoints == (
        Endpoint("10.42.0.2", 8080, "n1", True, True, False),
        Endpoint("10.42.0.3", 8080, "", False, True, True),
    )
    both = build_state([_service("web")], slices[:1], node_name="n1", node_ips=[])
    assert [(p.protocol, p.port, {e.port for e in p.endpoints}) for p in both.services] == [
        ("tcp", 80, {8080}), ("udp", 53, {5353})]


# -- rendering ----------------------------------------------------------------------------------


A = Endpoint("10.42.0.2", 8080, "node-a")
B = Endpoint("10.42.1.3", 8080, "node-b")
B_TERMINATING = Endpoint("10.42.1.3", 8080, "node-b", ready=False, serving=True,
                         terminating=True)


def _unit_state() -> Any:
    return build_state([], [], node_name="node-a", node_ips=["192.0.2.2"]).__class__(
        services=(
            svc("web", "10.43.0.5", A, B, node_port=30080, external_ips=("192.0.2.50",)),
            svc("sticky", "10.43.0.6", A, B, affinity_timeout=60),
            svc("empty", "10.43.0.7", node_port=30081),
            svc("local", "10.43.0.8", A, B, node_port=30082, external_local=True),
            svc("itp", "10.43.0.9", B, internal_local=True),
            svc("drain", "10.43.0.10", B_TERMINATING),
            svc("sctp", "10.43.0.11", A, protocol="sctp"),
            svc("udp", "10.43.0.12", A, protocol="udp"),
        ),
        node_name="node-a", node_ips=("192.0.2.2",), cluster_cidr="10.42.0.0/16")


def test_render_is_valid_nft_and_has_the_expected_structure() -> None:
    state = _unit_state()
    script = render(state, table="kubling-unit")
    nft_check(script)
    assert script.startswith("table ip kubling-unit {}\ndelete table ip kubling-unit\n")
    rs = build(state, table="kubling-unit")
    base = {"nat-prerouting", "nat-output", "nat-postrouting", "filter-input", "filter-forward",
            "filter-output", "services", "masquerading", "mark-for-masquerade", "reject-chain"}
    assert base <= rs.chains.keys()
    assert rs.chains["services"].rules == [
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"]
    service_ips = rs.sets["service-ips"].elements
    assert service_ips["10.43.0.5 . tcp . 80"].startswith("goto service-")
    assert service_ips["192.0.2.50 . tcp . 80"].startswith("goto external-")
    assert rs.sets["service-nodeports"].elements["tcp . 30080"].startswith("goto external-")
    # Equal probability: one numgen map over both endpoints, no chain per endpoint.
    web = rs.chains[service_ips["10.43.0.5 . tcp . 80"].split()[1]]
    assert web.rules[-1].startswith("meta l4proto tcp dnat ip to numgen random mod 2 map "
                                    "{ 0 : 10.42.0.2 . 8080, 1 : ")
    # Host and other-node clients of the cluster IP are masqueraded, pods are not.
    assert web.rules[0] == ("ip daddr 10.43.0.5 tcp dport 80 ip saddr != 10.42.0.0/16 "
                            "jump mark-for-masquerade")
    assert not [name for name in rs.chains if name.startswith("endpoint-")
                and "web" in name]
    # Hairpin: recognised after the DNAT, by source == destination.
    assert "10.42.0.2 . 10.42.0.2" in rs.sets["hairpin-endpoints"].elements
    assert rs.chains["nat-postrouting"].rules[0] == (
        "ct status dnat ip saddr . ip daddr @hairpin-endpoints jump mark-for-masquerade")


def test_render_rejects_drops_and_filters_by_policy() -> None:
    rs = build(_unit_state(), table="kubling-unit")
    no_eps = rs.sets["no-endpoint-services"].elements
    # No endpoints at all: a reject, for the cluster IP and the node port.
    assert no_eps["10.43.0.7 . tcp . 80"] == "goto reject-chain"
    assert rs.sets["no-endpoint-nodeports"].elements["tcp . 30081"] == "goto reject-chain"
    assert "10.43.0.7 . tcp . 80" not in rs.sets["service-ips"].elements
    # internalTrafficPolicy Local with only a remote endpoint: dropped, not rejected.
    assert no_eps["10.43.0.9 . tcp . 80"] == "drop"
    # externalTrafficPolicy Local: external traffic goes to this node's endpoint only.
    external = rs.chains[rs.sets["service-nodeports"].elements["tcp . 30082"].split()[1]]
    local_chain = external.rules[-1].split()[1]
    assert local_chain.startswith("local-")
    assert rs.chains[local_chain].rules[-1] == "meta l4proto tcp dnat to 10.42.0.2:8080"
    assert "mark-for-masquerade" not in rs.chains[local_chain].rules[-1]
    # Terminating endpoints serve only when nothing is ready.
    drain = rs.chains[rs.sets["service-ips"].elements["10.43.0.10 . tcp . 80"].split()[1]]
    assert "10.42.1.3" in drain.rules[-1]


def test_render_affinity_uses_dynamic_sets_that_survive_a_sync() -> None:
    state = _unit_state()
    rs = build(state, table="kubling-unit")
    affinity = [s for s in rs.sets.values() if s.dynamic]
    assert len(affinity) == 2
    assert all(s.spec == ("type ipv4_addr", "flags dynamic,timeout", "timeout 60s")
               for s in affinity)
    sticky = rs.chains[rs.sets["service-ips"].elements["10.43.0.6 . tcp . 80"].split()[1]]
    assert sum(r.startswith("ip saddr @affinity-") for r in sticky.rules) == 2
    # A later sync flushes chains and maps, but never an affinity set.
    again = rs.script(rs.inventory())
    assert "flush map ip kubling-unit service-ips" in again
    assert "flush set ip kubling-unit nodeport-ips" in again
    assert "flush set ip kubling-unit affinity-" not in again
    assert "delete table" not in again


def test_table_names_must_be_kubling_prefixed() -> None:
    with pytest.raises(ValueError):
        render(_unit_state(), table="filter")
    with pytest.raises(ValueError):
        nft.cleanup("kube-proxy")


def test_render_cost_for_1000_services(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a benchmark, a tripwire: a big state renders and checks in reasonable time."""
    services = tuple(
        svc(f"s{i}", f"10.43.{i // 250}.{i % 250 + 1}",
            *(Endpoint(f"10.42.{i % 200}.{j + 2}", 8080, "node-a") for j in range(10)),
            node_port=30000 + i)
        for i in range(1000))
    state = _unit_state().__class__(services=services, node_name="node-a",
                                    node_ips=("192.0.2.2",))
    started = time.perf_counter()
    script = render(state, table="kubling-bench")
    rendered = time.perf_counter() - started
    nft_check(script)
    with capsys.disabled():
        print(f"\n1000 services x 10 endpoints: render {rendered * 1000:.0f} ms, "
              f"{len(script) // 1024} KiB, check {(time.perf_counter() - started - rendered) * 1000:.0f} ms")
    assert rendered < 2.0


# -- the kernel --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    if os.geteuid() != 0:
        pytest.fail("needs root: run the tests as root")
    topology = Topology()
    try:
        topology.setup()
        yield topology
    finally:
        topology.close()
        mine = [t for t in nft.list_tables() if topology.tag in t]
        assert not mine, f"tables left behind: {mine}"


def ep(topo: Topology, pod: str, port: int = 8080, **kwargs: Any) -> Endpoint:
    return Endpoint(topo.pod_ip(pod), port, node_name=f"node-{pod}", **kwargs)


def _listing(table: str) -> list[str]:
    out = subprocess.run(["nft", "list", "table", "ip", table], capture_output=True, text=True,
                         check=True).stdout.replace(table, "T")
    # Element lists print in kernel order: compare them as sets.
    return sorted(out.replace("{", "\n").replace("}", "\n").replace(",", "\n").split("\n"))


def test_incremental_sync_ends_where_a_full_sync_does(topo: Topology) -> None:
    first = topo.state(*_unit_state().services)
    changed = [svc("web", "10.43.0.5", B, node_port=30085, affinity_timeout=30),
               svc("new", "10.43.0.99", A, B_TERMINATING), *first.services[2:6]]
    second = topo.state(*changed)
    incremental, full = f"{topo.table}i", f"{topo.table}f"
    topo.tables |= {incremental, full}
    old = build(first, table=incremental)
    subprocess.run(["nft", "-f", "-"], input=old.script(), text=True, check=True)
    new = build(second, table=incremental)
    diff = new.diff_script(old)
    assert "delete table" not in diff
    # Unchanged chains (the base ones, the untouched services') are not rewritten.
    assert " services " not in diff and "service-endpoints-check" not in diff
    assert "default/local/" not in diff
    subprocess.run(["nft", "-f", "-"], input=diff, text=True, check=True)
    assert new.diff_script(new) == ""
    subprocess.run(["nft", "-f", "-"], input=build(second, table=full).script(), text=True,
                   check=True)
    assert _listing(incremental) == _listing(full)
    for table in (incremental, full):
        assert nft.cleanup(table)


def test_cluster_ip_balances_over_both_backends(topo: Topology) -> None:
    vip = topo.service_ip(10)
    topo.apply(topo.state(svc("web", vip, ep(topo, "a"), ep(topo, "b")),
                          svc("dns", vip, ep(topo, "a", 9090), ep(topo, "b", 9090),
                              port=53, protocol="udp")))
    tcp = who([ask(vip, 80) for _ in range(200)])
    assert set(tcp) == {"a", "b"} and min(tcp.values()) >= 60, tcp
    udp = who([ask(vip, 53, "udp") for _ in range(60)])
    assert set(udp) == {"a", "b"}, udp
    # From a pod: not masqueraded (the backend sees the pod's address), except when the pod
    # reaches itself (hairpin), which must come back through the node.
    answers = set(topo.ask_from("b", vip, 80, count=30))
    assert answers == {f"a {topo.pod_ip('b')}", f"b {topo.host_ip}"}, answers


def test_service_without_endpoints_is_refused_at_once(topo: Topology) -> None:
    vip = topo.service_ip(11)
    topo.apply(topo.state(svc("empty", vip, node_port=30111),
                          svc("empty-udp", vip, port=53, protocol="udp")))
    started = time.monotonic()
    assert ask(vip, 80) == "error ConnectionRefusedError"
    # The host's own UDP send is rejected in its output path: the kernel reports EPERM.
    assert ask(vip, 53, "udp") in ("error ConnectionRefusedError", "error PermissionError")
    assert topo.ask_from("c", vip, 53, proto="udp") == ["error ConnectionRefusedError"]
    assert ask(topo.host_ip, 30111) == "error ConnectionRefusedError"
    assert topo.ask_from("c", topo.host_outside_ip, 30111) == ["error ConnectionRefusedError"]
    assert topo.ask_from("a", vip, 80) == ["error ConnectionRefusedError"]
    assert time.monotonic() - started < 3.0


def test_node_port_cluster_policy_masquerades(topo: Topology) -> None:
    topo.apply(topo.state(svc("np", topo.service_ip(12), ep(topo, "a"), ep(topo, "b"),
                              node_port=30112)))
    from_host = who([ask(topo.host_ip, 30112) for _ in range(40)])
    assert set(from_host) == {"a", "b"}, from_host
    outside = topo.ask_from("c", topo.host_outside_ip, 30112, count=40)
    assert {a.split()[0] for a in outside} == {"a", "b"}, outside
    # An outside client's address is replaced by the node's (Cluster policy).
    assert {a.split()[1] for a in outside} == {topo.host_ip}
    # 127.0.0.1 is not a node-port address (as in kube-proxy's nftables mode).
    assert ask("127.0.0.1", 30112, timeout=0.5).startswith("error")


def test_node_port_local_policy_keeps_source_and_local_endpoints(topo: Topology) -> None:
    topo.apply(topo.state(svc("np-local", topo.service_ip(13), ep(topo, "a"), ep(topo, "b"),
                              node_port=30113, external_local=True,
                              external_ips=(topo.service_ip(113),))))
    outside = topo.ask_from("c", topo.host_outside_ip, 30113, count=30)
    assert set(outside) == {f"a {topo.client_ip}"}, outside
    external_ip = topo.ask_from("c", topo.service_ip(113), 80, count=10)
    assert set(external_ip) == {f"a {topo.client_ip}"}, external_ip
    # The host and pods are not "external": they get every endpoint.
    assert set(who([ask(topo.host_ip, 30113) for _ in range(40)])) == {"a", "b"}
    # No local endpoint: external traffic is dropped (a timeout, not a reject).
    topo.apply(topo.state(svc("np-local", topo.service_ip(13), ep(topo, "b"),
                              node_port=30113, external_local=True)))
    assert topo.ask_from("c", topo.host_outside_ip, 30113) == ["error TimeoutError"]


def test_internal_traffic_policy_local(topo: Topology) -> None:
    vip = topo.service_ip(14)
    topo.apply(topo.state(svc("itp", vip, ep(topo, "a"), ep(topo, "b"), internal_local=True)))
    assert set(who([ask(vip, 80) for _ in range(30)])) == {"a"}


def test_client_ip_affinity_sticks_across_syncs(topo: Topology) -> None:
    vip = topo.service_ip(15)
    sticky = svc("sticky", vip, ep(topo, "a"), ep(topo, "b"), affinity_timeout=300)
    topo.apply(topo.state(sticky))
    first = who([ask(vip, 80) for _ in range(30)])
    assert len(first) == 1, first
    outside = who(topo.ask_from("c", vip, 80, count=30))
    assert len(outside) == 1, outside
    # Another service changing rewrites the table; the client keeps its backend.
    topo.apply(topo.state(sticky, svc("other", topo.service_ip(16), ep(topo, "a"))))
    assert who([ask(vip, 80) for _ in range(20)]) == collections.Counter(
        {next(iter(first)): 20})


def test_terminating_endpoints_only_when_none_ready(topo: Topology) -> None:
    vip = topo.service_ip(17)
    topo.apply(topo.state(svc("drain", vip, ep(topo, "a"),
                              ep(topo, "b", ready=False, serving=True, terminating=True))))
    assert set(who([ask(vip, 80) for _ in range(30)])) == {"a"}
    topo.apply(topo.state(svc("drain", vip, ep(topo, "a", ready=False, serving=False),
                              ep(topo, "b", ready=False, serving=True, terminating=True))))
    assert set(who([ask(vip, 80) for _ in range(30)])) == {"b"}


def test_hairpin_pod_reaches_itself_through_its_service(topo: Topology) -> None:
    vip = topo.service_ip(18)
    topo.apply(topo.state(svc("self", vip, ep(topo, "a"))))
    answers = topo.ask_from("a", vip, 80, count=5)
    # Masqueraded to the node, so the reply comes back through the DNAT.
    assert answers == [f"a {topo.host_ip}"] * 5
    topo.apply(topo.state(svc("self", vip, ep(topo, "a"), ep(topo, "b"))))
    assert {a.split()[0] for a in topo.ask_from("a", vip, 80, count=30)} == {"a", "b"}


# -- against a real API server --------------------------------------------------------------------


def test_service_proxy_follows_the_api(topo: Topology, tmp_path: Path) -> None:
    vip = f"10.43.{random.randrange(100, 250)}.{random.randrange(2, 250)}"
    topo.route(f"{vip}/32")
    table = f"{topo.table}s"
    topo.tables.add(table)

    def slice_for(pod: str) -> dict[str, Any]:
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-manual", "namespace": "default",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [topo.pod_ip(pod)], "nodeName": f"node-{pod}",
                               "conditions": {"ready": True}}]}

    def poll(expected: set[str], deadline: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < deadline:
            if set(who([ask(vip, 80, timeout=0.5) for _ in range(8)])) == expected:
                return time.monotonic() - started
            time.sleep(0.02)
        raise AssertionError(f"backends never became {expected}")

    async def scenario() -> None:
        async with rest.Client.from_kubeconfig(server.kubeconfig) as client:
            services = client.resource(rest.lookup("v1", "services"))
            slices = client.resource(rest.lookup("discovery.k8s.io/v1", "endpointslices"))
            await services.create({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": vip, "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
                namespace="default")
            created = await slices.create(slice_for("a"), namespace="default")
            proxy = ServiceProxy(client, node_name="node-a", node_ips=[topo.host_ip],
                                 cluster_cidr=topo.pod_cidr, table=table)
            await proxy.start()
            try:
                assert proxy.syncs >= 1 and proxy.last_error is None
                await asyncio.to_thread(poll, {"a"}, 2.0)
                created["endpoints"] = slice_for("b")["endpoints"]
                await slices.update(created, namespace="default")
                took = await asyncio.to_thread(poll, {"b"}, 1.0)
                assert took < 1.0
                await slices.delete("web-manual", namespace="default")
                await asyncio.to_thread(poll, {"error ConnectionRefusedError"}, 1.0)
            finally:
                await proxy.stop()
            assert nft.cleanup(table)

    with running_server(tmp_path / "data") as server:
        asyncio.run(scenario())
