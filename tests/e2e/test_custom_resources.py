"""CustomResourceDefinitions: their resources are served, validated, explained, deleted."""

from __future__ import annotations

import json
import uuid

from tests.server_fixture import KublingServer

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.{group}
spec:
  group: {group}
  names: {{kind: Widget, plural: widgets, shortNames: [wd], categories: [all]}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {{status: {{}}}}
    additionalPrinterColumns:
    - {{name: Size, type: integer, jsonPath: .spec.size}}
    - {{name: Color, type: string, jsonPath: .spec.color, priority: 1}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {{type: integer, minimum: 1, maximum: 10}}
              color: {{type: string, enum: [red, blue], default: red}}
              labels: {{type: object, additionalProperties: {{type: string}}}}
          status:
            type: object
            properties:
              ready: {{type: boolean}}
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""


def _setup(kubling: KublingServer) -> tuple[str, str]:
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    ns = "crd-" + uuid.uuid4().hex[:6]
    kubling.kubectl(
        "apply", "-f", "-", input=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
    kubling.kubectl("apply", "-f", "-", input=CRD.format(group=group))
    return group, ns


def test_crd_serves_validates_and_defaults(kubling: KublingServer) -> None:
    group, ns = _setup(kubling)
    crd = kubling.kubectl_yaml("get", "crd", f"widgets.{group}")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True" and conditions["NamesAccepted"] == "True"
    assert crd["status"]["storedVersions"] == ["v1"]
    widget = f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 3}}\n"
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=widget)
    got = kubling.kubectl_yaml("get", f"widgets.{group}", "w1", "-n", ns)
    assert got["spec"] == {"size": 3, "color": "red"}  # defaulted from the schema
    assert got["metadata"]["generation"] == 1
    names = kubling.kubectl("get", "wd", "-n", ns, "-o", "name").stdout.split()
    assert names == [f"widget.{group}/w1"]
    table = kubling.kubectl("get", "wd", "-n", ns).stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE"] and table[1].split() == ["w1", "3"]
    wide = kubling.kubectl("get", "wd", "-n", ns, "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "SIZE", "COLOR"]
    # the same object through the other served version
    beta = kubling.kubectl_yaml("get", f"widgets.v1beta1.{group}", "w1", "-n", ns)
    assert beta["apiVersion"] == f"{group}/v1beta1" and beta["spec"]["size"] == 3


def test_crd_schema_errors_are_upstream_worded(kubling: KublingServer) -> None:
    group, ns = _setup(kubling)
    too_big = f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w2}}\nspec: {{size: 30}}\n"
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=too_big, check=False)
    assert result.returncode == 1
    assert ("spec.size: Invalid value: 30: spec.size in body should be less than or equal "
            "to 10") in result.stderr
    wrong = too_big.replace("size: 30", "size: 3, color: green")
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=wrong, check=False)
    assert 'spec.color: Unsupported value: "green": supported values: "red", "blue"' in (
        result.stderr)
    missing = too_big.replace("{size: 30}", "{color: red}")
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=missing, check=False)
    assert "spec.size: Required value" in result.stderr
    unknown = too_big.replace("size: 30", "size: 3, extra: 1")
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=unknown, check=False)
    assert 'strict decoding error: unknown field "spec.extra"' in result.stderr
    # without strict validation the unknown field is pruned, as upstream
    kubling.kubectl("apply", "--validate=false", "-n", ns, "-f", "-", input=unknown)
    got = kubling.kubectl_yaml("get", f"widgets.{group}", "w2", "-n", ns)
    assert "extra" not in got["spec"]


def test_crd_status_subresource_and_explain(kubling: KublingServer) -> None:
    group, ns = _setup(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=(
        f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w3}}\n"
        "spec: {size: 2}\nstatus: {ready: true}\n"))
    got = kubling.kubectl_yaml("get", f"widgets.{group}", "w3", "-n", ns)
    assert "status" not in got or "ready" not in got.get("status", {})  # main endpoint
    kubling.kubectl("patch", f"widgets.{group}", "w3", "-n", ns, "--subresource=status",
                    "--type=merge", "-p", '{"status":{"ready":true}}')
    got = kubling.kubectl_yaml("get", f"widgets.{group}", "w3", "-n", ns)
    assert got["status"] == {"ready": True} and got["metadata"]["generation"] == 1
    out = kubling.kubectl("explain", f"widgets.{group}.spec").stdout
    assert "size" in out and "-required-" in out


