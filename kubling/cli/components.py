"""The components a ``kubling`` process runs as tasks, and the node's share of them.

``kubling server`` (its own node) and ``kubling agent`` (a node that joined) start a node
the same way — ``start_node``: kube-proxy's job, then the node agent — so the two cannot
drift apart; they differ only in where the credentials and the kubelet certificates come
from (the local CA, or the join endpoints).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import subprocess
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import kubling
from kubling.client import config as client_config
from kubling.client import rest
from kubling.network.proxy import ServiceProxy
from kubling.node import agent as node_agent
from kubling.node import logrotate
from kubling.node import pressure as node_pressure
from kubling.node.images.store import ImageStore

log = logging.getLogger("kubling.node")


class Components:
    """The in-process components. Each reaches the API server as its upstream twin does:
    over HTTPS, with its own client and User-Agent (which names it in managedFields)."""

    def __init__(self, config: client_config.ClientConfig) -> None:
        self.config = config
        self.clients: list[rest.Client] = []
        self.tasks: list[asyncio.Task[None]] = []

    def client(self, component: str) -> rest.Client:
        agent = f"{component}/v{kubling.KUBERNETES_VERSION} (linux) kubling/{kubling.__version__}"
        client = rest.Client(self.config, user_agent=agent)
        self.clients.append(client)
        return client

    def start(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work, name=name)
        self.tasks.append(task)
        return task

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for client in self.clients:
            await client.close()


def node_name(agent: node_agent.AgentConfig) -> str:
    """The Node this process runs: the configured name, else the host's (as the kubelet)."""
    return agent.node_name or socket.gethostname().lower()


def start_node(components: Components, agent: node_agent.AgentConfig, store: ImageStore, *,
               proxy: bool) -> asyncio.Task[None]:
    """Start this machine's node: the service proxy (unless ``proxy`` is off) and the node
    agent, as tasks of ``components``; returns the node agent's task, which ends only
    when the agent fails. ``agent.kubelet_tls`` must already be set."""
    if proxy:
        components.start("service-proxy", run_service_proxy(
            components.client("kube-proxy"), agent))
    kubelet = node_agent.NodeAgent(components.client("kubelet"), agent, store)
    return components.start("node-agent", kubelet.run())


async def run_service_proxy(client: rest.Client, agent: node_agent.AgentConfig) -> None:
    """kube-proxy's job on this node until cancelled; the nftables table stays in place
    when the process stops, so Services keep routing across a restart."""
    enable_forwarding()
    proxy = ServiceProxy(client, node_name=node_name(agent),
                         node_ips=[agent.node_ip], cluster_cidr=agent.cluster_cidr)
    await proxy.start()
    try:
        await asyncio.Event().wait()
    finally:
        await proxy.stop()


#: What kube-proxy needs from the kernel: routing between pods and the node, and bridged
#: pod traffic seen by netfilter (else a reply from a pod on the same bridge skips the
#: service's reverse NAT).
_SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"}


def enable_forwarding() -> None:
    if not Path("/proc/sys/net/bridge").exists():
        subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False)
    for key, value in _SYSCTLS.items():
        path = Path("/proc/sys") / key
        try:
            if path.read_text().strip() != value:
                path.write_text(value)
        except OSError as err:
            log.warning("cannot set %s=%s (%s): Services may not route", key, value, err)


# -- the node's own flags (kubling server and kubling agent) ---------------------------


def add_node_flags(parser: argparse.ArgumentParser) -> None:
    """The node settings both commands take: the agent's port, CNI, the service proxy, log
    rotation and hard eviction."""
    parser.add_argument("--kubelet-port", type=int, default=10250,
                        help="HTTPS port of the node agent's server (kubectl logs, exec and "
                        "port-forward reach it through the API server) (default %(default)s)")
    parser.add_argument("--cni-conf-dir", default="/etc/cni/net.d",
                        help="CNI configuration directory; kubling writes its default network "
                        "there when it is empty (default %(default)s)")
    parser.add_argument("--cni-bin-dir", default="/usr/lib/cni:/opt/cni/bin",
                        help="colon-separated directories of CNI plugins (default %(default)s)")
    parser.add_argument("--disable-kube-proxy", action="store_true",
                        help="do not program Services into nftables on this node")
    parser.add_argument("--container-log-max-size", type=_log_max_size, default="10Mi",
                        help="a container's log is rotated when it reaches this size, a "
                        "quantity such as 10Mi (default %(default)s)")
    parser.add_argument("--container-log-max-files", type=_log_max_files, default=5,
                        help="the most log files (rotated ones and the current) kept per "
                        "container, at least 2 (default %(default)s)")
    parser.add_argument("--eviction-hard", type=_eviction_hard,
                        default=node_pressure.DEFAULT_EVICTION_HARD,
                        help="hard eviction thresholds that put the node under memory, disk "
                        "or PID pressure, such as memory.available<100Mi,nodefs.available<10%%"
                        " (default %(default)s)")


def node_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``AgentConfig`` fields from the flags ``add_node_flags`` added."""
    return {"log_rotate": logrotate.LogRotatePolicy.parse(args.container_log_max_size,
                                                          args.container_log_max_files),
            "eviction_hard": args.eviction_hard}


def _log_max_size(text: str) -> str:
    """``--container-log-max-size``: a quantity (argparse type)."""
    try:
        logrotate.LogRotatePolicy.parse(text, logrotate.DEFAULT_MAX_FILES)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _log_max_files(text: str) -> int:
    """``--container-log-max-files``: more than one (argparse type)."""
    try:
        files = int(text)
        logrotate.LogRotatePolicy.parse(logrotate.DEFAULT_MAX_SIZE, files)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return files


def _eviction_hard(text: str) -> tuple[node_pressure.Threshold, ...]:
    """``--eviction-hard`` in the kubelet's syntax (argparse type)."""
    try:
        return node_pressure.parse_eviction_hard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
