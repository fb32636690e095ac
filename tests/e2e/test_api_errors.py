"""Bad input gets a clear Kubernetes Status — never a 500, a traceback or a hung socket."""

from __future__ import annotations

import http.client
import json
import ssl
import uuid
from typing import Any

import pytest

from tests.server_fixture import KublingServer


def _request(kubling: KublingServer, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, *, authenticated: bool = True,
             ) -> tuple[int, dict[str, str], bytes]:
    if authenticated:
        context = kubling.ssl_context()
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port, context=context, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _warnings(kubling: KublingServer, path: str, body: bytes,
              content_type: str = "application/json") -> list[str]:
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port,
                                       context=kubling.ssl_context(), timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 201
        return [v for k, v in resp.getheaders() if k.lower() == "warning"]
    finally:
        conn.close()


def _status(raw: bytes) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(raw)
    assert status["kind"] == "Status" and status["apiVersion"] == "v1"
    assert status["status"] == "Failure"
    return status


def test_unauthenticated_is_401_except_public_paths(kubling: KublingServer) -> None:
    code, _, body = _request(kubling, "GET", "/api/v1/namespaces", authenticated=False)
    assert code == 401
    assert _status(body)["reason"] == "Unauthorized"
    for path in ("/version", "/healthz", "/livez", "/readyz"):
        code, _, body = _request(kubling, "GET", path, authenticated=False)
        assert code == 200, path
    code, _, body = _request(kubling, "GET", "/readyz?verbose", authenticated=False)
    text = body.decode()
    assert "[+]ping ok" in text and "[+]etcd ok" in text and "readyz check passed" in text
    code, _, body = _request(kubling, "GET", "/api/v1/namespaces", authenticated=False,
                             headers={"Authorization": "Bearer nonsense"})
    assert code == 401


def test_aggregated_discovery_has_its_content_type(kubling: KublingServer) -> None:
    accept = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json")
    code, headers, body = _request(kubling, "GET", "/apis", headers={"Accept": accept})
    assert code == 200
    assert headers["content-type"] == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    doc = json.loads(body)
    assert doc["kind"] == "APIGroupDiscoveryList"
    groups = {item["metadata"]["name"] for item in doc["items"]}
    assert {"apps", "batch", "rbac.authorization.k8s.io"} <= groups
    code, headers, body = _request(kubling, "GET", "/apis")
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["kind"] == "APIGroupList"


@pytest.mark.parametrize(
    ("body", "content_type", "code", "reason"),
    [
        (b"{not json", "application/json", 400, "BadRequest"),
        (b"- just\n- a list", "application/yaml", 400, "BadRequest"),
        (b"key: [unclosed", "application/yaml", 400, "BadRequest"),
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}', "text/plain",
         415, "UnsupportedMediaType"),
        (b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}', "application/json",
         400, "BadRequest"),
        (b'{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}',
         "application/json", 400, "BadRequest"),
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"other"}}',
         "application/json", 400, "BadRequest"),
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}',
         "application/json", 422, "Invalid"),
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}', "application/json", 422,
         "Invalid"),
        (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":"oops"}',
         "application/json", 400, "BadRequest"),
        (b"", "application/json", 400, "BadRequest"),
    ],
)
def test_malformed_bodies(kubling: KublingServer, body: bytes, content_type: str, code: int,
                          reason: str) -> None:
    got, _, raw = _request(kubling, "POST", "/api/v1/namespaces/default/configmaps", body,
                           {"Content-Type": content_type})
    status = _status(raw)
    assert (got, status["reason"]) == (code, reason), status
    assert status["code"] == code


def test_invalid_name_wording(kubling: KublingServer) -> None:
    body = b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}'
    _, _, raw = _request(kubling, "POST", "/api/v1/namespaces/default/configmaps", body,
                         {"Content-Type": "application/json"})
    status = _status(raw)
    assert status["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: '
                                        'Invalid value: "Bad_Name": a lowercase RFC 1123 '
                                        "subdomain must consist of")
    cause = status["details"]["causes"][0]
    assert cause["reason"] == "FieldValueInvalid" and cause["field"] == "metadata.name"


def test_body_over_3_mib_is_413(kubling: KublingServer) -> None:
    big = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                      "data": {"k": "x" * (3 * 1024 * 1024 + 10)}}).encode()
    code, _, raw = _request(kubling, "POST", "/api/v1/namespaces/default/configmaps", big,
                            {"Content-Type": "application/json"})
    assert code == 413
    assert _status(raw)["reason"] == "RequestEntityTooLarge"


