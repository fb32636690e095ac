"""The real kubectl prints kubling's server-side Tables with upstream's columns."""

from __future__ import annotations

import json
import re
import uuid

from tests.server_fixture import KublingServer

OBJECTS = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
  size: large
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
"""


def _ns(kubling: KublingServer) -> str:
    name = "t-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}))
    return name


def _table(output: str) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of kubectl's column output (columns are 2+ spaces apart)."""
    lines = [line for line in output.splitlines() if line.strip()]
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return split[0], split[1:]


def _get(kubling: KublingServer, *args: str) -> tuple[list[str], list[list[str]]]:
    return _table(kubling.kubectl("get", *args).stdout)


def test_get_prints_upstream_columns(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=OBJECTS)

    head, rows = _get(kubling, "configmaps", "settings", "-n", ns)
    assert head == ["NAME", "DATA", "AGE"]
    assert rows[0][:2] == ["settings", "2"]
    assert re.fullmatch(r"\d+s", rows[0][2])

    head, rows = _get(kubling, "svc", "web", "-n", ns)
    assert head == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert rows[0][0:2] == ["web", "ClusterIP"] and rows[0][3:5] == ["<none>", "80/TCP"]

    head, rows = _get(kubling, "deployments", "web", "-n", ns)
    assert head == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows[0][0] == "web" and re.fullmatch(r"\d/2", rows[0][1])

    head, rows = _get(kubling, "namespace", ns)
    assert head == ["NAME", "STATUS", "AGE"]
    assert rows[0][:2] == [ns, "Active"]


def test_get_wide_adds_priority_columns(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=OBJECTS)

    head, rows = _get(kubling, "svc", "web", "-n", ns, "-o", "wide")
    assert head == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"]
    assert rows[0][-1] == "app=web"

    head, rows = _get(kubling, "deploy", "web", "-n", ns, "-o", "wide")
    assert head == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES",
                    "SELECTOR"]
    assert rows[0][-3:] == ["nginx", "nginx:1.27", "app=web"]


def test_default_columns_for_kinds_without_a_printer(kubling: KublingServer) -> None:
    ns = _ns(kubling)
    kubling.kubectl("create", "role", "reader", "--verb=get", "--resource=pods", "-n", ns)
    head, rows = _get(kubling, "roles", "-n", ns)
    assert head == ["NAME", "CREATED AT"]
    assert rows[0][0] == "reader" and rows[0][1].endswith("Z")
