"""Service proxy figures: ``.venv/bin/python bench/proxy_bench.py`` (as root, needs nft).

Prints the two figures issue 8 sets aims for:

- the time to program 1,000 Services with 10,000 endpoints (10 each) into an empty table:
  the informer snapshot turned into a ruleset (``build``) and written with one ``nft -f``;
- the time from an endpoint change written to the API server to the rule being live: a
  ``ServiceProxy`` watching a real ``kubling server``, from just before the EndpointSlice
  PATCH until the proxy's ``nft -f`` carrying that endpoint has returned (the kernel has
  committed the transaction by then), median and worst of ``--changes`` changes.

The proxy writes a table of its own (``kubling-bench``) with addresses that route nowhere:
cluster IPs from the server's ``--service-cidr 198.18.0.0/16`` and endpoints in
198.19.0.0/16 (RFC 2544's benchmarking range), no node addresses, so it cannot capture any
real traffic on the host. The table is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from kubling.client import config, rest
from kubling.network.proxy import ServiceProxy, build, build_state, nft
from tests.server_fixture import KublingServer

SERVICES = rest.lookup("v1", "services")
SLICES = rest.lookup("discovery.k8s.io/v1", "endpointslices")
NAMESPACES = rest.lookup("v1", "namespaces")
NS = "bench"
TABLE = "kubling-bench"


def endpoint_ip(service: int, index: int) -> str:
    number = service * 16 + index
    return f"198.19.{number // 250}.{number % 250 + 1}"


def slice_of(service: int, endpoints: int, extra: int = 0) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc{service}-a", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": f"svc{service}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [endpoint_ip(service, j)], "nodeName": "bench-node",
                           "conditions": {"ready": True}} for j in range(endpoints + extra)]}


async def populate(client: rest.Client, services: int, endpoints: int) -> None:
    await client.resource(NAMESPACES).create({"metadata": {"name": NS}})
    limit = asyncio.Semaphore(32)

    async def one(i: int) -> None:
        async with limit:
            await client.resource(SERVICES).create(
                {"metadata": {"name": f"svc{i}", "namespace": NS},
                 "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
                namespace=NS)
            await client.resource(SLICES).create(slice_of(i, endpoints), namespace=NS)

    await asyncio.gather(*(one(i) for i in range(services)))


async def program_figure(proxy: ServiceProxy) -> tuple[float, float, float, int]:
    """(build s, nft -f s, total s, ports) of a full sync into an empty table."""
    services, slices = proxy.snapshot()
    await asyncio.to_thread(nft.cleanup, TABLE)
    started = time.perf_counter()
    state = build_state(services, slices, node_name="bench-node", node_ips=())
    ruleset = build(state, table=TABLE)
    script = ruleset.script(None)
    built = time.perf_counter()
    await nft.apply(script)
    done = time.perf_counter()
    return built - started, done - built, done - started, len(state.services)


async def change_figure(client: rest.Client, proxy: ServiceProxy, changes: int,
                        services: int, endpoints: int) -> list[float]:
    """Seconds from just before each EndpointSlice change until its rule is live."""
    latencies = []
    for n in range(changes):
        service = (n // 2 * 37) % services  # grown, then shrunk back
        grow = n % 2 == 0  # add an endpoint, then take it away again
        syncs = proxy.syncs
        started = time.perf_counter()
        body = slice_of(service, endpoints, extra=1 if grow else 0)
        await client.resource(SLICES).patch(f"svc{service}-a", {"endpoints": body["endpoints"]},
                                            namespace=NS)
        wanted = endpoint_ip(service, endpoints)
        while True:
            applied = proxy.applied  # what the last successful nft -f programmed
            if proxy.syncs > syncs and applied is not None and _has(applied, service,
                                                                     wanted) == grow:
                break
            await asyncio.sleep(0.0005)
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.15)  # a quiet gap: the next change is not coalesced
    return latencies


def _has(state: Any, service: int, ip: str) -> bool:
    for port in state.services:
        if port.name == f"svc{service}":
            return any(e.ip == ip for e in port.endpoints)
    return False


async def main_async(server: KublingServer, services: int, endpoints: int,
                     changes: int) -> None:
    client = rest.Client(config.load_kubeconfig(server.kubeconfig))
    try:
        started = time.perf_counter()
        await populate(client, services, endpoints)
        print(f"created {services} services and {services} EndpointSlices "
              f"({services * endpoints} endpoints) in {time.perf_counter() - started:.1f} s")
        proxy = ServiceProxy(client, node_name="bench-node", node_ips=(), table=TABLE,
                             cluster_cidr="198.19.0.0/16", resync_period=3600)
        started = time.perf_counter()
        await proxy.start()
        print(f"proxy start (informers listed + first full sync): "
              f"{time.perf_counter() - started:.2f} s (sync {proxy.last_sync_seconds:.2f} s)")
        try:
            figures = [await program_figure(proxy) for _ in range(3)]
            build_s, apply_s, total_s, ports = sorted(figures, key=lambda f: f[2])[1]
            print(f"program {ports} service ports / {services * endpoints} endpoints into an "
                  f"empty table: {total_s:.2f} s (build {build_s:.2f} s + nft -f "
                  f"{apply_s:.2f} s; median of 3)   aim < 1 s")
            await proxy.sync(force=True)  # the proxy's own view of the table, again
            latencies = await change_figure(client, proxy, changes, services, endpoints)
            print(f"endpoint change -> rule live ({changes} changes): median "
                  f"{statistics.median(latencies) * 1000:.1f} ms, worst "
                  f"{max(latencies) * 1000:.1f} ms   aim < 100 ms")
        finally:
            await proxy.stop()
            await asyncio.to_thread(nft.cleanup, TABLE)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="per service")
    parser.add_argument("--changes", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-proxy-bench-") as tmp:
        server = KublingServer(Path(tmp) / "data", extra_args=[
            "--service-cidr", "198.18.0.0/16", "--cluster-dns", "198.18.0.10",
            "--controllers", "", "--disable-scheduler"])
        server.start()
        try:
            asyncio.run(main_async(server, args.services, args.endpoints, args.changes))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