def test_unknown_paths_and_methods(kubling: KublingServer) -> None:
    code, _, raw = _request(kubling, "GET", "/api/v1/namespaces/default/widgets")
    assert code == 404 and _status(raw)["reason"] == "NotFound"
    code, _, raw = _request(kubling, "GET", "/apis/nope.example.com/v1")
    assert code == 404
    code, _, raw = _request(kubling, "GET", "/api/v1/namespaces/default/nodes")
    assert code == 404
    code, _, raw = _request(kubling, "PUT", "/api/v1/namespaces/default/configmaps")
    assert code == 405 and _status(raw)["reason"] == "MethodNotAllowed"


def test_already_exists_and_not_found_wording(kubling: KublingServer) -> None:
    name = "dup-" + uuid.uuid4().hex[:6]
    body = json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                       "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                           "metadata": {"labels": {"a": "b"}},
                           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    path = "/apis/apps/v1/namespaces/default/deployments"
    code, _, _ = _request(kubling, "POST", path, body.encode(), {"Content-Type": "application/json"})
    assert code == 201
    code, _, raw = _request(kubling, "POST", path, body.encode(),
                            {"Content-Type": "application/json"})
    status = _status(raw)
    assert code == 409 and status["reason"] == "AlreadyExists"
    assert status["message"] == f'deployments.apps "{name}" already exists'
    assert status["details"] == {"name": name, "group": "apps", "kind": "deployments"}
    code, _, raw = _request(kubling, "GET", f"{path}/nope")
    assert code == 404 and _status(raw)["message"] == 'deployments.apps "nope" not found'


def test_bad_selectors_and_list_options(kubling: KublingServer) -> None:
    code, _, raw = _request(kubling, "GET", "/api/v1/pods?labelSelector=a%20in%20(")
    assert code == 400 and _status(raw)["reason"] == "BadRequest"
    code, _, raw = _request(kubling, "GET", "/api/v1/pods?fieldSelector=spec.bogus%3Dx")
    status = _status(raw)
    assert code == 400 and "field label not supported: spec.bogus" in status["message"]
    code, _, raw = _request(kubling, "GET", "/api/v1/pods?limit=abc")
    assert code == 400
    code, _, raw = _request(kubling, "GET", "/api/v1/pods?resourceVersionMatch=Exact")
    assert code == 422 and _status(raw)["reason"] == "Invalid"
    code, _, raw = _request(kubling, "GET", "/api/v1/pods?limit=1&continue=garbage")
    assert code == 400
    code, _, raw = _request(kubling, "GET", "/api/v1/pods?resourceVersion=notanumber")
    assert code == 400


def test_patch_errors(kubling: KublingServer) -> None:
    name = "p-" + uuid.uuid4().hex[:6]
    path = "/api/v1/namespaces/default/configmaps"
    _request(kubling, "POST", path, json.dumps({"metadata": {"name": name}}).encode(),
             {"Content-Type": "application/json"})
    code, _, raw = _request(kubling, "PATCH", f"{path}/{name}", b'{"data":{"a":"b"}}',
                            {"Content-Type": "text/plain"})
    assert code == 415
    code, _, raw = _request(kubling, "PATCH", f"{path}/{name}",
                            b'[{"op":"replace","path":"/nope/x","value":1}]',
                            {"Content-Type": "application/json-patch+json"})
    assert code == 422, raw
    code, _, raw = _request(kubling, "PATCH", f"{path}/{name}", b"{broken",
                            {"Content-Type": "application/merge-patch+json"})
    assert code == 400
    code, _, raw = _request(kubling, "PATCH", f"{path}/missing", b'{"data":{"a":"b"}}',
                            {"Content-Type": "application/merge-patch+json"})
    assert code == 404


def test_field_validation_unknown_and_duplicate_fields(kubling: KublingServer) -> None:
    name = "fv-" + uuid.uuid4().hex[:6]
    meta = f'"metadata":{{"name":"{name}","name":"{name}"}}'
    body = ('{"apiVersion":"v1","kind":"ConfigMap",' + meta
            + ',"data":{"a":"b"},"bogus":1}').encode()
    path = "/api/v1/namespaces/default/configmaps"
    code, _, raw = _request(kubling, "POST", path + "?fieldValidation=Strict", body,
                            {"Content-Type": "application/json"})
    status = _status(raw)
    assert code == 400 and status["reason"] == "BadRequest"
    assert status["message"] == ('ConfigMap in version "v1" cannot be handled as a ConfigMap: '
                                 'strict decoding error: duplicate field "metadata.name", '
                                 'unknown field "bogus"')
    warnings = _warnings(kubling, path + "?fieldValidation=Warn", body)
    assert warnings == ['299 - "duplicate field \\"metadata.name\\""',
                        '299 - "unknown field \\"bogus\\""']

    code, _, raw = _request(kubling, "POST", path + "?fieldValidation=Nope", body,
                            {"Content-Type": "application/json"})
    assert code == 400


