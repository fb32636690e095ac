"""Service-account token claims: what a token says and when it may be believed.

Two shapes exist upstream and both are served. *Bound* tokens (TokenRequest, projected
volumes) carry ``aud``/``exp``/``nbf``/``iat``/``jti`` and a ``kubernetes.io`` claim naming
the account and, when bound, the pod, secret or node whose life they share. *Legacy*
tokens (the ``token`` key of a ``kubernetes.io/service-account-token`` Secret) never expire
and live as long as their Secret. This module builds both claim sets and checks the
time and audience rules; the signature and the "do the objects still exist" questions
belong to the API server's authenticator, which has the key and the cluster.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Collection
from typing import Any

from kubling.api import jwt

#: The issuer upstream (and k3s) use by default: the in-cluster name of the API server.
ISSUER = "https://kubernetes.default.svc.cluster.local"
#: The fixed issuer of legacy Secret-based tokens.
LEGACY_ISSUER = "kubernetes/serviceaccount"
#: What a projected volume asks for; such pod-bound tokens are extended (below).
WARN_ONLY_EXPIRATION_SECONDS = 3607
#: Upstream's ``--service-account-extend-token-expiration``: a pod-bound 3607s token is
#: valid a year, so workloads with clients that never reread the file keep working.
EXPIRATION_EXTENSION_SECONDS = 365 * 24 * 60 * 60
#: TokenRequest defaults and bounds (``ValidateTokenRequest``).
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
MAX_EXPIRATION_SECONDS = 1 << 32
#: Clock skew tolerated on ``exp`` and ``nbf`` (go-jose's DefaultLeeway).
LEEWAY_SECONDS = 60

_LEGACY = "kubernetes.io/serviceaccount/"

#: The user-info ``extra`` keys of a bound token (upstream's serviceaccount package).
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODE_UID_KEY = "authentication.kubernetes.io/node-uid"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """An object a token names: by name and by uid (a recreated object is another one)."""

    name: str
    uid: str


@dataclasses.dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a correctly signed, current token asserts; still to be checked against the
    cluster (the account and every bound object must exist with these uids)."""

    namespace: str
    service_account: Ref
    pod: Ref | None = None
    secret: Ref | None = None
    node: Ref | None = None
    jti: str = ""
    #: Legacy tokens are checked against their Secret's ``token`` data instead.
    legacy: bool = False


def username(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def groups(namespace: str) -> tuple[str, ...]:
    return ("system:serviceaccounts", f"system:serviceaccounts:{namespace}")


def bound_claims(*, issuer: str, audiences: Collection[str], namespace: str,
                 service_account: Ref, now: int, expiration_seconds: int,
                 warn_after_seconds: int = 0, pod: Ref | None = None,
                 secret: Ref | None = None, node: Ref | None = None) -> dict[str, Any]:
    """The claims of a TokenRequest token, issued at ``now`` (epoch seconds)."""
    private: dict[str, Any] = {
        "namespace": namespace,
        "serviceaccount": {"name": service_account.name, "uid": service_account.uid},
    }
    for key, ref in (("pod", pod), ("secret", secret), ("node", node)):
        if ref is not None:
            private[key] = {"name": ref.name, "uid": ref.uid}
    if warn_after_seconds:
        private["warnafter"] = now + warn_after_seconds
    return {
        "aud": list(audiences),
        "exp": now + expiration_seconds,
        "iat": now,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": private,
        "nbf": now,
        "sub": username(namespace, service_account.name),
    }


def legacy_claims(*, namespace: str, service_account: Ref, secret_name: str) -> dict[str, Any]:
    """The claims of a Secret-based token (upstream's ``LegacyClaims``)."""
    return {
        "iss": LEGACY_ISSUER,
        _LEGACY + "namespace": namespace,
        _LEGACY + "secret.name": secret_name,
        _LEGACY + "service-account.name": service_account.name,
        _LEGACY + "service-account.uid": service_account.uid,
        "sub": username(namespace, service_account.name),
    }


def parse(claims: dict[str, Any], *, audiences: Collection[str], now: float) -> TokenClaims:
    """Check the time and audience rules of verified claims; ``jwt.InvalidToken`` (with
    upstream's wording) when they fail or the claims are not a service account's."""
    if claims.get("iss") == LEGACY_ISSUER:
        return _parse_legacy(claims)
    nbf, exp = claims.get("nbf"), claims.get("exp")
    if isinstance(nbf, int | float) and now + LEEWAY_SECONDS < nbf:
        raise jwt.InvalidToken("service account token is not valid yet")
    if not isinstance(exp, int | float) or now - LEEWAY_SECONDS > exp:
        raise jwt.InvalidToken("service account token has expired")
    token_audiences = claims.get("aud")
    if isinstance(token_audiences, str):
        token_audiences = [token_audiences]
    if not isinstance(token_audiences, list) or not set(token_audiences) & set(audiences):
        raise jwt.InvalidToken(f"token audiences {_quoted(token_audiences)} is invalid for "
                               f"the target audiences {_quoted(audiences)}")
    private = claims.get("kubernetes.io")
    if not isinstance(private, dict):
        raise jwt.InvalidToken("service account token has no kubernetes.io claim")
    namespace = private.get("namespace")
    account = _ref(private.get("serviceaccount"))
    if not isinstance(namespace, str) or not namespace or account is None:
        raise jwt.InvalidToken("service account token claims could not be validated")
    jti = claims.get("jti")
    return TokenClaims(namespace, account, pod=_ref(private.get("pod")),
                       secret=_ref(private.get("secret")), node=_ref(private.get("node")),
                       jti=jti if isinstance(jti, str) else "")


def _parse_legacy(claims: dict[str, Any]) -> TokenClaims:
    values = [claims.get(_LEGACY + k) for k in
              ("namespace", "service-account.name", "service-account.uid", "secret.name")]
    if not all(isinstance(v, str) and v for v in values):
        raise jwt.InvalidToken("token could not be validated")
    namespace, name, uid, secret_name = (str(v) for v in values)
    return TokenClaims(namespace, Ref(name, uid), secret=Ref(secret_name, ""), legacy=True)


def _quoted(values: Any) -> str:
    """Go's ``%q`` of a string slice, as upstream's messages print audiences."""
    items = values if isinstance(values, list | tuple | set | frozenset) else [values]
    return "[" + " ".join(f'"{v}"' for v in items) + "]"


def _ref(value: Any) -> Ref | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    uid = value.get("uid")
    return Ref(value["name"], uid if isinstance(uid, str) else "")
