"""A kopf operator against kubling: watches, status patches, finalizers, events and
ownership, as operator authors rely on them (issue 3's client compatibility).

The operator (tests/e2e/operators/greeting_operator.py) runs as ``kopf run --standalone``
in a subprocess with the server's kubeconfig; only that process is ever signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_fixture import KublingServer, running_server, wait_for

OPERATOR = Path(__file__).parent / "operators" / "greeting_operator.py"
NS = "greetings"
CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: greetings.course.kubling.dev}
spec:
  group: course.kubling.dev
  scope: Namespaced
  names: {plural: greetings, singular: greeting, kind: Greeting}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {name: {type: string}}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""


@pytest.fixture(scope="module")
def operator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    base = tmp_path_factory.mktemp("kopf")
    with running_server(base / "data") as server:
        server.kubectl("apply", "-f", "-", input=CRD)
        server.kubectl("wait", "--for=condition=Established",
                       "crd/greetings.course.kubling.dev", "--timeout=30s")
        server.kubectl("create", "namespace", NS)
        log = open(base / "kopf.log", "wb")
        env = {**os.environ, "KUBECONFIG": str(server.kubeconfig)}
        proc = subprocess.Popen([sys.executable, "-m", "kopf", "run", "--standalone",
                                 f"--namespace={NS}", str(OPERATOR)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        server.operator_log = base / "kopf.log"  # type: ignore[attr-defined]
        try:
            yield server
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def get(server: KublingServer, *args: str) -> Any:
    result = server.kubectl("get", *args, "-n", NS, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_the_operator_reacts_to_creation_change_and_deletion(operator: KublingServer) -> None:
    server = operator
    log: Path = server.operator_log  # type: ignore[attr-defined]
    server.kubectl("apply", "-n", NS, "-f", "-", input=(
        "apiVersion: course.kubling.dev/v1\nkind: Greeting\n"
        "metadata: {name: hello}\nspec: {name: kubling}\n"))
    try:
        cm = wait_for(lambda: get(server, "configmap", "greeting-hello"), 30,
                      "the operator's ConfigMap")
    except AssertionError:
        raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
    assert cm["data"] == {"message": "Hello, kubling"}
    owner = cm["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("Greeting", "hello", True)

    # The handler's result lands in the status subresource; kopf's finalizer guards deletion.
    greeting = wait_for(lambda: (g := get(server, "greeting", "hello"))
                        and (g.get("status") or {}).get("create_fn") and g, 20,
                        "the handler result in status")
    assert greeting["status"]["create_fn"] == {"message": "Hello, kubling"}
    assert any("kopf" in f for f in greeting["metadata"]["finalizers"])
    events = wait_for(lambda: "Hello, kubling" in (text := server.kubectl(
        "get", "events", "-n", NS, "--field-selector", "involvedObject.name=hello").stdout)
        and text, 20, "the operator's Event")
    assert "Greeted" in events and "Normal" in events

    # A change of the watched field runs the update handler.
    server.kubectl("patch", "greeting", "hello", "-n", NS, "--type=merge",
                   "-p", '{"spec": {"name": "course"}}')
    wait_for(lambda: (get(server, "configmap", "greeting-hello") or {}).get("data", {})
             .get("message") == "Hello, course", 30, "the update handler")

    # Deletion waits for the delete handler, then the owned ConfigMap is collected.
    server.kubectl("delete", "greeting", "hello", "-n", NS, "--timeout=60s")
    assert get(server, "greeting", "hello") is None
    farewells = get(server, "configmap", "farewells")
    assert farewells["metadata"]["annotations"]["hello"] == "gone"
    wait_for(lambda: get(server, "configmap", "greeting-hello") is None, 30,
             "the garbage collector to remove the owned ConfigMap")
