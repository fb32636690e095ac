"""Queries per second of the cluster DNS for cluster names: ``.venv/bin/python bench/dns_bench.py``.

The answer path does not touch the API, so the zone is filled directly (1,000 services,
half of them headless with 10 endpoints) and served by the real UDP transport on a free
port; a client *process* keeps a window of queries in flight over one socket, cycling
through service names, and counts answers. Also printed: the in-process cost of one answer
and the time to build the zone.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from dnslib import DNSRecord  # type: ignore[import-untyped,unused-ignore]

from kubling.network.dns.cache import AnswerCache
from kubling.network.dns.forwarder import Forwarder
from kubling.network.dns.records import Zone, build_service
from kubling.network.dns.resolver import Resolver, pack, parse
from kubling.network.dns.transport import DNSServer, bind_pair


def fill(zone: Zone, services: int) -> list[str]:
    zone.set_namespace("bench", True)
    names = []
    for i in range(services):
        headless = i % 2 == 1
        svc: dict[str, Any] = {
            "metadata": {"name": f"svc{i}", "namespace": "bench"},
            "spec": {"clusterIP": "None" if headless else f"10.43.{i // 250}.{i % 250 + 1}",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
        slices = [{
            "metadata": {"name": f"svc{i}-x", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [f"10.42.{i // 25}.{(i % 25) * 10 + j}"],
                           "conditions": {"ready": True}} for j in range(10)]}]
        zone.replace_service(f"bench/svc{i}", build_service(svc, slices, zone.domain))
        names.append(f"svc{i}.bench.svc.cluster.local")
    return names


def client(port: int, names: list[str], seconds: float, window: int,
           result: Any) -> None:
    queries = [DNSRecord.question(name).pack() for name in names]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(1.0)
    sent = received = 0
    sock.send(queries[0])
    check = DNSRecord.parse(sock.recv(4096))
    assert check.header.id == DNSRecord.parse(queries[0]).header.id and check.rr, check
    deadline = time.monotonic() + seconds
    for _ in range(window):
        sock.send(queries[sent % len(queries)])
        sent += 1
    while time.monotonic() < deadline:
        try:
            sock.recv(4096)
        except TimeoutError:  # a lost datagram: top the window up again
            for _ in range(window - (sent - received)):
                sock.send(queries[sent % len(queries)])
                sent += 1
            continue
        received += 1
        sock.send(queries[sent % len(queries)])
        sent += 1
    result.value = received / seconds


async def serve_and_measure(services: int, seconds: float, window: int, packed: bool) -> None:
    zone = Zone("cluster.local")
    started = time.perf_counter()
    names = fill(zone, services)
    print(f"zone of {services} services built in {time.perf_counter() - started:.3f}s")

    resolver = Resolver(zone, Forwarder([]), AnswerCache(), packed_answers=0)
    query = DNSRecord.question(names[1]).pack()
    count = 20_000
    started = time.perf_counter()
    for _ in range(count):
        pack(resolver.respond_now(parse(query)), 512)
    print(f"in-process: {count / (time.perf_counter() - started):,.0f} answers/s "
          "(parse, look up, pack)")

    if packed:
        resolver = Resolver(zone, Forwarder([]), AnswerCache())
    server = DNSServer(resolver)
    for sock in bind_pair("127.0.0.1", 0):
        await server.serve(sock)
    port = server.addresses()[0][1]
    result = multiprocessing.Value("d", 0.0)
    process = multiprocessing.Process(target=client,
                                      args=(port, names, seconds, window, result))
    process.start()
    while process.is_alive():
        await asyncio.sleep(0.05)
    await server.close()
    print(f"over UDP: {result.value:,.0f} queries/s for cluster names "
          f"({window} in flight, {os.cpu_count()} CPUs, "
          f"{'with' if packed else 'without'} the packed-answer cache)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--no-packed", action="store_true",
                        help="parse and pack every query (as for names never asked before)")
    args = parser.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve_and_measure(args.services, args.seconds, args.window,
                                   not args.no_packed))


if __name__ == "__main__":
    main()
