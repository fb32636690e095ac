"""Work around the reference ``bridge`` plugin leaking its NAT rules on some DELs.

With ``ipMasq``, ``bridge`` ADD adds a per-container chain ``CNI-<hash>`` to the ``nat``
table and a POSTROUTING jump to it. Its DEL (checked with Debian's plugins 1.1.1) finds the
addresses to unmasquerade by reading the interface *inside* the namespace, so when the
namespace is already gone — which the spec explicitly allows, by passing an empty
CNI_NETNS — or the pod's interface was deleted, it releases the IP but leaves both rules
behind, and the next pod that gets the address inherits a stale jump. After such a DEL the
runtime removes them itself, by the names the plugin gives them (``utils.FormatChainName``
upstream). Harmless with a plugin that already cleaned up: there is then nothing to find.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["chain_name", "masquerades", "remove_leaked_ipmasq"]

_MAX_CHAIN = 28


def chain_name(network: str, container_id: str) -> str:
    """The ``nat`` chain ``bridge`` makes for one container: CNI- plus 24 hex of a SHA-512."""
    digest = hashlib.sha512((network + container_id).encode()).hexdigest()
    return f"CNI-{digest}"[:_MAX_CHAIN]


def masquerades(plugins: Iterable[Mapping[str, Any]]) -> bool:
    """True when the list has a ``bridge`` plugin that masquerades (and so may leak)."""
    return any(p.get("type") == "bridge" and p.get("ipMasq") for p in plugins)


async def remove_leaked_ipmasq(network: str, container_id: str, families: Iterable[int]) -> None:
    """Delete the POSTROUTING jumps to the container's chain, then the chain itself."""
    chain = chain_name(network, container_id)
    for family in sorted(set(families)):
        tool = "iptables" if family == 4 else "ip6tables"
        ok, rules = await _iptables(tool, "-S", "POSTROUTING")
        if not ok:
            continue
        for rule in rules.splitlines():
            words = shlex.split(rule)
            if words[:2] == ["-A", "POSTROUTING"] and words[-2:] == ["-j", chain]:
                await _iptables(tool, "-D", *words[1:])
        await _iptables(tool, "-F", chain)
        await _iptables(tool, "-X", chain)


async def _iptables(tool: str, *args: str) -> tuple[bool, str]:
    """Run one ``nat`` table command; failure (no such chain) is an expected answer here."""
    try:
        proc = await asyncio.create_subprocess_exec(
            tool, "-w", "5", "-t", "nat", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except FileNotFoundError:  # no iptables: the plugin could not have made rules either
        return False, ""
    stdout, _ = await proc.communicate()
    return proc.returncode == 0, stdout.decode(errors="replace")
