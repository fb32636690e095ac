"""Authentication: who is calling. x509 client certificates now; bearer tokens plug in.

The TLS layer has already verified a presented certificate against the cluster CA, so the
certificate's CN is the user and its O values are the groups, as upstream. A request with
neither a certificate nor a token is anonymous: it may reach only the health and version
endpoints (upstream's default ``system:public-info-viewer`` reach).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

from aiohttp import web

from kubling.apiserver import pki

#: Paths any caller may read without credentials.
PUBLIC_PATHS = ("/version", "/healthz", "/livez", "/readyz")


@dataclasses.dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))
#: Where the authenticated user of a request is kept for the handlers.
USER_KEY = web.RequestKey("user", UserInfo)


class TokenAuthenticator(Protocol):
    """Maps a bearer token to a user (service-account tokens, bootstrap tokens...)."""

    async def authenticate(self, token: str) -> UserInfo | None: ...


def is_public(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in PUBLIC_PATHS)


class Authenticator:
    """Tries the client certificate, then each token authenticator."""

    def __init__(self, token_authenticators: tuple[TokenAuthenticator, ...] = ()) -> None:
        self.token_authenticators = token_authenticators

    async def authenticate(
        self, peercert: Mapping[str, object] | None, authorization: str | None
    ) -> UserInfo | None:
        """The caller, or None when credentials were presented but are not valid."""
        if peercert:
            try:
                name, groups = pki.user_from_certificate(peercert)
            except ValueError:
                return None
            return UserInfo(name, (*groups, "system:authenticated"))
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None
            for authenticator in self.token_authenticators:
                user = await authenticator.authenticate(token.strip())
                if user is not None:
                    return dataclasses.replace(
                        user, groups=(*user.groups, "system:authenticated")
                    )
            return None
        return ANONYMOUS
