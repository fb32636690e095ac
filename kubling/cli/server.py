"""``kubling server``: the control plane of a cluster, in one process.

Start-up prints one line per phase with its duration, then the ready line with the
kubeconfig to export. SIGTERM and SIGINT stop it cleanly (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
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

from kubling.apiserver import join, pki, server
from kubling.cli import cleanup as host_cleanup
from kubling.cli import components as comps
from kubling.cli import hostinfo, logs, options
from kubling.client import config as client_config
from kubling.client import rest
from kubling.controllers import cronjob_schedule, manager
from kubling.network.dns import kubedns
from kubling.network.dns.server import ClusterDNS
from kubling.node import agent as node_agent
from kubling.node import kubeletserver
from kubling.node import simulated as simulated_nodes
from kubling.node.images import service as node_images
from kubling.scheduler import runner

log = logging.getLogger("kubling.server")

EPILOG = """examples:
  kubling server
  kubling server --data-dir /tmp/k --https-port 7443
  KUBLING_HTTPS_PORT=7443 kubling server
  kubling server --config /etc/kubling/config.yaml   (keys are flag names: https-port: 7443)
"""


def build_parser(prog: str = "kubling server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the control plane: API server with its embedded datastore. Every "
        "flag may also come from KUBLING_<FLAG> or the config file (flag > env > file).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data-dir", default="/var/lib/kubling",
                        help="where state lives: db/, tls/, kubeconfig.yaml (default %(default)s)")
    parser.add_argument("--bind-address", default="0.0.0.0",
                        help="address the API server listens on (default %(default)s)")
    parser.add_argument("--https-port", type=int, default=6443,
                        help="port of the API server (default %(default)s)")
    parser.add_argument("--datastore-endpoint", default="",
                        help="storage: sqlite:///path/state.db (default <data-dir>/db/state.db)"
                        " or memory://")
    parser.add_argument("--cluster-cidr", default="10.42.0.0/16", type=_cidr,
                        help="pod network (default %(default)s)")
    parser.add_argument("--service-cidr", default="10.43.0.0/16", type=_cidr,
                        help="service network (default %(default)s)")
    parser.add_argument("--service-node-port-range", default="30000-32767",
                        type=server.node_port_range,
                        help="port range of NodePort services (default %(default)s)")
    parser.add_argument("--tls-san", action="append", default=[],
                        help="extra hostname or IP for the serving certificate (repeatable)")
    parser.add_argument("--write-kubeconfig", default="",
                        help="also write the admin kubeconfig to this path")
    parser.add_argument("--write-kubeconfig-mode", default="0600",
                        help="file mode of --write-kubeconfig (default %(default)s)")
    parser.add_argument("--controllers", default="*",
                        help="controllers to run, kube-controller-manager style: '*' for all, "
                        "'*,-name' to leave one out, '' for none (default %(default)s)")
    parser.add_argument("--disable-scheduler", action="store_true",
                        help="do not run the scheduler (pods stay Pending unless bound)")
    parser.add_argument("--simulated-nodes", type=int, default=0, metavar="N",
                        help="also register N simulated nodes (no containers; pods bound to "
                        "them run and complete as on a real node) for tests and scale")
    parser.add_argument("--disable-agent", action="store_true",
                        help="run no node agent: a pure control plane (pods need other nodes)")
    parser.add_argument("--cluster-dns", default="10.43.0.10", type=_ip,
                        help="address of the cluster DNS Service kube-system/kube-dns, in "
                        "--service-cidr (default %(default)s)")
    parser.add_argument("--disable-cluster-dns", action="store_true",
                        help="do not serve the cluster DNS (pods then use the node's "
                        "resolvers)")
    parser.add_argument("--disable-servicelb", action="store_true",
                        help="do not give LoadBalancer Services the node addresses (leave "
                        "them to another load-balancer implementation)")
    parser.add_argument("--cleanup", action="store_true",
                        help="do not start: stop the pods' containers and remove what kubling "
                        "made on this host (nftables table, kubling0, kubling- namespaces, "
                        "mounts, cgroups, CNI rules), keeping the data dir, then exit")
    parser.add_argument("--metric-resolution", type=_resolution, default="15s",
                        help="how often the nodes' resource usage is scraped for kubectl top "
                        "and metrics.k8s.io, a duration such as 15s (default %(default)s)")
    comps.add_node_flags(parser)
    parser.add_argument("--registry-port", type=int, default=5000,
                        help="port of the embedded image registry (default %(default)s)")
    parser.add_argument("--disable-registry", action="store_true",
                        help="do not serve the embedded image registry")
    logs.add_flags(parser)
    return parser


def _cidr(text: str) -> str:
    """An IP network such as 10.43.0.0/16 (argparse type: a bad one is a usage error)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a network in CIDR form: {text!r} (e.g. 10.43.0.0/16)") from None
    return text


