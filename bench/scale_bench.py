"""End-to-end scheduling at scale: N simulated nodes, M pods, through the real API.

Starts ``kubling server --simulated-nodes N`` (no controllers: pods are created
directly), creates M pods concurrently, and prints how fast the scheduler bound them
and how long until every pod was Running.

Run: .venv/bin/python bench/scale_bench.py --nodes 1000 --pods 10000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubling.client import config, rest
from tests.server_fixture import KublingServer


def pod(i: int) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"scale-{i}", "namespace": "default",
                         "labels": {"app": "scale"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"}}}]}}


async def measure(server: KublingServer, pods: int, nodes: int) -> None:
    async with rest.Client(config.load_kubeconfig(server.kubeconfig)) as client:
        node_res = client.resource(rest.lookup("v1", "nodes"))
        while len((await node_res.list())["items"]) < nodes:
            await asyncio.sleep(0.5)
        res = client.resource(rest.lookup("v1", "pods"))
        bound: dict[str, float] = {}
        running: dict[str, float] = {}
        listed = await res.list(namespace="default")
        rv = listed["metadata"]["resourceVersion"]

        async def watch() -> None:
            async for _type, obj in res.watch(namespace="default", resource_version=rv,
                                               timeout_seconds=3600):
                name = obj["metadata"]["name"]
                now = time.monotonic()
                if obj["spec"].get("nodeName") and name not in bound:
                    bound[name] = now
                if obj.get("status", {}).get("phase") == "Running" and name not in running:
                    running[name] = now
                if len(running) >= pods:
                    return

        watcher = asyncio.create_task(watch())
        start = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with sem:
                await res.create(pod(i), namespace="default")

        await asyncio.gather(*(create(i) for i in range(pods)))
        created = time.monotonic() - start
        await asyncio.wait_for(watcher, 3600)
        last_bound = max(bound.values()) - start
        all_running = max(running.values()) - start
        print(f"nodes {nodes}, pods {pods}")
        print(f"created all pods in {created:.1f}s ({pods / created:.0f} pods/s)")
        print(f"all bound after {last_bound:.1f}s: {pods / last_bound:.0f} pods/s scheduled")
        print(f"all Running after {all_running:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-scale-") as tmp:
        server = KublingServer(Path(tmp) / "data", extra_args=[
            "--simulated-nodes", str(args.nodes), "--controllers", ""])
        server.start(timeout=120)
        try:
            asyncio.run(measure(server, args.pods, args.nodes))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
