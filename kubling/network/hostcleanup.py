"""Remove the network state kubling leaves on a host, for ``kubling server --cleanup``.

What the node agent and the service proxy make, and how each is recognised as ours:

- the nftables table ``ip kubling`` (the service proxy);
- pod sandbox network namespaces, ``/run/netns/kubling-<first 12 characters of the pod
  uid>``;
- the ``kubling0`` bridge of the default CNI network (the pods' veth peers go with their
  namespaces);
- the ``nat`` rules the reference ``bridge`` (``ipMasq``) and ``portmap`` plugins add for
  attachments of kubling's default network: their comment says ``name: "kubling"``, and the
  per-attachment ``CNI-…`` chains they jump to. Chains shared by every CNI network
  (``CNI-HOSTPORT-*``) stay; rules of other networks are never touched.

Names are matched exactly, not by prefix: other ``kubling-`` things on the host (a test's
namespaces and tables, a second network) are not this server's to remove.

Every step is synchronous and independent: one failing (no ``iptables`` on the host) is
reported and the others still run. Each returns what it removed, so the command can say so.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Callable

from kubling.network import netns
from kubling.network.cniconfig import DEFAULT_NETWORK_NAME
from kubling.network.proxy import nft

__all__ = ["BRIDGE", "POD_NETNS", "TABLE", "CleanupStep", "bridge", "cni_nat_rules",
           "namespaces", "nft_table", "steps"]

#: The proxy's table and the default network's bridge (``cniconfig.default_config``).
TABLE = "kubling"
BRIDGE = "kubling0"
#: A pod sandbox's namespace: ``kubling-`` and the uid's first 12 characters
#: (``kubling.node.sandbox.netns_name``; a test keeps the two in step).
POD_NETNS = re.compile(r"^kubling-[0-9a-f]{8}-[0-9a-f]{3}$")
_TIMEOUT = 30
#: Chains every CNI network shares (portmap's entry points): never ours to delete.
_SHARED_CHAIN_PREFIX = "CNI-HOSTPORT-"

CleanupStep = tuple[str, Callable[[], list[str]]]


def nft_table(table: str = TABLE) -> list[str]:
    """Delete the proxy's table; established flows keep their conntrack NAT."""
    return [f"ip {table}"] if nft.cleanup(table) else []


def namespaces() -> list[str]:
    """Unmount and remove every pod sandbox network namespace."""
    removed = []
    for name in netns.list_kubling():
        if POD_NETNS.match(name):
            netns.delete(name)
            removed.append(name)
    return removed


def bridge(name: str = BRIDGE) -> list[str]:
    """Delete the default network's bridge (absent: nothing to do)."""
    result = subprocess.run(["ip", "link", "delete", name, "type", "bridge"],
                            capture_output=True, text=True, check=False, timeout=_TIMEOUT)
    if result.returncode == 0:
        return [name]
    if "Cannot find device" in result.stderr:
        return []
    raise RuntimeError(result.stderr.strip())


def _is_ours(words: list[str], network: str) -> bool:
    """A rule whose comment names an attachment of ``network`` (bridge: ``name: "x" id:``,
    portmap: ``dnat name: "x" id:`` and the like)."""
    for i, word in enumerate(words[:-1]):
        if word == "--comment" and f'name: "{network}" id: ' in words[i + 1]:
            return True
    return False


def cni_nat_rules(network: str = DEFAULT_NETWORK_NAME, tool: str = "iptables") -> list[str]:
    """Delete ``network``'s rules from the ``nat`` table and the chains only they used.

    The rules are deleted first (so nothing jumps to the chains any more), then each chain
    they jumped to is flushed and deleted. Returns the deleted chains.
    """
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, "-w", "5", "-t", "nat", *args], capture_output=True,
                              text=True, check=False, timeout=_TIMEOUT)

    try:
        listing = run("-S")
    except FileNotFoundError:  # no iptables: no plugin could have made rules either
        return []
    if listing.returncode != 0:
        raise RuntimeError(f"{tool} -t nat -S: {listing.stderr.strip()}")
    chains: list[str] = []
    for line in listing.stdout.splitlines():
        words = shlex.split(line)
        if words[:1] != ["-A"] or not _is_ours(words, network):
            continue
        run("-D", *words[1:])
        target = words[words.index("-j") + 1] if "-j" in words[:-1] else ""
        if target.startswith("CNI-") and not target.startswith(_SHARED_CHAIN_PREFIX) \
                and target not in chains:
            chains.append(target)
    for chain in chains:
        run("-F", chain)
        run("-X", chain)
    return chains


def steps() -> list[CleanupStep]:
    """The network cleanup steps, in a safe order: the proxy's table first (new
    connections stop being proxied), namespaces before the bridge their veths hang on."""
    return [("nftables table", nft_table), ("network namespaces", namespaces),
            ("bridge", bridge), ("CNI nat chains", cni_nat_rules)]