def _resolution(text: str) -> float:
    """``--metric-resolution``: a Go duration of at least 1s, in seconds."""
    try:
        seconds = cronjob_schedule.parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if seconds < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1s, not {text!r}")
    return seconds


def _ip(text: str) -> str:
    """An IP address (argparse type: a bad one is a usage error)."""
    if not _is_ip(text):
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}")
    return text


@dataclasses.dataclass(frozen=True)
class ServicesConfig:
    """What makes Services route on this node: the proxy and the cluster DNS."""

    proxy: bool
    dns: bool
    cluster_dns: str
    cluster_cidr: str


def register(sub: Any) -> None:
    """Register for `kubling --help`; parsing happens in ``main`` (config precedence)."""
    sub.add_parser("server", help="run the control plane (a single-node cluster)",
                   description=build_parser().description)


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = options.parse_args(parser, argv, env=os.environ)
    logs.setup(fmt=args.log_format, verbosity=args.verbosity)
    try:
        mode = int(args.write_kubeconfig_mode, 8)
    except ValueError:
        parser.error(f"--write-kubeconfig-mode: not an octal mode: {args.write_kubeconfig_mode}")
    owner = hostinfo.port_owner(args.https_port)
    if args.cleanup:
        return _cleanup(args, owner)
    if owner is not None:
        print(f"kubling: port {args.https_port} is in use by pid {owner} "
              f"({hostinfo.process_name(owner)}) — stop it or pass --https-port",
              file=sys.stderr)
        return 1
    addresses = hostinfo.ipv4_addresses()
    sans = [s for s in args.tls_san if not _is_ip(s)]
    ips = [s for s in args.tls_san if _is_ip(s)]
    config = server.ServerConfig(
        data_dir=Path(args.data_dir).absolute(),
        bind_address=args.bind_address,
        https_port=args.https_port,
        datastore_endpoint=args.datastore_endpoint,
        cluster_cidr=args.cluster_cidr,
        service_cidr=args.service_cidr,
        service_node_port_range=args.service_node_port_range,
        node_addresses=tuple(addresses + ips),
        hostnames=tuple([socket.gethostname(), *sans]),
        metric_resolution=args.metric_resolution,
    )
    try:
        controllers = manager.parse_selection(args.controllers, manager.CONTROLLERS)
    except ValueError as err:
        parser.error(f"--controllers: {err}")
    if args.disable_servicelb:  # k3s's --disable servicelb
        controllers = [name for name in controllers if name != "servicelb"]
    if args.simulated_nodes < 0:
        parser.error("--simulated-nodes: must be 0 or more")
    simulated = simulated_nodes.SimulatedNodeConfig(count=args.simulated_nodes,
                                                    pod_cidr=args.cluster_cidr)
    registry_port = 0 if args.disable_registry else args.registry_port
    if registry_port:
        owner = hostinfo.port_owner(registry_port)
        if owner is not None:
            print(f"kubling: port {registry_port} is in use by pid {owner} "
                  f"({hostinfo.process_name(owner)}) — stop it or pass --registry-port "
                  "(or --disable-registry)", file=sys.stderr)
            return 1
    agent = _agent_config(args, config, addresses)
    if ipaddress.ip_address(args.cluster_dns) not in ipaddress.ip_network(args.service_cidr,
                                                                          strict=False):
        parser.error(f"--cluster-dns: {args.cluster_dns} is not in --service-cidr "
                     f"{args.service_cidr}")
    services = ServicesConfig(proxy=not args.disable_kube_proxy,
                              dns=not args.disable_cluster_dns,
                              cluster_dns=args.cluster_dns, cluster_cidr=args.cluster_cidr)
    try:
        return _run(config, write_kubeconfig=args.write_kubeconfig, mode=mode,
                    controllers=controllers, simulated=simulated,
                    scheduler=not args.disable_scheduler, registry_port=registry_port,
                    agent=agent, services=services)
    except KeyboardInterrupt:
        return 0


