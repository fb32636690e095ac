"""What a pod's volumes cost the node agent: 50 configMap volumes (and 50 secret volumes,
each on its own tmpfs) set up, refreshed with nothing changed, refreshed after one source
changed, and torn down — the work a pod worker does before its containers start and on
every sync. Optionally (``--e2e``) the same pod on a real server and agent, created →
Running, against the same pod without volumes.

    .venv/bin/python bench/volumes_bench.py [--volumes 50] [--rounds 20] [--e2e]

The in-process part needs root only for the secret tmpfs mounts (made below a temporary
directory and removed). ``--e2e`` needs what the node agent needs (root, runc, conmon, CNI
plugins) and waits for the host's agent slot like the tests do. Prints one line a figure;
record them in docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from kubling.node.volumes import VolumeManager, sources

DATA = {"app.conf": "x" * 512, "feature-flags": "a=1\nb=2\n", "ca.crt": "-" * 1200}


class MemoryObjects(sources.ObjectCache):
    """The watch cache with its objects given, so only the volume work is measured."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.objects = objects

    async def get(self, ref: sources.Ref) -> dict[str, Any]:
        return self.objects[ref.name]

    def register(self, uid: str, refs: Any, on_change: Any) -> None:
        return None

    def unregister(self, uid: str) -> None:
        return None


def pod_with(count: int, kind: str) -> dict[str, Any]:
    if kind == "configMap":
        volumes = [{"name": f"v{i}", "configMap": {"name": f"cm-{i}", "defaultMode": 0o644}}
                   for i in range(count)]
    else:
        volumes = [{"name": f"v{i}", "secret": {"secretName": f"cm-{i}", "defaultMode": 0o644}}
                   for i in range(count)]
    return {"metadata": {"name": "bench", "namespace": "default", "uid": "bench-uid"},
            "spec": {"volumes": volumes, "containers": [{"name": "main"}]}}


def ms(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"


async def in_process(count: int, rounds: int, kind: str) -> None:
    import base64
    encode = (lambda v: v) if kind == "configMap" else (
        lambda v: base64.b64encode(v.encode()).decode())
    objects = {f"cm-{i}": {"data": {k: encode(v) for k, v in DATA.items()}}
               for i in range(count)}
    manager = VolumeManager(None, allocatable={},  # type: ignore[arg-type]
                            objects=MemoryObjects(objects))
    pod = pod_with(count, kind)
    first, noop, update, down = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="kubling-bench-") as tmp:
        for r in range(rounds):
            volumes = manager.for_pod("bench-uid", Path(tmp) / f"pod{r}", wake=lambda: None)
            started = time.perf_counter()
            failures = await volumes.set_up(pod)
            first.append(time.perf_counter() - started)
            assert not failures and volumes.ready, failures
            started = time.perf_counter()
            await volumes.set_up(pod)
            noop.append(time.perf_counter() - started)
            objects["cm-0"] = {"data": {**objects["cm-0"]["data"], "app.conf": encode(f"r{r}")}}
            started = time.perf_counter()
            await volumes.set_up(pod)
            update.append(time.perf_counter() - started)
            started = time.perf_counter()
            await volumes.tear_down()
            down.append(time.perf_counter() - started)
    label = f"{count} {kind} volumes ({len(DATA)} keys each"
    label += ", each on its own tmpfs)" if kind == "secret" else ")"
    print(f"{label}: first set-up {ms(first)}")
    print(f"{label}: refresh, nothing changed {ms(noop)}")
    print(f"{label}: refresh, one source changed {ms(update)}")
    print(f"{label}: tear-down {ms(down)}")


def e2e(count: int) -> None:
    from tests.agent_fixture import agent_server, wait_for

    with tempfile.TemporaryDirectory(prefix="kubling-bench-") as tmp, \
            agent_server(Path(tmp)) as server:
        items: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"},
             "data": DATA} for i in range(count)]
        server.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": items}))

        def run(name: str, volumes: int) -> float:
            spec: dict[str, Any] = {
                "terminationGracePeriodSeconds": 1,
                "volumes": [{"name": f"v{i}", "configMap": {"name": f"cm-{i}"}}
                            for i in range(volumes)],
                "containers": [{"name": "main", "image": "busybox:latest",
                                "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
                                "volumeMounts": [{"name": f"v{i}", "mountPath": f"/v/{i}"}
                                                 for i in range(volumes)]}]}
            started = time.monotonic()
            server.kubectl("apply", "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))
            wait_for(lambda: "Running" in server.kubectl(
                "get", "pod", name, "--no-headers", check=False).stdout, 60, name)
            return time.monotonic() - started

        plain = [run(f"plain-{i}", 0) for i in range(3)]
        mounted = [run(f"mounted-{i}", count) for i in range(3)]
        def runs(values: list[float]) -> str:
            return " / ".join(f"{v:.2f}" for v in values) + " s"

        print("pod created → Running (kubectl apply, polled every 0.1 s; each pod also has "
              f"its service-account volume), no other volume: {runs(plain)}")
        print(f"pod created → Running, {count} configMap volumes mounted (the first pod also "
              f"starts the {count} watches): {runs(mounted)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--e2e", action="store_true")
    args = parser.parse_args()
    asyncio.run(in_process(args.volumes, args.rounds, "configMap"))
    if os.geteuid() == 0:
        asyncio.run(in_process(args.volumes, args.rounds, "secret"))
    if args.e2e:
        e2e(args.volumes)


if __name__ == "__main__":
    main()
