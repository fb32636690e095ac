"""The token controller: legacy ``kubernetes.io/service-account-token`` Secrets are filled,
their tokens authenticate, and they go when their account goes."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

from tests.controllers.test_serviceaccount import _eventually
from tests.e2e.test_service_account_tokens import _as_token, _token_kubeconfig
from tests.server_fixture import KublingServer

SECRET = """
apiVersion: v1
kind: Secret
metadata:
  name: legacy
  annotations:
    kubernetes.io/service-account.name: builder
type: kubernetes.io/service-account-token
"""


def test_legacy_token_secret_is_filled_and_authenticates(kubling: KublingServer,
                                                         tmp_path: Path) -> None:
    ns = "legacy-" + uuid.uuid4().hex[:8]
    kubling.kubectl("create", "namespace", ns)
    kubling.kubectl("create", "serviceaccount", "builder", "-n", ns)
    kubling.kubectl("apply", "-n", ns, "-f", "-", input=SECRET)

    def filled() -> Any:
        secret = kubling.kubectl_yaml("get", "secret", "legacy", "-n", ns)
        return secret if (secret.get("data") or {}).get("token") else None

    secret = _eventually(filled)
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["namespace"] == ns
    assert data["ca.crt"] == (kubling.data_dir / "tls" / "ca.crt").read_text()
    uid = kubling.kubectl("get", "serviceaccount", "builder", "-n", ns, "-o",
                          "jsonpath={.metadata.uid}").stdout
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] == uid
    kubeconfig = _token_kubeconfig(kubling, tmp_path)
    whoami = _as_token(kubling, kubeconfig, data["token"], "auth", "whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert f"system:serviceaccount:{ns}:builder" in whoami.stdout
    # The account goes: its Secret is deleted and the token stops working.
    kubling.kubectl("delete", "serviceaccount", "builder", "-n", ns)
    _eventually(lambda: kubling.kubectl("get", "secret", "legacy", "-n", ns,
                                        check=False).returncode != 0)
    assert _as_token(kubling, kubeconfig, data["token"], "auth", "whoami").returncode == 1
    kubling.kubectl("delete", "namespace", ns, "--wait=false")
