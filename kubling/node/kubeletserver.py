"""The node agent's HTTPS server (the kubelet's :10250): logs, exec, attach and
port-forward, on one listener and behind the same checks.

Every caller must present a client certificate signed by the cluster CA (TLS
``CERT_REQUIRED``: without one the handshake fails and nothing is served), and only the
API server's kubelet client identity or an admin (organization ``system:masters``) is
authorized; anyone else is answered 403 in the kubelet's words. Upstream the kubelet
asks the API server (SubjectAccessReview on ``nodes/proxy``); a fixed rule is enough
until RBAC exists, and keeps the agent usable while the API is away.

Endpoints, as the kubelet serves them:

    GET /healthz                                     ``ok``
    GET /pods                                        the pods this node runs (PodList)
    GET /containerLogs/{namespace}/{pod}/{container} the log, with the kubelet's query
                                                     parameters (see ``logs.LogOptions``)
    GET|POST /exec/{namespace}/{pod}/{container}     ``runc exec`` streamed over a WebSocket
                                                     or SPDY upgrade (``streaming``)
    GET|POST /attach/{namespace}/{pod}/{container}   the container's own stdio (conmon's
                                                     attach socket), the same two ways
    GET|POST /portForward/{namespace}/{pod}          TCP connections to the pod's ports
    GET /metrics/resource                            usage in Prometheus text (``metrics``)
    GET /stats/summary                               the Summary API (``metrics``)

Errors are plain-text bodies with the kubelet's status code and message, which the API
server turns into a ``Status`` for kubectl.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

import orjson
from aiohttp import web

from kubling.api.meta import Object
from kubling.node import logs, metrics
from kubling.node.runtime import Runtime
from kubling.node.streaming import (
    StreamingError,
    handlers,
    nsdial,
    portforward,
    remotecommand,
    targets,
)

log = logging.getLogger("kubling.node.kubeletserver")

#: Who may call the agent: the API server's kubelet client certificate
#: (``pki.KUBELET_CLIENT_USER``) and every member of the admin group.
ALLOWED_USERS = frozenset({"kube-apiserver-kubelet-client"})
ALLOWED_GROUPS = frozenset({"system:masters"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class KubeletHost(Protocol):
    """What the server needs from the agent."""

    def running_pods(self) -> list[Object]:
        """The pods this node runs (``GET /pods``)."""
        ...

    def log_target(self, namespace: str, name: str, container: str, *,
                   previous: bool) -> logs.LogTarget:
        """The log file wanted; raises ``logs.LogsError`` with the kubelet's answer."""
        ...

    def container_finished(self, container_id: str) -> bool:
        """Whether the runtime container has exited (or is gone): ``-f`` ends then."""
        ...

    @property
    def node_name(self) -> str:
        """The Node this agent registered (``/stats/summary``'s ``nodeName``)."""
        ...

    @property
    def runtime(self) -> Runtime:
        """Where exec sessions are started (``Runtime.exec_interactive``)."""
        ...


