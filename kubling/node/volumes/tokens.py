"""Service-account tokens for projected volumes, from the API's TokenRequest.

The kubelet's token manager: a token is requested with
``POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`` for an audience and a lifetime,
bound to the pod (``boundObjectRef``), so it dies with the pod. It is cached and requested
again once 80 % of its lifetime has passed (or after 24 hours, whichever comes first), the
rule upstream applies; the pod worker re-runs its volume set-up at least every resync
period, which is when a due token is replaced on disk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from kubling.api import meta
from kubling.api.meta import Object
from kubling.client import rest

SERVICE_ACCOUNTS = rest.lookup("v1", "serviceaccounts")
REFRESH_FRACTION = 0.8
MAX_TOKEN_AGE = 24 * 3600.0


class TokenError(Exception):
    """The API refused or could not be reached; the message says which."""


@dataclasses.dataclass(frozen=True)
class TokenKey:
    namespace: str
    service_account: str
    audience: str
    expiration_seconds: int
    pod_uid: str


@dataclasses.dataclass(frozen=True)
class Token:
    value: str
    issued_at: float
    expires_at: float

    def refresh_at(self) -> float:
        lifetime = self.expires_at - self.issued_at
        return self.issued_at + min(lifetime * REFRESH_FRACTION, MAX_TOKEN_AGE)


class TokenManager:
    """One per agent; ``clock`` is wall-clock seconds (tests pass their own)."""

    def __init__(self, client: rest.Client, *, clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock
        self._tokens: dict[TokenKey, Token] = {}

    async def get(self, pod: Object, *, audience: str, expiration_seconds: int) -> Token:
        md = pod["metadata"]
        account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
        key = TokenKey(md.get("namespace") or "default", account, audience,
                       expiration_seconds, md.get("uid", ""))
        token = self._tokens.get(key)
        if token is not None and self._clock() < token.refresh_at():
            return token
        token = await self._request(key, pod)
        self._tokens[key] = token
        return token

    def forget_pod(self, uid: str) -> None:
        for key in [k for k in self._tokens if k.pod_uid == uid]:
            del self._tokens[key]

    async def _request(self, key: TokenKey, pod: Object) -> Token:
        spec: Object = {"expirationSeconds": key.expiration_seconds,
                        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                           "name": pod["metadata"]["name"],
                                           "uid": key.pod_uid}}
        if key.audience:
            spec["audiences"] = [key.audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            answer = await self._client.resource(SERVICE_ACCOUNTS).create(
                body, namespace=key.namespace, name=key.service_account, subresource="token")
        except rest.ApiError as err:
            raise TokenError(f"failed to fetch token: {err.message}") from err
        except rest.TRANSPORT_ERRORS as err:
            raise TokenError(f"failed to fetch token: {err}") from err
        status = answer.get("status") or {}
        value = status.get("token")
        if not isinstance(value, str) or not value:
            raise TokenError("failed to fetch token: the API server returned no token")
        now = self._clock()
        when = meta.parse_time(status.get("expirationTimestamp"))
        expires = when.timestamp() if when else now + key.expiration_seconds
        granted = (answer.get("spec") or {}).get("expirationSeconds") or key.expiration_seconds
        return Token(value, issued_at=expires - float(granted), expires_at=expires)

