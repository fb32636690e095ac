"""``pods/proxy``, ``services/proxy`` and ``nodes/proxy``: the API server as an HTTP proxy.

``/api/v1/namespaces/ns/services/web:80/proxy/path`` reaches ``path`` on one ready endpoint
of the Service; ``pods/name[:port]/proxy/...`` the pod's IP; ``nodes/name[:port]/proxy/...``
the node agent's HTTPS server (where ``nodeproxy.kubelet_address`` says, with the API
server's kubelet client certificate). The id
before ``/proxy`` may name a scheme, ``https:name:port``, as upstream's
``SplitSchemeNamePort`` reads it. This is what ``kubectl proxy`` users open in a browser.

How upstream picks the target (``ResourceLocation`` in each registry):
- a pod without a port uses its first declared container port, else no port (80);
- a service port given as a number is first mapped to that port's name; the target is a
  random ready address of the Service's Endpoints carrying that port name;
- a pod IP must be a global unicast address ("address not allowed").

The request goes on with its method, query, body and headers (less hop-by-hop ones and
the caller's credentials); the answer comes back as it is, streamed. An upgrade request (a
WebSocket) goes through ``upgradeproxy``: the target's 101 is passed back and bytes are
copied both ways until one side closes. A target that cannot
be reached is upstream's 503: ``error trying to reach service: dial tcp ...``.
"""

from __future__ import annotations

import ipaddress
import os
import random
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from kubling.apiserver import errors, upgradeproxy
from kubling.apiserver.registry.store import Store

#: Connecting to a pod or agent gives up after this long (upstream's dialer: 30 s).
CONNECT_TIMEOUT = 30.0
#: Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1), plus the
#: caller's credentials for the API server, which the target must not see.
_HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
    "Trailer", "Transfer-Encoding", "Upgrade", "Host", "Authorization", "Content-Length",
    "Impersonate-User", "Impersonate-Group", "Impersonate-Uid"))


def split_scheme_name_port(text: str) -> tuple[str, str, str] | None:
    """``name``, ``name:port`` or ``scheme:name:port`` (scheme ``http``/``https``) →
    (scheme, name, port), scheme "" when not given; ``None`` when malformed (upstream
    ``SplitSchemeNamePort``)."""
    parts = text.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
        if scheme not in ("http", "https"):
            return None
    else:
        return None
    if not name:
        return None
    return scheme, name, port


def proxied_path(raw_path: str, name: str) -> str:
    """What follows ``<name>/proxy`` in the raw (still encoded) path, kept as sent; a bare
    ``/proxy`` is ``/``."""
    parts = raw_path.split("?", 1)[0].split("/")
    for i in range(1, len(parts)):
        if parts[i] == "proxy" and urllib.parse.unquote(parts[i - 1]) == name:
            return "/" + "/".join(parts[i + 1:])
    return "/"


def join_host_port(host: str, port: str) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


# -- where the request goes ------------------------------------------------------------


async def pod_location(pods: Store, namespace: str, ident: str) -> tuple[str, str]:
    """(scheme, host[:port]) of a pod proxy request."""
    parsed = split_scheme_name_port(ident)
    if parsed is None:
        raise errors.bad_request(f'invalid pod request "{ident}"')
    scheme, name, port = parsed
    scheme = scheme or "http"
    pod = await pods.get(namespace, name)
    if not port:
        for container in (pod.get("spec") or {}).get("containers") or []:
            ports = container.get("ports") or []
            if ports:
                port = str(ports[0].get("containerPort"))
                break
    return scheme, join_host_port(_proxyable_ip((pod.get("status") or {}).get("podIP")), port)


def _proxyable_ip(text: Any) -> str:
    try:
        ip = ipaddress.ip_address(str(text))
    except ValueError:
        raise errors.bad_request("address not allowed") from None
    # Go's IsGlobalUnicast: private ranges are fine, these are not.
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified or \
            str(ip) == "255.255.255.255":
        raise errors.bad_request("address not allowed")
    return str(ip)


