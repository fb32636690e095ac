"""The API server's way to a node agent: ``pods/log``, ``pods/exec``, ``pods/attach`` and
``pods/portforward``.

As kube-apiserver does, the API server finds the pod's node, reads where its agent
listens from the Node (``status.addresses`` InternalIP, then Hostname;
``status.daemonEndpoints.kubeletEndpoint.Port``), and opens HTTPS to it with its own
kubelet client certificate, verifying the agent's serving certificate against the cluster
CA. It never imports the agent: the agent may be on another machine, and this is the
only way in.

``pod_log`` is upstream's ``LogLocation`` plus ``LocationStreamer``: validate the
``PodLogOptions`` (400 for a value that does not parse, 422 for one that is not
allowed), choose the container with upstream's messages, then relay the agent's body as
a chunked ``text/plain`` stream until either end closes. The agent's errors become a
``Status`` as ``GenericHttpResponseChecker`` makes them (400 → BadRequest with the agent's
words, 500 → InternalError, others keep their code); an agent that cannot be reached is a
500 worded as Go's HTTP client words it (``Get "https://...": dial tcp ...: connect:
connection refused``). A client that goes away cancels the handler (aiohttp's
``handler_cancellation``), which closes the connection to the agent.
"""

from __future__ import annotations

import datetime
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from kubling.api import field
from kubling.api.meta import Object
from kubling.apiserver import errors, pki, upgradeproxy
from kubling.apiserver.registry.store import Store

DEFAULT_KUBELET_PORT = 10250
#: How long connecting to an agent may take before the request fails (upstream's dialer
#: gives up after 30 s; a log request should not hang that long on a dead node).
CONNECT_TIMEOUT = 10.0
#: How much of an agent's error body is read (upstream's maxReadLength).
_MAX_ERROR_BODY = 50_000
_BOOLS = {"1": True, "t": True, "T": True, "true": True, "True": True, "TRUE": True,
          "0": False, "f": False, "F": False, "false": False, "False": False, "FALSE": False}
_RFC3339 = "2006-01-02T15:04:05Z07:00"


class KubeletConnector:
    """TLS settings for connections to node agents (made once, shared by requests)."""

    def __init__(self, cluster_pki: pki.ClusterPKI) -> None:
        self.verified = pki.kubelet_client_ssl_context(cluster_pki)
        self.insecure = pki.kubelet_client_ssl_context(cluster_pki, verify=False)

    def context(self, *, skip_verify: bool) -> ssl.SSLContext:
        return self.insecure if skip_verify else self.verified


# -- options -------------------------------------------------------------------------------


