"""``kubling check``: a preflight of this host for ``kubling server`` (like
``k3s check-config``) — each line says what was checked, and a failure says what to do.

Exit 0 when everything required is there, 1 otherwise; optional parts (skopeo, the
embedded registry's port) only warn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubling.cli import hostinfo

EPILOG = """examples:
  kubling check
  kubling check --https-port 7443
"""


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str
    required: bool = True


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "check", help="check this host for kubling server (kernel, runc, nftables, ports)",
        description="Check that this host can run `kubling server` with its node agent: "
        "privileges, kernel features, runc, conmon, CNI plugins, nftables, cgroups and "
        "free ports. Each failure says how to fix it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--https-port", type=int, default=6443)
    parser.add_argument("--registry-port", type=int, default=5000)
    parser.add_argument("--kubelet-port", type=int, default=10250)
    parser.add_argument("--cni-bin-dir", default="/usr/lib/cni:/opt/cni/bin")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    results = checks(args)
    width = max(len(r.name) for r in results)
    for r in results:
        mark = "ok  " if r.ok else ("FAIL" if r.required else "warn")
        print(f"{mark}  {r.name:<{width}}  {r.detail}")
    failed = [r for r in results if not r.ok and r.required]
    if failed:
        print(f"\n{len(failed)} required check(s) failed — fix them, then run kubling check "
              "again", file=sys.stderr)
        return 1
    print("\nthis host can run kubling server")
    return 0


def checks(args: argparse.Namespace) -> list[Result]:
    bins = [Path(d) for d in args.cni_bin_dir.split(":") if d]
    return [
        _root(),
        _filesystem("overlay", "overlay filesystem", "modprobe overlay"),
        _program("runc", "apt-get install runc"),
        _program("conmon", "apt-get install conmon"),
        _program("nft", "apt-get install nftables"),
        _cni(bins),
        _cgroups(),
        _netns(),
        _sysctl("net/ipv4/ip_forward", "1", "sysctl -w net.ipv4.ip_forward=1 (the node "
                "agent also sets it)"),
        _port(args.https_port, "API server", "--https-port"),
        _port(args.kubelet_port, "node agent", "--kubelet-port"),
        _port(args.registry_port, "embedded registry", "--registry-port (or "
              "--disable-registry)", required=False),
        _dns_port(),
        _optional_program("skopeo", "apt-get install skopeo (to move images offline)"),
    ]


def _root() -> Result:
    ok = os.geteuid() == 0
    return Result("root", ok, "running as root" if ok else
                  "not root — run kubling server as root (containers, mounts and networking "
                  "need it)")


def _filesystem(fs: str, what: str, fix: str) -> Result:
    try:
        known = Path("/proc/filesystems").read_text().split()
    except OSError:
        known = []
    ok = fs in known
    return Result(what, ok, f"{fs} in /proc/filesystems" if ok else f"missing — {fix}")


def _program(name: str, fix: str) -> Result:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        return Result(name, False, f"{name} not found — {fix}")
    return Result(name, True, f"{path} {_version(path)}".rstrip())


def _optional_program(name: str, fix: str) -> Result:
    found = _program(name, fix)
    return Result(found.name, found.ok, found.detail, required=False)


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5,
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0] if out else ""


def _cni(bins: list[Path]) -> Result:
    needed = ("bridge", "host-local", "portmap", "loopback")
    for directory in bins:
        if all((directory / p).exists() for p in needed):
            return Result("CNI plugins", True, f"{', '.join(needed)} in {directory}")
    return Result("CNI plugins", False, f"{', '.join(needed)} not found in "
                  f"{':'.join(map(str, bins))} — apt-get install containernetworking-plugins")


def _cgroups() -> Result:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return Result("cgroups", True, "cgroup v2 (unified)")
    controllers = [c for c in ("cpu", "memory", "pids") if Path(f"/sys/fs/cgroup/{c}").exists()]
    if len(controllers) == 3:
        return Result("cgroups", True, "cgroup v1 controllers cpu, memory, pids")
    return Result("cgroups", False, f"cgroup controllers missing (found {controllers}) — "
                  "mount the cgroup hierarchies")


def _netns() -> Result:
    ok = Path("/proc/self/ns/net").exists()
    return Result("network namespaces", ok, "supported" if ok else
                  "not supported by this kernel — pods need CONFIG_NET_NS")


def _sysctl(key: str, want: str, fix: str) -> Result:
    path = Path("/proc/sys") / key
    try:
        value = path.read_text().strip()
    except OSError:
        return Result(key.replace("/", "."), False, f"cannot read — {fix}", required=False)
    ok = value == want
    return Result(key.replace("/", "."), ok, f"= {value}" if ok else f"= {value} — {fix}",
                  required=False)


def _port(port: int, what: str, flag: str, *, required: bool = True) -> Result:
    owner = hostinfo.port_owner(port)
    if owner is None:
        return Result(f"port {port}", True, f"free ({what})", required)
    return Result(f"port {port}", False, f"in use by pid {owner} "
                  f"({hostinfo.process_name(owner)}) — stop it or pass {flag}", required)


def _dns_port() -> Result:
    """The cluster DNS listens on the node address, port 53."""
    addresses = hostinfo.ipv4_addresses()
    address = addresses[0] if addresses else "127.0.0.1"
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((address, 53))
            except PermissionError:
                return Result("port 53", False, "needs root to bind (cluster DNS)",
                              required=False)
            except OSError as err:
                return Result("port 53", False, f"{address}:53 is taken ({err.strerror}) — "
                              "pods will use the node's resolvers; free it or pass "
                              "--disable-cluster-dns", required=False)
    return Result("port 53", True, f"free on {address} (cluster DNS)", required=False)
