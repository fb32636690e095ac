"""The admin kubeconfig: k3s's shape, private, readable back by kubling and by yaml."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml

from kubling.apiserver import kubeconfig, pki
from kubling.client import config

SERVER = "https://127.0.0.1:6443"


@pytest.fixture
def cluster_pki(tmp_path: Path) -> pki.ClusterPKI:
    return pki.ensure_pki(tmp_path / "tls", hostnames=[], ips=["127.0.0.1"])


def test_written_in_k3s_shape(tmp_path: Path, cluster_pki: pki.ClusterPKI) -> None:
    path = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki)
    document = yaml.safe_load(path.read_text())
    assert document["current-context"] == "default"
    assert document["contexts"] == [
        {"name": "default", "context": {"cluster": "default", "user": "default"}}
    ]
    cluster = document["clusters"][0]
    assert cluster["name"] == "default"
    assert cluster["cluster"]["server"] == SERVER
    ca = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
    assert ca == cluster_pki.ca_cert.read_bytes()
    user = document["users"][0]
    assert user["name"] == "default"
    assert base64.b64decode(user["user"]["client-key-data"]) == cluster_pki.admin_key.read_bytes()


def test_mode_defaults_to_0600_and_can_be_changed(
    tmp_path: Path, cluster_pki: pki.ClusterPKI
) -> None:
    path = tmp_path / "sub" / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki, mode=0o644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_loads_back_with_the_client(tmp_path: Path, cluster_pki: pki.ClusterPKI) -> None:
    """kubling's own client reads what the server writes (one loader: kubling.client)."""
    path = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki, cluster_name="lab")
    cfg = config.load_kubeconfig(path)
    assert cfg.server == SERVER
    assert cfg.ca_pem == cluster_pki.ca_cert.read_bytes()
    assert cfg.client_cert_pem == cluster_pki.admin_cert.read_bytes()
    assert cfg.client_key_pem == cluster_pki.admin_key.read_bytes()
    assert cfg.token is None
    context = config.ssl_context(cfg)
    assert context is not None and context.verify_mode.name == "CERT_REQUIRED"


def test_official_client_reads_it(tmp_path: Path, cluster_pki: pki.ClusterPKI) -> None:
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    path = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki)
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == SERVER
    assert configuration.cert_file and configuration.key_file and configuration.ssl_ca_cert
