"""The cluster DNS against a real kubling server, asked by real DNS clients.

Services, headless services with hand-made EndpointSlices and ExternalName services are
created through the API; ``ClusterDNS`` serves them on 127.0.0.1:<free port> over UDP and
TCP, and is queried with dnslib's client, busybox's ``nslookup`` and (inside a private
network namespace, where port 53 is free) glibc's resolver with a search path and
``ndots:5``. Upstream forwarding goes to a fake resolver the test runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord  # type: ignore[import-untyped,unused-ignore]

from kubling.client import config, rest
from kubling.network import netns
from kubling.network.dns import ClusterDNS
from kubling.network.dns.cache import AnswerCache
from kubling.network.dns.forwarder import default_upstreams
from tests.client.helpers import make_namespace, run
from tests.network.dns_netns import bind_in_netns, dns_netns, run_in
from tests.network.dns_upstream import fake_upstream
from tests.server_fixture import KublingServer, running_server

SERVICES = rest.lookup("v1", "services")
SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")

#: An upstream nobody listens on: queries there fail at once (ICMP port unreachable).
DEAD_UPSTREAM = ("127.0.0.1", 9)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    with running_server(tmp_path_factory.mktemp("dns") / "data") as running:
        yield running


@pytest.fixture
def ns() -> str:
    return f"dns-{secrets.token_hex(3)}"


# -- helpers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def cluster_dns(server: KublingServer, namespace: str, **kwargs: Any
                      ) -> AsyncIterator[tuple[ClusterDNS, rest.Client]]:
    client = rest.Client(config.load_kubeconfig(server.kubeconfig))
    await make_namespace(client, namespace)
    kwargs.setdefault("listen", [("127.0.0.1", 0)])
    kwargs.setdefault("upstreams", [DEAD_UPSTREAM])
    dns = ClusterDNS(client, **kwargs)
    await dns.start()
    try:
        await dns.wait_for_sync(timeout=10)
        yield dns, client
    finally:
        await dns.stop()
        await client.close()


async def ask(dns: ClusterDNS, name: str, qtype: str = "A", *, tcp: bool = False) -> Any:
    """Query ``dns`` with dnslib's (blocking) client in a thread, as any client would."""
    host, port = dns.addresses()[0]
    raw = await asyncio.to_thread(DNSRecord.question(name, qtype).send, host, port, tcp=tcp,
                                  timeout=5)
    return DNSRecord.parse(raw)


def answers(reply: Any, qtype: int | None = None) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if qtype is None or rr.rtype == qtype)


async def eventually_answers(dns: ClusterDNS, name: str, expected: list[str],
                             qtype: str = "A", timeout: float = 1.5) -> float:
    """Seconds until ``name`` answers ``expected`` (fails after ``timeout``)."""
    started = time.monotonic()
    while True:
        reply = await ask(dns, name, qtype)
        if answers(reply) == expected:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{name} answers {answers(reply)}, not {expected}")
        await asyncio.sleep(0.02)


