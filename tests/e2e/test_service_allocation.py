"""ClusterIPs and NodePorts against a real server, with the real kubectl and Python client.

What a user sees (kubectl's columns and upstream's error text, word for word) and what must
hold across restarts and a SIGKILL in the middle of a burst of creates: every Service has
its own address, and the stored bitmaps say exactly what the Services hold.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import http.client
import ipaddress
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from kubling import storage
from kubling.api.resources import Catalogue
from kubling.apiserver.allocation.bitmap import Bitmap, IPRange, PortRange
from tests.server_fixture import KublingServer, running_server

SERVICE_NET = ipaddress.ip_network("10.43.0.0/16")


def _ns(kubling: KublingServer) -> str:
    name = f"alloc-{uuid.uuid4().hex[:8]}"
    kubling.kubectl("create", "namespace", name)
    return name


def _svc(kubling: KublingServer, ns: str, name: str) -> Any:
    return kubling.kubectl_yaml("get", "svc", name, "-n", ns)


def _free_low_ip(kubling: KublingServer) -> str:
    """An address of the static band no Service of the shared server holds yet."""
    taken = set(kubling.kubectl(
        "get", "svc", "-A", "-o", "jsonpath={.items[*].spec.clusterIP}").stdout.split())
    for last in range(20, 250):
        ip = f"10.43.0.{last}"
        if ip not in taken:
            return ip
    raise AssertionError("no free address in the static band")


def _free_low_port(kubling: KublingServer) -> int:
    taken = set(kubling.kubectl(
        "get", "svc", "-A", "-o", "jsonpath={.items[*].spec.ports[*].nodePort}").stdout.split())
    for port in range(30000, 30086):
        if str(port) not in taken:
            return port
    raise AssertionError("no free node port in the static band")


def test_create_service_clusterip_and_columns(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "service", "clusterip", "web", "--tcp=80:8080", "-n", ns)
    spec = _svc(kubling, ns, "web")["spec"]
    ip = spec["clusterIP"]
    assert ipaddress.ip_address(ip) in SERVICE_NET
    assert spec["clusterIPs"] == [ip]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    # dynamic allocation takes the upper band first (KEP-3070)
    assert int(ipaddress.ip_address(ip)) - int(SERVICE_NET.network_address) > 256
    table = kubling.kubectl("get", "svc", "web", "-n", ns).stdout
    assert "CLUSTER-IP" in table and "PORT(S)" in table
    assert ip in table and "80/TCP" in table
    kubernetes = kubling.kubectl_yaml("get", "svc", "kubernetes", "-n", "default")["spec"]
    assert kubernetes["clusterIP"] == "10.43.0.1" and kubernetes["clusterIPs"] == ["10.43.0.1"]


def test_expose_deployment_as_nodeport(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "deployment", "web", "--image=busybox", "-n", ns)
    kubling.kubectl("expose", "deployment", "web", "--port=80", "--type=NodePort", "-n", ns)
    spec = _svc(kubling, ns, "web")["spec"]
    node_port = spec["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    assert ipaddress.ip_address(spec["clusterIP"]) in SERVICE_NET
    table = kubling.kubectl("get", "svc", "web", "-n", ns).stdout
    assert f"80:{node_port}/TCP" in table and "NodePort" in table


def test_user_chosen_ip_conflict_and_range(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    ip = _free_low_ip(kubling)
    kubling.kubectl("create", "service", "clusterip", "a", "--tcp=80", f"--clusterip={ip}",
                    "-n", ns)
    assert _svc(kubling, ns, "a")["spec"]["clusterIPs"] == [ip]
    taken = kubling.kubectl("create", "service", "clusterip", "b", "--tcp=80",
                            f"--clusterip={ip}", "-n", ns, check=False)
    assert taken.returncode != 0
    assert (f'Service "b" is invalid: spec.clusterIPs: Invalid value: []string{{"{ip}"}}: '
            f"failed to allocate IP {ip}: provided IP is already allocated") in taken.stderr
    outside = kubling.kubectl("create", "service", "clusterip", "c", "--tcp=80",
                              "--clusterip=10.99.0.1", "-n", ns, check=False)
    assert outside.returncode != 0
    assert ('Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"10.99.0.1"}: '
            "failed to allocate IP 10.99.0.1: the provided IP (10.99.0.1) is not in the valid "
            "range. The range of valid IPs is 10.43.0.0/16") in outside.stderr


def test_headless_and_external_name(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "service", "clusterip", "db", "--clusterip=None", "-n", ns)
    spec = _svc(kubling, ns, "db")["spec"]
    assert spec["clusterIP"] == "None" and spec["clusterIPs"] == ["None"]
    kubling.kubectl("create", "service", "externalname", "ext",
                    "--external-name=example.com", "-n", ns)
    spec = _svc(kubling, ns, "ext")["spec"]
    assert "clusterIP" not in spec and "clusterIPs" not in spec
    table = kubling.kubectl("get", "svc", "-n", ns).stdout
    assert "None" in table and "example.com" in table


def test_cluster_ip_is_immutable(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "service", "clusterip", "web", "--tcp=80", "-n", ns)
    result = kubling.kubectl("patch", "svc", "web", "-n", ns, "-p",
                             '{"spec":{"clusterIP":"10.43.9.9"}}', check=False)
    assert result.returncode != 0
    assert ('The Service "web" is invalid: spec.clusterIPs[0]: Invalid value: '
            '[]string{"10.43.9.9"}: may not change once set') in result.stderr
    # re-applying a manifest without the allocated address keeps it
    before = _svc(kubling, ns, "web")["spec"]["clusterIP"]
    kubling.kubectl("label", "svc", "web", "-n", ns, "tier=front")
    assert _svc(kubling, ns, "web")["spec"]["clusterIP"] == before


def test_node_port_conflict_type_change_and_delete_release(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    port = _free_low_port(kubling)
    kubling.kubectl("create", "service", "nodeport", "np", "--tcp=80",
                    f"--node-port={port}", "-n", ns)
    assert f"80:{port}/TCP" in kubling.kubectl("get", "svc", "np", "-n", ns).stdout
    clash = kubling.kubectl("create", "service", "nodeport", "np2", "--tcp=80",
                            f"--node-port={port}", "-n", ns, check=False)
    assert clash.returncode != 0
    assert (f'Service "np2" is invalid: spec.ports[0].nodePort: Invalid value: {port}: '
            "provided port is already allocated") in clash.stderr
    outside = kubling.kubectl("create", "service", "nodeport", "np3", "--tcp=80",
                              "--node-port=40080", "-n", ns, check=False)
    assert ('spec.ports[0].nodePort: Invalid value: 40080: provided port is not in the valid '
            "range. The range of valid ports is 30000-32767") in outside.stderr

    # NodePort -> ClusterIP gives the node port back: another Service can take it.
    kubling.kubectl("patch", "svc", "np", "-n", ns, "-p", '{"spec":{"type":"ClusterIP"}}')
    spec = _svc(kubling, ns, "np")["spec"]
    assert spec["type"] == "ClusterIP" and "nodePort" not in spec["ports"][0]
    kubling.kubectl("create", "service", "nodeport", "np2", "--tcp=80",
                    f"--node-port={port}", "-n", ns)

    # Delete gives the address and the port back.
    held = _svc(kubling, ns, "np2")["spec"]["clusterIP"]
    kubling.kubectl("delete", "svc", "np2", "-n", ns)
    manifest = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "np4", "namespace": ns},
                "spec": {"type": "NodePort", "clusterIP": held,
                         "ports": [{"port": 80, "nodePort": port}]}}
    kubling.kubectl("create", "-f", "-", input=json.dumps(manifest))
    spec = _svc(kubling, ns, "np4")["spec"]
    assert spec["clusterIP"] == held and spec["ports"][0]["nodePort"] == port


def test_dry_run_allocates_nothing(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    port = _free_low_port(kubling)
    kubling.kubectl("create", "service", "nodeport", "np", "--tcp=80",
                    f"--node-port={port}", "-n", ns, "--dry-run=server")
    kubling.kubectl("create", "service", "nodeport", "np", "--tcp=80",
                    f"--node-port={port}", "-n", ns)  # the dry run kept nothing


def test_fifty_concurrent_creates_get_distinct_addresses(kubling: KublingServer) -> None:
    from kubernetes import client

    ns = _ns(kubling)

    def create(i: int) -> None:
        api = client.CoreV1Api(kubling.api_client())
        body = client.V1Service(
            metadata=client.V1ObjectMeta(name=f"s{i}"),
            spec=client.V1ServiceSpec(type="NodePort", ports=[client.V1ServicePort(port=80)]))
        api.create_namespaced_service(ns, body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(create, range(50)))
    items = client.CoreV1Api(kubling.api_client()).list_namespaced_service(ns).items
    ips = [s.spec.cluster_ip for s in items]
    ports = [s.spec.ports[0].node_port for s in items]
    assert len(items) == 50 and len(set(ips)) == 50 and len(set(ports)) == 50


# -- restarts and crashes -------------------------------------------------------------------


def _services_prefix() -> str:
    rt = Catalogue().lookup("", "v1", "services")
    assert rt is not None
    return rt.storage_prefix


def _stored(data_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Services and the two allocation records, read from the stopped server's database."""

    async def read() -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        backend = storage.open_backend(f"sqlite://{data_dir / 'db' / 'state.db'}")
        await backend.start()
        try:
            listed = await backend.list(_services_prefix())
            ips = await backend.get("/registry/ranges/serviceips")
            ports = await backend.get("/registry/ranges/servicenodeports")
            assert ips is not None and ports is not None
            return ([orjson.loads(kv.value) for kv in listed.items], orjson.loads(ips.value),
                    orjson.loads(ports.value))
        finally:
            await backend.close()

    return asyncio.run(read())