@dataclasses.dataclass(frozen=True)
class KubeletTLS:
    """The serving certificate (for the node's addresses) and the CA clients must chain to."""

    cert: Path
    key: Path
    client_ca: Path

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        context.load_verify_locations(cafile=self.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        context.set_alpn_protocols(["http/1.1"])
        return context


class KubeletServer:
    def __init__(self, host: KubeletHost, tls: KubeletTLS, *, address: str = "0.0.0.0",
                 port: int = 10250) -> None:
        self.host = host
        self.tls = tls
        self.address = address
        self.port = port
        self._runner: web.AppRunner | None = None
        self._sampler = metrics.Sampler()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/pods/", self._pods)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        app.router.add_route("*", "/exec/{namespace}/{pod}/{container}", self._exec)
        app.router.add_route("*", "/attach/{namespace}/{pod}/{container}", self._attach)
        app.router.add_route("*", "/portForward/{namespace}/{pod}", self._port_forward)
        app.router.add_get("/metrics/resource", self._resource_metrics)
        app.router.add_get("/stats/summary", self._stats_summary)
        return app

    async def start(self) -> None:
        """Listen; raises OSError when the port is taken (the caller decides what then)."""
        # handler_cancellation: a caller that goes away (the API server, when kubectl
        # does) cancels its handler, so a followed log stops being read at once.
        runner = web.AppRunner(self.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.address, self.port,
                               ssl_context=self.tls.context(), reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("node agent serving https on %s:%d", self.address, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- authorization ------------------------------------------------------------------

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        user, groups = subject_of(peercert or {})
        if user not in ALLOWED_USERS and not ALLOWED_GROUPS & set(groups):
            return web.Response(
                status=403, text=f"Forbidden (user={user}, verb=get, resource=nodes, "
                                 "subresource=proxy)")
        return await handler(request)

    # -- endpoints ----------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {},
                "items": self.host.running_pods()}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        try:
            options = logs.LogOptions.from_query(request.query, now_ns=time.time_ns())
            target = self.host.log_target(info["namespace"], info["pod"], info["container"],
                                          previous=options.previous)
        except logs.LogsError as err:
            return web.Response(status=err.code, text=err.message)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await logs.stream_log(target.path, options, response.write,
                              lambda: self.host.container_finished(target.container_id))
        await response.write_eof()
        return response

    async def _resource_metrics(self, request: web.Request) -> web.StreamResponse:
        text = await asyncio.to_thread(metrics.resource_metrics, self.host.running_pods())
        return web.Response(text=text, content_type="text/plain",
                            headers={"X-Content-Type-Options": "nosniff"}, charset="utf-8")

    async def _stats_summary(self, request: web.Request) -> web.StreamResponse:
        summary = await asyncio.to_thread(self._sampler.summary, self.host.node_name,
                                          self.host.running_pods())
        return web.Response(body=orjson.dumps(summary), content_type="application/json")

    async def _exec(self, request: web.Request) -> web.StreamResponse:
        return await self._remote_command(request, attach=False)

    async def _attach(self, request: web.Request) -> web.StreamResponse:
        return await self._remote_command(request, attach=True)

    async def _remote_command(self, request: web.Request, *,
                              attach: bool) -> web.StreamResponse:
        """exec and attach: the same streams, around a new process or the container's."""
        info = request.match_info
        try:
            options = remotecommand.Options.from_query(
                request.query, command=tuple(request.query.getall("command", [])),
                attach=attach)
            pod = targets.find_pod(self.host.running_pods(), info["namespace"], info["pod"])
            container_id = targets.running_container(pod, info["container"])
        except StreamingError as err:
            return web.Response(status=err.code, text=err.message)

        def start() -> Awaitable[remotecommand.Process]:
            if attach:
                return self.host.runtime.attach(container_id, tty=options.tty)
            return self.host.runtime.exec_interactive(
                container_id, list(options.command), tty=options.tty, stdin=options.stdin,
                stdout=options.stdout, stderr=options.stderr)

        return await handlers.remote_command(request, start, options)

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        try:
            pod = targets.find_pod(self.host.running_pods(), info["namespace"], info["pod"])
        except StreamingError as err:
            return web.Response(status=err.code, text=err.message)
        netns = targets.network_namespace(pod)
        forwarder = portforward.PortForwarder(lambda port: nsdial.dial(netns, port),
                                              pod=info["pod"], uid=pod["metadata"]["uid"])
        return await handlers.port_forward(request, forwarder)


def subject_of(peercert: Mapping[str, object]) -> tuple[str, list[str]]:
    """The user (last common name) and groups (organizations) of a verified client
    certificate, from ``getpeercert()``; the same reading the API server's x509
    authenticator makes."""
    names: list[tuple[str, str]] = []
    subject = peercert.get("subject")
    for rdn in subject if isinstance(subject, tuple) else ():
        for attribute in rdn if isinstance(rdn, tuple) else ():
            if isinstance(attribute, tuple) and len(attribute) == 2:
                names.append((str(attribute[0]), str(attribute[1])))
    common = [v for k, v in names if k == "commonName"]
    return (common[-1] if common else "system:anonymous",
            [v for k, v in names if k == "organizationName"])