async def service_location(services: Store, endpoints: Store, namespace: str,
                           ident: str, rng: random.Random | None = None) -> tuple[str, str]:
    """(scheme, host:port) of a service proxy request: a random ready endpoint address
    with the named (or numbered) service port."""
    parsed = split_scheme_name_port(ident)
    if parsed is None:
        raise errors.bad_request(f'invalid service request "{ident}"')
    scheme, name, port_name = parsed
    scheme = scheme or "http"
    rng = rng or random.Random()
    if port_name.isdigit():
        service = await services.get(namespace, name)
        number = int(port_name)
        match = next((p for p in (service.get("spec") or {}).get("ports") or []
                      if p.get("port") == number), None)
        if match is None:
            raise errors.service_unavailable(
                f'no service port {number} found for service "{name}"')
        port_name = str(match.get("name") or "")
    eps = await endpoints.get(namespace, name)
    subsets = [s for s in eps.get("subsets") or [] if s.get("addresses")]
    rng.shuffle(subsets)
    for subset in subsets:
        for port in subset.get("ports") or []:
            if (port.get("name") or "") == port_name:
                address = rng.choice(subset["addresses"])
                return scheme, join_host_port(str(address.get("ip")), str(port.get("port")))
    if not (eps.get("subsets") or []):
        raise errors.service_unavailable(f'no endpoints available for service "{name}"')
    raise errors.service_unavailable(f'no endpoints available for service "{ident}"')


# -- the exchange ----------------------------------------------------------------------


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers minus hop-by-hop ones, those named by ``Connection`` and the
    credentials meant for the API server."""
    named = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
    return {k: v for k, v in headers.items()
            if k.lower() not in _HOP_BY_HOP and k.lower() not in named}


def unreachable(hostport: str, err: BaseException) -> errors.APIError:
    """Upstream's 503 for a target the API server could not reach, in Go's words."""
    cause = getattr(err, "os_error", None) or err
    number = getattr(cause, "errno", None)
    if isinstance(err, TimeoutError):
        detail = f"dial tcp {hostport}: i/o timeout"
    elif number:
        detail = f"dial tcp {hostport}: connect: {os.strerror(number).lower()}"
    else:
        detail = str(err) or type(err).__name__
    return errors.service_unavailable(f"error trying to reach service: {detail}")


async def forward(request: web.Request, scheme: str, hostport: str, path: str, *,
                  context: ssl.SSLContext | None = None) -> web.StreamResponse:
    """Send the caller's request to ``scheme://hostport/path`` and stream the answer back;
    an upgrade (a WebSocket) is relayed byte for byte once the target answers 101."""
    target = path + ("?" + request.query_string if request.query_string else "")
    if upgradeproxy.is_upgrade(request):
        return await _upgrade(request, scheme, hostport, target, context)
    url = f"{scheme}://{hostport}{target}"
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                    sock_connect=CONNECT_TIMEOUT)
    body = await request.read() if request.body_exists else None
    # Pods serve what certificates they like: upstream does not verify them either.
    tls: ssl.SSLContext | bool = context if context is not None else False
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False,
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        try:
            upstream = await session.request(
                request.method, url, headers=forwarded_headers(request.headers), data=body,
                allow_redirects=False, ssl=tls)
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            raise unreachable(hostport if ":" in hostport.rsplit("]", 1)[-1]
                              else f"{hostport}:{443 if scheme == 'https' else 80}",
                              err) from None
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in _HOP_BY_HOP:
                    response.headers.add(key, value)
            if upstream.headers.get("Content-Length") is not None:
                response.content_length = int(upstream.headers["Content-Length"])
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except aiohttp.ClientError:
                pass  # the target went away mid-answer: end what was sent
            await response.write_eof()
            return response


async def _upgrade(request: web.Request, scheme: str, hostport: str, target: str,
                   context: ssl.SSLContext | None) -> web.StreamResponse:
    host, _, port = hostport.rpartition(":")
    if not port.isdigit():
        host, port = hostport, "443" if scheme == "https" else "80"
    tls: ssl.SSLContext | None = None
    if scheme == "https":
        tls = context if context is not None else _unverified_context()
    headers = [*forwarded_headers(request.headers).items(), ("Connection", "Upgrade"),
               *(("Upgrade", v) for v in request.headers.getall("Upgrade", []))]
    return await upgradeproxy.proxy(request, host=host.strip("[]"), port=int(port),
                                    path=target, context=tls, headers=headers,
                                    dial_failed=unreachable)


def _unverified_context() -> ssl.SSLContext:
    """Pods serve what certificates they like: upstream does not verify them either."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
