"""Network configuration lists: finding, validating and writing the default one.

The runtime reads configuration the way libcni does — the lexically first ``*.conflist``,
``*.conf`` or ``*.json`` in the configuration directory wins, a single-plugin ``.conf`` is
wrapped in a list — so that dropping another CNI's file (Calico's ``10-calico.conflist``,
flannel's ``10-flannel.conflist``) there replaces kubling's default exactly as it would
replace the default of k3s or containerd.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from kubling.network.cnitypes import CNIError

__all__ = [
    "CONFIG_EXTENSIONS",
    "DEFAULT_CNI_VERSION",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_NETWORK_NAME",
    "NetworkConfigList",
    "ensure_default_config",
    "find_config_files",
    "load_network_config",
    "write_file_atomically",
]

CONFIG_EXTENSIONS = (".conf", ".conflist", ".json")
# Debian 12's containernetworking-plugins 1.1.1 supports 0.1.0 … 1.0.0 (VERSION command).
DEFAULT_CNI_VERSION = "1.0.0"
DEFAULT_NETWORK_NAME = "kubling"
DEFAULT_CONFIG_NAME = "10-kubling.conflist"
_MAX_IFNAME = 15


@dataclass(frozen=True)
class NetworkConfigList:
    """A network (``name``) and the chain of plugins that attach a container to it."""

    name: str
    cni_version: str
    plugins: tuple[Mapping[str, Any], ...]
    disable_check: bool = False
    source: Path | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The list as a ``.conflist`` document (what the result cache keeps for DEL)."""
        doc: dict[str, Any] = {"cniVersion": self.cni_version, "name": self.name,
                               "plugins": [dict(p) for p in self.plugins]}
        if self.disable_check:
            doc["disableCheck"] = True
        return doc

    @classmethod
    def from_json(cls, data: Any, source: Path | None = None) -> NetworkConfigList:
        """Validate a ``.conflist`` document; errors name ``source`` so a user can fix it."""
        where = f"network config {source}" if source else "network config"
        if not isinstance(data, dict):
            raise _invalid(where, "the document is not a JSON object")
        name, version, plugins = data.get("name"), data.get("cniVersion"), data.get("plugins")
        if not isinstance(name, str) or not name:
            raise _invalid(where, 'missing "name"')
        if not isinstance(version, str) or not version:
            raise _invalid(where, 'missing "cniVersion"')
        if not isinstance(plugins, list) or not plugins:
            raise _invalid(where, 'no "plugins" (a .conflist needs at least one)')
        for index, plugin in enumerate(plugins):
            _check_plugin(where, index, plugin)
        return cls(name=name, cni_version=version, plugins=tuple(plugins),
                   disable_check=bool(data.get("disableCheck", False)), source=source)

    @classmethod
    def from_single(cls, data: Any, source: Path | None = None) -> NetworkConfigList:
        """Wrap a single-plugin ``.conf`` in a list, as libcni's ConfListFromConf does."""
        if isinstance(data, dict) and "plugins" in data and "type" not in data:
            return cls.from_json(data, source)  # a list saved under .conf/.json
        where = f"network config {source}" if source else "network config"
        if not isinstance(data, dict):
            raise _invalid(where, "the document is not a JSON object")
        _check_plugin(where, 0, data)
        return cls.from_json({"cniVersion": data.get("cniVersion"), "name": data.get("name"),
                              "plugins": [data]}, source)


def find_config_files(conf_dir: Path) -> list[Path]:
    """The configuration files of ``conf_dir`` in the order CNI ranks them."""
    try:
        entries = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return []
    return [conf_dir / n for n in entries
            if n.endswith(CONFIG_EXTENSIONS) and (conf_dir / n).is_file()]


def load_network_config(conf_dir: Path) -> NetworkConfigList:
    """The network configuration in effect: the first file of ``conf_dir``."""
    files = find_config_files(conf_dir)
    if not files:
        raise CNIError(f"no network config found in {conf_dir} "
                       f"(expected a {', '.join(CONFIG_EXTENSIONS)} file)", code=7)
    source = files[0]
    try:
        data = orjson.loads(source.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise _invalid(f"network config {source}", f"invalid JSON: {exc}") from exc
    except OSError as exc:
        raise _invalid(f"network config {source}", f"cannot read it: {exc}") from exc
    if source.suffix == ".conflist":
        return NetworkConfigList.from_json(data, source)
    return NetworkConfigList.from_single(data, source)


def ensure_default_config(conf_dir: Path, pod_cidr: str, *, data_dir: Path,
                          bridge: str = "kubling0", mtu: int = 1500) -> Path:
    """Write kubling's default network when ``conf_dir`` has none; return the file in effect.

    An existing configuration is never overwritten: it is either ours from an earlier start
    or a CNI the user installed on purpose. ``pod_cidr`` is the node's pod range (one CIDR,
    or an IPv4 and an IPv6 one separated by a comma for dual stack); host-local keeps its
    leases under ``<data_dir>/cni/networks`` so that kubling writes nothing outside its data
    directory.
    """
    existing = find_config_files(conf_dir)
    if existing:
        return existing[0]
    document = default_config(pod_cidr, ipam_dir=data_dir / "cni" / "networks",
                              bridge=bridge, mtu=mtu)
    target = conf_dir / DEFAULT_CONFIG_NAME
    write_file_atomically(target, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return target


def default_config(pod_cidr: str, *, ipam_dir: Path, bridge: str = "kubling0",
                   mtu: int = 1500) -> dict[str, Any]:
    """The default ``.conflist``: a bridge with NAT to the outside and hostPorts.

    ``loopback`` is not part of it: ``lo`` belongs to the sandbox, not to a network, as in
    kubelet and containerd (kubling brings it up when it makes the namespace).
    """
    if not 0 < len(bridge) <= _MAX_IFNAME or "/" in bridge or " " in bridge:
        raise ValueError(f"bridge name {bridge!r} is not a valid interface name")
    subnets = _parse_cidrs(pod_cidr)
    ipam = {
        "type": "host-local",
        "ranges": [[{"subnet": str(net)}] for net in subnets],
        "routes": [{"dst": "0.0.0.0/0" if net.version == 4 else "::/0"} for net in subnets],
        "dataDir": str(ipam_dir),
    }
    return {
        "cniVersion": DEFAULT_CNI_VERSION,
        "name": DEFAULT_NETWORK_NAME,
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True, "mtu": mtu, "ipam": ipam},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def _parse_cidrs(pod_cidr: str) -> Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    try:
        nets = [ipaddress.ip_network(part.strip(), strict=True) for part in pod_cidr.split(",")]
    except ValueError as exc:
        raise ValueError(f"pod CIDR {pod_cidr!r}: {exc}") from exc
    if len({n.version for n in nets}) != len(nets):
        raise ValueError(f"pod CIDR {pod_cidr!r}: at most one range per IP family")
    return nets


def _check_plugin(where: str, index: int, plugin: Any) -> None:
    if not isinstance(plugin, dict):
        raise _invalid(where, f"plugin {index} is not a JSON object")
    kind = plugin.get("type")
    # The type names an executable: a path separator would let a config run any binary.
    if not isinstance(kind, str) or not kind or "/" in kind or kind in (".", ".."):
        raise _invalid(where, f'plugin {index} has no valid "type"')


def _invalid(where: str, why: str) -> CNIError:
    return CNIError(f"{where}: {why}", code=7)


def write_file_atomically(target: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a document."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".kubling-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
