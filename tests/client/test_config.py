"""Reading a kubeconfig into a ClientConfig."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubling.client import config


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _document(cluster: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster},
                     {"name": "other", "cluster": {"server": "https://other:6443"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}},
                     {"name": "other", "context": {"cluster": "other"}}],
        "current-context": "ctx",
    }


def test_embedded_data(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(_document(
        {"server": "https://127.0.0.1:6443/", "certificate-authority-data": _b64(b"CA")},
        {"client-certificate-data": _b64(b"CERT"), "client-key-data": _b64(b"KEY")},
    )))
    cfg = config.load_kubeconfig(path)
    assert cfg == config.ClientConfig("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY")
    assert "KEY" not in repr(cfg) and "CERT" not in repr(cfg)
    other = config.load_kubeconfig(path, context="other")
    assert other.server == "https://other:6443" and other.ca_pem is None


def test_files_relative_to_the_kubeconfig_and_token_file(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"CA")
    (tmp_path / "token").write_text("secret-token\n")
    doc = _document({"server": "https://h:1", "certificate-authority": "ca.crt",
                     "tls-server-name": "kubernetes"}, {"tokenFile": "token"})
    cfg = config.from_kubeconfig_data(doc, base=tmp_path)
    assert cfg.ca_pem == b"CA" and cfg.token == "secret-token"
    assert cfg.tls_server_name == "kubernetes"
    assert "secret" not in repr(cfg)
    doc["users"][0]["user"] = {"token": "inline"}
    assert config.from_kubeconfig_data(doc, base=tmp_path).token == "inline"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("current-context"), "no current-context"),
        (lambda d: d.update({"current-context": "missing"}), "no entry 'missing' in contexts"),
        (lambda d: d["clusters"][0]["cluster"].pop("server"), "has no server"),
        (lambda d: d["clusters"][0]["cluster"].update({"server": "ftp://x"}), "not an http"),
        (lambda d: d["users"][0]["user"].update({"client-key-data": "%%%"}), "not valid base64"),
        (lambda d: d["users"][0]["user"].pop("client-key-data"), "needs its key"),
        (lambda d: d["users"][0]["user"].update({"tokenFile": "/nonexistent/token"}),
         "cannot read tokenFile"),
        (lambda d: d["clusters"][0]["cluster"].update({"certificate-authority-data": "",
                                                       "certificate-authority": "/no/ca"}),
         "cannot read certificate-authority"),
    ],
)
def test_bad_kubeconfigs(mutate: Any, message: str) -> None:
    doc = _document(
        {"server": "https://h:1", "certificate-authority-data": _b64(b"CA")},
        {"client-certificate-data": _b64(b"C"), "client-key-data": _b64(b"K")},
    )
    mutate(doc)
    with pytest.raises(config.KubeconfigError, match=message):
        config.from_kubeconfig_data(doc)


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(config.KubeconfigError, match="cannot read kubeconfig"):
        config.load_kubeconfig(tmp_path / "missing")
    (tmp_path / "list").write_text("- a\n- b\n")
    with pytest.raises(config.KubeconfigError, match="expected a mapping"):
        config.load_kubeconfig(tmp_path / "list")
    assert issubclass(config.KubeconfigError, ValueError)


def test_ssl_context_rejects_garbage_pem() -> None:
    cfg = config.ClientConfig("https://h:1", ca_pem=b"not a certificate")
    with pytest.raises(config.KubeconfigError, match="certificate-authority"):
        config.ssl_context(cfg)
    assert config.ssl_context(config.ClientConfig("http://h:1")) is None
    insecure = config.ssl_context(config.ClientConfig("https://h:1", insecure_skip_tls_verify=True))
    assert insecure is not None and not insecure.check_hostname