def _cleanup(args: argparse.Namespace, owner: int | None) -> int:
    """``--cleanup``: refuse while a server uses this host's state, else remove it."""
    if os.geteuid() != 0:
        print("kubling: --cleanup must run as root (it removes mounts, namespaces and "
              "nftables tables)", file=sys.stderr)
        return 1
    if owner is not None:
        print(f"kubling: port {args.https_port} is in use by pid {owner} "
              f"({hostinfo.process_name(owner)}) — stop the server before --cleanup",
              file=sys.stderr)
        return 1
    return host_cleanup.cleanup_host(Path(args.data_dir))


def _agent_config(args: argparse.Namespace, config: server.ServerConfig,
                  addresses: list[str]) -> node_agent.AgentConfig | None:
    """The node agent's settings, or None (with one warning line) when it cannot run here:
    containers need root and runc."""
    if args.disable_agent:
        return None
    missing = [name for name in ("runc", "conmon") if shutil.which(name) is None]
    if os.geteuid() != 0 or missing:
        why = "not running as root" if os.geteuid() != 0 else (
            f"{' and '.join(missing)} not found — apt-get install {' '.join(missing)}")
        log.warning("node agent disabled: %s; this server runs no pods itself", why)
        return None
    return node_agent.AgentConfig(
        data_dir=config.data_dir, node_ip=addresses[0] if addresses else "127.0.0.1",
        cluster_cidr=args.cluster_cidr, cni_conf_dir=Path(args.cni_conf_dir),
        cni_bin_dirs=tuple(Path(d) for d in args.cni_bin_dir.split(":") if d),
        kubelet_port=args.kubelet_port, **comps.node_settings(args))


def _is_ip(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)
    except OSError:
        return False
    return True


def _print_phase(name: str, seconds: float) -> None:
    print(f"kubling: {name:<13} {seconds * 1000:7.1f} ms", file=sys.stderr, flush=True)


def _run(config: server.ServerConfig, *, write_kubeconfig: str, mode: int,
         controllers: list[str], simulated: simulated_nodes.SimulatedNodeConfig,
         scheduler: bool, registry_port: int, agent: node_agent.AgentConfig | None,
         services: ServicesConfig) -> int:
    serve = _serve(config, write_kubeconfig, mode, controllers, simulated, scheduler,
                   registry_port, agent, services)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.run(serve)
    return uvloop.run(serve)


async def _serve(config: server.ServerConfig, write_kubeconfig: str, mode: int,
                 controllers: list[str], simulated: simulated_nodes.SimulatedNodeConfig,
                 scheduler: bool, registry_port: int,
                 agent: node_agent.AgentConfig | None, services: ServicesConfig) -> int:
    api = server.APIServer(config, on_phase=_print_phase)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await api.start()
    except OSError as err:
        await api.stop()
        if err.errno == errno.EADDRINUSE:
            print(f"kubling: port {config.https_port} is in use — stop what holds it or pass "
                  "--https-port", file=sys.stderr)
        else:
            print(f"kubling: cannot start: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a bad endpoint or CIDR: the user's to fix
        await api.stop()
        print(f"kubling: {err}", file=sys.stderr)
        return 2
    if write_kubeconfig:
        target = Path(write_kubeconfig)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.kubeconfig_path, target)
        os.chmod(target, mode)
    images = node_images.NodeImages(config.data_dir / "images", registry_port=registry_port)
    try:
        await images.start(on_phase=_print_phase)
    except OSError as err:
        await api.stop()
        print(f"kubling: {err}", file=sys.stderr)
        return 1
    components = _start_components(config, controllers, simulated, scheduler)
    if agent is not None:
        if services.dns:
            # Before the agent: its first pods already get the cluster DNS in resolv.conf.
            await _start_cluster_dns(components, services, agent)
        agent = await _with_kubelet_tls(api, agent)
        comps.start_node(components, agent, images.store, proxy=services.proxy)
    elapsed = hostinfo.process_age()
    print(f"kubling is ready in {elapsed:.1f}s — export KUBECONFIG={config.kubeconfig_path}",
          file=sys.stderr, flush=True)
    _print_join_hint(api, config)
    await stop.wait()
    print("kubling: stopping", file=sys.stderr, flush=True)
    await components.stop()
    await images.stop()
    await api.stop()
    return 0


