"""The cluster PKI: created once, reused, re-issued from the same CA, usable for real TLS."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import shutil
import socket
import ssl
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import oid

from kubling.apiserver import kubeconfig, pki
from kubling.client import config as client_config

IPS = ["127.0.0.1", "10.43.0.1", "192.168.1.10"]


def make(tls_dir: Path, ips: list[str] = IPS) -> pki.ClusterPKI:
    return pki.ensure_pki(tls_dir, hostnames=["node-a"], ips=ips)


def files(p: pki.ClusterPKI) -> dict[str, bytes]:
    return {name: getattr(p, name).read_bytes() for name in vars(p)}


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(ip) for ip in ext.get_values_for_type(x509.IPAddress)
    }


def test_creates_every_file_private(tmp_path: Path) -> None:
    p = make(tmp_path / "tls")
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    for name in vars(p):
        path = getattr(p, name)
        assert path.parent == tmp_path / "tls"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert not [f for f in (tmp_path / "tls").iterdir() if f.name.endswith(".tmp")]


def test_ca_is_a_ten_year_self_signed_ca(tmp_path: Path) -> None:
    ca = load(make(tmp_path).ca_cert)
    assert ca.subject == ca.issuer
    assert ca.subject.rfc4514_string().startswith("CN=kubling-ca@")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert lifetime >= datetime.timedelta(days=3650)
    ca.verify_directly_issued_by(ca)


def test_serving_cert_covers_names_and_addresses(tmp_path: Path) -> None:
    p = make(tmp_path)
    cert = load(p.serving_cert)
    dns, ips = sans(cert)
    assert dns >= {
        "node-a",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    assert ips == set(IPS)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= datetime.timedelta(days=366)
    cert.verify_directly_issued_by(load(p.ca_cert))


def test_admin_cert_is_system_admin_in_system_masters(tmp_path: Path) -> None:
    p = make(tmp_path)
    cert = load(p.admin_cert)
    assert pki.user_from_certificate(cert) == ("system:admin", ["system:masters"])
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [oid.ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(load(p.ca_cert))


def test_second_call_reuses_everything(tmp_path: Path) -> None:
    first = files(make(tmp_path))
    assert files(make(tmp_path)) == first


def test_new_address_reissues_serving_cert_from_same_ca(tmp_path: Path) -> None:
    before = files(make(tmp_path))
    p = make(tmp_path, ips=[*IPS, "fd00::5"])
    after = files(p)
    assert after["ca_cert"] == before["ca_cert"] and after["ca_key"] == before["ca_key"]
    assert after["admin_cert"] == before["admin_cert"]
    assert after["serving_cert"] != before["serving_cert"]
    assert "fd00::5" in sans(load(p.serving_cert))[1]
    load(p.serving_cert).verify_directly_issued_by(load(p.ca_cert))


def test_hostname_that_is_an_ip_counts_as_ip(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path, hostnames=["10.0.0.7", "Node-B."], ips=[])
    dns, ips = sans(load(p.serving_cert))
    assert "10.0.0.7" in ips and "node-b" in dns and "10.0.0.7" not in dns


def test_leaves_near_expiry_are_reissued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = files(make(tmp_path))
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    monkeypatch.setattr(pki, "_now", lambda: later)
    p = make(tmp_path)
    after = files(p)
    assert after["ca_cert"] == before["ca_cert"]
    assert after["serving_cert"] != before["serving_cert"]
    assert after["admin_cert"] != before["admin_cert"]
    assert load(p.serving_cert).not_valid_after_utc > later + datetime.timedelta(days=300)


def test_leaf_whose_key_does_not_match_is_reissued(tmp_path: Path) -> None:
    p = make(tmp_path)
    p.serving_key.write_bytes(p.admin_key.read_bytes())  # as after a crash mid-write
    make(tmp_path)
    cert = load(p.serving_cert)
    key = serialization.load_pem_private_key(p.serving_key.read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == key.public_key().public_bytes(serialization.Encoding.DER, spki)


def test_ca_without_its_key_is_an_error_not_a_new_ca(tmp_path: Path) -> None:
    p = make(tmp_path)
    p.ca_key.unlink()
    with pytest.raises(pki.PKIError):
        make(tmp_path)


def test_user_provided_rsa_ca_is_used(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "corp-ca")])
    now = datetime.datetime.now(datetime.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    layout = pki.ClusterPKI.at(tmp_path)
    layout.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    layout.ca_key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    p = make(tmp_path)
    assert load(p.ca_cert) == ca
    load(p.serving_cert).verify_directly_issued_by(ca)


def test_issue_client_cert(tmp_path: Path) -> None:
    p = make(tmp_path)
    cert_pem, key_pem = pki.issue_client_cert(
        p, common_name="system:node:node-a", organizations=["system:nodes"]
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(load(p.ca_cert))
    assert pki.user_from_certificate(cert.public_bytes(serialization.Encoding.DER)) == (
        "system:node:node-a",
        ["system:nodes"],
    )
    assert b"PRIVATE KEY" in key_pem
    with pytest.raises(ValueError):
        pki.issue_client_cert(p, common_name="", organizations=[])


def test_user_from_peercert_dict() -> None:
    peercert = {
        "subject": (
            (("organizationName", "system:masters"),),
            (("organizationName", "team-a"),),
            (("commonName", "alice"),),
        ),
        "issuer": ((("commonName", "kubling-ca@1"),),),
    }
    assert pki.user_from_certificate(peercert) == ("alice", ["system:masters", "team-a"])
    with pytest.raises(ValueError):
        pki.user_from_certificate({"subject": ((("organizationName", "x"),),)})
    with pytest.raises(ValueError):
        pki.user_from_certificate({})


# --- real TLS ---------------------------------------------------------------------------


@dataclasses.dataclass
class ServerView:
    """What the server side of one handshake saw of the client."""

    peercert: dict[str, Any] | None = None
    alpn: str | None = None
    error: BaseException | None = None


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> ServerView:
    """Run one TLS handshake over a socket pair, the server in a thread."""
    server_sock, client_sock = socket.socketpair()
    view = ServerView()

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(server_sock, server_side=True) as tls:
                view.peercert = tls.getpeercert()
                view.alpn = tls.selected_alpn_protocol()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            view.error = exc

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(client_sock, server_hostname="127.0.0.1") as tls:
            tls.recv(2)
    except (ssl.SSLError, OSError):
        pass  # the server's side of the story is what the tests check
    thread.join(timeout=10)
    return view


def admin_client_context(tmp_path: Path, p: pki.ClusterPKI) -> ssl.SSLContext:
    path = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_admin_kubeconfig(path, server="https://127.0.0.1:6443", pki=p)
    ctx = client_config.ssl_context(client_config.load_kubeconfig(path))
    ctx.set_alpn_protocols(["h2", "http/1.1"])  # what kubectl offers
    return ctx


def test_tls_handshake_with_admin_kubeconfig(tmp_path: Path) -> None:
    p = make(tmp_path / "tls")
    view = handshake(pki.server_ssl_context(p), admin_client_context(tmp_path, p))
    assert view.error is None
    assert view.peercert is not None
    assert pki.user_from_certificate(view.peercert) == ("system:admin", ["system:masters"])
    assert view.alpn == "http/1.1"


def test_tls_client_without_certificate_is_allowed(tmp_path: Path) -> None:
    p = make(tmp_path / "tls")
    client = ssl.create_default_context(cafile=p.ca_cert)
    view = handshake(pki.server_ssl_context(p), client)
    assert view.error is None and view.peercert is None


def test_tls_client_from_another_ca_is_rejected(tmp_path: Path) -> None:
    ours, theirs = make(tmp_path / "ours"), make(tmp_path / "theirs")
    client = ssl.create_default_context(cafile=ours.ca_cert)
    client.load_cert_chain(theirs.admin_cert, theirs.admin_key)
    view = handshake(pki.server_ssl_context(ours), client)
    assert isinstance(view.error, ssl.SSLError) and view.peercert is None


def test_client_rejects_server_for_address_not_in_sans(tmp_path: Path) -> None:
    p = pki.ensure_pki(tmp_path / "tls", hostnames=[], ips=["10.43.0.1"])
    server_sock, client_sock = socket.socketpair()
    thread = threading.Thread(target=_accept_quietly, args=(pki.server_ssl_context(p), server_sock))
    thread.start()
    client = admin_client_context(tmp_path, p)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.wrap_socket(client_sock, server_hostname="127.0.0.1")
    client_sock.close()
    thread.join(timeout=10)


def _accept_quietly(ctx: ssl.SSLContext, sock: socket.socket) -> None:
    try:
        ctx.wrap_socket(sock, server_side=True).close()
    except (ssl.SSLError, OSError):
        sock.close()


async def _whoami(request: web.Request) -> web.Response:
    """What the API server's x509 authenticator will do: aiohttp's ``peercert`` extra."""
    assert request.transport is not None
    user, groups = pki.user_from_certificate(request.transport.get_extra_info("peercert"))
    return web.json_response({"user": user, "groups": groups})


@contextlib.asynccontextmanager
async def whoami_server(p: pki.ClusterPKI) -> AsyncIterator[int]:
    """An HTTPS server with the cluster's TLS context on a free port (yielded)."""
    app = web.Application()
    app.router.add_get("/whoami", _whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.server_ssl_context(p))
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


ADMIN = {"user": "system:admin", "groups": ["system:masters"]}


def test_aiohttp_server_sees_the_admin_user(tmp_path: Path) -> None:
    p = make(tmp_path / "tls")
    client_ctx = admin_client_context(tmp_path, p)

    async def scenario() -> object:
        async with whoami_server(p) as port, aiohttp.ClientSession() as session:
            url = f"https://127.0.0.1:{port}/whoami"
            async with session.get(url, ssl=client_ctx) as response:
                return await response.json()

    assert asyncio.run(scenario()) == ADMIN


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kubectl_accepts_the_certificates(tmp_path: Path) -> None:
    """Go's TLS stack (stricter than OpenSSL in places) takes our CA, serving cert and key."""
    p = make(tmp_path / "tls")
    path = tmp_path / "kubeconfig.yaml"

    async def scenario() -> bytes:
        async with whoami_server(p) as port:
            kubeconfig.write_admin_kubeconfig(path, server=f"https://127.0.0.1:{port}", pki=p)
            process = await asyncio.create_subprocess_exec(
                *("kubectl", "--kubeconfig", str(path), "get", "--raw", "/whoami"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
            return output

    output = asyncio.run(scenario())
    assert json.loads(output) == ADMIN, output
