"""The admin kubeconfig: how ``kubectl`` and kubling's own tools reach the cluster.

The file has k3s's shape (cluster, context and user all named ``default``, every
certificate embedded as base64 data) so that it can be copied to another machine as one
file, merged into ``~/.kube/config`` and read by any Kubernetes client.

Reading kubeconfigs is the client's job (``kubling.client.config``); this module only
writes the admin one.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from kubling.apiserver import pki as pki_files


def write_admin_kubeconfig(
    path: Path,
    *,
    server: str,
    pki: pki_files.ClusterPKI,
    mode: int = 0o600,
    cluster_name: str = "default",
) -> None:
    """Write the admin kubeconfig for ``server`` atomically with permissions ``mode``.

    It holds the admin key, so it is 0600 unless the user asks otherwise
    (``--write-kubeconfig-mode``, as in k3s).
    """
    document = admin_kubeconfig(
        server=server,
        ca_pem=pki.ca_cert.read_bytes(),
        client_cert_pem=pki.admin_cert.read_bytes(),
        client_key_pem=pki.admin_key.read_bytes(),
        cluster_name=cluster_name,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(document, default_flow_style=False, sort_keys=False)
    pki_files.write_private_file(path, text.encode(), mode=mode)


def admin_kubeconfig(
    *,
    server: str,
    ca_pem: bytes,
    client_cert_pem: bytes,
    client_key_pem: bytes,
    cluster_name: str = "default",
) -> dict[str, Any]:
    """The kubeconfig document (as YAML-ready data) for one cluster and one x509 user."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster_name,
                "cluster": {"certificate-authority-data": _b64(ca_pem), "server": server},
            }
        ],
        "contexts": [
            {"name": cluster_name, "context": {"cluster": cluster_name, "user": cluster_name}}
        ],
        "current-context": cluster_name,
        "preferences": {},
        "users": [
            {
                "name": cluster_name,
                "user": {
                    "client-certificate-data": _b64(client_cert_pem),
                    "client-key-data": _b64(client_key_pem),
                },
            }
        ],
    }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
