"""End-to-end scheduling at scale: N simulated nodes, M pods, through the real API.

Starts ``kubling server --simulated-nodes N`` (no controllers: pods are created
directly), creates M pods concurrently, and prints how fast the scheduler bound them
and how long until every pod was Running.

Run: .venv/bin/python bench/scale_bench.py --nodes 1000 --pods 10000
(``--py-spy out.json`` also profiles the server: ``pip install py-spy`` into the venv.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubling.client import config, rest
from tests.server_fixture import KublingServer


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used by the event loop's thread and by all the others."""
    result = {"event loop": 0.0, "other threads": 0.0}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        name = "event loop" if task.name == str(pid) else "other threads"
        result[name] += (int(fields[11]) + int(fields[12])) / tick
    return result


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
        # No controllers run, so nothing makes the namespace's default ServiceAccount that
        # the ServiceAccount admission plugin requires of every pod: make it here.
        accounts = client.resource(rest.lookup("v1", "serviceaccounts"))
        try:
            await accounts.create({"apiVersion": "v1", "kind": "ServiceAccount",
                                   "metadata": {"name": "default"}}, namespace="default")
        except rest.ApiError as err:
            if not rest.is_already_exists(err):
                raise
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
        assert server.process is not None
        cpu_before = thread_cpu(server.process.pid)
        start = time.monotonic()
        sem = asyncio.Semaphore(32)

        async def create(i: int) -> None:
            async with sem:
                await res.create(pod(i), namespace="default")

        await asyncio.gather(*(create(i) for i in range(pods)))
        created = time.monotonic() - start
        await asyncio.wait_for(watcher, 3600)
        cpu = thread_cpu(server.process.pid)
        last_bound = max(bound.values()) - start
        all_running = max(running.values()) - start
        print(f"nodes {nodes}, pods {pods}")
        print(f"created all pods in {created:.1f}s ({pods / created:.0f} pods/s)")
        print(f"all bound after {last_bound:.1f}s: {pods / last_bound:.0f} pods/s scheduled")
        print(f"all Running after {all_running:.1f}s")
        used = {name: cpu[name] - cpu_before.get(name, 0.0) for name in cpu}
        # CPU time does not depend on what else shares the machine as much as wall time.
        split = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in used.items())
        print(f"server CPU until all Running: {sum(used.values()):.1f}s "
              f"({1000 * sum(used.values()) / pods:.2f} ms per pod; {split})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--py-spy", metavar="OUT", default="",
                        help="profile the server with py-spy (speedscope JSON to OUT)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-scale-") as tmp:
        server = KublingServer(Path(tmp) / "data", extra_args=[
            "--simulated-nodes", str(args.nodes), "--controllers", ""])
        server.start(timeout=120)
        spy: subprocess.Popen[bytes] | None = None
        if args.py_spy and server.process is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record",
                                    "--pid", str(server.process.pid), "--format", "speedscope",
                                    "-o", args.py_spy, "--rate", "50"])
        try:
            asyncio.run(measure(server, args.pods, args.nodes))
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            server.stop()


if __name__ == "__main__":
    main()
