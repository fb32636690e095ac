"""Shared bits of the client tests: run a coroutine with a deadline, poll until true."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from kubling.client import rest

T = TypeVar("T")

NAMESPACES = rest.lookup("v1", "namespaces")
CONFIGMAPS = rest.lookup("v1", "configmaps")


def run(coro: Coroutine[Any, Any, T], *, timeout: float = 20.0) -> T:
    """``asyncio.run`` with a deadline, so that a hung test fails instead of hanging."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 5.0,
                     interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


async def settle(rounds: int = 10) -> None:
    """Let woken tasks run (with a fake clock nothing else moves)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


#: The ConfigMap the root-CA publisher puts in every namespace, as upstream.
ROOT_CA = "kube-root-ca.crt"


async def make_namespace(client: rest.Client, name: str) -> None:
    """Create the namespace and wait for its ``kube-root-ca.crt``, so that the ConfigMap's
    creation never interleaves with the events a test watches for."""
    try:
        await client.resource(NAMESPACES).create({"metadata": {"name": name}})
    except rest.ApiError as err:
        if not rest.is_already_exists(err):
            raise
    cms = client.resource(CONFIGMAPS)
    for _ in range(200):
        try:
            await cms.get(ROOT_CA, namespace=name)
            return
        except rest.ApiError as err:
            if not rest.is_not_found(err):
                raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {ROOT_CA} in namespace {name}")


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace}, "data": dict(data)}
