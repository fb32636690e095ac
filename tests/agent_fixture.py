"""One agent-enabled ``kubling server`` for an end-to-end module, and the host it runs on.

A node agent owns host-wide things — the ``kubling0`` bridge, the ``ip kubling`` nftables
table, port 53 on the node IP, 10.42.0.0/24 — so the server runs inside this host's agent
slot (``tests.server_fixture.AGENT_SLOT``) from before it starts until after its leftovers
are removed; another test process waits its turn rather than sharing the bridge. Without
root, runc or conmon the tests fail (``install.sh`` installs both) rather than skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_fixture import AGENT_SLOT, REPO, KublingServer, free_port, wait_for


def require_node_agent() -> None:
    if os.geteuid() != 0 or shutil.which("runc") is None or shutil.which("conmon") is None:
        pytest.fail("the node agent needs root, runc and conmon — run ./install.sh as root")


def nft_table_exists(name: str) -> bool:
    out = subprocess.run(["nft", "list", "tables", "ip"], capture_output=True, text=True,
                         check=False).stdout
    return f"table ip {name}" in out.splitlines()


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True,
                          check=False).returncode == 0


def _kubling_cgroups() -> set[Path]:
    """The agent's parent cgroups: ``/kubling`` and its QoS classes' ``burstable`` and
    ``besteffort`` in each hierarchy of this hybrid host."""
    root = Path("/sys/fs/cgroup")
    found: set[Path] = set()
    for pattern in ("kubling", "*/kubling", "kubling/burstable", "kubling/besteffort",
                    "*/kubling/burstable", "*/kubling/besteffort"):
        found |= set(root.glob(pattern))
    return found


def _netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


class AgentServer(KublingServer):
    """A server with its node agent; ``kubelet_port`` is where the agent's HTTPS listens."""

    kubelet_port: int


def build_busybox(data_dir: Path) -> None:
    """The offline busybox image, built into ``data_dir``'s image store (a node agent's)."""
    subprocess.run([sys.executable, "-m", "kubling.cli.main", "image", "build", "busybox",
                    "--data-dir", str(data_dir)], check=True, capture_output=True, cwd=REPO)


@contextlib.contextmanager
def agent_host() -> Iterator[None]:
    """Hold this host's agent slot; afterwards remove the bridge, nft table, ``kubling-``
    namespaces and empty cgroups that were not there before. Every node agent a test
    starts (a server's or ``kubling agent``) runs inside it."""
    require_node_agent()
    with AGENT_SLOT.held():
        bridge_before = link_exists("kubling0")
        table_before = nft_table_exists("kubling")
        netns_before = _netns()
        cgroups_before = _kubling_cgroups()
        try:
            yield
        finally:
            if not table_before and nft_table_exists("kubling"):
                subprocess.run(["nft", "delete", "table", "ip", "kubling"], check=False)
            if not bridge_before and link_exists("kubling0"):
                subprocess.run(["ip", "link", "del", "kubling0"], check=False)
            for name in _netns() - netns_before:
                if name.startswith("kubling-"):
                    subprocess.run(["ip", "netns", "del", name], check=False)
            for cgroup in sorted(_kubling_cgroups() - cgroups_before,
                                 key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):  # only an empty one goes, deepest first
                    cgroup.rmdir()


@contextlib.contextmanager
def agent_server(base: Path, *, extra_args: tuple[str, ...] = ()) -> Iterator[AgentServer]:
    """Build busybox into a fresh data dir, start the server with its agent and wait for the
    node to be Ready; afterwards delete every pod, stop the server and remove the bridge,
    nft table and ``kubling-`` namespaces that were not there before."""
    require_node_agent()
    data_dir = base / "data"
    build_busybox(data_dir)
    with agent_host():
        kubelet_port = free_port()
        srv = AgentServer(data_dir, agent=True,
                          extra_args=["--cni-conf-dir", str(base / "cni"),
                                      "--kubelet-port", str(kubelet_port), *extra_args])
        srv.kubelet_port = kubelet_port
        try:
            srv.start()
            wait_for(lambda: "Ready" in srv.kubectl("get", "nodes", "--no-headers",
                                                    check=False).stdout,
                     20, "the node to be Ready")
            yield srv
        finally:
            if srv.process is not None:
                srv.kubectl("delete", "pods", "--all", "--all-namespaces", "--grace-period=1",
                            "--wait=true", "--timeout=60s", check=False, timeout=90)
            srv.stop()