def service(name: str, namespace: str, cluster_ip: str, ports: list[dict[str, Any]] | None = None,
            **spec: Any) -> dict[str, Any]:
    body = {"clusterIP": cluster_ip,
            "ports": ports or [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def endpoint(address: str, *, ready: bool = True, hostname: str | None = None
             ) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": [address], "conditions": {"ready": ready}}
    if hostname:
        found["hostname"] = hostname
    return found


def endpoint_slice(name: str, namespace: str, service_name: str,
                   endpoints: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}


def random_ip(prefix: str = "10.43") -> str:
    return f"{prefix}.{secrets.randbelow(250) + 2}.{secrets.randbelow(250) + 2}"


# -- cluster names ------------------------------------------------------------------------


def test_service_records(server: KublingServer, ns: str) -> None:
    ip = random_ip()

    async def body() -> None:
        async with cluster_dns(server, ns) as (dns, client):
            await client.resource(SERVICES).create(service("web", ns, ip))
            fqdn = f"web.{ns}.svc.cluster.local"
            await eventually_answers(dns, fqdn, [ip])

            reply = await ask(dns, fqdn.upper())
            assert answers(reply) == [ip] and reply.header.aa
            assert [rr.ttl for rr in reply.rr] == [5]
            assert str(reply.rr[0].rname) == fqdn.upper() + "."  # the asker's case is kept

            tcp = await ask(dns, fqdn, tcp=True)
            assert answers(tcp) == [ip]

            nodata = await ask(dns, fqdn, "AAAA")
            assert nodata.header.rcode == RCODE.NOERROR and not nodata.rr
            assert [rr.rtype for rr in nodata.auth] == [QTYPE.SOA]
            assert nodata.auth[0].ttl == 5

            missing = await ask(dns, f"nope.{ns}.svc.cluster.local")
            assert missing.header.rcode == RCODE.NXDOMAIN
            assert [rr.rtype for rr in missing.auth] == [QTYPE.SOA]

            namespace = await ask(dns, f"{ns}.svc.cluster.local")
            assert namespace.header.rcode == RCODE.NOERROR and not namespace.rr
            no_namespace = await ask(dns, "no-such-namespace.svc.cluster.local")
            assert no_namespace.header.rcode == RCODE.NXDOMAIN

            srv = await ask(dns, f"_http._tcp.{fqdn}", "SRV")
            assert answers(srv) == [f"0 100 80 {fqdn}."]
            assert [str(rr.rdata) for rr in srv.ar] == [ip]
            assert (await ask(dns, f"_nope._tcp.{fqdn}", "SRV")).header.rcode == RCODE.NXDOMAIN

            reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
            assert answers(await ask(dns, reverse, "PTR")) == [fqdn + "."]

            pod = await ask(dns, f"10-42-1-9.{ns}.pod.cluster.local")
            assert answers(pod) == ["10.42.1.9"]
            bad_pod = await ask(dns, "10-42-1-9.no-such-namespace.pod.cluster.local")
            assert bad_pod.header.rcode == RCODE.NXDOMAIN

            soa = await ask(dns, "cluster.local", "SOA")
            assert [rr.rtype for rr in soa.rr] == [QTYPE.SOA]

            await client.resource(SERVICES).delete("web", namespace=ns)
            started = time.monotonic()
            while (await ask(dns, fqdn)).header.rcode != RCODE.NXDOMAIN:
                assert time.monotonic() - started < 1.5, "deleted service still answers"
                await asyncio.sleep(0.02)

    run(body(), timeout=30)


def test_headless_service(server: KublingServer, ns: str) -> None:
    async def body() -> None:
        async with cluster_dns(server, ns) as (dns, client):
            await client.resource(SERVICES).create(service("db", ns, "None", ports=[
                {"name": "db", "port": 5432, "protocol": "TCP"}]))
            slices = client.resource(SLICES)
            created = await slices.create(endpoint_slice("db-a", ns, "db", [
                endpoint("10.42.7.1", hostname="db-0"),
                endpoint("10.42.7.2", hostname="db-1"),
                endpoint("10.42.7.3", ready=False, hostname="db-2"),
            ]))
            fqdn = f"db.{ns}.svc.cluster.local"
            await eventually_answers(dns, fqdn, ["10.42.7.1", "10.42.7.2"])
            assert answers(await ask(dns, f"db-0.{fqdn}")) == ["10.42.7.1"]
            not_ready = await ask(dns, f"db-2.{fqdn}")
            assert not_ready.header.rcode == RCODE.NXDOMAIN

            srv = await ask(dns, f"_db._tcp.{fqdn}", "SRV")
            assert answers(srv) == [f"0 50 5432 db-0.{fqdn}.", f"0 50 5432 db-1.{fqdn}."]
            assert sorted(str(rr.rdata) for rr in srv.ar) == ["10.42.7.1", "10.42.7.2"]
            assert answers(await ask(dns, "2.7.42.10.in-addr.arpa", "PTR")) == [f"db-1.{fqdn}."]

            # An endpoint becomes ready, one without a hostname appears (named by address).
            created["endpoints"][2]["conditions"]["ready"] = True
            created["endpoints"].append(endpoint("10.42.7.4"))
            await slices.update(created)
            took = await eventually_answers(
                dns, fqdn, ["10.42.7.1", "10.42.7.2", "10.42.7.3", "10.42.7.4"])
            assert took < 1.0
            assert answers(await ask(dns, f"10-42-7-4.{fqdn}")) == ["10.42.7.4"]

            # A second slice adds to the same service; deleting the first removes its part.
            await slices.create(endpoint_slice("db-b", ns, "db", [endpoint("10.42.8.1")]))
            await slices.delete("db-a", namespace=ns)
            await eventually_answers(dns, fqdn, ["10.42.8.1"])

    run(body(), timeout=30)


def test_external_name_follows_the_cname(server: KublingServer, ns: str) -> None:
    async def body() -> None:
        async with fake_upstream() as upstream, cluster_dns(
                server, ns, upstreams=[("127.0.0.1", upstream.port)]) as (dns, client):
            await client.resource(SERVICES).create({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "ext", "namespace": ns},
                "spec": {"type": "ExternalName", "externalName": "external.example.org"}})
            fqdn = f"ext.{ns}.svc.cluster.local"
            await eventually_answers(dns, fqdn, ["external.example.org."], "CNAME")
            reply = await ask(dns, fqdn)
            assert [(QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [
                ("CNAME", "external.example.org."), ("A", "192.0.2.7")]

    run(body(), timeout=30)


# -- forwarding ---------------------------------------------------------------------------


def test_forwarding_with_cache_and_tcp_fallback(server: KublingServer, ns: str) -> None:
    async def body() -> None:
        async with fake_upstream() as upstream, cluster_dns(
                server, ns, upstreams=[DEAD_UPSTREAM, ("127.0.0.1", upstream.port)],
                upstream_timeout=1.0) as (dns, _):
            first = await ask(dns, "example.org")
            assert answers(first) == ["192.0.2.1"] and not first.header.aa
            second = await ask(dns, "EXAMPLE.org")
            assert answers(second) == ["192.0.2.1"]
            assert 0 < second.rr[0].ttl <= 60
            assert upstream.count("example.org") == 1  # the second came from the cache

            missing = await ask(dns, "missing.example.org")
            assert missing.header.rcode == RCODE.NXDOMAIN

            # Too big for UDP upstream: the forwarder retries over TCP; too big for the
            # client's 512 bytes: the client gets TC and asks again over TCP.
            truncated = await ask(dns, "big.example.org", "TXT")
            assert truncated.header.tc and not truncated.rr
            assert [t for name, _, t in upstream.queries if name == "big.example.org"] == [
                "udp", "tcp"]
            full = await ask(dns, "big.example.org", "TXT", tcp=True)
            assert len(full.rr) == 5

    run(body(), timeout=30)


def test_servfail_when_no_upstream_answers(server: KublingServer, ns: str) -> None:
    async def body() -> None:
        async with cluster_dns(server, ns, upstreams=[DEAD_UPSTREAM],
                               upstream_timeout=0.5) as (dns, _):
            started = time.monotonic()
            reply = await ask(dns, "example.org")
            assert reply.header.rcode == RCODE.SERVFAIL
            assert time.monotonic() - started < 2

    run(body(), timeout=30)


def test_never_forwards_to_itself(server: KublingServer, ns: str) -> None:
    async def body() -> None:
        client = rest.Client(config.load_kubeconfig(server.kubeconfig))
        try:
            dns = ClusterDNS(client, listen=[("127.0.0.1", 5399)],
                             upstreams=[("127.0.0.1", 5399), ("127.0.0.1", 53)])
            assert dns.upstreams == [("127.0.0.1", 53)]
        finally:
            await client.close()

    run(body())


def test_malformed_packets_are_ignored(server: KublingServer, ns: str) -> None:
    async def body() -> None:
        async with cluster_dns(server, ns) as (dns, client):
            await client.resource(SERVICES).create(service("web", ns, random_ip()))
            host, port = dns.addresses()[0]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for garbage in (b"", b"\x00", os.urandom(7), b"\xff" * 40, os.urandom(300)):
                    sock.sendto(garbage, (host, port))
                response = DNSRecord.question("x.example").reply().pack()
                sock.sendto(response, (host, port))  # a response: never answered
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(struct.pack("!H", 5) + b"\x01\x02\x03\x04\x05")
            await writer.drain()
            assert await reader.read() == b""  # garbage over TCP: the connection closes
            writer.close()
            reply = await ask(dns, f"web.{ns}.svc.cluster.local", tcp=True)
            assert reply.header.rcode == RCODE.NOERROR
            assert (await ask(dns, f"web.{ns}.svc.cluster.local")).rr

    run(body(), timeout=30)


# -- stock clients ------------------------------------------------------------------------


def test_busybox_nslookup(server: KublingServer, ns: str) -> None:
    if shutil.which("busybox") is None:
        pytest.fail("busybox is not installed — run ./install.sh --test")
    ip = random_ip()

    async def body() -> None:
        async with cluster_dns(server, ns) as (dns, client):
            await client.resource(SERVICES).create(service("web", ns, ip))
            fqdn = f"web.{ns}.svc.cluster.local"
            await eventually_answers(dns, fqdn, [ip])
            host, port = dns.addresses()[0]

            async def nslookup(*args: str) -> tuple[int, str]:
                process = await asyncio.create_subprocess_exec(
                    "busybox", "nslookup", *args, f"{host}:{port}",
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
                out, _ = await process.communicate()
                assert process.returncode is not None
                return process.returncode, out.decode()

            code, out = await nslookup(fqdn)
            assert code == 0 and f"Address: {ip}" in out, out
            reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
            code, out = await nslookup("-type=ptr", reverse)
            assert code == 0 and f"name = {fqdn}" in out, out
            code, out = await nslookup(f"nope.{ns}.svc.cluster.local")
            assert code != 0 and "NXDOMAIN" in out, out

    run(body(), timeout=30)


def _can_make_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None and Path("/proc/self/ns/net"
                                                                         ).exists()


def test_search_path_from_glibc_and_busybox(server: KublingServer, ns: str) -> None:
    """Short names resolve through the search path with ndots:5, as from inside a pod."""
    if not _can_make_namespaces():
        pytest.fail("network namespaces need root and iproute2: run the tests as root")
    ip = random_ip()

    async def body(name: str) -> None:
        sockets = bind_in_netns(netns.path(name), "127.0.0.1", 53)
        async with fake_upstream() as upstream, cluster_dns(
                server, ns, listen=[], sockets=sockets,
                upstreams=[("127.0.0.1", upstream.port)]) as (dns, client):
            await client.resource(SERVICES).create(service("web", ns, ip))
            started = time.monotonic()
            while not dns.zone.lookup(f"web.{ns}.svc.cluster.local", QTYPE.A).answers:
                assert time.monotonic() - started < 2
                await asyncio.sleep(0.02)

            glibc = await asyncio.to_thread(
                run_in, name, "python3", "-c",
                "import socket, sys\n"
                "print(socket.gethostbyname('web'))\n"
                f"print(socket.gethostbyname('web.{ns}'))\n"
                "print(socket.getaddrinfo('example.org', 80, socket.AF_INET)[0][4][0])\n")
            assert glibc.returncode == 0, glibc.stderr
            assert glibc.stdout.split() == [ip, ip, "192.0.2.1"]

            busybox = await asyncio.to_thread(run_in, name, "busybox", "nslookup", "web")
            assert f"Address: {ip}" in busybox.stdout, busybox.stdout + busybox.stderr

    with dns_netns(search=f"{ns}.svc.cluster.local svc.cluster.local cluster.local") as name:
        run(body(name), timeout=40)


# -- the pieces on their own --------------------------------------------------------------


def test_cache_counts_ttls_down_expires_and_stays_bounded() -> None:
    now = [100.0]
    cache = AnswerCache(2, clock=lambda: now[0])
    reply = DNSRecord.question("a.example").reply()
    reply.add_answer(RR("a.example", QTYPE.A, ttl=30, rdata=A("192.0.2.1")))
    cache.put(("a.example.", 1, 1), reply)
    now[0] += 10
    cached = cache.get(("a.example.", 1, 1))
    assert cached is not None and [rr.ttl for rr in cached.answers] == [20]
    now[0] += 21
    assert cache.get(("a.example.", 1, 1)) is None

    servfail = DNSRecord.question("b.example").reply()
    servfail.header.rcode = RCODE.SERVFAIL
    cache.put(("b.example.", 1, 1), servfail)
    assert cache.get(("b.example.", 1, 1)) is None
    for name in ("c", "d", "e"):
        cache.put((name, 1, 1), reply)
    assert len(cache) == 2 and cache.get(("c", 1, 1)) is None


def test_default_upstreams_skip_ourselves(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search example\nnameserver 10.43.0.10\nnameserver 127.0.0.53\n"
                      "nameserver fe80::1%eth0\n")
    fallback = tmp_path / "systemd.conf"
    fallback.write_text("nameserver 192.0.2.53\n")
    assert default_upstreams([("10.43.0.10", 53)], resolv_conf=resolv, fallback=fallback) == [
        ("127.0.0.53", 53), ("fe80::1", 53)]
    # Listening on every address at :53 makes the loopback stub ourselves as well.
    resolv.write_text("nameserver 127.0.0.53\n")
    assert default_upstreams([("0.0.0.0", 53)], resolv_conf=resolv, fallback=fallback) == [
        ("192.0.2.53", 53)]
