"""A small kopf operator, run by tests/e2e/test_kopf_operator.py against a kubling server.

For every ``Greeting`` it creates a ConfigMap owned by it, records the message in the
Greeting's status (kopf's handler results), and notes its deletion in an annotation of a
``farewells`` ConfigMap, through the official Python client.
"""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config

GROUP, VERSION, PLURAL = "course.kubling.dev", "v1", "greetings"

config.load_kube_config()


@kopf.on.create(GROUP, VERSION, PLURAL)
def create_fn(spec: dict[str, Any], name: str, namespace: str, body: Any,
              logger: Any, **_: Any) -> dict[str, str]:
    message = f"Hello, {spec.get('name', 'world')}"
    data = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": f"greeting-{name}"}, "data": {"message": message}}
    kopf.adopt(data, owner=body)
    client.CoreV1Api().create_namespaced_config_map(namespace, data)
    logger.info(f"greeted {name}")
    kopf.info(body, reason="Greeted", message=message)  # a Kubernetes Event
    return {"message": message}


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.name")
def rename_fn(new: Any, name: str, namespace: str, **_: Any) -> None:
    client.CoreV1Api().patch_namespaced_config_map(
        f"greeting-{name}", namespace, {"data": {"message": f"Hello, {new}"}})


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_fn(name: str, namespace: str, **_: Any) -> None:
    api = client.CoreV1Api()
    try:
        api.create_namespaced_config_map(namespace, {"metadata": {"name": "farewells"}})
    except client.ApiException as err:
        if err.status != 409:
            raise
    api.patch_namespaced_config_map("farewells", namespace,
                                    {"metadata": {"annotations": {name: "gone"}}})
