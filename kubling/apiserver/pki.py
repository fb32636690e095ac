"""The cluster's certificates: one CA, the API serving certificate, the admin client.

Made on the first start of ``kubling server`` and reused on every later one, because
everything that trusts the cluster (kubeconfigs already handed out, joined agents) holds
the CA certificate: re-creating the CA would silently lock all of them out. The leaves
are cheap and are re-issued from the same CA whenever they no longer fit (a node address
the serving certificate does not cover, or an expiry within ``RENEW_BEFORE``), as k3s's
dynamic listener does.

Keys are ECDSA P-256: creating the whole set takes milliseconds, which matters for a
server that should be ready in under a second.

Files live in ``<data-dir>/tls/`` (mode 0700), each written atomically with mode 0600,
the key before its certificate. A crash between the two leaves a certificate that does
not match its key; the next start notices that and re-issues the leaf. A user may place
their own CA (``ca.crt`` + ``ca.key``, ECDSA or RSA) there before the first start, as with
k3s's custom CA support; kubling then issues from it and never rewrites it.

x509 client authentication follows Kubernetes: the user name is the certificate's
common name and the groups are its organization values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import ipaddress
import os
import ssl
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import oid

from kubling.api import jwt

CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=90)
# Certificates start slightly in the past so that a node whose clock lags the server's
# by a few minutes does not reject a certificate issued a moment ago.
BACKDATE = datetime.timedelta(minutes=5)

ADMIN_USER = "system:admin"
ADMIN_GROUP = "system:masters"
#: The API server's identity towards node agents (logs, exec, port-forward), named as
#: kubeadm names its ``apiserver-kubelet-client`` certificate; the group makes it an
#: admin, which is what the agent's server authorizes.
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"
# The names in-cluster clients use for the API (the `kubernetes` Service in `default`).
SERVICE_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
SigningKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
#: The public half of a key someone else holds, certified from its CSR.
CertifiedKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class PKIError(Exception):
    """The certificates on disk cannot be used and kubling must not repair them itself."""


@dataclasses.dataclass(frozen=True)
class ClusterPKI:
    """Where the cluster's certificates and keys are; the files are the state."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    kubelet_client_cert: Path
    kubelet_client_key: Path
    #: Signs service-account tokens (k3s's ``service.key``); never rotated by kubling,
    #: because every token handed out (projected into pods, stored in Secrets) names it.
    service_account_key: Path

    @classmethod
    def at(cls, tls_dir: Path) -> ClusterPKI:
        """The file layout under ``tls_dir`` (nothing is read or written)."""
        return cls(
            ca_cert=tls_dir / "ca.crt",
            ca_key=tls_dir / "ca.key",
            serving_cert=tls_dir / "serving.crt",
            serving_key=tls_dir / "serving.key",
            admin_cert=tls_dir / "admin.crt",
            admin_key=tls_dir / "admin.key",
            kubelet_client_cert=tls_dir / "kubelet-client.crt",
            kubelet_client_key=tls_dir / "kubelet-client.key",
            service_account_key=tls_dir / "service.key",
        )


@dataclasses.dataclass(frozen=True)
class _Authority:
    """A loaded CA: what signs every leaf."""

    cert: x509.Certificate
    key: SigningKey


@dataclasses.dataclass(frozen=True)
class _SANs:
    """The names a serving certificate must cover, normalized for comparison."""

    dns: frozenset[str]
    ips: frozenset[IPAddress]


def ensure_pki(tls_dir: Path, *, hostnames: list[str], ips: list[str]) -> ClusterPKI:
    """Create the cluster's CA and certificates, or reuse the ones already there.

    ``hostnames`` and ``ips`` are what the serving certificate must cover besides the
    in-cluster service names; the caller passes the node's names and addresses,
    ``127.0.0.1`` and the first service IP. Holds a lock on the directory so that two
    processes starting at once cannot create two different CAs.
    """
    pki = ClusterPKI.at(tls_dir)
    sans = _required_sans(hostnames, ips)
    _make_private_dir(tls_dir)
    with _locked(tls_dir / ".lock"):
        authority = _ensure_authority(pki)
        now = _now()
        if not _serving_cert_fits(pki, authority, sans, now):
            _issue_serving_cert(pki, authority, sans, now)
        if not _admin_cert_fits(pki, authority, now):
            cert_pem, key_pem = _issue_client(
                authority, common_name=ADMIN_USER, organizations=[ADMIN_GROUP], now=now
            )
            _write_pair(pki.admin_cert, cert_pem, pki.admin_key, key_pem)
        if not _client_cert_fits(pki.kubelet_client_cert, pki.kubelet_client_key, authority,
                                 now, (KUBELET_CLIENT_USER, [ADMIN_GROUP])):
            cert_pem, key_pem = _issue_client(
                authority, common_name=KUBELET_CLIENT_USER, organizations=[ADMIN_GROUP],
                now=now)
            _write_pair(pki.kubelet_client_cert, cert_pem, pki.kubelet_client_key, key_pem)
        if not pki.service_account_key.exists():
            write_private_file(pki.service_account_key,
                               _key_pem(ec.generate_private_key(ec.SECP256R1())))
    return pki


