"""The admin kubeconfig: k3s's shape, private, readable back by kubling and by yaml."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
import yaml

from kubling.apiserver import kubeconfig, pki

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


def test_loads_back(tmp_path: Path, cluster_pki: pki.ClusterPKI) -> None:
    path = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki, cluster_name="lab")
    creds = kubeconfig.load_kubeconfig(path)
    assert creds == kubeconfig.KubeconfigCredentials(
        server=SERVER,
        ca_pem=cluster_pki.ca_cert.read_bytes(),
        client_cert_pem=cluster_pki.admin_cert.read_bytes(),
        client_key_pem=cluster_pki.admin_key.read_bytes(),
        token=None,
    )
    assert kubeconfig.client_ssl_context(creds).verify_mode.name == "CERT_REQUIRED"


def test_loads_token_and_file_references(tmp_path: Path, cluster_pki: pki.ClusterPKI) -> None:
    (tmp_path / "ca.crt").write_bytes(cluster_pki.ca_cert.read_bytes())
    path = tmp_path / "config"
    path.write_text(
        yaml.safe_dump(
            {
                "current-context": "b",
                "contexts": [
                    {"name": "a", "context": {"cluster": "x", "user": "x"}},
                    {"name": "b", "context": {"cluster": "c", "user": "u"}},
                ],
                "clusters": [
                    {"name": "c", "cluster": {"server": SERVER, "certificate-authority": "ca.crt"}}
                ],
                "users": [{"name": "u", "user": {"token": "abc.def"}}],
            }
        )
    )
    creds = kubeconfig.load_kubeconfig(path)
    assert creds.token == "abc.def"
    assert creds.ca_pem == cluster_pki.ca_cert.read_bytes()
    assert creds.client_cert_pem is None and creds.client_key_pem is None
    with pytest.raises(kubeconfig.KubeconfigError, match="no entry 'x' in clusters"):
        kubeconfig.load_kubeconfig(path, context="a")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- a list", "expected a mapping"),
        ("kind: Config", "no current-context"),
        ("current-context: a\ncontexts: []", "no entry 'a' in contexts"),
        (":\n  - [", "cannot read kubeconfig"),
    ],
)
def test_malformed(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    with pytest.raises(kubeconfig.KubeconfigError, match=message):
        kubeconfig.load_kubeconfig(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(kubeconfig.KubeconfigError, match="cannot read kubeconfig"):
        kubeconfig.load_kubeconfig(tmp_path / "nope")


def test_official_client_reads_it(tmp_path: Path, cluster_pki: pki.ClusterPKI) -> None:
    client = pytest.importorskip("kubernetes.client")
    config = pytest.importorskip("kubernetes.config")
    path = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server=SERVER, pki=cluster_pki)
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == SERVER
    assert configuration.cert_file and configuration.key_file and configuration.ssl_ca_cert
