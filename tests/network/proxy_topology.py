"""A miniature node for the service proxy tests: real bridge, veths, namespaces, servers.

Layout (``N`` random per run, ``T`` a random tag; every name starts with ``kubling-`` and
is never ``kubling0`` nor the table ``kubling``):

- bridge ``kubling-ptT`` with the host's pod-network address ``10.253.N.1/24``;
- two "pods" (bridge ports in hairpin mode, as the CNI config makes them), namespaces ``kubling-ptTa``/``kubling-ptTb`` at ``10.253.N.2``/``.3``, each
  running an echo server on TCP and UDP 8080 and 9090 that answers ``<pod> <peer-ip>``;
- one "outside client", namespace ``kubling-ptTc`` at ``10.251.N.2`` behind the host's
  routed veth ``10.251.N.1`` (not on the pod network, so not in the cluster CIDR);
- service addresses from ``10.252.N.0/24``, routed to the bridge on the host.

Everything is removed by ``close()``, which only touches what this object made: its
processes by PID, its links, namespaces, routes and nftables tables.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field

from kubling.network import netns
from kubling.network.proxy import nft
from kubling.network.proxy.model import ProxyState
from kubling.network.proxy.ruleset import Inventory, build

ECHO = r"""
import socket, socketserver, sys, threading
name, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
class Tcp(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"{name} {self.client_address[0]}".encode())
class Udp(socketserver.BaseRequestHandler):
    def handle(self):
        self.request[1].sendto(f"{name} {self.client_address[0]}".encode(), self.client_address)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
servers = [cls(("0.0.0.0", p), h) for p in ports for cls, h in
           ((socketserver.ThreadingTCPServer, Tcp), (socketserver.ThreadingUDPServer, Udp))]
for s in servers:
    threading.Thread(target=s.serve_forever, daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

ASK = r"""
import socket, sys
host, port, count, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
for _ in range(count):
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=2) as s:
                print(s.recv(200).decode(), flush=True)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2); s.connect((host, port)); s.send(b"?")
                print(s.recv(200).decode(), flush=True)
    except OSError as err:
        print(f"error {type(err).__name__}", flush=True)
"""

ECHO_PORTS = (8080, 9090)


def sh(*cmd: str, check: bool = True) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result.stdout


def ask(host: str, port: int, proto: str = "tcp", timeout: float = 2.0) -> str:
    """One request from the host: the answer, or ``error <ExceptionName>``."""
    try:
        if proto == "tcp":
            with socket.create_connection((host, port), timeout=timeout) as conn:
                return conn.recv(200).decode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
            sock.send(b"?")
            return sock.recv(200).decode()
    except OSError as err:
        return f"error {type(err).__name__}"


@dataclass
class Topology:
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    n: int = field(default_factory=lambda: random.randrange(256))
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    tables: set[str] = field(default_factory=set)
    inventories: dict[str, Inventory | None] = field(default_factory=dict)

    # -- names and addresses ---------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"kubling-pt{self.tag}"

    @property
    def table(self) -> str:
        return f"kubling-t{self.tag}"

    def ns(self, pod: str) -> str:
        return f"kubling-pt{self.tag}{pod}"

    @property
    def pod_cidr(self) -> str:
        return f"10.253.{self.n}.0/24"

    @property
    def host_ip(self) -> str:
        return f"10.253.{self.n}.1"

    @property
    def host_outside_ip(self) -> str:
        return f"10.251.{self.n}.1"

    @property
    def client_ip(self) -> str:
        return f"10.251.{self.n}.2"

    def pod_ip(self, pod: str) -> str:
        return f"10.253.{self.n}.{2 + 'ab'.index(pod)}"

    def service_ip(self, host: int) -> str:
        return f"10.252.{self.n}.{host}"

    # -- building ----------------------------------------------------------------------------
    def setup(self) -> None:
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for pod in "ab":
            self._veth(pod, f"{self.pod_ip(pod)}/24", self.host_ip)
            sh("ip", "link", "set", self.ns(pod), "master", self.bridge)
            sh("ip", "link", "set", self.ns(pod), "up")
            # As the CNI bridge plugin's hairpinMode: with br_netfilter the DNAT happens at
            # the bridge, which then sends a pod's packet to itself back out of its own port.
            sh("ip", "link", "set", self.ns(pod), "type", "bridge_slave", "hairpin", "on")
        self._veth("c", f"{self.client_ip}/24", self.host_outside_ip)
        sh("ip", "addr", "add", f"{self.host_outside_ip}/24", "dev", self.ns("c"))
        sh("ip", "link", "set", self.ns("c"), "up")
        self.route(f"10.252.{self.n}.0/24")
        for pod in "ab":
            self._echo(pod)

    def _veth(self, pod: str, address: str, gateway: str) -> None:
        name = self.ns(pod)
        netns.create(name)
        self.namespaces.append(name)
        sh("ip", "link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", name)
        self.links.append(name)
        sh("ip", "-n", name, "addr", "add", address, "dev", "eth0")
        sh("ip", "-n", name, "link", "set", "eth0", "up")
        sh("ip", "-n", name, "route", "add", "default", "via", gateway)

    def _echo(self, pod: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(pod), sys.executable, "-c", ECHO, pod,
             *map(str, ECHO_PORTS)], stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"

    def route(self, destination: str) -> None:
        """Send ``destination`` to the bridge, as a node routes its service CIDR."""
        sh("ip", "route", "add", destination, "dev", self.bridge)
        self.routes.append(destination)

    # -- rules -------------------------------------------------------------------------------
    def apply(self, state: ProxyState, table: str | None = None) -> str:
        """Program ``state`` the way ``ServiceProxy`` does; return the script."""
        table = table or self.table
        ruleset = build(state, table=table)
        script = ruleset.script(self.inventories.get(table))
        self.tables.add(table)
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, timeout=30)
        self.inventories[table] = ruleset.inventory()
        return script

    def state(self, *services: object, **kwargs: object) -> ProxyState:
        defaults: dict[str, object] = {
            "node_name": "node-a", "node_ips": (self.host_ip, self.host_outside_ip),
            "cluster_cidr": self.pod_cidr,
        }
        defaults.update(kwargs)
        return ProxyState(services=tuple(services), **defaults)  # type: ignore[arg-type]

    def ask_from(self, pod: str, host: str, port: int, count: int = 1,
                 proto: str = "tcp") -> list[str]:
        """``count`` requests from inside namespace ``pod`` (one process for all of them)."""
        out = sh("ip", "netns", "exec", self.ns(pod), sys.executable, "-c", ASK, host,
                 str(port), str(count), proto)
        return out.splitlines()

    # -- teardown ------------------------------------------------------------------------------
    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=10)
        for table in self.tables:
            nft.cleanup(table)
        for destination in self.routes:
            sh("ip", "route", "del", destination, check=False)
        for link in reversed(self.links):
            sh("ip", "link", "del", link, check=False)
        for name in self.namespaces:
            netns.delete(name)