def log_query(query: Mapping[str, str], pod_name: str) -> tuple[str, dict[str, str], bool]:
    """(container, the query for the agent, insecureSkipTLSVerifyBackend) from the
    ``PodLogOptions`` in ``query``; raises the APIError upstream answers with."""
    forward: dict[str, str] = {}
    for name in ("follow", "previous", "timestamps"):
        if _bool(query, name):
            forward[name] = "true"
    skip_verify = _bool(query, "insecureSkipTLSVerifyBackend")
    tail, since, limit = (_int(query, n) for n in ("tailLines", "sinceSeconds", "limitBytes"))
    since_time = _time(query.get("sinceTime", ""))
    problems: list[field.FieldError] = []
    if tail is not None and tail < 0:
        problems.append(field.invalid("tailLines", tail, "must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        problems.append(field.invalid("limitBytes", limit, "must be greater than 0"))
    if since is not None and since_time is not None:
        problems.append(field.forbidden(
            "sinceSeconds", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
    elif since is not None and since < 1:
        problems.append(field.invalid("sinceSeconds", since, "must be greater than 0"))
    if problems:
        raise errors.invalid("", "PodLogOptions", pod_name, problems)
    for name, value in (("sinceSeconds", since), ("tailLines", tail), ("limitBytes", limit)):
        if value is not None:
            forward[name] = str(value)
    if since_time is not None:
        forward["sinceTime"] = since_time.strftime("%Y-%m-%dT%H:%M:%SZ")
    return query.get("container", ""), forward, skip_verify


def _bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None or value == "":
        return False
    if value not in _BOOLS:
        raise errors.bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')
    return _BOOLS[value]


def _int(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(
            f'strconv.ParseInt: parsing "{value}": invalid syntax') from None


def _time(value: str) -> datetime.datetime | None:
    """``metav1.Time`` from a query: RFC 3339, to the second, in UTC."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise errors.bad_request(f'parsing time "{value}" as "{_RFC3339}": cannot parse '
                                 f'"{value}" as "2006"')
    return parsed.astimezone(datetime.UTC)


def choose_container(pod: Object, container: str) -> str:
    """Upstream's ``validateContainer``: the named one must exist; none named is the only
    container, else a 400 that lists the choices."""
    spec = pod.get("spec") or {}
    name = pod["metadata"]["name"]
    main = [c["name"] for c in spec.get("containers") or []]
    init = [c["name"] for c in spec.get("initContainers") or []]
    ephemeral = [c["name"] for c in spec.get("ephemeralContainers") or []]
    if not container:
        if len(main) == 1:
            return str(main[0])
        if not main:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        message = (f"a container name must be specified for pod {name}, choose one of: "
                   f"[{' '.join(main)}]")
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise errors.bad_request(message)
    if container not in (*main, *init, *ephemeral):
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    return container


def kubelet_address(node: Object) -> tuple[str, int]:
    """Where the node's agent listens: (host, port)."""
    status = node.get("status") or {}
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    host = addresses.get("InternalIP") or addresses.get("Hostname") or \
        addresses.get("ExternalIP") or node["metadata"]["name"]
    endpoint = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    port = endpoint.get("Port") or DEFAULT_KUBELET_PORT
    return str(host), int(port)


# -- the request ---------------------------------------------------------------------------


async def pod_log(request: web.Request, *, pods: Store, nodes: Store, namespace: str,
                  name: str, connector: KubeletConnector | None) -> web.StreamResponse:
    """``GET /api/v1/namespaces/{namespace}/pods/{name}/log``."""
    container, forward, skip_verify = log_query(request.query, name)
    pod = await pods.get(namespace, name)
    container = choose_container(pod, container)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return web.Response(status=204)  # not scheduled: no log anywhere yet (upstream)
    if connector is None:
        raise errors.internal("this API server has no client certificate for node agents")
    host, port = kubelet_address(await nodes.get("", node_name))
    path = "/containerLogs/" + "/".join(urllib.parse.quote(p, safe="")
                                        for p in (namespace, name, container))
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"https://{netloc}{path}"
    if forward:
        url += "?" + urllib.parse.urlencode(forward)
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT,
                                    sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        try:
            upstream = await session.get(url, ssl=connector.context(skip_verify=skip_verify))
        except aiohttp.ClientError as err:
            raise _unreachable(url, netloc, err) from None
        async with upstream:
            if upstream.status != 200:
                body = await upstream.content.read(_MAX_ERROR_BODY)
                raise _agent_error(upstream.status, body.decode(errors="replace").strip())
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            except aiohttp.ClientError:
                pass  # the agent went away mid-stream: end the body (headers are sent)
            await response.write_eof()
            return response


#: The agent's endpoint for each streaming subresource (the kubelet's paths).
STREAM_PATHS = {"exec": "exec", "attach": "attach", "portforward": "portForward"}


async def pod_stream(request: web.Request, *, pods: Store, nodes: Store, namespace: str,
                     name: str, subresource: str,
                     connector: KubeletConnector | None) -> web.StreamResponse:
    """``pods/exec``, ``pods/attach``, ``pods/portforward``: upstream's ``ExecLocation``
    family (the container must be the pod's, the pod must be on a node), then the
    upgrade relayed to the agent byte for byte (``upgradeproxy``)."""
    pod = await pods.get(namespace, name)
    node_name = (pod.get("spec") or {}).get("nodeName")
    target = [namespace, name]
    if subresource != "portforward":
        target.append(choose_container(pod, request.query.get("container", "")))
    if not node_name:
        raise errors.bad_request(f"pod {name} does not have a host assigned")
    if not upgradeproxy.is_upgrade(request):
        raise errors.bad_request("Upgrade request required")
    if connector is None:
        raise errors.internal("this API server has no client certificate for node agents")
    host, port = kubelet_address(await nodes.get("", node_name))
    path = f"/{STREAM_PATHS[subresource]}/" + "/".join(
        urllib.parse.quote(p, safe="") for p in target)
    if request.rel_url.raw_query_string:
        path += "?" + request.rel_url.raw_query_string
    return await upgradeproxy.proxy(request, host=host, port=port, path=path,
                                    context=connector.context(skip_verify=False))


def _agent_error(code: int, text: str) -> errors.APIError:
    """``GenericHttpResponseChecker``: the agent's words under its status code."""
    if code == 400:
        return errors.bad_request(text)
    if code == 500:
        return errors.internal(text)
    reason = {403: "Forbidden", 404: "NotFound", 401: "Unauthorized"}.get(code, "")
    return errors.APIError(code, reason, text)


def _unreachable(url: str, netloc: str, err: aiohttp.ClientError) -> errors.APIError:
    """Go's wording for a failed dial or handshake (what kubectl users recognise)."""
    cause: Any = err
    if isinstance(err, aiohttp.ClientSSLError):
        detail = f"tls: {getattr(err, 'strerror', None) or err}"
    elif isinstance(err, aiohttp.ClientConnectorError):
        number = getattr(cause.os_error, "errno", None)
        why = os.strerror(number).lower() if number else str(cause.os_error)
        detail = f"dial tcp {netloc}: connect: {why}"
    else:
        detail = str(err) or type(err).__name__
    return errors.APIError(500, "", f'Get "{url}": {detail}')
