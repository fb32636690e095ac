"""The agent's side of joining a cluster (``kubling.apiserver.join`` is the server's).

As a k3s agent does: fetch ``/cacerts`` without verifying TLS (the agent has no CA yet),
check its sha256 against the one the token pins, then — now verifying the server with that
CA — send the token's secret with a CSR for each of the agent's two keys and receive the
node's client certificate (``system:node:<name>``) and its kubelet serving certificate,
plus the pod CIDR the server assigns. The keys are made here and stay here (kept across
restarts in ``<data-dir>/tls``); the certificates are asked for again on every start.

The result is written as files the rest of the agent reads: ``<data-dir>/kubelet.kubeconfig``
(k3s's name for the agent's kubeconfig) and ``<data-dir>/tls/``; ``<data-dir>/node-password``
is the node password k3s agents keep, made on the first join. Every failure is a
``JoinError`` whose message says what to do; none is a traceback.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import json
import logging
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import oid

from kubling.apiserver import join, kubeconfig, pki

log = logging.getLogger("kubling.agent")

TIMEOUT_SECONDS = 10.0
KUBECONFIG_NAME = "kubelet.kubeconfig"
#: The node password (k3s: /etc/rancher/node/password): the same on every join of this
#: node, so the server knows a rejoin from an impostor using the same node name.
PASSWORD_NAME = "node-password"
COPY_TOKEN_AGAIN = "copy <data-dir>/token from the server again"


class JoinError(Exception):
    """Joining failed; the message is for the user."""


@dataclasses.dataclass(frozen=True)
class Joined:
    """What joining produced: files under the agent's data dir and the server's answers."""

    kubeconfig: Path
    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    cluster_cidr: str
    pod_cidr: str


def join_cluster(server: str, token: str, *, node_name: str, node_ips: list[str],
                 data_dir: Path) -> Joined:
    """Obtain this node's credentials from ``server`` with ``token``; write them."""
    parsed = join.parse_token(token)
    server = server.rstrip("/")
    ca_pem = _get(server, join.CACERTS_PATH, _unverified_context())
    if parsed.ca_hash and join.ca_hash(ca_pem) != parsed.ca_hash:
        raise JoinError(f"the join token does not match this server's CA — {COPY_TOKEN_AGAIN}")
    if not parsed.ca_hash:
        log.warning("the token pins no CA (a bare secret): trusting the CA %s served",
                    server)
    tls = data_dir / "tls"
    tls.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_path = tls / "server-ca.crt"
    pki.write_private_file(ca_path, ca_pem, mode=0o644)
    context = ssl.create_default_context(cadata=ca_pem.decode())
    headers = {"Authorization": _basic_auth(parsed.secret), join.NODE_NAME_HEADER: node_name,
               join.NODE_IP_HEADER: ",".join(node_ips),
               join.NODE_PASSWORD_HEADER: _node_password(data_dir / PASSWORD_NAME)}
    client_key = _key(tls / "client-kubelet.key")
    client_pem = _post_csr(server, join.PREFIX + "client-kubelet.crt", context, headers,
                           client_key, node_name)
    serving_key_path = tls / "serving-kubelet.key"
    serving_key = _key(serving_key_path)
    serving_pem = _post_csr(server, join.PREFIX + "serving-kubelet.crt", context, headers,
                            serving_key, node_name)
    serving_cert_path = tls / "serving-kubelet.crt"
    pki.write_private_file(tls / "client-kubelet.crt", client_pem)
    pki.write_private_file(serving_cert_path, serving_pem)
    config = json.loads(_get(server, join.PREFIX + "config", context, headers))
    document = kubeconfig.admin_kubeconfig(
        server=server, ca_pem=ca_pem, client_cert_pem=client_pem,
        client_key_pem=(tls / "client-kubelet.key").read_bytes())
    kubeconfig_path = data_dir / KUBECONFIG_NAME
    pki.write_private_file(kubeconfig_path, yaml.safe_dump(document, sort_keys=False).encode())
    return Joined(kubeconfig=kubeconfig_path, ca_cert=ca_path, serving_cert=serving_cert_path,
                  serving_key=serving_key_path, cluster_cidr=str(config["clusterCIDR"]),
                  pod_cidr=str(config["podCIDR"]))


def _unverified_context() -> ssl.SSLContext:
    """Only for ``/cacerts``: what it returns is checked against the token's hash."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _basic_auth(secret: str) -> str:
    return "Basic " + base64.b64encode(f"node:{secret}".encode()).decode()


def _node_password(path: Path) -> str:
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    password = secrets.token_hex(16)
    pki.write_private_file(path, (password + "\n").encode())
    return password


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The key at ``path``, made (0600) on the first join and kept afterwards."""
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(loaded, ec.EllipticCurvePrivateKey):
            return loaded
    except (OSError, ValueError):
        pass
    key = ec.generate_private_key(ec.SECP256R1())
    pki.write_private_file(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return key


def _post_csr(server: str, path: str, context: ssl.SSLContext, headers: dict[str, str],
              key: ec.EllipticCurvePrivateKey, node_name: str) -> bytes:
    subject = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME,
                                            join.NODE_USER_PREFIX + node_name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    body = csr.public_bytes(serialization.Encoding.PEM)
    return _request(server, path, context, headers, body)


def _get(server: str, path: str, context: ssl.SSLContext,
         headers: dict[str, str] | None = None) -> bytes:
    return _request(server, path, context, headers or {}, None)


def _request(server: str, path: str, context: ssl.SSLContext, headers: dict[str, str],
             body: bytes | None) -> bytes:
    url = server + path
    request = urllib.request.Request(url, data=body, headers=headers,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, context=context, timeout=TIMEOUT_SECONDS) as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace").strip()
        if err.code == 401:
            raise JoinError(f"{server} refused the join token — {COPY_TOKEN_AGAIN}") from None
        if err.code in (400, 403):
            raise JoinError(f"{server} refused to join this node: {text}") from None
        if err.code == 404 and path == join.CACERTS_PATH:
            raise JoinError(f"{server} is not a kubling server (no {path}) — check --server") \
                from None
        raise JoinError(f"{url}: {err.code} {err.reason}: {text}") from None
    except urllib.error.URLError as err:
        raise JoinError(_unreachable(server, err.reason)) from None
    except (OSError, ssl.SSLError) as err:
        raise JoinError(_unreachable(server, err)) from None


def _unreachable(server: str, reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (f"could not verify {server}: {reason.verify_message} — pass the address the "
                "server's certificate covers (its node IP or name, or add --tls-san on the "
                "server)")
    if isinstance(reason, OSError) and reason.errno == errno.ECONNREFUSED:
        return f"could not reach {server}: connection refused — is kubling server running?"
    text = getattr(reason, "strerror", None) or str(reason)
    return f"could not reach {server}: {text} — is kubling server running at that address?"