def test_deleting_a_crd_deletes_its_objects(kubling: KublingServer) -> None:
    group, ns = _setup(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=(
        f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w4}}\nspec: {{size: 2}}\n"))
    kubling.kubectl("delete", "crd", f"widgets.{group}", "--timeout=30s")
    result = kubling.kubectl("get", "crd", f"widgets.{group}", check=False)
    assert "not found" in result.stderr
    resources = kubling.kubectl("api-resources", "-o", "name").stdout.split()
    assert f"widgets.{group}" not in resources


def test_objects_follow_a_storage_version_change(kubling: KublingServer) -> None:
    group, ns = _setup(kubling)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=(
        f"apiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: old}}\nspec: {{size: 2}}\n"))
    crd = kubling.kubectl_yaml("get", "crd", f"widgets.{group}")
    for version in crd["spec"]["versions"]:
        version["storage"] = version["name"] == "v1beta1"
    kubling.kubectl("replace", "-f", "-", input=json.dumps(crd))
    beta = kubling.kubectl_yaml("get", f"widgets.v1beta1.{group}", "old", "-n", ns)
    assert beta["apiVersion"] == f"{group}/v1beta1"
    kubling.kubectl("patch", f"widgets.v1beta1.{group}", "old", "-n", ns, "--type=merge",
                    "-p", '{"spec":{"size":4}}')
    assert kubling.kubectl_yaml("get", f"widgets.{group}", "old", "-n", ns)["spec"][
        "size"] == 4


def test_custom_resource_metadata_is_typed(kubling: KublingServer) -> None:
    group, ns = _setup(kubling)
    result = kubling.kubectl("create", "-n", ns, "-f", "-", "--validate=false", check=False,
                             input=json.dumps({"apiVersion": f"{group}/v1", "kind": "Widget",
                                               "metadata": {"generateName": 5},
                                               "spec": {"size": 1}}))
    assert result.returncode == 1
    assert "cannot unmarshal number" in result.stderr


SCALED_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: pools.{group}}}
spec:
  group: {group}
  names: {{kind: Pool, plural: pools}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {{}}
      scale: {{specReplicasPath: .spec.size, statusReplicasPath: .status.current,
              labelSelectorPath: .status.selector}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{size: {{type: integer}}}}}}
          status:
            type: object
            properties: {{current: {{type: integer}}, selector: {{type: string}}}}
"""


def test_scale_subresource_follows_the_crd_paths(kubling: KublingServer) -> None:
    group = f"s{uuid.uuid4().hex[:6]}.example.com"
    kubling.kubectl("apply", "-f", "-", input=SCALED_CRD.format(group=group))
    kubling.kubectl("apply", "-n", "default", "-f", "-", input=(
        f"apiVersion: {group}/v1\nkind: Pool\nmetadata: {{name: p}}\nspec: {{size: 2}}\n"))
    kubling.kubectl("patch", f"pools.{group}", "p", "-n", "default", "--subresource=status",
                    "--type=merge", "-p", '{"status":{"current":2,"selector":"app=p"}}')
    scale = kubling.kubectl_yaml("get", f"pools.{group}", "p", "-n", "default",
                                 "--subresource=scale")
    assert scale["spec"]["replicas"] == 2
    assert scale["status"] == {"replicas": 2, "selector": "app=p"}
    kubling.kubectl("scale", f"pools.{group}", "p", "-n", "default", "--replicas=5")
    assert kubling.kubectl_yaml("get", f"pools.{group}", "p", "-n", "default")["spec"] == {
        "size": 5}


CEL_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: crontabs.{group}}}
spec:
  group: {group}
  names: {{kind: CronTab, plural: crontabs}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-validations:
            - rule: self.replicas <= self.maxReplicas
              message: replicas should be smaller than or equal to maxReplicas.
            - rule: self.replicas >= oldSelf.replicas
              messageExpression: "'cannot scale down from ' + string(oldSelf.replicas)"
              fieldPath: .replicas
            properties:
              replicas: {{type: integer}}
              maxReplicas: {{type: integer}}
              image:
                type: string
                x-kubernetes-validations:
                - rule: self.lowerAscii() == self
"""


