"""Where the cluster is and who we are: a kubeconfig context turned into a ``ClientConfig``.

Only the subset of the kubeconfig format that kubling's components and users need is read:
one context's server, CA (data or file), client certificate and key (data or file), and a
bearer token (``token`` or ``tokenFile``). File references are relative to the kubeconfig's
directory, as kubectl resolves them. Exec and auth-provider plugins are not supported.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import ssl
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(ValueError):
    """The kubeconfig is missing, malformed, or lacks what a connection needs."""


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    """How to reach and authenticate to one API server.

    ``ca_pem`` is ``None`` when the system trust store should be used. The client
    certificate and key come together or not at all. Secrets are kept out of ``repr``.
    """

    server: str
    ca_pem: bytes | None = dataclasses.field(default=None, repr=False)
    client_cert_pem: bytes | None = dataclasses.field(default=None, repr=False)
    client_key_pem: bytes | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "http://")):
            raise KubeconfigError(f"server {self.server!r} is not an http(s) URL")
        if (self.client_cert_pem is None) != (self.client_key_pem is None):
            raise KubeconfigError("a client certificate needs its key and a key its certificate")


def load_kubeconfig(path: Path | str, *, context: str | None = None) -> ClientConfig:
    """The ``ClientConfig`` of ``context`` (default: the current context) in ``path``."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise KubeconfigError(f"cannot read kubeconfig {path}: {exc}") from exc
    try:
        return from_kubeconfig_data(document, base=path.parent, context=context)
    except KubeconfigError as exc:
        raise KubeconfigError(f"{path}: {exc}") from None


def from_kubeconfig_data(
    document: Any, *, base: Path = Path("."), context: str | None = None
) -> ClientConfig:
    """The ``ClientConfig`` of a parsed kubeconfig; files are resolved against ``base``."""
    if not isinstance(document, dict):
        raise KubeconfigError("not a kubeconfig (expected a mapping)")
    context_name = context or document.get("current-context")
    if not context_name:
        raise KubeconfigError("no current-context and no context given")
    ctx = _named(document, "contexts", "context", str(context_name))
    cluster = _named(document, "clusters", "cluster", str(ctx.get("cluster", "")))
    user = _named(document, "users", "user", str(ctx["user"])) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeconfigError(f"cluster {ctx.get('cluster')!r} has no server")
    server_name = cluster.get("tls-server-name")
    return ClientConfig(
        server=server.rstrip("/"),
        ca_pem=_data_or_file(cluster, "certificate-authority", base),
        client_cert_pem=_data_or_file(user, "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key", base),
        token=_token(user, base),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=str(server_name) if server_name else None,
    )


def ssl_context(config: ClientConfig) -> ssl.SSLContext | None:
    """A TLS client context for ``config``; ``None`` for a plain ``http://`` server.

    The stdlib loads certificate chains only from files, so the PEMs pass through a 0600
    temporary directory that is removed before this returns.
    """
    if config.server.startswith("http://"):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_pem is not None:
        try:
            context.load_verify_locations(cadata=config.ca_pem.decode())
        except (ssl.SSLError, UnicodeDecodeError) as exc:
            raise KubeconfigError(f"certificate-authority is not a PEM certificate: {exc}") from exc
    if config.client_cert_pem is not None and config.client_key_pem is not None:
        with _private_files(config.client_cert_pem, config.client_key_pem) as (cert, key):
            try:
                context.load_cert_chain(cert, key)
            except ssl.SSLError as exc:
                raise KubeconfigError(f"client certificate or key is invalid: {exc}") from exc
    return context


def _named(document: Mapping[str, Any], section: str, field: str, name: str) -> Mapping[str, Any]:
    """The ``field`` of the entry called ``name`` in the list ``section``."""
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(field) or {}
            if not isinstance(value, dict):
                raise KubeconfigError(f"{section} entry {name!r} is malformed")
            return value
    raise KubeconfigError(f"no entry {name!r} in {section}")


def _data_or_file(entry: Mapping[str, Any], field: str, base: Path) -> bytes | None:
    data = entry.get(f"{field}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (ValueError, binascii.Error) as exc:
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
    with tempfile.TemporaryDirectory(prefix="kubling-client-tls-") as directory:
        cert, key = os.path.join(directory, "tls.crt"), os.path.join(directory, "tls.key")
        for name, data in ((cert, cert_pem), (key, key_pem)):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        yield cert, key
