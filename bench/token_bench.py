"""Service-account token figures: TokenRequest issue rate and authentication rate with
the verified-signature cache warm and cold, for ES256 (kubling's key) and RS256.

Run: .venv/bin/python bench/token_bench.py [--seconds S]
In process, on the memory backend: the cost of the token path itself, not of HTTP.
Prints one line per figure; record them in docs/performance.md with the machine and date.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kubling import storage
from kubling.api import jwt
from kubling.api.resources import Catalogue
from kubling.apiserver import authz, tokenrequest, tokens, watchcache
from kubling.apiserver.registry.registry import Registry
from kubling.apiserver.registry.store import Store


async def rate(seconds: float, step: Callable[[], Awaitable[object]]) -> float:
    """Calls per second of ``step`` over ``seconds`` (after a short warm-up)."""
    for _ in range(50):
        await step()
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            await step()
        count += 100
    return count / elapsed


async def figures(key: jwt.PrivateKey, label: str, seconds: float) -> None:
    backend = storage.MemoryBackend()
    await backend.start()
    caches = watchcache.CacheSet(backend)
    await caches.start()
    registry = Registry(Catalogue(), backend, caches)

    def store(plural: str) -> Store:
        rt = registry.catalogue.lookup("", "v1", plural)
        assert rt is not None
        return registry.store(rt)

    async def create(plural: str, obj: dict[str, Any], namespace: str = "default") -> None:
        store(plural).strategy.default(obj)
        await store(plural).create(obj, namespace=namespace)

    accounts = store("serviceaccounts")
    await create("namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": "default"}}, namespace="")
    await create("serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "default"}})
    await create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                          "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    issuer = tokens.TokenIssuer(key)
    handlers = tokenrequest.TokenRequestHandlers(registry, authz.AllowAuthenticated(),
                                                 issuer=issuer)
    bound = {"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}}

    async def issue() -> dict[str, Any]:
        return await handlers.create_token(bound, namespace="default", name="default",
                                           accounts=accounts)

    token = (await issue())["status"]["token"]
    getter = tokens.ObjectGetter(registry)
    cached = tokens.ServiceAccountAuthenticator(issuer, getter)
    uncached = tokens.ServiceAccountAuthenticator(issuer, getter, cache_size=0)
    assert await cached.authenticate(token) is not None

    print(f"{label}: TokenRequest (pod-bound) issued: {await rate(seconds, issue):,.0f}/s")
    print(f"{label}: authentications, signature cache cold: "
          f"{await rate(seconds, lambda: uncached.authenticate(token)):,.0f}/s")
    print(f"{label}: authentications, signature cache warm: "
          f"{await rate(seconds, lambda: cached.authenticate(token)):,.0f}/s")
    await caches.stop()
    await backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure")
    args = parser.parse_args()
    asyncio.run(figures(ec.generate_private_key(ec.SECP256R1()), "ES256", args.seconds))
    asyncio.run(figures(rsa.generate_private_key(65537, 2048), "RS256", args.seconds))


if __name__ == "__main__":
    main()
