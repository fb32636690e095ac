"""``kubling agent``: a node on this machine that joins a cluster, as ``k3s agent`` does.

It joins with the server's token (``kubling.cli.joining``), then runs the same node as
``kubling server`` runs for itself (``components.start_node``: service proxy and node
agent), talking to the cluster only through the API with its ``system:node:<name>``
credentials. SIGTERM and SIGINT stop it (exit 0) and leave the pods' containers running,
as a kubelet restart does; a failure is one line that says what to do (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kubling.apiserver import join
from kubling.cli import components as comps
from kubling.cli import hostinfo, joining, logs, options
from kubling.client import config as client_config
from kubling.node import agent as node_agent
from kubling.node import kubeletserver
from kubling.node.images import service as node_images

log = logging.getLogger("kubling.agent")

DEFAULT_DATA_DIR = "/var/lib/kubling/agent"

EPILOG = """examples:
  kubling agent --server https://10.0.0.1:6443 --token K10...::server:...
  KUBLING_URL=https://10.0.0.1:6443 KUBLING_TOKEN=K10... kubling agent
  kubling agent --config /etc/kubling/config.yaml   (keys are flag names: server: https://...)

The token is <data-dir>/token on the server (kubling server prints it on its first start).
The agent keeps its keys, certificates, kubelet.kubeconfig, images and pods under
--data-dir; images for its pods are pulled or imported there (kubling image --data-dir).
"""


def build_parser(prog: str = "kubling agent") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a node that joins a cluster: its node agent and service proxy. "
        "Every flag may also come from KUBLING_<FLAG> (KUBLING_URL for --server) or the "
        "config file (flag > env > file).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-s", "--server", default="",
                        help="URL of a kubling server, https://<address>:6443 (env KUBLING_URL)")
    parser.add_argument("-t", "--token", default="",
                        help="the server's join token, <data-dir>/token on the server "
                        "(env KUBLING_TOKEN)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help="where the agent's state lives: tls/, kubelet.kubeconfig, "
                        "images/, pods/ (default %(default)s)")
    parser.add_argument("--node-name", default="",
                        help="name of the Node (default: this host's name)")
    parser.add_argument("--node-ip", default="", type=_ip,
                        help="address the cluster reaches this node at (default: the host's "
                        "first IPv4 address)")
    comps.add_node_flags(parser)
    logs.add_flags(parser)
    return parser


def _ip(text: str) -> str:
    """An IP address, or '' (the default: the host's first address)."""
    if not text:
        return text
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None
    return text


def register(sub: Any) -> None:
    """Register for `kubling --help`; parsing happens in ``main`` (config precedence)."""
    sub.add_parser("agent", help="run a node that joins a cluster (--server, --token)",
                   description=build_parser().description)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = options.parse_args(parser, argv, env=os.environ,
                              env_aliases={"server": ["KUBLING_URL"]})
    logs.setup(fmt=args.log_format, verbosity=args.verbosity)
    if not args.server:
        parser.error("--server is required (or KUBLING_URL): the URL of a kubling server, "
                     "e.g. https://10.0.0.1:6443")
    if not args.server.startswith("https://"):
        parser.error(f"--server: {args.server!r} is not an https:// URL "
                     "(e.g. https://10.0.0.1:6443)")
    if not args.token:
        parser.error("--token is required (or KUBLING_TOKEN): copy <data-dir>/token from "
                     "the server")
    try:
        join.parse_token(args.token)
    except ValueError as err:
        parser.error(f"--token: {err}")
    problem = _preflight()
    if problem:
        print(f"kubling: {problem}", file=sys.stderr)
        return 1
    addresses = hostinfo.ipv4_addresses()
    node_ip = args.node_ip or (addresses[0] if addresses else "127.0.0.1")
    node_name = (args.node_name or socket.gethostname()).lower()
    data_dir = Path(args.data_dir).absolute()
    try:
        joined = joining.join_cluster(args.server, args.token, node_name=node_name,
                                      node_ips=[node_ip], data_dir=data_dir)
    except joining.JoinError as err:
        print(f"kubling: {err}", file=sys.stderr)
        return 1
    print(f"kubling: joined {args.server} as node {node_name} (pod CIDR {joined.pod_cidr})",
          file=sys.stderr, flush=True)
    agent = node_agent.AgentConfig(
        data_dir=data_dir, node_ip=node_ip, cluster_cidr=joined.cluster_cidr,
        cni_conf_dir=Path(args.cni_conf_dir),
        cni_bin_dirs=tuple(Path(d) for d in args.cni_bin_dir.split(":") if d),
        control_plane=False, kubelet_port=args.kubelet_port, node_name=node_name,
        pod_cidr=joined.pod_cidr, **comps.node_settings(args),
        kubelet_tls=kubeletserver.KubeletTLS(cert=joined.serving_cert, key=joined.serving_key,
                                             client_ca=joined.ca_cert))
    try:
        return _run(_serve(joined, agent, proxy=not args.disable_kube_proxy))
    except KeyboardInterrupt:
        return 0


def _preflight() -> str:
    """Why this host cannot run pods, or ''."""
    if os.geteuid() != 0:
        return "kubling agent must run as root (it runs containers with runc)"
    missing = [name for name in ("runc", "conmon") if shutil.which(name) is None]
    if missing:
        return f"{' and '.join(missing)} not found — apt-get install {' '.join(missing)}"
    return ""


def _run(serve: Any) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return int(asyncio.run(serve))
    return int(uvloop.run(serve))


async def _serve(joined: joining.Joined, agent: node_agent.AgentConfig, *, proxy: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    images = node_images.NodeImages(agent.data_dir / "images", registry_port=0)
    try:
        await images.start()
    except OSError as err:
        print(f"kubling: {err}", file=sys.stderr)
        return 1
    components = comps.Components(client_config.load_kubeconfig(joined.kubeconfig))
    node_task = comps.start_node(components, agent, images.store, proxy=proxy)
    stopped = asyncio.create_task(stop.wait())
    print(f"kubling agent is running — node {agent.node_name}", file=sys.stderr, flush=True)
    await asyncio.wait({stopped, node_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if node_task.done() and not stopped.done():
        error = node_task.exception() if not node_task.cancelled() else None
        print(f"kubling: the node agent stopped: {error}", file=sys.stderr, flush=True)
        code = 1
    else:
        print("kubling: stopping", file=sys.stderr, flush=True)
    stopped.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stopped
    await components.stop()
    await images.stop()
    return code
