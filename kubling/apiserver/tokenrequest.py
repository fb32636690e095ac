"""``serviceaccounts/<name>/token``: the TokenRequest API (``kubectl create token``).

A TokenRequest is never stored: a create answers with a freshly signed token, as
upstream's ``TokenREST`` does. The rules are upstream's: the account must exist, the
audiences default to the API server's, ``expirationSeconds`` defaults to an hour and may
not be under ten minutes, and a token may be bound to a Pod (running as that account),
a Secret or a Node, whose deletion then revokes it. A pod-bound token asked for 3607
seconds (what a projected volume asks) is extended to a year with a ``warnafter`` claim,
upstream's safe roll-out of bound tokens.

``TokenRequestHandlers`` is ``subresources.APIHandlers`` plus this one subresource, the
same layering by which ``APIHandlers`` extends the plain resource handlers.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from kubling.api import field, meta, satoken
from kubling.api.meta import Object
from kubling.api.resources import ResourceType
from kubling.apiserver import authz, errors, nodeproxy, subresources, tokens
from kubling.apiserver.handlers import json_response
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import Store
from kubling.apiserver.requestinfo import RequestInfo

GROUP = "authentication.k8s.io"
TOKEN_REQUEST = ResourceType(GROUP, "v1", "TokenRequest", "tokenrequests", "tokenrequest",
                             True)
#: The kinds a token may be bound to, by their ``boundObjectRef.kind`` (all core/v1).
_BINDABLE = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}


class TokenRequestHandlers(subresources.APIHandlers):
    """The API's handlers, answering ``serviceaccounts/token`` with ``issuer``'s tokens."""

    def __init__(self, registry: Registry, authorizer: authz.Authorizer, *,
                 issuer: tokens.TokenIssuer,
                 kubelet: nodeproxy.KubeletConnector | None = None) -> None:
        super().__init__(registry, authorizer, kubelet=kubelet)
        self.issuer = issuer

    async def _subresource(self, request: web.Request, info: RequestInfo, rt: ResourceType,
                           store: Store) -> web.StreamResponse:
        if (rt.group, rt.plural, info.subresource) == ("", "serviceaccounts", "token") \
                and info.name:
            if info.verb != "create":
                raise errors.method_not_supported("", "serviceaccounts/token", info.verb)
            body, warnings = await self._read_object(request, TOKEN_REQUEST)
            answer = await self.create_token(body, namespace=info.namespace, name=info.name,
                                             accounts=store)
            response = json_response(answer, status=201)
            for warning in warnings:
                response.headers.add("Warning", f'299 - "{warning}"')
            return response
        return await super()._subresource(request, info, rt, store)

    async def create_token(self, request: Object, *, namespace: str, name: str,
                           accounts: Store) -> Object:
        """The TokenRequest ``request`` answered: upstream's ``TokenREST.Create``."""
        md = request.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise _invalid(name, field.invalid("metadata.name", md["name"],
                                               "must match the service account name if "
                                               "specified"))
        if md.get("namespace") and md["namespace"] != namespace:
            raise _invalid(name, field.invalid("metadata.namespace", md["namespace"],
                                               "must match the service account namespace if "
                                               "specified"))
        account = await accounts.get(namespace, name)
        spec = request.get("spec") or {}
        audiences = [a for a in spec.get("audiences") or [] if isinstance(a, str)]
        audiences = audiences or list(self.issuer.audiences)
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = satoken.DEFAULT_EXPIRATION_SECONDS
        _validate_expiration(expiration)
        issued = time.time()
        bound = await self._bound_objects(spec.get("boundObjectRef"), namespace, name)
        warn_after, lifetime = 0, expiration
        if bound.get("pod") is not None \
                and expiration == satoken.WARN_ONLY_EXPIRATION_SECONDS \
                and set(audiences) <= set(self.issuer.audiences):
            warn_after, lifetime = expiration, satoken.EXPIRATION_EXTENSION_SECONDS
        claims = satoken.bound_claims(
            issuer=self.issuer.issuer, audiences=audiences, namespace=namespace,
            service_account=_ref(account), now=int(issued), expiration_seconds=lifetime,
            warn_after_seconds=warn_after, pod=bound.get("pod"), secret=bound.get("secret"),
            node=bound.get("node"))
        spec_out: Object = {"audiences": audiences, "expirationSeconds": expiration,
                            "boundObjectRef": spec.get("boundObjectRef")}
        return {
            "kind": "TokenRequest", "apiVersion": f"{GROUP}/v1",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": _timestamp(int(issued))},
            "spec": {k: v for k, v in spec_out.items() if v is not None},
            # The requested lifetime, not an extension's: when the client should renew.
            "status": {"token": self.issuer.sign(claims),
                       "expirationTimestamp": _timestamp(int(issued) + expiration)},
        }

    async def _bound_objects(self, ref: Any, namespace: str,
                             account: str) -> dict[str, satoken.Ref]:
        """The pod, secret or node the token is bound to (plus a pod's node), checked."""
        if not isinstance(ref, dict):
            return {}
        kind, api_version = str(ref.get("kind") or ""), str(ref.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        plural = _BINDABLE.get(kind) if group == "" else None
        if plural is None:
            raise errors.bad_request(
                f"cannot bind token to object of type {group}/{version}, Kind={kind}")
        name = str(ref.get("name") or "")
        if not name:  # what upstream's store answers a get without a name
            raise errors.bad_request("Name parameter required.")
        obj = await self._core_object(plural, "" if kind == "Node" else namespace, name)
        uid = str(meta.metadata(obj).get("uid", ""))
        if kind == "Pod" and (obj.get("spec") or {}).get("serviceAccountName") != account:
            raise errors.bad_request(f'cannot bind token for serviceaccount "{account}" to pod '
                                     "running with different serviceaccount name.")
        if ref.get("uid") and ref["uid"] != uid:
            raise errors.conflict("", kind, name, f"the UID in the bound object reference "
                                  f"({ref['uid']}) does not match the UID in record. The object "
                                  "might have been deleted and then recreated")
        bound = {kind.lower(): satoken.Ref(name, uid)}
        node_name = (obj.get("spec") or {}).get("nodeName") if kind == "Pod" else None
        if node_name:  # upstream's ServiceAccountTokenPodNodeInfo: the pod's node, if known
            rt = self.registry.catalogue.lookup("", "v1", "nodes")
            assert rt is not None
            nodes = self.registry.store(rt)
            kv = await nodes.read(nodes.key("", node_name))
            if kv is not None:
                bound["node"] = _ref(nodes.load(kv))
        return bound

    async def _core_object(self, plural: str, namespace: str, name: str) -> Object:
        rt = self.registry.catalogue.lookup("", "v1", plural)
        assert rt is not None
        return await self.registry.store(rt).get(namespace, name)


def _validate_expiration(value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid("", field.invalid("spec.expirationSeconds", value,
                                         "must be an integer number of seconds"))
    if value < satoken.MIN_EXPIRATION_SECONDS:
        raise _invalid("", field.invalid("spec.expirationSeconds", value,
                                         "may not specify a duration less than 10 minutes"))
    if value > satoken.MAX_EXPIRATION_SECONDS:
        raise _invalid("", field.invalid("spec.expirationSeconds", value,
                                         "may not specify a duration larger than 2^32 seconds"))


def _timestamp(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid(name: str, error: field.FieldError) -> errors.APIError:
    return errors.invalid(GROUP, "TokenRequest", name, [error])


def _ref(obj: Mapping[str, Any]) -> satoken.Ref:
    md = obj.get("metadata") or {}
    return satoken.Ref(str(md.get("name", "")), str(md.get("uid", "")))
