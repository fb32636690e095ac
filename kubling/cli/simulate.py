"""``kubling simulate``: simulated nodes joined to any cluster, for scale tests (like kwok).

The nodes exist only in the API: they register, heartbeat their Leases and move the pods
bound to them through their lifecycle without running containers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

from kubling.cli import logs
from kubling.client import config as client_config
from kubling.client import rest
from kubling.node import simulated

EPILOG = """examples:
  kubling simulate --nodes 100
  kubling simulate --nodes 1000 --cpu 8 --memory 32Gi --kubeconfig ~/.kube/config
"""


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "simulate", help="run simulated nodes against a cluster",
        description="Register N simulated nodes with a cluster and keep them alive: pods "
        "scheduled to them run (and Jobs' pods complete) without containers.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1, help="how many nodes (default 1)")
    parser.add_argument("--kubeconfig", default=os.environ.get(
        "KUBECONFIG", "/var/lib/kubling/kubeconfig.yaml"),
        help="the cluster to join (default $KUBECONFIG or kubling's admin kubeconfig)")
    parser.add_argument("--prefix", default="kubling-sim", help="node name prefix")
    parser.add_argument("--cpu", default="4", help="CPU capacity per node (default 4)")
    parser.add_argument("--memory", default="8Gi", help="memory per node (default 8Gi)")
    parser.add_argument("--pods", type=int, default=110, help="pods per node (default 110)")
    parser.add_argument("-v", "--verbosity", action="count", default=0)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logs.setup(verbosity=args.verbosity)
    if args.nodes < 1:
        print("kubling simulate: --nodes must be 1 or more", file=sys.stderr)
        return 2
    try:
        cfg = client_config.load_kubeconfig(args.kubeconfig)
    except client_config.KubeconfigError as err:
        print(f"kubling simulate: {err} — pass --kubeconfig", file=sys.stderr)
        return 2
    nodes = simulated.SimulatedNodeConfig(prefix=args.prefix, count=args.nodes, cpu=args.cpu,
                                          memory=args.memory, pods=args.pods)
    return asyncio.run(_simulate(cfg, nodes))


async def _simulate(cfg: client_config.ClientConfig,
                    nodes: simulated.SimulatedNodeConfig) -> int:
    loop = asyncio.get_running_loop()
    async with rest.Client(cfg) as client:
        task = asyncio.create_task(simulated.SimulatedNodes(client, nodes).run())
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        print(f"kubling simulate: {nodes.count} node(s) {nodes.prefix}-0.. running; "
              "Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            await task
        except asyncio.CancelledError:
            return 0
        except _FAILURES as err:
            print(f"kubling simulate: {err}", file=sys.stderr)
            return 1
    return 0


_FAILURES: tuple[type[BaseException], ...] = (rest.ApiError, *rest.TRANSPORT_ERRORS)