def test_field_validation_of_duplicate_yaml_keys(kubling: KublingServer) -> None:
    """YAML bodies (kubectl sends JSON, other clients YAML) get Go's strict YAML wording."""
    name = "fvy-" + uuid.uuid4().hex[:6]
    body = (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  name: {name}\n"
            "data:\n  a: b\n  a: c\n  1: x\n  1: y\n").encode()
    path = "/api/v1/namespaces/default/configmaps"
    code, _, raw = _request(kubling, "POST", path + "?fieldValidation=Strict", body,
                            {"Content-Type": "application/yaml"})
    status = _status(raw)
    assert code == 400, raw
    assert status["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: '
        'line 5: key "name" already set in map, line 8: key "a" already set in map, '
        "line 10: key 1 already set in map")
    warnings = _warnings(kubling, path + "?fieldValidation=Warn", body, "application/yaml")
    assert warnings[0] == '299 - "line 5: key \\"name\\" already set in map"'
    assert len(warnings) == 3
    # Ignore keeps the last value, as Go's decoder does.
    other = body.replace(name.encode(), name.encode() + b"-x")
    code, _, raw = _request(kubling, "POST", path + "?fieldValidation=Ignore", other,
                            {"Content-Type": "application/yaml"})
    assert code == 201 and json.loads(raw)["data"] == {"a": "c", "1": "y"}


def test_a_body_arriving_in_pieces_is_read_whole(kubling: KublingServer) -> None:
    """The body is read to its end even when it arrives in several TCP segments."""
    import socket
    import time as clock

    name = "slow-" + uuid.uuid4().hex[:6]
    body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {"k": "x" * 20000}}).encode()
    sock = socket.create_connection(("127.0.0.1", kubling.port), timeout=10)
    tls = kubling.ssl_context().wrap_socket(sock, server_hostname="127.0.0.1")
    try:
        tls.sendall(b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for start in range(0, len(body), 4000):
            tls.sendall(body[start:start + 4000])
            clock.sleep(0.05)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    finally:
        tls.close()
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


def test_bad_patches_and_apply_conflicts_leave_the_object_unchanged(
        kubling: KublingServer) -> None:
    """A patch that would make the object invalid (422), a malformed one (400) and an apply
    conflict (409) each get their Status, the stored object keeps its spec and generation
    (its status is the controller's to change), and the server goes on serving."""
    name = "bp-" + uuid.uuid4().hex[:6]
    path = "/apis/apps/v1/namespaces/default/deployments"
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "nginx"}]}}}}
    code, _, raw = _request(kubling, "POST", path + "?fieldManager=owner",
                            json.dumps(body).encode(), {"Content-Type": "application/json"})
    assert code == 201, raw

    code, _, raw = _request(kubling, "PATCH", f"{path}/{name}", b'{"spec":{"replicas":-1}}',
                            {"Content-Type": "application/merge-patch+json"})
    status = _status(raw)
    assert code == 422 and status["reason"] == "Invalid"
    assert ("spec.replicas: Invalid value: -1: must be greater than or equal to 0"
            in status["message"])
    code, _, raw = _request(kubling, "PATCH", f"{path}/{name}", b'[{"op":"replace",',
                            {"Content-Type": "application/json-patch+json"})
    assert code == 400 and _status(raw)["reason"] == "BadRequest"
    apply = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
             "spec": {"replicas": 5}}
    code, _, raw = _request(kubling, "PATCH", f"{path}/{name}?fieldManager=rival",
                            json.dumps(apply).encode(),
                            {"Content-Type": "application/apply-patch+yaml"})
    status = _status(raw)
    assert code == 409 and status["reason"] == "Conflict"
    assert 'conflict with "owner"' in status["message"] and ".spec.replicas" in (
        status["message"])

    code, _, raw = _request(kubling, "GET", f"{path}/{name}")
    stored = json.loads(raw)
    assert stored["metadata"]["generation"] == 1 and stored["spec"]["replicas"] == 2
    assert "rival" not in {m["manager"] for m in stored["metadata"]["managedFields"]}
    code, _, raw = _request(kubling, "GET", "/readyz")
    assert code == 200
