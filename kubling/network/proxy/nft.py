"""Talking to the kernel: ``nft -f -`` for writes, ``nft -j list`` for what a table holds.

Every write is one ``nft -f`` run, which the kernel applies as one transaction: it either
takes effect entirely or not at all, so packets never see a half-programmed table. The
``nft`` binary (rather than libnftables through ctypes) keeps the failure modes simple: a
non-zero exit with the parser's message, which we pass on.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

from kubling.network.proxy.ruleset import Inventory, check_table_name

__all__ = ["NftError", "apply", "cleanup", "inventory", "list_tables"]

NFT = "nft"


class NftError(RuntimeError):
    """``nft`` refused a script (its stderr is the message)."""


async def _run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        NFT, *args, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def apply(script: str) -> None:
    """Run ``script`` as one transaction; ``NftError`` (and no change) when it fails."""
    code, _, err = await _run("-f", "-", stdin=script)
    if code != 0:
        raise NftError(err.strip() or f"nft -f exited with {code}")


def parse_inventory(listing: dict[str, Any]) -> Inventory:
    """The chain, set and map names in ``nft -j list table`` output."""
    chains: set[str] = set()
    sets: set[str] = set()
    maps: set[str] = set()
    for item in listing.get("nftables") or []:
        if "chain" in item:
            chains.add(item["chain"]["name"])
        elif "set" in item:
            sets.add(item["set"]["name"])
        elif "map" in item:
            maps.add(item["map"]["name"])
    return Inventory(frozenset(chains), frozenset(sets), frozenset(maps))


async def inventory(table: str) -> Inventory | None:
    """What ``ip <table>`` holds now; ``None`` when there is no such table."""
    code, out, err = await _run("-j", "list", "table", "ip", check_table_name(table))
    if code != 0:
        if "No such file or directory" in err:
            return None
        raise NftError(err.strip())
    return parse_inventory(json.loads(out))


def list_tables() -> list[str]:
    """Names of the ``ip`` tables whose name starts with ``kubling``."""
    result = subprocess.run([NFT, "list", "tables", "ip"], capture_output=True, text=True,
                            check=True, timeout=30)
    names = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("table")]
    return [name for name in names if name.startswith("kubling")]


def cleanup(table: str = "kubling") -> bool:
    """Delete table ``ip <table>`` (for ``kubling server --cleanup``); False if absent.

    Synchronous on purpose: it runs while shutting down, with or without an event loop.
    Established flows keep their translations (conntrack), new ones stop being proxied.
    """
    result = subprocess.run([NFT, "delete", "table", "ip", check_table_name(table)],
                            capture_output=True, text=True, timeout=30, check=False)
    if result.returncode == 0:
        return True
    if "No such file or directory" in result.stderr:
        return False
    raise NftError(result.stderr.strip())
