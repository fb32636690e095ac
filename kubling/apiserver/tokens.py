"""Service-account tokens in the API server: issuing them and authenticating with them.

The ``TokenIssuer`` signs the claims ``kubling.api.satoken`` builds with the key kept in
``<data-dir>/tls/service.key``. The ``ServiceAccountAuthenticator`` is the bearer-token
authenticator for them (upstream's ``JWTTokenAuthenticator`` with its validators): it
checks the signature, time and audience, then that the account and every object the token
is bound to still exist with the same uids, so deleting a pod revokes its tokens at once.

The signature check is the only expensive step, so its outcome is remembered per token;
the existence checks run on every request and read the watch cache (upstream reads its
informers) once it has caught up with every acknowledged write, so neither a
just-created object is missed nor a just-deleted one still found.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Callable, Mapping
from typing import Any

from kubling.api import jwt, meta, satoken
from kubling.apiserver import authn
from kubling.apiserver.registry.registry import Registry

#: Verified tokens remembered; beyond this the oldest are forgotten.
CACHE_SIZE = 4096


class TokenIssuer:
    """Signs service-account tokens; also the public half the authenticator trusts."""

    def __init__(self, key: jwt.PrivateKey, *, issuer: str = satoken.ISSUER,
                 audiences: tuple[str, ...] = ()) -> None:
        self.key = key
        self.public_key: jwt.PublicKey = key.public_key()
        self.kid = jwt.key_id(self.public_key)
        self.issuer = issuer
        #: The API server's own audiences (``--api-audiences``; upstream defaults to the
        #: issuer): what a token must be meant for to authenticate here.
        self.audiences = audiences or (issuer,)

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key, kid=self.kid)


class ObjectGetter:
    """The cluster objects a token names, read as upstream's token getter reads them."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def get(self, plural: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The object (read-only), or None when it does not exist."""
        rt = self.registry.catalogue.lookup("", "v1", plural)
        assert rt is not None, plural
        store = self.registry.store(rt)
        key = store.key(namespace, name)
        # Once the cache holds every acknowledged write, it answers (a just-deleted object
        # is gone from it); a cache that lags longer falls back to a read from storage.
        if await self.registry.caches.catch_up():
            cached = store.cache.items.get(key)
            return None if cached is None else cached.obj
        kv = await store.backend.get(key)  # not store.read: it would wait for the cache again
        return None if kv is None else store.load(kv)


class ServiceAccountAuthenticator:
    """``authn.TokenAuthenticator`` for bound and legacy service-account tokens."""

    def __init__(self, issuer: TokenIssuer, objects: ObjectGetter, *,
                 clock: Callable[[], float] = time.time, cache_size: int = CACHE_SIZE) -> None:
        self.issuer = issuer
        self.objects = objects
        self.clock = clock
        self.cache_size = cache_size
        self._verified: dict[str, dict[str, Any]] = {}

    async def authenticate(self, token: str) -> authn.UserInfo | None:
        claims = self._verify(token)
        if claims is None:
            return None
        try:
            parsed = satoken.parse(claims, audiences=self.issuer.audiences, now=self.clock())
        except jwt.InvalidToken:
            return None
        if not await self._still_valid(parsed, token):
            return None
        return _user(parsed)

    def _verify(self, token: str) -> dict[str, Any] | None:
        """The signed claims, if this server's key signed ``token`` for a known issuer."""
        claims = self._verified.get(token)
        if claims is not None:
            return claims
        try:
            claims = jwt.decode(token, self.issuer.public_key)
        except jwt.InvalidToken:
            return None
        if claims.get("iss") not in (self.issuer.issuer, satoken.LEGACY_ISSUER):
            return None
        if self.cache_size > 0:
            if len(self._verified) >= self.cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = claims
        return claims

    async def _still_valid(self, claims: satoken.TokenClaims, token: str) -> bool:
        """Whether the account and the bound objects are the ones the token names."""
        ns = claims.namespace
        deleted_before = self.clock() - satoken.LEEWAY_SECONDS
        account = await self.objects.get("serviceaccounts", ns, claims.service_account.name)
        if not _alive(account, claims.service_account.uid, deleted_before):
            return False
        if claims.legacy:
            assert claims.secret is not None
            secret = await self.objects.get("secrets", ns, claims.secret.name)
            return secret is not None and _holds_token(secret, token)
        if claims.secret is not None:
            secret = await self.objects.get("secrets", ns, claims.secret.name)
            if not _alive(secret, claims.secret.uid, deleted_before):
                return False
        if claims.pod is not None:
            pod = await self.objects.get("pods", ns, claims.pod.name)
            if not _alive(pod, claims.pod.uid, deleted_before):
                return False
        elif claims.node is not None:  # a node-bound token lives as long as its node
            node = await self.objects.get("nodes", "", claims.node.name)
            if not _alive(node, claims.node.uid, deleted_before):
                return False
        return True


def _alive(obj: Mapping[str, Any] | None, uid: str, deleted_before: float) -> bool:
    """The object exists, is the one named (same uid) and was not deleted a while ago
    (upstream tolerates the leeway, so a token checked during a deletion still works)."""
    if obj is None:
        return False
    md = obj.get("metadata") or {}
    if md.get("uid") != uid:
        return False
    deleted = meta.parse_time(md.get("deletionTimestamp"))
    return deleted is None or deleted.timestamp() >= deleted_before


def _holds_token(secret: Mapping[str, Any], token: str) -> bool:
    """A legacy token is valid while its Secret still holds exactly it."""
    stored = (secret.get("data") or {}).get("token")
    if not isinstance(stored, str):
        return False
    try:
        value = base64.b64decode(stored, validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(value, token.encode())


def _user(claims: satoken.TokenClaims) -> authn.UserInfo:
    extra: dict[str, tuple[str, ...]] = {}
    if claims.pod is not None:
        extra[satoken.POD_NAME_KEY] = (claims.pod.name,)
        extra[satoken.POD_UID_KEY] = (claims.pod.uid,)
    if claims.jti:
        extra[satoken.CREDENTIAL_ID_KEY] = (f"JTI={claims.jti}",)
    if claims.node is not None:
        extra[satoken.NODE_NAME_KEY] = (claims.node.name,)
        if claims.node.uid:
            extra[satoken.NODE_UID_KEY] = (claims.node.uid,)
    return authn.UserInfo(
        satoken.username(claims.namespace, claims.service_account.name),
        satoken.groups(claims.namespace), uid=claims.service_account.uid, extra=extra)

