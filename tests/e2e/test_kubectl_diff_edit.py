"""``kubectl diff``, ``kubectl apply -k`` (kustomize built into kubectl) and
``kubectl edit`` behave as on any cluster: they ride on dry-run patches, server-side
apply and strict field validation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.server_fixture import KublingServer

CM = """apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}, namespace: {ns}}}
data: {{a: "{value}"}}
"""


def namespace(kubling: KublingServer, name: str) -> str:
    kubling.kubectl("create", "namespace", name)
    return name


def test_diff_shows_the_change_and_changes_nothing(kubling: KublingServer, tmp_path: Path) -> None:
    ns = namespace(kubling, "diff-e2e")
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(CM.format(name="diffme", ns=ns, value="1"))
    kubling.kubectl("apply", "-f", str(manifest))
    same = kubling.kubectl("diff", "-f", str(manifest), check=False)
    assert same.returncode == 0 and same.stdout == "", same.stderr
    manifest.write_text(CM.format(name="diffme", ns=ns, value="2"))
    for extra in ([], ["--server-side"]):
        changed = kubling.kubectl("diff", *extra, "-f", str(manifest), check=False)
        assert changed.returncode == 1, changed.stderr  # 1 = differences found
        assert '-  a: "1"' in changed.stdout and '+  a: "2"' in changed.stdout
    live = kubling.kubectl_yaml("get", "configmap", "diffme", "-n", ns)
    assert live["data"] == {"a": "1"}, "diff is a dry run"
    new = tmp_path / "new.yaml"
    new.write_text(CM.format(name="brand-new", ns=ns, value="x"))
    created = kubling.kubectl("diff", "-f", str(new), check=False)
    assert created.returncode == 1 and "+  name: brand-new" in created.stdout
    assert kubling.kubectl("get", "configmap", "brand-new", "-n", ns, check=False).returncode == 1


def test_apply_and_delete_a_kustomization(kubling: KublingServer, tmp_path: Path) -> None:
    ns = namespace(kubling, "kustomize-e2e")
    (tmp_path / "kustomization.yaml").write_text(
        f"namespace: {ns}\nnamePrefix: dev-\nlabels:\n- pairs: {{app: kz}}\n"
        "resources: [cm.yaml]\n"
        "configMapGenerator:\n- name: gen\n  literals: [k=v]\n"
    )
    (tmp_path / "cm.yaml").write_text(CM.format(name="base", ns=ns, value="1"))
    out = kubling.kubectl("apply", "-k", str(tmp_path)).stdout
    assert "configmap/dev-base created" in out
    names = kubling.kubectl("get", "configmaps", "-n", ns, "-l", "app=kz", "-o", "name").stdout
    assert "configmap/dev-base" in names and "configmap/dev-gen-" in names
    assert "configmap/dev-base unchanged" in kubling.kubectl("apply", "-k", str(tmp_path)).stdout
    kubling.kubectl("delete", "-k", str(tmp_path))
    left = kubling.kubectl("get", "configmaps", "-n", ns, "-l", "app=kz", "-o", "name").stdout
    assert left.strip() == ""


def _editor(tmp_path: Path, name: str, sed: str) -> str:
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\nsed -i "{sed}" "$1"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def test_edit_updates_and_refuses_unknown_fields(kubling: KublingServer, tmp_path: Path) -> None:
    ns = namespace(kubling, "edit-e2e")
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(CM.format(name="editme", ns=ns, value="1"))
    kubling.kubectl("apply", "-f", str(manifest))
    env_before = os.environ.get("EDITOR")
    try:
        os.environ["EDITOR"] = _editor(tmp_path, "ok.sh", 's/a: \\"1\\"/a: \\"9\\"/')
        out = kubling.kubectl("edit", "configmap", "editme", "-n", ns)
        assert "configmap/editme edited" in out.stdout
        assert kubling.kubectl_yaml("get", "configmap", "editme", "-n", ns)["data"] == {"a": "9"}
        os.environ["EDITOR"] = _editor(tmp_path, "bad.sh", "s/^data:/spec: {bogus: 1}\\ndata:/")
        bad = kubling.kubectl("edit", "configmap", "editme", "-n", ns, check=False)
        assert bad.returncode == 1
        assert 'strict decoding error: unknown field "spec"' in bad.stderr
    finally:
        if env_before is None:
            os.environ.pop("EDITOR", None)
        else:
            os.environ["EDITOR"] = env_before
