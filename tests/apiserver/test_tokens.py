"""Service-account tokens: signing, TokenRequest rules and the authenticator, on memory."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kubling import storage
from kubling.api import jwt, satoken
from kubling.api.resources import Catalogue
from kubling.apiserver import authz, errors, pki, tokenrequest, tokens, watchcache
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import DeleteOptions, Store

KEY = ec.generate_private_key(ec.SECP256R1())


class Clock:
    """Starts at the real time: TokenRequest stamps tokens with it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.issuer = tokens.TokenIssuer(KEY)
        self.clock = Clock()
        self.authn = tokens.ServiceAccountAuthenticator(
            self.issuer, tokens.ObjectGetter(registry), clock=self.clock)
        self.handlers = tokenrequest.TokenRequestHandlers(registry, authz.AllowAuthenticated(),
                                                          issuer=self.issuer)

    def store(self, plural: str) -> Store:
        rt = self.registry.catalogue.lookup("", "v1", plural)
        assert rt is not None
        return self.registry.store(rt)

    async def create(self, plural: str, obj: dict[str, Any], ns: str = "default") -> Any:
        store = self.store(plural)
        store.strategy.default(obj)
        return await store.create(obj, namespace=ns)

    async def token(self, name: str = "default", **spec: Any) -> str:
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                   "spec": spec}
        answer = await self.handlers.create_token(request, namespace="default", name=name,
                                                  accounts=self.store("serviceaccounts"))
        token: str = answer["status"]["token"]
        return token


def run(body: Callable[[Env], Awaitable[None]]) -> None:
    async def main() -> None:
        backend = storage.MemoryBackend()
        await backend.start()
        caches = watchcache.CacheSet(backend)
        await caches.start()
        env = Env(Registry(Catalogue(), backend, caches))
        await env.create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": "default"}}, ns="")
        await env.create("serviceaccounts", account("default"))
        try:
            await body(env)
        finally:
            await caches.stop()
            await backend.close()

    asyncio.run(main())


def account(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}


def pod(name: str, account_name: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"serviceAccountName": account_name,
                     "containers": [{"name": "c", "image": "busybox"}]}}


# -- jwt --------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, rsa.generate_private_key(65537, 2048)],
                         ids=["ES256", "RS256"])
def test_jwt_round_trip_and_tampering(key: jwt.PrivateKey) -> None:
    token = jwt.encode({"sub": "x", "n": 1}, key, kid="k")
    assert jwt.decode(token, key.public_key()) == {"sub": "x", "n": 1}
    header, claims, signature = token.split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"admin","n":1}').rstrip(b"=").decode()
    for bad in (f"{header}.{forged}.{signature}", f"{header}.{claims}.{signature[:-4]}AAAA",
                f"{header}.{claims}", "not-a-token", f"{header}.{claims}.***"):
        with pytest.raises(jwt.InvalidToken):
            jwt.decode(bad, key.public_key())
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(jwt.InvalidToken):
        jwt.decode(jwt.encode({"sub": "x"}, other), key.public_key())


def test_jwt_refuses_alg_none_and_hmac() -> None:
    body = base64.urlsafe_b64encode(b'{"sub":"x"}').rstrip(b"=").decode()
    for alg in (b'{"alg":"none"}', b'{"alg":"HS256"}'):
        header = base64.urlsafe_b64encode(alg).rstrip(b"=").decode()
        with pytest.raises(jwt.InvalidToken):
            jwt.decode(f"{header}.{body}.", KEY.public_key())


# -- TokenRequest -------------------------------------------------------------------------


def test_token_claims_are_upstreams() -> None:
    async def body(env: Env) -> None:
        sa = await env.store("serviceaccounts").get("default", "default")
        request = {"spec": {"audiences": ["api", "vault"], "expirationSeconds": 1200}}
        answer = await env.handlers.create_token(request, namespace="default", name="default",
                                                 accounts=env.store("serviceaccounts"))
        assert answer["kind"] == "TokenRequest" and answer["metadata"]["name"] == "default"
        assert answer["spec"] == {"audiences": ["api", "vault"], "expirationSeconds": 1200}
        claims = jwt.decode(answer["status"]["token"], KEY.public_key())
        assert claims["iss"] == "https://kubernetes.default.svc.cluster.local"
        assert claims["aud"] == ["api", "vault"]
        assert claims["sub"] == "system:serviceaccount:default:default"
        assert claims["exp"] - claims["iat"] == 1200 and claims["nbf"] == claims["iat"]
        assert claims["jti"]
        assert claims["kubernetes.io"] == {
            "namespace": "default",
            "serviceaccount": {"name": "default", "uid": sa["metadata"]["uid"]}}
        default = await env.handlers.create_token({"spec": {}}, namespace="default",
                                                  name="default",
                                                  accounts=env.store("serviceaccounts"))
        assert default["spec"]["expirationSeconds"] == 3600
        assert default["spec"]["audiences"] == [satoken.ISSUER]

    run(body)


