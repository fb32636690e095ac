"""Scheduler throughput: the pure scheduling loop over an in-memory snapshot.

1,000 nodes (4 cpu, 8Gi, 110 pods, 10 zones) and 10,000 pods (100m / 128Mi); one pod in 50
has a required anti-affinity on hostname, one in 50 a zone spread constraint, one in 50 a
preferred node affinity. Each decision is assumed into the snapshot before the next pod,
as the real scheduler does. No API, no binding: this measures the framework and plugins.

    python bench/scheduler_bench.py [--nodes 1000] [--pods 10000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kubling.scheduler.framework import FitError, Framework
from kubling.scheduler.nodeinfo import PodInfo
from kubling.scheduler.snapshot import Snapshot

ZONES = 10


def make_node(i: int) -> dict[str, Any]:
    name = f"node-{i:04d}"
    return {
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": f"zone-{i % ZONES}",
            "disk": "ssd" if i % 3 == 0 else "hdd",
        }},
        "spec": {},
        "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
    }


def make_pod(i: int) -> dict[str, Any]:
    app = f"app-{i % 200}"
    spec: dict[str, Any] = {
        "containers": [{
            "name": "c", "image": "registry.example/app:1",
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        }],
    }
    if i % 50 == 1:
        spec["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}},
             "topologyKey": "kubernetes.io/hostname"},
        ]}}
    elif i % 50 == 2:
        spec["topologySpreadConstraints"] = [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": app}},
        }]
    elif i % 50 == 3:
        spec["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [
                {"key": "disk", "operator": "In", "values": ["ssd"]}]}},
        ]}}
    return {
        "metadata": {"name": f"pod-{i:05d}", "namespace": "default", "uid": f"uid-{i}",
                     "labels": {"app": app}},
        "spec": spec,
    }


def run(num_nodes: int, num_pods: int) -> tuple[float, int]:
    snapshot = Snapshot([make_node(i) for i in range(num_nodes)])
    framework = Framework(rng=random.Random(1))
    pods = [make_pod(i) for i in range(num_pods)]
    failed = 0
    start = time.perf_counter()
    for pod in pods:
        info = PodInfo(pod)  # digesting the pod is part of the cost, as in the real loop
        result = framework.schedule(info, snapshot)
        if isinstance(result, FitError):
            failed += 1
            continue
        snapshot.assume(info, result.suggested_host)
    return time.perf_counter() - start, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
    elapsed, failed = run(args.nodes, args.pods)
    if args.profile:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    print(f"scheduled {args.pods - failed}/{args.pods} pods on {args.nodes} nodes "
          f"in {elapsed:.2f}s: {(args.pods - failed) / elapsed:.0f} pods/s")


if __name__ == "__main__":
    main()