def _print_join_hint(api: server.APIServer, config: server.ServerConfig) -> None:
    """How other machines join: the token itself only on the start that made it (it is a
    credential; afterwards the 0600 file is where it lives), its path on every start."""
    path = config.data_dir / join.TOKEN_FILE
    if not api.join_token_created:
        print(f"kubling: agents join with the token in {path}", file=sys.stderr, flush=True)
        return
    address = config.node_addresses[0] if config.node_addresses else "127.0.0.1"
    print(f"kubling: join token (saved in {path}): {api.join_token}\n"
          f"kubling: to join a node: kubling agent --server https://{address}:"
          f"{config.https_port} --token <token>", file=sys.stderr, flush=True)


async def _with_kubelet_tls(api: server.APIServer,
                            agent: node_agent.AgentConfig) -> node_agent.AgentConfig:
    """The agent's serving certificate for this node, from the cluster CA, so that the
    API server (which trusts only that CA) can reach it for logs."""
    assert api.pki is not None
    cert, key = await asyncio.to_thread(
        pki.ensure_kubelet_serving_cert, api.pki, node_name=socket.gethostname().lower(),
        hostnames=["localhost"], ips=sorted({agent.node_ip, "127.0.0.1"}))
    return dataclasses.replace(agent, kubelet_tls=kubeletserver.KubeletTLS(
        cert=cert, key=key, client_ca=api.pki.ca_cert))


async def _start_cluster_dns(components: comps.Components, services: ServicesConfig,
                             agent: node_agent.AgentConfig) -> None:
    """Serve the cluster DNS on the node address, port 53, behind the kube-dns Service at
    --cluster-dns; a port already taken leaves pods on the node's resolvers, with a
    warning that says so."""
    dns = ClusterDNS(components.client("coredns"), listen=[(agent.node_ip, 53)])
    try:
        await dns.start()
    except OSError as err:
        log.warning("cluster DNS disabled: cannot listen on %s:53 (%s) — free the port or "
                    "pass --disable-cluster-dns", agent.node_ip, err.strerror or err)
        return

    async def serve() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await dns.stop()

    components.start("cluster-dns", serve())
    try:
        await kubedns.ensure_kube_dns(components.client("coredns"),
                                      cluster_ip=services.cluster_dns, address=agent.node_ip,
                                      node_name=socket.gethostname().lower())
    except rest.ApiError as err:
        log.warning("cluster DNS: cannot create the kube-dns Service: %s", err)


def _start_components(config: server.ServerConfig, controllers: list[str],
                      simulated: simulated_nodes.SimulatedNodeConfig,
                      scheduler: bool) -> comps.Components:
    components = comps.Components(client_config.load_kubeconfig(config.kubeconfig_path))
    if scheduler:
        components.start("scheduler", runner.Scheduler(components.client("kube-scheduler")).run())
    if simulated.count:
        nodes = simulated_nodes.SimulatedNodes(components.client("kubelet"), simulated)
        components.start("simulated-nodes", nodes.run())
    if controllers:
        controller_manager = manager.ControllerManager(
            components.client("kube-controller-manager"), controllers=controllers,
            service_account_key_file=pki.ClusterPKI.at(config.data_dir / "tls").service_account_key)
        components.start("controller-manager", controller_manager.run())
    return components