def test_pod_bound_projected_token_is_extended_with_warnafter() -> None:
    async def body(env: Env) -> None:
        created = await env.create("pods", pod("web"))
        token = await env.token(expirationSeconds=3607,
                                boundObjectRef={"kind": "Pod", "apiVersion": "v1",
                                                "name": "web"})
        claims = jwt.decode(token, KEY.public_key())
        private = claims["kubernetes.io"]
        assert private["pod"] == {"name": "web", "uid": created["metadata"]["uid"]}
        assert claims["exp"] - claims["iat"] == satoken.EXPIRATION_EXTENSION_SECONDS
        assert private["warnafter"] - claims["iat"] == 3607

    run(body)


@pytest.mark.parametrize(("spec", "code", "message"), [
    ({"expirationSeconds": 60}, 422,
     'TokenRequest.authentication.k8s.io "" is invalid: spec.expirationSeconds: Invalid '
     "value: 60: may not specify a duration less than 10 minutes"),
    ({"expirationSeconds": -5}, 422, "may not specify a duration less than 10 minutes"),
    ({"expirationSeconds": 1 << 33}, 422, "may not specify a duration larger than 2^32"),
    ({"boundObjectRef": {"kind": "Deployment", "apiVersion": "apps/v1", "name": "x"}}, 400,
     "cannot bind token to object of type apps/v1, Kind=Deployment"),
    ({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "missing"}}, 404,
     'pods "missing" not found'),
    ({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "other-sa"}}, 400,
     'cannot bind token for serviceaccount "default" to pod running with different '
     "serviceaccount name."),
    ({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "nope"}},
     409, "the UID in the bound object reference (nope) does not match the UID in record"),
])
def test_bad_token_requests_get_upstream_statuses(spec: dict[str, Any], code: int,
                                                 message: str) -> None:
    async def body(env: Env) -> None:
        await env.create("serviceaccounts", account("builder"))
        await env.create("pods", pod("web"))
        await env.create("pods", pod("other-sa", "builder"))
        with pytest.raises(errors.APIError) as caught:
            await env.token(**spec)
        assert caught.value.code == code
        assert message in caught.value.message

    run(body)


def test_unknown_service_account_is_404_and_name_mismatch_422() -> None:
    async def body(env: Env) -> None:
        with pytest.raises(errors.APIError) as caught:
            await env.token("nobody")
        assert caught.value.code == 404
        assert caught.value.message == 'serviceaccounts "nobody" not found'
        with pytest.raises(errors.APIError) as caught:
            await env.handlers.create_token({"metadata": {"name": "x"}}, namespace="default",
                                            name="default",
                                            accounts=env.store("serviceaccounts"))
        assert caught.value.code == 422

    run(body)


# -- authentication ---------------------------------------------------------------------


def test_token_authenticates_as_the_service_account() -> None:
    async def body(env: Env) -> None:
        sa = await env.store("serviceaccounts").get("default", "default")
        user = await env.authn.authenticate(await env.token())
        assert user is not None
        assert user.name == "system:serviceaccount:default:default"
        assert user.groups == ("system:serviceaccounts", "system:serviceaccounts:default")
        assert user.uid == sa["metadata"]["uid"]
        assert list(user.extra) == [satoken.CREDENTIAL_ID_KEY]

    run(body)


def test_tampered_expired_and_foreign_audience_tokens_are_rejected() -> None:
    async def body(env: Env) -> None:
        token = await env.token(expirationSeconds=600)
        header, claims, signature = token.split(".")
        assert await env.authn.authenticate(f"{header}.{claims}x.{signature}") is None
        assert await env.authn.authenticate(token) is not None
        issued = env.clock.now
        env.clock.now = issued + 600 + satoken.LEEWAY_SECONDS + 1
        assert await env.authn.authenticate(token) is None  # expired (even when cached)
        env.clock.now = issued - satoken.LEEWAY_SECONDS - 5
        assert await env.authn.authenticate(token) is None  # not valid yet
        env.clock.now = issued
        assert await env.authn.authenticate(await env.token(audiences=["vault"])) is None
        other = tokens.TokenIssuer(ec.generate_private_key(ec.SECP256R1()))
        forged = other.sign(jwt.decode(token, KEY.public_key()))
        assert await env.authn.authenticate(forged) is None

    run(body)


