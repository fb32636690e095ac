"""Server figures: start to /readyz, idle RSS, single-client create/get latency.

Run: .venv/bin/python bench/server_bench.py [--requests N]
Prints one line per figure; record them in docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_fixture import KublingServer


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latencies(server: KublingServer, requests: int) -> tuple[list[float], list[float]]:
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context())
    creates: list[float] = []
    gets: list[float] = []
    for i in range(requests):
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": f"bench-{i}"}, "data": {"i": str(i)}})
        t = time.perf_counter()
        conn.request("POST", "/api/v1/namespaces/default/configmaps", body=body,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        creates.append(time.perf_counter() - t)
        assert resp.status == 201, resp.status
    for i in range(requests):
        t = time.perf_counter()
        conn.request("GET", f"/api/v1/namespaces/default/configmaps/bench-{i}")
        resp = conn.getresponse()
        resp.read()
        gets.append(time.perf_counter() - t)
        assert resp.status == 200
    conn.close()
    return creates, gets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--starts", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-bench-") as tmp:
        server = KublingServer(Path(tmp) / "data")
        first = server.start()
        server.stop()
        print(f"start to /readyz, new data dir:      {first * 1000:7.0f} ms")
        readies = []
        for _ in range(args.starts):
            readies.append(server.start())
            server.stop()
        print(f"start to /readyz, existing data dir: {statistics.median(readies) * 1000:7.0f} ms "
              f"(median of {args.starts}, min {min(readies) * 1000:.0f} ms)")
        server.start()
        try:
            assert server.process is not None
            time.sleep(2.0)
            print(f"idle RSS:                            {rss_mb(server.process.pid):7.1f} MB")
            creates, gets = latencies(server, args.requests)
            for name, values in (("create", creates), ("get", gets)):
                print(f"{name:6} latency (1 client, {args.requests} reqs):  "
                      f"p50 {percentile(values, 0.5) * 1e3:5.2f} ms  "
                      f"p99 {percentile(values, 0.99) * 1e3:5.2f} ms")
            print(f"RSS after {args.requests} objects:           "
                  f"{rss_mb(server.process.pid):7.1f} MB")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
