"""The data of the CNI specification: errors, port mappings and the ADD result.

Kept apart from the runtime (``cni.py``) so that the node agent can type against a result
without importing the plugin-invoking machinery. Results are parsed leniently: the runtime
must cope with whatever a third-party plugin (Calico, Cilium, flannel) prints, so unknown
fields are kept in ``raw`` and only the fields the spec defines are interpreted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DNS", "CNIError", "IPConfig", "Interface", "PortMapping", "Result", "Route"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class CNIError(Exception):
    """A CNI operation failed; ``msg`` is what a user should read.

    ``code`` follows the spec's well-known error codes (1 incompatible version, 2 unsupported
    field, 3 unknown container, 4 invalid environment, 5 I/O failure, 6 decoding failure,
    7 invalid network config, 11 try again later); 0 means the runtime itself failed.
    """

    def __init__(self, msg: str, *, code: int = 0, details: str = "", plugin: str = "") -> None:
        self.msg = msg
        self.code = code
        self.details = details
        self.plugin = plugin
        # Name the plugin unless the message already does ("failed to find plugin ...").
        text = f"plugin {plugin!r}: {msg}" if plugin and plugin not in msg else msg
        super().__init__(f"{text}: {details}" if details else text)


@dataclass(frozen=True)
class PortMapping:
    """One ``hostPort`` of a pod, in the ``portMappings`` capability's JSON shape."""

    host_port: int
    container_port: int
    protocol: str = "tcp"
    host_ip: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"hostPort": self.host_port, "containerPort": self.container_port,
                "protocol": self.protocol.lower(), "hostIP": self.host_ip}


@dataclass(frozen=True)
class Interface:
    """An interface a plugin made; ``sandbox`` is set for the ones inside the pod."""

    name: str
    mac: str = ""
    sandbox: str = ""
    mtu: int | None = None


@dataclass(frozen=True)
class IPConfig:
    """An address given to an interface (``interface`` indexes ``Result.interfaces``)."""

    address: IPInterface
    gateway: IPAddress | None = None
    interface: int | None = None


@dataclass(frozen=True)
class Route:
    dst: IPNetwork
    gw: IPAddress | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: tuple[str, ...] = ()
    domain: str = ""
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    """The final result of an ADD: what the pod's status and the agent need from CNI."""

    cni_version: str
    interfaces: tuple[Interface, ...] = ()
    ips: tuple[IPConfig, ...] = ()
    routes: tuple[Route, ...] = ()
    dns: DNS = field(default_factory=DNS)
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pod_ips(self) -> list[str]:
        """Addresses of the pod's own interfaces, in the plugin's order (the first is the
        primary ``status.podIP``); addresses given to host-side interfaces are not the pod's."""
        return [str(ip.address.ip) for ip in self.ips if self._in_sandbox(ip)]

    @property
    def gateway(self) -> str | None:
        """The first gateway of a pod address, if the plugin reported one."""
        for ip in self.ips:
            if ip.gateway is not None and self._in_sandbox(ip):
                return str(ip.gateway)
        return None

    def _in_sandbox(self, ip: IPConfig) -> bool:
        if ip.interface is None or not 0 <= ip.interface < len(self.interfaces):
            return True
        return bool(self.interfaces[ip.interface].sandbox)

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Result:
        """Read a result of spec 0.3.0 or later (1.0.0 only dropped ``ips[].version``)."""
        try:
            return cls(
                cni_version=str(data.get("cniVersion", "")),
                interfaces=tuple(_interface(i) for i in data.get("interfaces") or ()),
                ips=tuple(_ip_config(i) for i in data.get("ips") or ()),
                routes=tuple(_route(r) for r in data.get("routes") or ()),
                dns=_dns(data.get("dns") or {}),
                raw=data,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CNIError("cannot parse the plugin result", code=6, details=str(exc)) from exc


def _interface(data: Mapping[str, Any]) -> Interface:
    mtu = data.get("mtu")
    return Interface(name=str(data["name"]), mac=str(data.get("mac", "")),
                     sandbox=str(data.get("sandbox", "")),
                     mtu=int(mtu) if mtu is not None else None)


def _ip_config(data: Mapping[str, Any]) -> IPConfig:
    gateway = data.get("gateway")
    index = data.get("interface")
    return IPConfig(address=ipaddress.ip_interface(data["address"]),
                    gateway=ipaddress.ip_address(gateway) if gateway else None,
                    interface=int(index) if index is not None else None)


def _route(data: Mapping[str, Any]) -> Route:
    gw = data.get("gw")
    return Route(dst=ipaddress.ip_network(data["dst"], strict=False),
                 gw=ipaddress.ip_address(gw) if gw else None)


def _dns(data: Mapping[str, Any]) -> DNS:
    return DNS(nameservers=tuple(data.get("nameservers") or ()), domain=str(data.get("domain", "")),
               search=tuple(data.get("search") or ()), options=tuple(data.get("options") or ()))
