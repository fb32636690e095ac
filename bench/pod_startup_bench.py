"""Pod startup latency on a real node: created → Ready for N pods with a cached image,
and what the server (API server, controllers, scheduler and node agent in one process)
costs with them running.

    .venv/bin/python bench/pod_startup_bench.py [--pods 50]

Starts ``kubling server`` with its node agent on a temporary data dir (the busybox image
built offline into it first), creates the pods at once through the API, follows them with
a watch, prints p50/p99, then the server's RSS and CPU over 10 s with every pod running.
Needs root, runc, conmon and the CNI plugins, as the agent does; runs in the host's agent
slot (``tests.agent_fixture.agent_host``), which waits for agent tests and removes what the
node made on the host afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from kubling.client import config, rest
from tests.agent_fixture import agent_host, build_busybox
from tests.server_fixture import KublingServer, free_port


def manifest(i: int) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"start-{i}", "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [
                {"name": "main", "image": "busybox:latest", "imagePullPolicy": "IfNotPresent",
                 "command": ["sleep", "3600"]}]}}


def ready(pod: dict[str, object]) -> bool:
    status = pod.get("status") or {}
    assert isinstance(status, dict)
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


async def measure(server: KublingServer, count: int) -> None:
    async with rest.Client(config.load_kubeconfig(server.kubeconfig)) as client:
        pods = client.resource(rest.lookup("v1", "pods"))
        rv = (await pods.list(namespace="default"))["metadata"]["resourceVersion"]
        created: dict[str, float] = {}
        readied: dict[str, float] = {}

        async def follow() -> None:
            async for _type, obj in pods.watch(namespace="default", resource_version=rv,
                                               timeout_seconds=600):
                name = obj["metadata"]["name"]
                if name in created and name not in readied and ready(obj):
                    readied[name] = time.monotonic()
                if len(readied) == count:
                    return

        watcher = asyncio.create_task(follow())

        async def create(i: int) -> None:
            created[f"start-{i}"] = time.monotonic()
            await pods.create(manifest(i), namespace="default")

        await asyncio.gather(*(create(i) for i in range(count)))
        await asyncio.wait_for(watcher, 300)
        latencies = sorted(readied[n] - created[n] for n in created)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"{count} pods, created → Ready: p50 {statistics.median(latencies):.3f} s, "
              f"p99 {p99:.3f} s, all Ready {max(readied.values()) - min(created.values()):.2f} s")


def process_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a process itself, and of the children it has waited for (runc
    start/exec/delete, the CNI plugins: what the agent runs and reaps)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = float(os.sysconf("SC_CLK_TCK"))
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def machine_busy() -> float:
    """CPU seconds every CPU of the machine has spent busy since boot: the startup window's
    difference includes conmon and the ``runc create`` it runs, which nothing waits for."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / float(os.sysconf("SC_CLK_TCK"))


def server_usage(pid: int, seconds: float = 10.0) -> str:
    def cpu_ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    ticks = cpu_ticks()
    time.sleep(seconds)
    used = (cpu_ticks() - ticks) / 100 / seconds * 100
    rss = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS")).split()[1]
    return f"server RSS {int(rss) / 1024:.1f} MB, CPU {used:.1f} % of one core"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kubling-bench-", dir="/var/tmp") as tmp, \
            agent_host():
        data = Path(tmp) / "data"
        build_busybox(data)
        server = KublingServer(data, agent=True, extra_args=[
            "--cni-conf-dir", f"{tmp}/cni", "--kubelet-port", str(free_port())])
        server.start()
        try:
            deadline = time.monotonic() + 30
            while "Ready" not in server.kubectl("get", "nodes", check=False).stdout:
                if time.monotonic() > deadline:
                    raise SystemExit("the node did not become Ready")
                time.sleep(0.2)
            assert server.process is not None
            own, children = process_cpu(server.process.pid)
            busy = machine_busy()
            asyncio.run(measure(server, args.pods))
            own_after, children_after = process_cpu(server.process.pid)
            busy = machine_busy() - busy
            cores = os.cpu_count() or 1
            print(f"CPU spent starting them: server {own_after - own:.2f} s, its reaped "
                  f"children (runc, CNI plugins) {children_after - children:.2f} s, the whole "
                  f"machine {busy:.2f} s = {busy / args.pods * 1000:.0f} ms a pod; on {cores} "
                  f"cores the pods cannot all be Ready in less than {busy / cores:.2f} s")
            print(f"with {args.pods} pods running: {server_usage(server.process.pid)}")
        finally:
            server.kubectl("delete", "pods", "--all", "--grace-period=1", "--timeout=120s",
                           check=False, timeout=180)
            server.stop()

if __name__ == "__main__":
    main()