def test_deleting_the_bound_pod_revokes_the_token() -> None:
    async def body(env: Env) -> None:
        created = await env.create("pods", pod("web"))
        token = await env.token(boundObjectRef={"kind": "Pod", "apiVersion": "v1",
                                                "name": "web"})
        user = await env.authn.authenticate(token)
        assert user is not None
        assert user.extra[satoken.POD_NAME_KEY] == ("web",)
        assert user.extra[satoken.POD_UID_KEY] == (created["metadata"]["uid"],)
        await env.store("pods").delete("default", "web", DeleteOptions())
        assert await env.authn.authenticate(token) is None
        await env.create("pods", pod("web"))  # same name, another pod
        assert await env.authn.authenticate(token) is None

    run(body)


def test_recreated_service_account_does_not_inherit_tokens() -> None:
    async def body(env: Env) -> None:
        await env.create("serviceaccounts", account("builder"))
        token = await env.token("builder")
        assert await env.authn.authenticate(token) is not None
        await env.store("serviceaccounts").delete("default", "builder", DeleteOptions())
        assert await env.authn.authenticate(token) is None
        await env.create("serviceaccounts", account("builder"))
        assert await env.authn.authenticate(token) is None
        assert await env.authn.authenticate(await env.token("builder")) is not None

    run(body)


def test_legacy_secret_token_lives_as_long_as_its_secret() -> None:
    async def body(env: Env) -> None:
        sa = await env.store("serviceaccounts").get("default", "default")
        token = jwt.encode(satoken.legacy_claims(
            namespace="default", service_account=satoken.Ref("default", sa["metadata"]["uid"]),
            secret_name="legacy"), KEY)
        assert await env.authn.authenticate(token) is None  # no Secret holds it yet
        await env.create("secrets", {
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "legacy",
                         "annotations": {"kubernetes.io/service-account.name": "default"}},
            "data": {"token": base64.b64encode(token.encode()).decode()}})
        user = await env.authn.authenticate(token)
        assert user is not None and user.name == "system:serviceaccount:default:default"
        assert user.extra == {}
        await env.store("secrets").delete("default", "legacy", DeleteOptions())
        assert await env.authn.authenticate(token) is None

    run(body)


def test_signing_key_is_made_on_first_start_and_kept(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = pki.ensure_pki(tls, hostnames=[], ips=["127.0.0.1"])
    key = pki.load_service_account_key(first.service_account_key)
    assert first.service_account_key == tls / "service.key"
    assert first.service_account_key.stat().st_mode & 0o777 == 0o600
    again = pki.ensure_pki(tls, hostnames=["other"], ips=["127.0.0.1"])
    kept = pki.load_service_account_key(again.service_account_key)
    assert jwt.key_id(kept.public_key()) == jwt.key_id(key.public_key())


def test_secret_and_node_bound_tokens_die_with_their_object() -> None:
    async def body(env: Env) -> None:
        await env.create("secrets", {"apiVersion": "v1", "kind": "Secret",
                                     "metadata": {"name": "s"}})
        node = await env.create("nodes", {"apiVersion": "v1", "kind": "Node",
                                          "metadata": {"name": "n1"}}, ns="")
        by_secret = await env.token(boundObjectRef={"kind": "Secret", "apiVersion": "v1",
                                                    "name": "s"})
        by_node = await env.token(boundObjectRef={"kind": "Node", "apiVersion": "v1",
                                                  "name": "n1"})
        user = await env.authn.authenticate(by_node)
        assert user is not None
        assert user.extra[satoken.NODE_NAME_KEY] == ("n1",)
        assert user.extra[satoken.NODE_UID_KEY] == (node["metadata"]["uid"],)
        assert await env.authn.authenticate(by_secret) is not None
        await env.store("secrets").delete("default", "s", DeleteOptions())
        await env.store("nodes").delete("", "n1", DeleteOptions())
        assert await env.authn.authenticate(by_secret) is None
        assert await env.authn.authenticate(by_node) is None

    run(body)


def test_pod_bound_token_names_the_pods_node() -> None:
    async def body(env: Env) -> None:
        node = await env.create("nodes", {"apiVersion": "v1", "kind": "Node",
                                          "metadata": {"name": "n1"}}, ns="")
        await env.create("pods", pod("web") | {"spec": {
            "serviceAccountName": "default", "nodeName": "n1",
            "containers": [{"name": "c", "image": "busybox"}]}})
        token = await env.token(boundObjectRef={"kind": "Pod", "apiVersion": "v1",
                                                "name": "web"})
        private = jwt.decode(token, KEY.public_key())["kubernetes.io"]
        assert private["node"] == {"name": "n1", "uid": node["metadata"]["uid"]}
        user = await env.authn.authenticate(token)
        assert user is not None and user.extra[satoken.NODE_NAME_KEY] == ("n1",)
        # for a pod-bound token the node is information, not a binding
        await env.store("nodes").delete("", "n1", DeleteOptions())
        assert await env.authn.authenticate(token) is not None

    run(body)
