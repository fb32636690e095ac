"""The root-CA publisher: ``kube-root-ca.crt`` in every namespace, with the cluster CA."""

from __future__ import annotations

import uuid

from tests.controllers.test_serviceaccount import _eventually
from tests.server_fixture import KublingServer


def _ca(server: KublingServer, ns: str) -> str:
    result = server.kubectl("get", "configmap", "kube-root-ca.crt", "-n", ns, "-o",
                            r"jsonpath={.data.ca\.crt}", check=False)
    return result.stdout if result.returncode == 0 else ""


def test_every_namespace_gets_the_cluster_ca(kubling: KublingServer) -> None:
    cluster_ca = (kubling.data_dir / "tls" / "ca.crt").read_text()
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        assert _eventually(lambda ns=ns: _ca(kubling, ns)) == cluster_ca
    ns = "rootca-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", ns)
    assert _eventually(lambda: _ca(kubling, ns)) == cluster_ca
    description = kubling.kubectl(
        "get", "configmap", "kube-root-ca.crt", "-n", ns, "-o",
        r"jsonpath={.metadata.annotations.kubernetes\.io/description}").stdout
    assert description.startswith("Contains a CA bundle that can be used to verify the "
                                  "kube-apiserver")
    # Edited or deleted, it comes back as it was.
    kubling.kubectl("patch", "configmap", "kube-root-ca.crt", "-n", ns, "--type=merge",
                    "-p", '{"data": {"ca.crt": "tampered"}}')
    _eventually(lambda: _ca(kubling, ns) == cluster_ca)
    kubling.kubectl("delete", "configmap", "kube-root-ca.crt", "-n", ns)
    _eventually(lambda: _ca(kubling, ns) == cluster_ca)
    kubling.kubectl("delete", "namespace", ns, "--wait=false")