def load_service_account_key(path: Path) -> jwt.PrivateKey:
    """The token signing key (ECDSA P-256 as kubling makes it, or a user's RSA key)."""
    try:
        return jwt.load_private_key(path.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise PKIError(f"cannot load the service-account key {path}: {exc}") from exc


def ensure_kubelet_serving_cert(pki: ClusterPKI, *, node_name: str, hostnames: list[str],
                                ips: list[str]) -> tuple[Path, Path]:
    """The node agent's serving certificate (its :10250 server) for the node's names and
    addresses, signed by the cluster CA so the API server can verify the agent it
    connects to; reused while it fits. Returns (certificate, key) paths:
    ``kubelet-serving.crt`` / ``.key`` next to the CA. Only an agent in the server's own
    process gets it this way; one on another machine will get its own when it joins."""
    cert_path = pki.ca_cert.parent / "kubelet-serving.crt"
    key_path = pki.ca_cert.parent / "kubelet-serving.key"
    hostnames = [node_name, *hostnames]
    sans = _SANs(dns=frozenset(h.lower() for h in hostnames if h and not _is_ip(h)),
                 ips=frozenset(ipaddress.ip_address(a) for a in [*ips, *hostnames]
                               if _is_ip(a)))
    with _locked(pki.ca_cert.parent / ".lock"):
        authority = _load_authority(pki)
        if authority is None:
            raise PKIError(f"no cluster CA at {pki.ca_cert}; call ensure_pki first")
        now = _now()
        cert = _load_leaf(cert_path, key_path, authority, now)
        if cert is None or not _covers(cert, sans):
            key = ec.generate_private_key(ec.SECP256R1())
            names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(sans.dns)]
            names += [x509.IPAddress(ip) for ip in sorted(sans.ips, key=str)]
            # What a kubelet's serving certificate from a CSR carries upstream.
            subject = x509.Name([
                x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, "system:nodes"),
                x509.NameAttribute(oid.NameOID.COMMON_NAME, f"system:node:{node_name}")])
            leaf = (
                _leaf_builder(subject, authority, key, now, oid.ExtendedKeyUsageOID.SERVER_AUTH)
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(authority.key, hashes.SHA256())
            )
            _write_pair(cert_path, _cert_pem(leaf), key_path, _key_pem(key))
    return cert_path, key_path


def kubelet_client_ssl_context(pki: ClusterPKI, *, verify: bool = True) -> ssl.SSLContext:
    """How the API server connects to node agents: as ``KUBELET_CLIENT_USER``, trusting
    only agents whose serving certificate the cluster CA signed (``verify=False`` is
    ``insecureSkipTLSVerifyBackend``)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.kubelet_client_cert, pki.kubelet_client_key)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def issue_client_cert(
    pki: ClusterPKI, *, common_name: str, organizations: list[str]
) -> tuple[bytes, bytes]:
    """Issue a client certificate from the cluster CA: (PEM certificate, PEM key).

    Nothing is written; the caller decides where the key goes (e.g. to a joining agent).
    The certificate authenticates as user ``common_name`` in groups ``organizations``.
    """
    if not common_name:
        raise ValueError("a client certificate needs a common name (the user name)")
    authority = _load_authority(pki)
    if authority is None:
        raise PKIError(f"no cluster CA at {pki.ca_cert}; call ensure_pki first")
    return _issue_client(
        authority, common_name=common_name, organizations=organizations, now=_now()
    )


def issue_for_public_key(
    pki: ClusterPKI, public_key: object, *, common_name: str, organizations: list[str],
    client: bool, dns_names: Sequence[str] = (), ips: Sequence[str] = (),
) -> bytes:
    """A PEM certificate from the cluster CA for a key held elsewhere (a joining agent
    sends its CSR; its private key never travels). ``client`` picks client or server
    authentication; a serving certificate covers ``dns_names`` and ``ips``."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise ValueError("only ECDSA and RSA keys can be certified")
    authority = _load_authority(pki)
    if authority is None:
        raise PKIError(f"no cluster CA at {pki.ca_cert}; call ensure_pki first")
    attributes = [x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(oid.NameOID.COMMON_NAME, common_name))
    usage = oid.ExtendedKeyUsageOID.CLIENT_AUTH if client else oid.ExtendedKeyUsageOID.SERVER_AUTH
    builder = _leaf_builder(x509.Name(attributes), authority, public_key, _now(), usage)
    if not client:
        names: list[x509.GeneralName] = [x509.DNSName(d.lower()) for d in dns_names if d]
        names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return _cert_pem(builder.sign(authority.key, hashes.SHA256()))


