"""The pure parts of the resource proxy: ids, paths, headers and error wording."""

from __future__ import annotations

import errno

import aiohttp
import pytest

from kubling.apiserver import errors, resourceproxy


@pytest.mark.parametrize(("text", "parsed"), [
    ("web", ("", "web", "")),
    ("web:8080", ("", "web", "8080")),
    ("web:http", ("", "web", "http")),
    ("https:web:443", ("https", "web", "443")),
    ("http:web:", ("http", "web", "")),
    ("ftp:web:80", None),
    ("a:b:c:d", None),
    (":80", None),
])
def test_scheme_name_port(text: str, parsed: tuple[str, str, str] | None) -> None:
    assert resourceproxy.split_scheme_name_port(text) == parsed


def test_proxied_path_keeps_what_follows_proxy() -> None:
    path = "/api/v1/namespaces/d/services/web:80/proxy/a/b%20c/?x=1"
    assert resourceproxy.proxied_path(path, "web:80") == "/a/b%20c/"
    assert resourceproxy.proxied_path("/api/v1/nodes/n1/proxy", "n1") == "/"
    assert resourceproxy.proxied_path("/api/v1/namespaces/d/pods/https%3Ap%3A443/proxy/x",
                                      "https:p:443") == "/x"


def test_credentials_and_hop_by_hop_headers_stay_behind() -> None:
    sent = {"Authorization": "Bearer secret", "Connection": "keep-alive, X-Private",
            "X-Private": "1", "Accept": "text/html", "Keep-Alive": "5",
            "Impersonate-User": "admin"}
    assert resourceproxy.forwarded_headers(sent) == {"Accept": "text/html"}


def test_unreachable_targets_read_as_upstream() -> None:
    refused = resourceproxy.unreachable(
        "10.42.0.5:80", OSError(errno.ECONNREFUSED, "Connection refused"))
    assert (refused.code, refused.reason) == (503, "ServiceUnavailable")
    assert refused.message == ("error trying to reach service: dial tcp 10.42.0.5:80: "
                               "connect: connection refused")
    timed_out = resourceproxy.unreachable("10.42.0.5:80", aiohttp.ServerTimeoutError())
    assert timed_out.message.endswith("dial tcp 10.42.0.5:80: i/o timeout")
    assert isinstance(refused, errors.APIError)
