"""The host-touching network tests take the host's agent slot while they run.

Their bridges, namespaces and tables are named ``kubling-…`` too, and an agent-enabled
server (or its test fixture's teardown, which removes the ``kubling-`` namespaces that
appeared during its module) would take them for its own leftovers and remove them mid-test.
Holding the slot (``tests.server_fixture.AGENT_SLOT``, a host-wide flock) makes the two
take turns; the pure tests in this package do not wait for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server_fixture import AGENT_SLOT

#: Modules that make links, namespaces or nftables tables on the host.
HOST_MODULES = frozenset({"test_cni", "test_dns", "test_proxy"})


@pytest.fixture(autouse=True, scope="module")
def _host_slot(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.module.__name__.rsplit(".", 1)[-1] not in HOST_MODULES:
        yield
        return
    with AGENT_SLOT.held():
        yield