def user_from_certificate(
    der_or_cert: Mapping[str, object] | x509.Certificate | bytes,
) -> tuple[str, list[str]]:
    """The Kubernetes user (common name) and groups (organizations) of a client certificate.

    Only call it with a certificate the TLS layer has verified against the cluster CA.
    Accepts what ``ssl.SSLSocket.getpeercert()`` returns (aiohttp exposes it as
    ``transport.get_extra_info('peercert')``), a parsed certificate, or DER bytes. As in
    Go's ``pkix.Name``, the last common name wins; an empty one is rejected, as the
    Kubernetes x509 authenticator does.
    """
    if isinstance(der_or_cert, bytes):
        der_or_cert = x509.load_der_x509_certificate(der_or_cert)
    if isinstance(der_or_cert, x509.Certificate):
        attributes = [(a.oid, str(a.value)) for a in der_or_cert.subject]
        common_names = [v for k, v in attributes if k == oid.NameOID.COMMON_NAME]
        organizations = [v for k, v in attributes if k == oid.NameOID.ORGANIZATION_NAME]
    else:
        attributes_by_name = _peercert_subject(der_or_cert)
        common_names = [v for k, v in attributes_by_name if k == "commonName"]
        organizations = [v for k, v in attributes_by_name if k == "organizationName"]
    if not common_names or not common_names[-1]:
        raise ValueError("the client certificate has no common name (user name)")
    return common_names[-1], organizations


def server_ssl_context(pki: ClusterPKI) -> ssl.SSLContext:
    """The API server's TLS context.

    A client certificate is optional (``CERT_OPTIONAL``) because clients also come with
    a bearer token or anonymously; one that is presented must chain to the cluster CA or
    the handshake fails. Only HTTP/1.1 is offered: aiohttp does not speak HTTP/2, and
    kubectl falls back cleanly when the server picks ``http/1.1``.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.serving_cert, pki.serving_key)
    context.load_verify_locations(cafile=pki.ca_cert)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    return context


def write_private_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` atomically and durably, with permissions ``mode``.

    Readers see the old content or the new, never a torn file, and the file is never
    readable by others even for a moment (it is created with ``mode``, not chmod-ed
    after). Shared with the kubeconfig writer.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            os.fchmod(tmp.fileno(), mode)
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


# --- the authority ---------------------------------------------------------------------


def _ensure_authority(pki: ClusterPKI) -> _Authority:
    """Load the CA, creating it only when there is no CA certificate at all."""
    authority = _load_authority(pki)
    if authority is not None:
        return authority
    now = _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(oid.NameOID.COMMON_NAME, f"kubling-ca@{int(now.timestamp())}")]
    )
    cert = (
        _builder(name, name, key, now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    _write_pair(pki.ca_cert, _cert_pem(cert), pki.ca_key, _key_pem(key))
    return _Authority(cert=cert, key=key)


def _load_authority(pki: ClusterPKI) -> _Authority | None:
    """The CA on disk; ``None`` when there is none yet.

    A CA key without its certificate is a crash during creation (nothing was ever signed
    with it), so it counts as no CA. A certificate without a matching key is not
    repairable: re-creating the CA would break every client, so it is an error.
    """
    if not pki.ca_cert.exists():
        return None
    try:
        cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
        loaded = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PKIError(
            f"cannot load the cluster CA from {pki.ca_cert} and {pki.ca_key}: {exc}"
        ) from exc
    if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PKIError(f"{pki.ca_key}: only ECDSA and RSA CA keys are supported")
    if not _key_matches(cert, loaded):
        raise PKIError(f"{pki.ca_key} is not the key of {pki.ca_cert}")
    return _Authority(cert=cert, key=loaded)


# --- the leaves ------------------------------------------------------------------------


def _serving_cert_fits(
    pki: ClusterPKI, authority: _Authority, sans: _SANs, now: datetime.datetime
) -> bool:
    """Whether the serving certificate on disk can be kept as it is."""
    cert = _load_leaf(pki.serving_cert, pki.serving_key, authority, now)
    return cert is not None and _covers(cert, sans)


def _admin_cert_fits(pki: ClusterPKI, authority: _Authority, now: datetime.datetime) -> bool:
    """Whether the admin client certificate on disk can be kept as it is."""
    return _client_cert_fits(pki.admin_cert, pki.admin_key, authority, now,
                             (ADMIN_USER, [ADMIN_GROUP]))


def _client_cert_fits(cert_path: Path, key_path: Path, authority: _Authority,
                      now: datetime.datetime, identity: tuple[str, list[str]]) -> bool:
    """Whether a client certificate on disk can be kept: whole, fresh, the same identity."""
    cert = _load_leaf(cert_path, key_path, authority, now)
    if cert is None:
        return False
    try:
        return user_from_certificate(cert) == identity
    except ValueError:
        return False


def _issue_serving_cert(
    pki: ClusterPKI, authority: _Authority, sans: _SANs, now: datetime.datetime
) -> None:
    """A fresh key too: a re-issue after a suspected leak should not keep the old one."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(sans.dns)]
    names += [x509.IPAddress(ip) for ip in sorted(sans.ips, key=lambda ip: (ip.version, ip))]
    subject = x509.Name([x509.NameAttribute(oid.NameOID.COMMON_NAME, "kubling")])
    cert = (
        _leaf_builder(subject, authority, key, now, oid.ExtendedKeyUsageOID.SERVER_AUTH)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(authority.key, hashes.SHA256())
    )
    _write_pair(pki.serving_cert, _cert_pem(cert), pki.serving_key, _key_pem(key))