def _bitmap_values(record: dict[str, Any], rng: IPRange | PortRange) -> set[Any]:
    bitmap = Bitmap.from_bytes(rng.size, base64.b64decode(record["data"]))
    return {rng.value(offset) for offset in bitmap.offsets()}


def _check_consistent(data_dir: Path, port_range: str = "30000-32767") -> list[dict[str, Any]]:
    services, ip_record, port_record = _stored(data_dir)
    ips = [s["spec"]["clusterIP"] for s in services
           if s["spec"].get("clusterIP") not in (None, "", "None")]
    ports = [p["nodePort"] for s in services for p in s["spec"].get("ports") or []
             if p.get("nodePort")]
    assert len(ips) == len(set(ips)), "two services share an address"
    assert len(ports) == len(set(ports)), "two services share a node port"
    assert _bitmap_values(ip_record, IPRange("10.43.0.0/16")) == set(ips)
    assert _bitmap_values(port_record, PortRange(port_range)) == set(ports)
    return services


def test_restart_keeps_allocations_and_the_port_range_flag(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flags = ("--service-node-port-range", "31000-31099")
    with running_server(data, extra_args=flags) as server:
        server.kubectl("create", "service", "nodeport", "np", "--tcp=80")
        server.kubectl("create", "service", "clusterip", "web", "--tcp=80")
        outside = server.kubectl("create", "service", "nodeport", "x", "--tcp=80",
                                 "--node-port=30080", check=False)
        assert "The range of valid ports is 31000-31099" in outside.stderr
        before = {s["metadata"]["name"]: s["spec"] for s in
                  server.kubectl_yaml("get", "svc")["items"]}
    assert 31000 <= before["np"]["ports"][0]["nodePort"] <= 31099
    first = _check_consistent(data, "31000-31099")
    for _ in range(2):  # a second start on the same data dir reallocates nothing
        with running_server(data, extra_args=flags) as server:
            after = {s["metadata"]["name"]: s["spec"] for s in
                     server.kubectl_yaml("get", "svc")["items"]}
            assert after == before
            taken = server.kubectl("create", "service", "clusterip", "y", "--tcp=80",
                                   f"--clusterip={before['web']['clusterIP']}", check=False)
            assert "provided IP is already allocated" in taken.stderr
            log = server.read_log()
        assert "0 leak(s) released, 0 missing marked" in log
        assert _check_consistent(data, "31000-31099") == first


def _burst(server: KublingServer, prefix: str, acknowledged: list[str],
           stop: threading.Event) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(),
                                       timeout=5)
    i = 0
    try:
        while not stop.is_set():
            name = f"{prefix}-{i}"
            body = json.dumps({"apiVersion": "v1", "kind": "Service",
                               "metadata": {"name": name},
                               "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
            conn.request("POST", "/api/v1/namespaces/default/services", body=body,
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status == 201:
                acknowledged.append(name)
            i += 1
    except (OSError, http.client.HTTPException):
        return  # the server died under us: that is the point
    finally:
        conn.close()


@pytest.mark.timeout(120)
def test_sigkill_during_a_burst_of_creates(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = KublingServer(data)
    server.start()
    acknowledged: list[str] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_burst, args=(server, f"w{n}", acknowledged, stop))
               for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    server.kill()
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acknowledged) > 20, "the writers should have made progress before the kill"

    server.start()
    try:
        items = server.kubectl_yaml("get", "svc")["items"]
        names = {s["metadata"]["name"] for s in items}
        assert not [n for n in acknowledged if n not in names]
        ips = [s["spec"]["clusterIP"] for s in items]
        assert len(ips) == len(set(ips))
        # the repaired bitmap hands out nothing a Service holds
        server.kubectl("create", "service", "nodeport", "after", "--tcp=80")
        log = server.read_log()
    finally:
        server.stop()
    assert "repair serviceips:" in log and "repair servicenodeports:" in log
    _check_consistent(data)
