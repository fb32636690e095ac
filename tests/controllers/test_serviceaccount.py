"""The service-account controller: ``default`` exists in every active namespace."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.server_fixture import KublingServer


def _eventually(check: Callable[[], Any], *, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)


def _default_uid(server: KublingServer, ns: str) -> str:
    result = server.kubectl("get", "serviceaccount", "default", "-n", ns, "-o",
                            "jsonpath={.metadata.uid}", check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def test_default_service_account_appears_and_comes_back(kubling: KublingServer) -> None:
    ns = "sa-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", ns)
    first = _eventually(lambda: _default_uid(kubling, ns))
    kubling.kubectl("delete", "serviceaccount", "default", "-n", ns)
    second = _eventually(lambda: (uid := _default_uid(kubling, ns)) != first and uid)
    assert second and second != first
    # Other accounts are the user's business: deleted, they stay deleted.
    kubling.kubectl("create", "serviceaccount", "builder", "-n", ns)
    kubling.kubectl("delete", "serviceaccount", "builder", "-n", ns)
    time.sleep(0.3)
    names = kubling.kubectl("get", "serviceaccounts", "-n", ns, "-o", "name").stdout.split()
    assert names == ["serviceaccount/default"]
    kubling.kubectl("delete", "namespace", ns, "--wait=false")


def test_existing_namespaces_have_a_default_service_account(kubling: KublingServer) -> None:
    def all_have_one() -> bool:
        return all(_default_uid(kubling, ns)
                   for ns in ("default", "kube-system", "kube-public", "kube-node-lease"))

    _eventually(all_have_one)
