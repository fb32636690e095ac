"""The course's kubectl chapter, command by command, with kubectl 1.27, 1.32 and 1.33.

``../shared/seed`` teaches these commands (cluster-info, api-resources, config, create,
scale, expose, set image, rollout status, label and selectors, describe, events, get all,
backups with ``-o yaml``, apply/delete of a directory); each kubectl release must see what
it would see on a real cluster. One server with two simulated nodes (pods become Running
without containers), one namespace per kubectl release.

The versioned binaries sit beside ``kubectl`` (a Google Cloud SDK install); they are part
of this machine, so a missing one fails the test instead of skipping it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.server_fixture import KublingServer, running_server


def kubectl_binary(version: str) -> str:
    default = shutil.which("kubectl")
    assert default is not None, "kubectl is not on PATH"
    if version == "default":
        return default
    candidate = Path(default).resolve().parent / f"kubectl.{version}"
    assert candidate.is_file(), f"{candidate} is missing (it ships with the Google Cloud SDK)"
    return str(candidate)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KublingServer]:
    data = tmp_path_factory.mktemp("course") / "data"
    with running_server(data, extra_args=["--simulated-nodes", "2"]) as srv:
        yield srv


class Kubectl:
    """One kubectl release with its own kubeconfig copy (``config use-context`` writes it)
    and cache."""

    def __init__(self, server: KublingServer, version: str, home: Path) -> None:
        self.binary = kubectl_binary(version)
        self.kubeconfig = home / "kubeconfig"
        shutil.copy(server.kubeconfig, self.kubeconfig)
        self.cache = home / "cache"

    def __call__(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run([self.binary, "--kubeconfig", str(self.kubeconfig),
                                 "--cache-dir", str(self.cache), *args], input=input,
                                capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 0, (f"kubectl {' '.join(args)} failed:\n"
                                        f"{result.stdout}\n{result.stderr}")
        return result.stdout


@pytest.mark.parametrize("version", ["1.27", "default", "1.33"])
def test_the_kubectl_chapter(server: KublingServer, version: str, tmp_path: Path) -> None:
    k = Kubectl(server, version, tmp_path)
    ns = "course-" + version.replace(".", "-")

    # Getting to know the cluster.
    info = re.sub(r"\x1b\[[0-9;]*m", "", k("cluster-info"))  # colours, as on a terminal
    assert f"Kubernetes control plane is running at {server.url}" in info
    resources = k("api-resources")
    assert re.search(r"^deployments\s+deploy\s+apps/v1\s+true\s+Deployment$", resources,
                     re.MULTILINE), resources
    nodes = k("get", "nodes", "--no-headers").splitlines()
    assert len(nodes) == 2 and all(" Ready " in line for line in nodes)

    # Contexts.
    assert "current-context:" in k("config", "view")
    contexts = k("config", "get-contexts")
    current = next(line for line in contexts.splitlines() if line.startswith("*")).split()[1]
    assert f'Switched to context "{current}".' in k("config", "use-context", current)

    # Imperative workflow of the chapter.
    assert k("create", "namespace", ns).strip() == f"namespace/{ns} created"
    assert k("create", "deployment", "nginx", "--image=nginx:1.20", "-n", ns).strip() == \
        "deployment.apps/nginx created"
    assert k("scale", "deployment", "nginx", "--replicas=3", "-n", ns).strip() == \
        "deployment.apps/nginx scaled"
    assert "successfully rolled out" in k("rollout", "status", "deployment/nginx", "-n", ns,
                                          "--timeout=90s")
    assert k("expose", "deployment", "nginx", "--port=80", "--type=LoadBalancer",
             "-n", ns).strip() == "service/nginx exposed"
    assert k("set", "image", "deployment/nginx", "nginx=nginx:1.21", "-n", ns).strip() == \
        "deployment.apps/nginx image updated"
    assert "successfully rolled out" in k("rollout", "status", "deployment/nginx", "-n", ns,
                                          "--timeout=90s")

    pods = k("get", "pods", "-n", ns)
    header, *rows = pods.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    running = [r.split() for r in rows if " Running " in r and " 1/1 " in r]
    assert len(running) == 3, pods
    pod = running[0][0]

    # Labels and selectors.
    assert k("label", "pods", pod, "env=production", "tier=frontend", "-n", ns).strip() == \
        f"pod/{pod} labeled"
    selected = k("get", "pods", "-l", "tier=frontend,env=production", "-n", ns,
                 "-o", "name").split()
    assert selected == [f"pod/{pod}"]

    # Looking closer.
    described = k("describe", "pod", pod, "-n", ns)
    for field in ("Name:", "Namespace:", "Node:", "Status:", "Containers:", "Events:"):
        assert field in described, described
    service = k("describe", "service", "nginx", "-n", ns)
    assert re.search(r"^Type:\s+LoadBalancer$", service, re.MULTILINE), service
    assert re.search(r"^Endpoints:\s+\S+:80", service, re.MULTILINE), service
    events = k("get", "events", "--sort-by=.metadata.creationTimestamp", "-n", ns)
    assert "ScalingReplicaSet" in events and "Scheduled" in events
    everything = k("get", "all", "-n", ns)
    for name in ("deployment.apps/nginx", "service/nginx", "replicaset.apps/nginx-"):
        assert name in everything, everything

    # Backups as the chapter makes them.
    backup = yaml.safe_load(k("get", "deployment", "nginx", "-o", "yaml", "-n", ns))
    assert backup["kind"] == "Deployment"
    assert backup["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.21"
    listing = yaml.safe_load(k("get", "all", "-n", ns, "-o", "yaml"))
    assert listing["kind"] == "List" and len(listing["items"]) >= 5

    # Declarative: a directory of manifests, then deleting what a file made.
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "config.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: app-config, namespace: {ns}}}\n"
        "data: {mode: course}\n")
    (manifests / "app.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\n"
        f"metadata: {{name: mon-app, namespace: {ns}}}\n"
        "spec:\n  replicas: 1\n  selector: {matchLabels: {app: mon-app}}\n"
        "  template:\n    metadata: {labels: {app: mon-app}}\n"
        "    spec: {containers: [{name: app, image: busybox}]}\n")
    applied = k("apply", "-f", str(manifests))
    assert "configmap/app-config created" in applied
    assert "deployment.apps/mon-app created" in applied
    assert "successfully rolled out" in k("rollout", "status", "deployment/mon-app", "-n", ns,
                                          "--timeout=90s")
    assert "configmap/app-config unchanged" in k("apply", "-f", str(manifests))
    assert k("delete", "-f", str(manifests / "config.yaml")).strip() == \
        'configmap "app-config" deleted'
    assert k("delete", "deployment", "nginx", "-n", ns).strip() == \
        'deployment.apps "nginx" deleted'
    assert "replicas" in k("explain", "deployment.spec.replicas")

    # Issue 3's other kubectl paths, with the same release.
    assert "condition met" in k("wait", "--for=condition=Available", "deployment/mon-app",
                                "-n", ns, "--timeout=60s")
    assert k("get", "deployment", "mon-app", "-n", ns, "-o",
             "jsonpath={.spec.replicas}") == "1"
    columns = k("get", "deployment", "mon-app", "-n", ns, "-o",
                "custom-columns=NAME:.metadata.name,IMAGE:.spec.template.spec.containers[0].image")
    assert columns.split() == ["NAME", "IMAGE", "mon-app", "busybox"]
    # kubectl 1.27's printer said "annotate"; later releases say "annotated"
    word = "annotate" if version == "1.27" else "annotated"
    assert k("annotate", "deployment", "mon-app", "note=one", "-n", ns).strip() == \
        f"deployment.apps/mon-app {word}"
    k("annotate", "deployment", "mon-app", "note=two", "--overwrite", "-n", ns)
    assert k("get", "deployment", "mon-app", "-n", ns, "-o",
             "jsonpath={.metadata.annotations.note}") == "two"
    k("annotate", "deployment", "mon-app", "note-", "-n", ns)
    assert "note" not in k("get", "deployment", "mon-app", "-n", ns, "-o",
                           "jsonpath={.metadata.annotations}")
    multi = (f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: one, namespace: {ns}}}\n"
             f"---\napiVersion: v1\nkind: ConfigMap\n"
             f"metadata: {{name: two, namespace: {ns}}}\ndata: {{k: v}}\n")
    created = k("create", "-f", "-", input=multi)
    assert "configmap/one created" in created and "configmap/two created" in created
    assert "configmap/two replaced" in k("replace", "-f", "-",
                                         input=multi.replace("{k: v}", "{k: replaced}"))
    # kubectl replace owns data.k now: taking it over is a conflict until forced
    conflict = subprocess.run([k.binary, "--kubeconfig", str(k.kubeconfig), "--cache-dir",
                               str(k.cache), "apply", "--server-side", "-f", "-"],
                              input=multi.replace("{k: v}", "{k: applied}"), capture_output=True,
                              text=True, timeout=60, check=False)
    assert conflict.returncode == 1
    assert 'conflict with "kubectl-replace"' in conflict.stderr, conflict.stderr
    server_side = k("apply", "--server-side", "--force-conflicts", "-f", "-",
                    input=multi.replace("{k: v}", "{k: applied}"))
    assert "configmap/two serverside-applied" in server_side
    diff = subprocess.run([k.binary, "--kubeconfig", str(k.kubeconfig), "--cache-dir",
                           str(k.cache), "diff", "-f", "-"],
                          input=multi.replace("{k: v}", "{k: changed}"), capture_output=True,
                          text=True, timeout=60, check=False)
    assert diff.returncode == 1 and "+  k: changed" in diff.stdout, diff.stdout + diff.stderr
    k("delete", "namespace", ns, "--wait=false")
