"""The OpenAPI documents, checked the way kubectl 1.32 reads them.

kubectl's field-validation probe, its strategic-merge-patch schema lookup and ``explain``
all walk these documents; the helpers below mirror what those code paths look for.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from kubling.api.resources import Catalogue, ResourceType
from kubling.apiserver.openapi import OpenAPIDocuments, document_path

JSON = dict[str, Any]
METHODS = ("get", "put", "post", "delete", "patch")
SMP = "application/strategic-merge-patch+json"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue()


@pytest.fixture(scope="module")
def docs(catalogue: Catalogue) -> OpenAPIDocuments:
    return OpenAPIDocuments(catalogue)


@pytest.fixture(scope="module")
def v3(docs: OpenAPIDocuments) -> dict[str, JSON]:
    out = {}
    for path in docs.document_paths():
        data = docs.v3_document(path)
        assert data is not None
        out[path] = orjson.loads(data)
    return out


@pytest.fixture(scope="module")
def v2(docs: OpenAPIDocuments) -> JSON:
    doc: JSON = orjson.loads(docs.v2())
    return doc


def _operations(doc: JSON) -> Iterator[tuple[str, str, JSON]]:
    for url, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield url, method, item[method]


def _refs(node: Any) -> Iterator[str]:
    """Every ``$ref`` string (a property *named* ``$ref`` holds a dict, not a string)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _gvk(rt: ResourceType) -> JSON:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _supports_field_validation(doc: JSON, gvk: JSON) -> bool:
    """kubectl's ``supportsQueryParamV3``: the *first* PATCH op for the GVK decides.

    Map order is random in Go, so every matching PATCH op must declare the parameter.
    """
    matching = [
        op
        for _, method, op in _operations(doc)
        if method == "patch" and op.get("x-kubernetes-group-version-kind") == gvk
    ]
    assert matching, f"no PATCH operation for {gvk}"
    return all(
        any(p["name"] == "fieldValidation" and p["in"] == "query" for p in op["parameters"])
        for op in matching
    )


def _kind_schema(doc: JSON, gvk: JSON) -> JSON:
    """kubectl apply's lookup: a component whose GVK list is exactly ``[gvk]``."""
    found: list[JSON] = [
        s
        for s in doc["components"]["schemas"].values()
        if s.get("x-kubernetes-group-version-kind") == [gvk]
    ]
    assert len(found) == 1, gvk
    return found[0]


def _resolve(doc: JSON, node: JSON) -> JSON:
    """kubectl's PatchMetaFromOpenAPIV3.resolve: unwrap ``allOf[0]``, then follow ``$ref``."""
    if node.get("allOf"):
        node = node["allOf"][0]
    ref = node.get("$ref")
    if ref:
        target: JSON = doc["components"]["schemas"][ref.removeprefix("#/components/schemas/")]
        return target
    return node


# --- the index ---------------------------------------------------------------------------


def test_index_lists_every_served_group_version_with_hash(
    docs: OpenAPIDocuments, catalogue: Catalogue
) -> None:
    index = orjson.loads(docs.v3_index())
    expected = {
        document_path(group, version)
        for group, versions in catalogue.group_versions().items()
        for version in versions
    }
    assert set(index["paths"]) == expected
    assert {"api/v1", "apis/apps/v1", "apis/autoscaling/v1", "apis/autoscaling/v2"} <= expected
    for path, entry in index["paths"].items():
        data = docs.v3_document(path)
        assert data is not None
        digest = hashlib.sha512(data).hexdigest().upper()
        assert entry["serverRelativeURL"] == f"/openapi/v3/{path}?hash={digest}"
        assert docs.v3_hash(path) == digest


def test_documents_are_cached_and_invalidate_rebuilds(catalogue: Catalogue) -> None:
    docs = OpenAPIDocuments(catalogue)
    first = docs.v3_document("apis/apps/v1")
    assert first is docs.v3_document("/apis/apps/v1/")
    assert docs.v2() is docs.v2()
    docs.invalidate()
    again = docs.v3_document("apis/apps/v1")
    assert again == first and again is not first


