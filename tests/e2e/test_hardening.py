"""Inputs that used to do harm: each answers the upstream way and changes nothing else."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid
from typing import Any

from tests.server_fixture import KublingServer


def _call(kubling: KublingServer, method: str, path: str, body: Any = None,
          content_type: str = "application/json") -> tuple[int, Any]:
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port,
                                       context=kubling.ssl_context(), timeout=20)
    try:
        raw = body if isinstance(body, bytes) else (
            None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=raw, headers={"Content-Type": content_type})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


def _ns(kubling: KublingServer) -> str:
    name = "h-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", name)
    for i in range(2):
        kubling.kubectl("create", "configmap", f"cm{i}", "-n", name)
    return name


def test_encoded_slash_name_is_not_a_collection(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    code, _ = _call(kubling, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/%2F")
    assert code == 404
    names = kubling.kubectl("get", "cm", "-n", ns, "-o", "name").stdout.split()
    assert "configmap/cm0" in names and "configmap/cm1" in names


def test_no_deletecollection_across_namespaces(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    code, status = _call(kubling, "DELETE", "/api/v1/configmaps")
    assert code == 405 and status["reason"] == "MethodNotAllowed"
    assert len(kubling.kubectl("get", "cm", "-n", ns, "-o", "name").stdout.split()) >= 2


def test_yaml_alias_bomb_is_refused_quickly(kubling: KublingServer) -> None:
    levels = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for i, name in enumerate("bcdefgh"):
        prev = "abcdefg"[i]
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\nspec:\n  "
            + "\n  ".join(levels) + "\n").encode()
    started = time.monotonic()
    code, status = _call(kubling, "POST", "/api/v1/namespaces/default/configmaps?dryRun=All",
                         bomb, "application/yaml")
    assert code == 400 and "excessive aliasing" in status["message"]
    assert time.monotonic() - started < 2.0
    assert _call(kubling, "GET", "/version")[0] == 200


def test_yaml_integer_keys_become_strings(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    code, obj = _call(kubling, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                      b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: keys}\n"
                      b"data: {1: one}\n", "application/yaml")
    assert code == 201 and obj["data"] == {"1": "one"}


def test_bad_continue_token_is_400(kubling: KublingServer) -> None:
    code, status = _call(kubling, "GET", "/api/v1/namespaces/default/configmaps?limit=1"
                         "&continue=WzFd")
    assert code == 400 and status["reason"] == "BadRequest"


def test_watch_timeout_zero_means_the_default(kubling: KublingServer) -> None:
    sock = socket.create_connection(("127.0.0.1", kubling.port), timeout=5)
    tls = kubling.ssl_context().wrap_socket(sock, server_hostname="127.0.0.1")
    tls.sendall(b"GET /api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=0 "
                b"HTTP/1.1\r\nHost: x\r\n\r\n")
    tls.settimeout(1.5)
    received = b""
    try:
        while True:
            chunk = tls.recv(65536)
            if not chunk:
                break
            received += chunk
    except TimeoutError:
        pass  # still open after 1.5 s: not closed at once
    finally:
        tls.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert not received.endswith(b"0\r\n\r\n")  # no end of the chunked stream


def test_delete_options_body(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    code, status = _call(kubling, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/cm0",
                         {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": "All"})
    assert code == 400 and "Invalid dry run value" in status["message"]
    assert "cm0" in kubling.kubectl("get", "cm", "cm0", "-n", ns, "-o", "name").stdout
    kubling.kubectl("patch", "cm", "cm1", "-n", ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    code, obj = _call(kubling, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/cm1",
                      {"kind": "DeleteOptions", "apiVersion": "v1", "orphanDependents": True})
    assert code == 200  # not deleted yet, still 200 (202 only for orphanDependents=false)
    assert sorted(obj["metadata"]["finalizers"]) == ["example.com/hold", "orphan"]
    kubling.kubectl("patch", "cm", "cm1", "-n", ns, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}')


def test_null_label_values_are_empty_strings(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    code, obj = _call(kubling, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                      {"metadata": {"name": "nl", "labels": {"a": None}}})
    assert code == 201 and obj["metadata"]["labels"] == {"a": ""}


def test_unknown_fields_of_builtin_kinds_are_dropped(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    code, obj = _call(kubling, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                      {"metadata": {"name": "uf"}, "data": {"a": "b"}, "bogus": 1})
    assert code == 201 and "bogus" not in obj
    got = kubling.kubectl_yaml("get", "cm", "uf", "-n", ns)
    assert "bogus" not in got


def test_partial_object_metadata(kubling: KublingServer) -> None:
    """client-go's metadata client asks for PartialObjectMetadata(List)."""
    ns = _ns(kubling)
    accept = ("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
              "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json")
    conn = http.client.HTTPSConnection("127.0.0.1", kubling.port,
                                       context=kubling.ssl_context(), timeout=20)
    try:
        conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps", headers={"Accept": accept})
        listed = json.loads(conn.getresponse().read())
        conn.request("GET", f"/api/v1/namespaces/{ns}/configmaps/cm0",
                     headers={"Accept": accept})
        single = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    assert listed["kind"] == "PartialObjectMetadataList"
    assert listed["apiVersion"] == "meta.k8s.io/v1"
    # (the root-CA publisher's ConfigMap may already be there, as in every namespace)
    assert {i["metadata"]["name"] for i in listed["items"]} - {"kube-root-ca.crt"} == {
        "cm0", "cm1"}
    assert all(set(i) == {"kind", "apiVersion", "metadata"} for i in listed["items"])
    assert single["kind"] == "PartialObjectMetadata" and "data" not in single
