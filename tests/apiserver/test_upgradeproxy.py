"""The API server's upgrade pipe to node agents, its pieces without a node: what is sent
to the agent, how its answer is read, how a failed dial is worded."""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from kubling.apiserver import nodeproxy, upgradeproxy
from kubling.apiserver.errors import APIError


def test_only_the_stream_protocol_headers_reach_the_agent() -> None:
    headers = CIMultiDict([("Authorization", "Bearer secret"), ("Connection", "Upgrade"),
                           ("Upgrade", "SPDY/3.1"),
                           ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
                           ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
                           ("Cookie", "c=1")])
    request = make_mocked_request("POST", "/api/v1/namespaces/d/pods/p/exec", headers=headers)
    assert upgradeproxy.is_upgrade(request)
    head = upgradeproxy._request_head(request, "10.0.0.1:10250", "/exec/d/p/c?command=ls")
    assert head.decode() == (
        "POST /exec/d/p/c?command=ls HTTP/1.1\r\nHost: 10.0.0.1:10250\r\n"
        "Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        "X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n")


def test_the_agents_answer_is_read_up_to_its_head() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n"
                         b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n\x80\x03")
        status, headers = await upgradeproxy._read_head(reader)
        assert status == 101
        assert headers["x-stream-protocol-version"] == ["v4.channel.k8s.io"]
        assert await reader.readexactly(2) == b"\x80\x03"  # the stream itself is left

    asyncio.run(scenario())


def test_a_failed_dial_in_gos_words() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert upgradeproxy._dial_error("10.0.0.1:10250", refused) == (
        "dial tcp 10.0.0.1:10250: connect: connection refused")
    assert upgradeproxy._dial_error("h:1", TimeoutError()) == "dial tcp h:1: i/o timeout"


class FakeStore:
    def __init__(self, obj: dict[str, object]) -> None:
        self.obj = obj

    async def get(self, namespace: str, name: str) -> dict[str, object]:
        return self.obj


def stream_error(pod: dict[str, object], path: str, *, upgrade: bool = True) -> APIError:
    headers = CIMultiDict({"Connection": "Upgrade", "Upgrade": "websocket"} if upgrade else {})
    request = make_mocked_request("GET", path, headers=headers)
    subresource = path.rsplit("/", 1)[-1].split("?")[0]
    with pytest.raises(APIError) as caught:
        asyncio.run(nodeproxy.pod_stream(
            request, pods=FakeStore(pod), nodes=FakeStore({}),  # type: ignore[arg-type]
            namespace="d", name="p", subresource=subresource, connector=None))
    return caught.value


POD: dict[str, Any] = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main"}]}}


@pytest.mark.parametrize(("pod", "path", "upgrade", "message"), [
    (POD, "/api/v1/namespaces/d/pods/p/exec?container=nope", True,
     "container nope is not valid for pod p"),
    (POD, "/api/v1/namespaces/d/pods/p/exec", True, "pod p does not have a host assigned"),
    ({**POD, "spec": {**POD["spec"], "nodeName": "n"}},
     "/api/v1/namespaces/d/pods/p/portforward", False, "Upgrade request required"),
])
def test_streams_are_checked_as_upstream_checks_them(pod: dict[str, object], path: str,
                                                     upgrade: bool, message: str) -> None:
    error = stream_error(pod, path, upgrade=upgrade)
    assert (error.code, error.message) == (400, message)