def test_unknown_paths(docs: OpenAPIDocuments) -> None:
    assert docs.v3_document("apis/apps/v1beta1") is None
    assert docs.v3_document("apis/nothing.example.com/v1") is None
    with pytest.raises(KeyError):
        docs.v3_hash("apis/apps/v1beta1")


# --- what kubectl looks for ------------------------------------------------------------


def test_deployment_patch_operation(v3: dict[str, JSON]) -> None:
    doc = v3["apis/apps/v1"]
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    op = item["patch"]
    assert op["operationId"] == "patchAppsV1NamespacedDeployment"
    assert op["x-kubernetes-action"] == "patch"
    assert op["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"dryRun", "fieldManager", "fieldValidation", "force"}
    assert params["fieldValidation"]["in"] == "query"
    assert params["fieldValidation"]["description"].startswith(
        "fieldValidation instructs the server on how to handle objects in the request "
        "(POST/PUT/PATCH) containing unknown or duplicate fields."
    )
    content = op["requestBody"]["content"]
    assert set(content) == {
        "application/json-patch+json",
        "application/merge-patch+json",
        SMP,
        "application/apply-patch+yaml",
    }
    assert content[SMP]["schema"] == {
        "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
    }
    assert set(op["responses"]) == {"200", "201", "401"}
    assert {p["name"] for p in item["parameters"]} == {"name", "namespace", "pretty"}


def test_every_kind_supports_field_validation(v3: dict[str, JSON], catalogue: Catalogue) -> None:
    for rt in catalogue:
        if "patch" in rt.verbs:
            doc = v3[document_path(rt.group, rt.version)]
            assert _supports_field_validation(doc, _gvk(rt)), rt


def test_every_kind_has_one_schema_for_apply(v3: dict[str, JSON], catalogue: Catalogue) -> None:
    for rt in catalogue:
        doc = v3[document_path(rt.group, rt.version)]
        schema = _kind_schema(doc, _gvk(rt))
        assert "metadata" in schema["properties"]


def test_operation_ids_and_actions(v3: dict[str, JSON]) -> None:
    core = v3["api/v1"]["paths"]
    assert core["/api/v1/pods"]["get"]["operationId"] == "listCoreV1PodForAllNamespaces"
    pods = core["/api/v1/namespaces/{namespace}/pods"]
    assert pods["get"]["operationId"] == "listCoreV1NamespacedPod"
    assert pods["get"]["x-kubernetes-action"] == "list"
    assert pods["post"]["operationId"] == "createCoreV1NamespacedPod"
    assert pods["delete"]["operationId"] == "deleteCoreV1CollectionNamespacedPod"
    assert pods["delete"]["x-kubernetes-action"] == "deletecollection"
    list_params = {p["name"] for p in pods["get"]["parameters"]}
    assert {
        "labelSelector",
        "fieldSelector",
        "limit",
        "continue",
        "resourceVersion",
        "resourceVersionMatch",
        "timeoutSeconds",
        "watch",
        "allowWatchBookmarks",
        "sendInitialEvents",
    } <= list_params
    pod = core["/api/v1/namespaces/{namespace}/pods/{name}"]
    assert pod["get"]["operationId"] == "readCoreV1NamespacedPod"
    assert pod["put"]["operationId"] == "replaceCoreV1NamespacedPod"
    assert pod["delete"]["x-kubernetes-action"] == "delete"
    status = core["/api/v1/namespaces/{namespace}/pods/{name}/status"]
    assert status["patch"]["operationId"] == "patchCoreV1NamespacedPodStatus"
    eviction = core["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
    assert eviction["x-kubernetes-group-version-kind"] == {
        "group": "policy",
        "version": "v1",
        "kind": "Eviction",
    }
    nodes = core["/api/v1/nodes/{name}"]
    assert nodes["get"]["operationId"] == "readCoreV1Node"
    rbac = v3["apis/rbac.authorization.k8s.io/v1"]["paths"]
    clusterroles = rbac["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["get"]
    assert clusterroles["operationId"] == "listRbacAuthorizationV1ClusterRole"
    assert clusterroles["tags"] == ["rbacAuthorization_v1"]


def test_scale_subresource(v3: dict[str, JSON]) -> None:
    doc = v3["apis/apps/v1"]
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
    assert item["patch"]["operationId"] == "patchAppsV1NamespacedDeploymentScale"
    scale_gvk = {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert item["get"]["x-kubernetes-group-version-kind"] == scale_gvk
    assert "io.k8s.api.autoscaling.v1.Scale" in doc["components"]["schemas"]
    assert _supports_field_validation(doc, scale_gvk)


def test_strategic_merge_metadata_reachable_like_kubectl(v3: dict[str, JSON]) -> None:
    """Walk Deployment -> spec -> template -> spec -> containers as strategicpatch does."""
    doc = v3["apis/apps/v1"]
    node = _kind_schema(doc, {"group": "apps", "version": "v1", "kind": "Deployment"})
    for field in ("spec", "template", "spec"):
        node = _resolve(doc, node["properties"][field])
    containers = node["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["x-kubernetes-patch-strategy"] == "merge"
    container = _resolve(doc, containers["items"])
    ports = container["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == "containerPort"
    core_pod_spec = v3["api/v1"]["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]
    assert core_pod_spec["properties"]["containers"]["x-kubernetes-patch-merge-key"] == "name"


# --- dialect ----------------------------------------------------------------------------


def test_special_types_as_upstream(v3: dict[str, JSON], v2: JSON) -> None:
    schemas = v3["apis/apps/v1"]["components"]["schemas"]
    int_or_string = schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string["format"] == "int-or-string"
    assert int_or_string["oneOf"] == [{"type": "integer"}, {"type": "string"}]
    quantity = schemas["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity["oneOf"] == [{"type": "string"}, {"type": "number"}]
    defs = v2["definitions"]
    assert defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] == "string"
    assert defs["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] == "string"


def test_no_json_schema_leftovers(v3: dict[str, JSON]) -> None:
    for path, doc in v3.items():
        text = orjson.dumps(doc).decode()
        assert "#/$defs/" not in text, path
        assert '"null"' not in text, path
        deployment_like = [
            s
            for s in doc["components"]["schemas"].values()
            if "x-kubernetes-group-version-kind" in s
        ]
        for schema in deployment_like:
            for field in ("apiVersion", "kind"):
                assert "enum" not in schema.get("properties", {}).get(field, {}), path


def test_refs_with_siblings_are_wrapped(v3: dict[str, JSON]) -> None:
    """OpenAPI 3.0 ignores ``$ref`` siblings; upstream keeps them via ``allOf``."""
    deployment = v3["apis/apps/v1"]["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    metadata = deployment["properties"]["metadata"]
    assert metadata["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    ]
    assert "description" in metadata and "$ref" not in metadata


# --- structural validity ----------------------------------------------------------------


def test_every_v3_ref_resolves(v3: dict[str, JSON]) -> None:
    for path, doc in v3.items():
        schemas = doc["components"]["schemas"]
        for ref in _refs(doc):
            assert ref.startswith("#/components/schemas/"), (path, ref)
            assert ref.removeprefix("#/components/schemas/") in schemas, (path, ref)


def test_v3_documents_are_structurally_openapi_3(v3: dict[str, JSON]) -> None:
    """A quick OpenAPI 3.0 shape check (no validator package in the dependencies)."""
    for path, doc in v3.items():
        assert doc["openapi"] == "3.0.0"
        assert doc["info"] == {"title": "Kubernetes", "version": "v1.32.0"}
        op_ids: list[str] = []
        for url, item in doc["paths"].items():
            assert url.startswith("/" + path), url
            path_level = {p["name"] for p in item.get("parameters", ())}
            for method, op in item.items():
                if method == "parameters":
                    continue
                assert method in METHODS, (url, method)
                op_ids.append(op["operationId"])
                assert op["responses"] and all("description" in r for r in op["responses"].values())
                names = path_level | {p["name"] for p in op.get("parameters", ())}
                assert set(re.findall(r"{(\w+)}", url)) <= names, url
                for param in (*item.get("parameters", ()), *op.get("parameters", ())):
                    assert param["in"] in ("path", "query")
                    assert isinstance(param["schema"]["type"], str)
                    assert param["in"] != "path" or param["required"] is True
                if "requestBody" in op:
                    assert op["requestBody"]["content"]
        assert len(op_ids) == len(set(op_ids)), path
        for name, schema in doc["components"]["schemas"].items():
            _check_schema(name, schema)


def _check_schema(where: str, schema: JSON) -> None:
    assert not isinstance(schema.get("type"), list), where
    assert "$ref" not in schema or len(schema) == 1, where
    for name, sub in schema.get("properties", {}).items():
        _check_schema(f"{where}.{name}", sub)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _check_schema(f"{where}[{key}]", schema[key])
    for key in ("allOf", "oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            _check_schema(f"{where}<{key}>", sub)


def test_v2_parses_and_refs_resolve(v2: JSON, catalogue: Catalogue) -> None:
    assert v2["swagger"] == "2.0"
    definitions = v2["definitions"]
    for ref in _refs(v2):
        assert ref.removeprefix("#/definitions/") in definitions, ref
    assert definitions["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "kind": "Deployment", "version": "v1"}
    ]
    metadata = definitions["io.k8s.api.apps.v1.Deployment"]["properties"]["metadata"]
    assert metadata["$ref"] == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    for rt in catalogue:
        assert definitions[_v2_kind(v2, rt)]
    op = v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert SMP in op["consumes"]
    assert op["parameters"][0]["in"] == "body"
    assert any(p["name"] == "fieldValidation" for p in op["parameters"])
    assert op["responses"]["200"]["schema"]["$ref"].endswith("io.k8s.api.apps.v1.Deployment")


def _v2_kind(v2: JSON, rt: ResourceType) -> str:
    for url, method, op in _operations(v2):
        if method == "get" and op.get("x-kubernetes-group-version-kind") == _gvk(rt):
            if op["x-kubernetes-action"] == "get" and url.endswith("{name}"):
                ref: str = op["responses"]["200"]["schema"]["$ref"]
                return ref.removeprefix("#/definitions/")
        if (method == "post" and "get" not in rt.verbs
                and op.get("x-kubernetes-group-version-kind") == _gvk(rt)):
            created: str = op["responses"]["201"]["schema"]["$ref"]  # create-only reviews
            return created.removeprefix("#/definitions/")
    raise AssertionError(rt)


# --- kinds without an upstream schema ----------------------------------------------------


def _crontab_catalogue() -> Catalogue:
    catalogue = Catalogue(())
    catalogue.add(
        ResourceType(
            group="stable.example.com",
            version="v1",
            kind="CronTab",
            plural="crontabs",
            singular="crontab",
            namespaced=True,
        )
    )
    return catalogue


def test_custom_kind_gets_paths_and_a_merge_patch_only_patch() -> None:
    seen: list[tuple[str, str, str]] = []

    def custom(group: str, version: str, kind: str) -> JSON:
        seen.append((group, version, kind))
        spec = {"type": "object", "properties": {"cronSpec": {"type": "string"}}}
        return {"type": "object", "properties": {"spec": spec}}

    docs = OpenAPIDocuments(_crontab_catalogue(), custom_schema=custom)
    data = docs.v3_document("apis/stable.example.com/v1")
    assert data is not None
    doc = orjson.loads(data)
    gvk = {"group": "stable.example.com", "version": "v1", "kind": "CronTab"}
    assert _supports_field_validation(doc, gvk)
    schema = _kind_schema(doc, gvk)
    assert schema["properties"]["spec"]["properties"]["cronSpec"] == {"type": "string"}
    assert "allOf" in schema["properties"]["metadata"] or "$ref" in schema["properties"]["metadata"]
    item = doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}"]
    # Without SMP listed kubectl computes a JSON merge patch, as for upstream CRs.
    assert SMP not in item["patch"]["requestBody"]["content"]
    assert ("stable.example.com", "v1", "CronTab") in seen
    listed = doc["paths"]["/apis/stable.example.com/v1/namespaces/{namespace}/crontabs"]
    list_ref = listed["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert list_ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]
    for ref in _refs(doc):
        assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"]


def test_custom_kind_without_schema_preserves_unknown_fields() -> None:
    docs = OpenAPIDocuments(_crontab_catalogue())
    data = docs.v3_document("apis/stable.example.com/v1")
    assert data is not None
    doc = orjson.loads(data)
    schema = _kind_schema(doc, {"group": "stable.example.com", "version": "v1", "kind": "CronTab"})
    assert schema["x-kubernetes-preserve-unknown-fields"] is True
