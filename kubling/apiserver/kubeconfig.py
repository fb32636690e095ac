"""The admin kubeconfig: how ``kubectl`` and kubling's own tools reach the cluster.

The file has k3s's shape (cluster, context and user all named ``default``, every
certificate embedded as base64 data) so that it can be copied to another machine as one
file, merged into ``~/.kube/config`` and read by any Kubernetes client.

``load_kubeconfig`` reads back the subset kubling uses: one context's server, CA, client
certificate and key or bearer token. It does not depend on the rest of the apiserver, so
that it can move to the client package unchanged.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from kubling.apiserver import pki as pki_files


class KubeconfigError(ValueError):
    """The kubeconfig is missing, malformed, or lacks what a connection needs."""


@dataclasses.dataclass(frozen=True)
class KubeconfigCredentials:
    """What one kubeconfig context says about reaching and authenticating to a cluster.

    ``ca_pem`` is ``None`` when the system's trust store should be used; the client
    certificate and key come together or not at all.
    """

    server: str
    ca_pem: bytes | None
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None


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


def load_kubeconfig(path: Path | str, *, context: str | None = None) -> KubeconfigCredentials:
    """Read the credentials of ``context`` (default: the current context) from ``path``.

    Embedded ``*-data`` fields and file references (relative to the kubeconfig's
    directory, as kubectl resolves them) are both understood.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    if not isinstance(document, dict):
        raise KubeconfigError(f"{path}: not a kubeconfig (expected a mapping)")
    context_name = context or document.get("current-context")
    if not context_name:
        raise KubeconfigError(f"{path}: no current-context and no context given")
    ctx = _named(document, "contexts", "context", str(context_name), path)
    cluster = _named(document, "clusters", "cluster", str(ctx.get("cluster", "")), path)
    user = (
        _named(document, "users", "user", str(ctx.get("user", "")), path) if ctx.get("user") else {}
    )
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"{path}: cluster {ctx.get('cluster')!r} has no server")
    base = path.parent
    return KubeconfigCredentials(
        server=server,
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        client_cert_pem=_data_or_file(user, "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key", base),
        token=_token(user, base),
    )


def client_ssl_context(credentials: KubeconfigCredentials) -> ssl.SSLContext:
    """A TLS client context that trusts the kubeconfig's CA and presents its certificate.

    The stdlib loads certificate chains only from files, so the PEMs pass through a
    private temporary directory that is removed before returning.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if credentials.ca_pem is not None:
        context.load_verify_locations(cadata=credentials.ca_pem.decode())
    if credentials.client_cert_pem is not None and credentials.client_key_pem is not None:
        with _private_files(credentials.client_cert_pem, credentials.client_key_pem) as (cert, key):
            context.load_cert_chain(cert, key)
    return context


def _named(
    document: Mapping[str, Any], section: str, field: str, name: str, path: Path
) -> Mapping[str, Any]:
    """The ``field`` of the entry called ``name`` in the list ``section``."""
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field) or {}
            if not isinstance(value, dict):
                raise KubeconfigError(f"{path}: {section} entry {name!r} is malformed")
            return value
    raise KubeconfigError(f"{path}: no entry {name!r} in {section}")


def _data_or_file(entry: Mapping[str, Any], field: str, base: Path) -> bytes | None:
    data = entry.get(f"{field}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError as exc:
            raise KubeconfigError(f"{field}-data is not valid base64: {exc}") from exc
    file_name = entry.get(field)
    if file_name:
        try:
            return (base / str(file_name)).read_bytes()
        except OSError as exc:
            raise KubeconfigError(f"cannot read {field} {file_name}: {exc}") from exc
    return None


def _token(user: Mapping[str, Any], base: Path) -> str | None:
    token = user.get("token")
    if token:
        return str(token)
    token_file = user.get("tokenFile")
    if token_file:
        try:
            return (base / str(token_file)).read_text().strip()
        except OSError as exc:
            raise KubeconfigError(f"cannot read tokenFile {token_file}: {exc}") from exc
    return None


@contextlib.contextmanager
def _private_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    with tempfile.TemporaryDirectory(prefix="kubling-tls-") as directory:
        cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for name, data in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        yield cert, key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