def test_cel_validation_rules(kubling: KublingServer) -> None:
    """The CronTab example of the Kubernetes docs' validation rules, with the real kubectl."""
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    ns = "cel-" + uuid.uuid4().hex[:6]
    kubling.kubectl("create", "namespace", ns)
    kubling.kubectl("apply", "-f", "-", input=CEL_CRD.format(group=group))

    def crontab(replicas: int, image: str = "nginx") -> str:
        return (f"apiVersion: {group}/v1\nkind: CronTab\nmetadata: {{name: ct}}\n"
                f"spec: {{replicas: {replicas}, maxReplicas: 5, image: {image}}}\n")

    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=crontab(9), check=False)
    assert result.returncode == 1
    assert ('The CronTab "ct" is invalid: spec: Invalid value: replicas should be smaller '
            "than or equal to maxReplicas.") in result.stderr, result.stderr
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=crontab(2, "NGINX"),
                             check=False)
    assert ('spec.image: Invalid value: "NGINX": failed rule: self.lowerAscii() == self'
            in result.stderr), result.stderr
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=crontab(3))
    # The transition rule only runs on updates, against the stored object.
    result = kubling.kubectl("apply", "-n", ns, "-f", "-", input=crontab(1), check=False)
    # (the rule sits on spec, an object: its value is left out, as upstream does)
    assert "spec.replicas: Invalid value: cannot scale down from 3" in result.stderr
    assert kubling.kubectl_yaml("get", f"crontabs.{group}", "ct", "-n", ns)["spec"][
        "replicas"] == 3
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=crontab(4))

    # A CRD whose rule does not compile is refused, naming the rule.
    broken = CEL_CRD.format(group="b" + group).replace(
        "rule: self.lowerAscii() == self", "rule: self.lowerAscii( == self")
    result = kubling.kubectl("apply", "-f", "-", input=broken, check=False)
    assert result.returncode == 1
    assert ("spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[image]."
            "x-kubernetes-validations[0].rule: Invalid value: \"self.lowerAscii( == self\": "
            "compilation failed: ERROR: <input>:1:") in result.stderr, result.stderr


def test_non_structural_crds_are_refused(kubling: KublingServer) -> None:
    """A v1 CRD's schema must be structural; each violation is named as apiextensions
    names it, and nothing is created."""
    group = f"n{uuid.uuid4().hex[:6]}.example.com"
    crd = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: things.{group}}}
spec:
  group: {group}
  names: {{kind: Thing, plural: things}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            properties:
              tags: {{type: array, uniqueItems: true, items: {{type: string}}}}
              mixed:
                type: object
                properties: {{a: {{type: string}}}}
                additionalProperties: {{type: string}}
              list: {{type: array, items: {{}}}}
"""
    result = kubling.kubectl("apply", "-f", "-", input=crd, check=False)
    assert result.returncode == 1
    base = "spec.versions[0].schema.openAPIV3Schema.properties[spec]"
    for wanted in (
        f"{base}.type: Required value: must not be empty for specified object fields",
        f"{base}.properties[tags].uniqueItems: Forbidden: uniqueItems cannot be set to true "
        "since the runtime complexity becomes quadratic",
        f"{base}.properties[mixed].additionalProperties: Forbidden: additionalProperties and "
        "properties are mutual exclusive",
        f"{base}.properties[list].items.type: Required value: must not be empty for "
        "specified array items",
    ):
        assert wanted in result.stderr, result.stderr
    gone = kubling.kubectl("get", "crd", f"things.{group}", check=False)
    assert gone.returncode == 1 and "NotFound" in gone.stderr
