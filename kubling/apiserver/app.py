"""The HTTP application: authentication, authorization, and routing to the handlers.

One catch-all route parses the path into a ``RequestInfo`` (as kube-apiserver's filter
chain does) and dispatches: discovery, health, version, OpenAPI, or a resource. Errors
of any kind leave as a ``Status``; an unexpected exception is logged with its traceback
and answered 500, never a dropped connection.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

import kubling
from kubling.apiserver import (
    authn,
    authz,
    discovery,
    errors,
    health,
    join,
    metricsapi,
    nodeproxy,
    openapi,
    requestinfo,
    subresources,
    tokenrequest,
    tokens,
)
from kubling.apiserver.handlers import json_response, raw_json_response
from kubling.apiserver.registry.registry import Registry

log = logging.getLogger("kubling.apiserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USER_KEY = authn.USER_KEY


def version_info() -> dict[str, str]:
    major, minor, _ = kubling.KUBERNETES_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{kubling.KUBERNETES_VERSION}+kubling",
        "gitCommit": kubling.__version__,
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": f"python{platform.python_version()}",
        "compiler": "cpython",
        "platform": f"{sys.platform}/{_arch()}",
    }


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class APIServerApp:
    """Holds what the request path needs; ``build()`` makes the aiohttp application."""

    def __init__(
        self,
        registry: Registry,
        *,
        authenticator: authn.Authenticator,
        authorizer: authz.Authorizer,
        checks: health.HealthChecks,
        custom_schema: openapi.CustomSchema | None = None,
        kubelet: nodeproxy.KubeletConnector | None = None,
        token_issuer: tokens.TokenIssuer | None = None,
        join_handlers: join.JoinHandlers | None = None,
        metrics: metricsapi.MetricsAPI | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.join = join_handlers
        self.authenticator = authenticator
        self.authorizer = authorizer
        self.checks = checks
        self.discovery = discovery.Discovery(
            registry.catalogue, extra=metricsapi.RESOURCES if metrics is not None else ())
        self.openapi = openapi.OpenAPIDocuments(registry.catalogue, custom_schema)
        registry.catalogue.on_change(self.discovery.invalidate)
        registry.catalogue.on_change(self.openapi.invalidate)
        # Without a token issuer (unit tests of the HTTP layer) serviceaccounts/token is 404.
        self.handlers: subresources.APIHandlers = (
            subresources.APIHandlers(registry, authorizer, kubelet=kubelet)
            if token_issuer is None else
            tokenrequest.TokenRequestHandlers(registry, authorizer, kubelet=kubelet,
                                              issuer=token_issuer))

    def build(self) -> web.Application:
        app = web.Application(
            middlewares=[self._errors, self._authenticate],
            client_max_size=1024 * 1024 * 1024,  # bodies are bounded by the handlers (413)
        )
        if self.join is not None:  # agents joining (the token is their credential)
            app.router.add_route("*", join.CACERTS_PATH, self.join.handle)
            app.router.add_route("*", join.PREFIX + "{tail:.*}", self.join.handle)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    # -- middlewares ----------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except errors.APIError as err:
            return json_response(err.status(), status=err.code, headers=err.headers or None)
        except web.HTTPException:
            raise
        except Exception as err:
            log.exception("internal error serving %s %s", request.method, request.path)
            failure = errors.internal(f"{type(err).__name__}: {err}")
            return json_response(failure.status(), status=500)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # Decided on the route aiohttp matched, not on the path: the two read percent
        # escapes differently (``/v1-kubling%2Fconfig`` is no join route).
        if self.join is not None and request.match_info.handler == self.join.handle:
            return await handler(request)
        peercert = None
        if request.transport is not None:
            peercert = request.transport.get_extra_info("peercert")
        user = await self.authenticator.authenticate(
            peercert, request.headers.get("Authorization")
        )
        if user is None or (user is authn.ANONYMOUS and not authn.is_public(request.path)):
            raise errors.unauthorized()
        request[USER_KEY] = user
        return await handler(request)

    # -- routing --------------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        user = request[USER_KEY]
        try:
            info = requestinfo.parse(request.method, request.raw_path.split("?", 1)[0],
                                     request.query)
        except requestinfo.MalformedPath:
            raise errors.path_not_found() from None
        if user is not authn.ANONYMOUS:
            decision = await self.authorizer.authorize(user, info)
            if not decision.allowed:
                raise errors.APIError(
                    403, "Forbidden", self._forbidden_text(user, info),
                    details=self._forbidden_details(info),
                )
        if info.is_resource_request and self.metrics is not None and \
                info.group == metricsapi.GROUP:  # computed, not stored: its own handlers
            return await self.metrics.handle(request, info)
        if info.is_resource_request:
            return await self.handlers.handle(request, info)
        return await self._non_resource(request)

    @staticmethod
    def _forbidden_text(user: authn.UserInfo, info: requestinfo.RequestInfo) -> str:
        target = info.resource
        if info.group:
            target += "." + info.group
        if info.name:
            target += f' "{info.name}"'
        if not info.is_resource_request:
            return f"forbidden: {authz.forbidden_message(user, info)}"
        return f"{target} is forbidden: {authz.forbidden_message(user, info)}"

    @staticmethod
    def _forbidden_details(info: requestinfo.RequestInfo) -> dict[str, Any] | None:
        if not info.is_resource_request:
            return None
        details: dict[str, Any] = {}
        if info.name:
            details["name"] = info.name
        if info.group:
            details["group"] = info.group
        details["kind"] = info.resource
        return details

    async def _non_resource(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        if request.method not in ("GET", "HEAD"):
            raise errors.APIError(
                405, "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if path == "/version":
            return json_response(version_info())
        for name in ("healthz", "livez", "readyz"):
            if path == f"/{name}" or path.startswith(f"/{name}/"):
                return await self.checks.respond(request, name)
        if path in ("/api", "/apis"):
            aggregated = discovery.wants_aggregated(request.headers.get("Accept", ""))
            if aggregated:
                api_version = aggregated.split(";v=")[1].split(";")[0]
                body = self.discovery.aggregated(
                    legacy=path == "/api", api_version=f"apidiscovery.k8s.io/{api_version}"
                )
                return raw_json_response(body, content_type=aggregated,
                                         headers={"Vary": "Accept"})
            body = (
                self.discovery.api_versions() if path == "/api"
                else self.discovery.api_group_list()
            )
            return raw_json_response(body, headers={"Vary": "Accept"})
        if path.startswith("/openapi/") or path == "/swagger-2.0.0.pb-v1":
            return self._openapi(request, path)
        parts = path.strip("/").split("/")
        gv_body: bytes | None = None
        if parts[0] == "api" and len(parts) == 2:
            gv_body = self.discovery.resource_list("", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            gv_body = self.discovery.api_group(parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            gv_body = self.discovery.resource_list(parts[1], parts[2])
        if gv_body is not None:
            return raw_json_response(gv_body)
        raise errors.path_not_found()

    def _openapi(self, request: web.Request, path: str) -> web.StreamResponse:
        if path in ("/openapi/v2", "/swagger-2.0.0.pb-v1"):
            # kubectl 1.27/1.28 read v2 only as gnostic protobuf (``...spec.v2@v1.0+protobuf``,
            # or the older ``.v2.v1.0+protobuf`` spelling); without it apply/create/explain
            # fail. The encoding is cached next to the JSON it was made from.
            from kubling.api import protobuf  # here: the one caller; keeps startup lean

            accept = request.headers.get("Accept", "")
            wants_pb = any(
                media.split(";")[0].strip() in protobuf.OPENAPI_V2_MEDIA_TYPES
                for media in accept.split(",")
            )
            if path == "/swagger-2.0.0.pb-v1" or wants_pb:
                encoded = protobuf.openapi_v2_protobuf(self.openapi.v2())
                return raw_json_response(encoded, content_type=protobuf.OPENAPI_V2_MEDIA_TYPE,
                                         headers={"Vary": "Accept"})
            if "protobuf" in accept and "json" not in accept and "*/*" not in accept:
                raise errors.not_acceptable()
            return raw_json_response(self.openapi.v2(), headers={"Vary": "Accept"})
        if path == "/openapi/v3":
            return raw_json_response(self.openapi.v3_index())
        if path.startswith("/openapi/v3/"):
            body = self.openapi.v3_document(path[len("/openapi/v3/"):])
            if body is not None:
                return raw_json_response(
                    body, headers={"Cache-Control": "public, immutable",
                                   "Etag": '"' + self.openapi.v3_hash(path[12:]) + '"'}
                )
        raise errors.path_not_found()