def _issue_client(
    authority: _Authority, *, common_name: str, organizations: list[str], now: datetime.datetime
) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(oid.NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(oid.NameOID.COMMON_NAME, common_name))
    cert = _leaf_builder(
        x509.Name(attributes), authority, key, now, oid.ExtendedKeyUsageOID.CLIENT_AUTH
    ).sign(authority.key, hashes.SHA256())
    return _cert_pem(cert), _key_pem(key)


def _leaf_builder(
    subject: x509.Name,
    authority: _Authority,
    key: ec.EllipticCurvePrivateKey | CertifiedKey,
    now: datetime.datetime,
    usage: x509.ObjectIdentifier,
) -> x509.CertificateBuilder:
    """What every leaf shares: not a CA, signature-only key usage, one extended usage."""
    return (
        _builder(subject, authority.cert.subject, key, now, LEAF_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey | CertifiedKey,
    now: datetime.datetime,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    public = key if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey) \
        else key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _load_leaf(
    cert_path: Path, key_path: Path, authority: _Authority, now: datetime.datetime
) -> x509.Certificate | None:
    """A leaf on disk that is whole, from this CA and not near expiry; else ``None``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(authority.cert)
    except (OSError, ValueError, TypeError, exceptions.InvalidSignature):
        return None
    if not _key_matches(cert, key) or cert.not_valid_after_utc - now < RENEW_BEFORE:
        return None
    return cert


def _required_sans(hostnames: list[str], ips: list[str]) -> _SANs:
    """Normalize the wanted names; an IP given as a host name counts as an IP."""
    dns: set[str] = {name.lower() for name in SERVICE_DNS_NAMES}
    addresses: set[IPAddress] = set()
    for name in hostnames:
        try:
            addresses.add(ipaddress.ip_address(name))
        except ValueError:
            dns.add(name.strip().lower().rstrip("."))
    for ip in ips:
        addresses.add(ipaddress.ip_address(ip))
    dns.discard("")
    return _SANs(dns=frozenset(dns), ips=frozenset(addresses))


def _covers(cert: x509.Certificate, sans: _SANs) -> bool:
    try:
        present = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = {name.lower() for name in present.get_values_for_type(x509.DNSName)}
    ips = set(present.get_values_for_type(x509.IPAddress))
    return sans.dns <= dns and sans.ips <= ips


# --- files and encodings ---------------------------------------------------------------


def _write_pair(cert_path: Path, cert_pem: bytes, key_path: Path, key_pem: bytes) -> None:
    """Key first: a crash in between leaves a mismatch that the next start repairs."""
    write_private_file(key_path, key_pem)
    write_private_file(cert_path, cert_pem)


def _make_private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_matches(cert: x509.Certificate, key: object) -> bool:
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        return False
    encoding, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        cert.public_key().public_bytes(encoding, spki)
        == key.public_key().public_bytes(encoding, spki)
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # The "EC PRIVATE KEY" form, as k3s writes; every TLS stack kubectl uses reads it.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _peercert_subject(peercert: Mapping[str, object]) -> list[tuple[str, str]]:
    """Flatten ``getpeercert()['subject']`` (RDNs of (name, value) pairs) in order."""
    subject = peercert.get("subject")
    if not isinstance(subject, tuple):
        raise ValueError("the peer certificate has no subject (was it verified?)")
    pairs: list[tuple[str, str]] = []
    for rdn in subject:
        for attribute in rdn if isinstance(rdn, tuple) else ():
            if isinstance(attribute, tuple) and len(attribute) == 2:
                name, value = attribute
                pairs.append((str(name), str(value)))
    return pairs


def _now() -> datetime.datetime:
    return datetime.datetime.fromtimestamp(time.time(), tz=datetime.UTC)
