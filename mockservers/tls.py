"""A local certificate authority and server certificate for STARTTLS/STLS and implicit TLS.

Learners practise `openssl s_client -starttls smtp` against the mock servers, so the servers need a
certificate a client can really verify: a CA made once per data directory (hand `ca.pem` to any
client) and one server certificate per host name it signs, reissued only when new names are asked for.

Files live in DATA/tls/: ca.pem and ca.key (shared), and per server host name hosts/<name>.pem and
hosts/<name>.key (server.pem/server.key when no name is given). Each persona presents a certificate
for its own name (CN = its SMTP host name), whichever persona ran before. Every file is written to a temporary
name and moved into place with os.replace, under an exclusive lock file, so two processes starting at
once neither corrupt files nor pair a certificate with the wrong key.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import itertools
import os
import ssl
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_COMMON_NAME",
    "TLSFiles",
    "client_ssl_context",
    "describe_certificate",
    "ensure_certificates",
    "server_tls_options",
]

CA_COMMON_NAME = "maillab local CA"
CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=825)
# A server certificate this close to expiry is replaced rather than served.
RENEW_BEFORE = dt.timedelta(days=30)
# Tolerate clients whose clocks run a little behind.
BACKDATE = dt.timedelta(hours=1)
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")

if TYPE_CHECKING:
    from twisted.internet.ssl import CertificateOptions


@dataclass(frozen=True)
class TLSFiles:
    """Where the certificate files of one data directory are."""

    ca_cert: Path
    cert: Path
    key: Path

    @property
    def ca_key(self) -> Path:
        return self.ca_cert.with_name("ca.key")


def _tls_files(data_dir: Path, primary: str | None = None) -> TLSFiles:
    """The shared CA, and the certificate files of the host name `primary` (kept apart per name)."""
    directory = Path(data_dir) / "tls"
    if primary is None:
        return TLSFiles(ca_cert=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    hosts = directory / "hosts"
    return TLSFiles(ca_cert=directory / "ca.pem", cert=hosts / f"{primary}.pem", key=hosts / f"{primary}.key")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialize certificate work between processes sharing one data directory."""
    handle = os.fdopen(os.open(directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b")  # an empty lock file, owner only
    try:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` so readers see the old file or the new one, never a mix."""
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _parse_name(name: str) -> x509.GeneralName:
    """A subjectAltName entry: an IP address or a (punycoded) DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name.isascii():
        name = name.encode("idna").decode("ascii")
    return x509.DNSName(name)


def _clean_names(hostnames: Sequence[str]) -> list[str]:
    if isinstance(hostnames, str):
        raise TypeError("hostnames must be a sequence of names, not one string")
    names: list[str] = []
    for raw in hostnames:
        name = raw.strip().rstrip(".").lower()
        if not name:
            continue
        if any(char.isspace() or char in "/\\\0" for char in name):
            raise ValueError(f"not a host name: {raw!r}")
        if name not in names:
            names.append(name)
    return names


def _san_key(entry: x509.GeneralName) -> tuple[str, str]:
    if isinstance(entry, x509.IPAddress):
        return ("ip", str(entry.value))
    return ("dns", str(entry.value).lower())


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _make_ca(files: TLSFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "maillab"),
    ])
    start = _now() - BACKDATE
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_atomic(files.ca_key, _private_pem(key), 0o600)
    _write_atomic(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _make_leaf(
    files: TLSFiles,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey | None,
    common_name: str,
    names: list[x509.GeneralName],
) -> None:
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_atomic(files.key, _private_pem(key), 0o600)
    if not 1 <= len(common_name) <= 64:
        common_name = "localhost"
    start = _now() - BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + LEAF_VALIDITY, ca_cert.not_valid_after_utc))
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
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _leaf_names(leaf: x509.Certificate) -> list[x509.GeneralName]:
    try:
        return list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _leaf_usable(
    leaf: x509.Certificate | None,
    key: ec.EllipticCurvePrivateKey | None,
    ca_cert: x509.Certificate,
) -> bool:
    """Whether the existing server certificate can keep being served as it is (names aside)."""
    if leaf is None or key is None:
        return False
    if leaf.public_key() != key.public_key():
        return False
    try:
        leaf.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return leaf.not_valid_after_utc - RENEW_BEFORE > _now()


def ensure_certificates(data_dir: Path, hostnames: Sequence[str] = ()) -> TLSFiles:
    """Make sure DATA/tls holds the CA and a server certificate for `hostnames`; return the paths.

    The certificate belongs to the first name (its CN and its file name: one file per host name,
    so one persona's certificate never replaces another's) and always covers localhost, 127.0.0.1
    and ::1 too. An existing one is reused
    untouched when it already covers every requested name; otherwise a new one is issued by the
    same CA for the union of old and new names (keeping the server key). The CA is created once
    and never replaced while ca.pem exists.
    """
    requested = _clean_names(hostnames)
    files = _tls_files(data_dir, requested[0] if requested else None)
    directory = files.ca_cert.parent
    directory.mkdir(parents=True, exist_ok=True)
    files.cert.parent.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)
    wanted = [_parse_name(name) for name in [*requested, *DEFAULT_NAMES]]
    with _locked(directory):
        ca_cert = _load_cert(files.ca_cert)
        leaf, key = _load_cert(files.cert), _load_key(files.key)
        ca_key: ec.EllipticCurvePrivateKey | None = None
        if ca_cert is None:
            if files.ca_cert.exists():
                raise ValueError(f"{files.ca_cert} is not a PEM certificate; remove {directory} to start over")
            ca_cert, ca_key = _make_ca(files)
        # Names asked for earlier stay covered, even when the old certificate must be replaced.
        existing = _leaf_names(leaf) if leaf is not None else []
        have = {_san_key(entry) for entry in existing}
        missing = [entry for entry in wanted if _san_key(entry) not in have]
        if not missing and _leaf_usable(leaf, key, ca_cert):
            return files
        if ca_key is None:
            ca_key = _load_key(files.ca_key)
            if ca_key is None or ca_key.public_key() != ca_cert.public_key():
                raise ValueError(
                    f"cannot issue a server certificate: {files.ca_key} is missing or does not match "
                    f"{files.ca_cert}; remove {directory} to create a new CA"
                )
        names = existing + missing
        if key is not None and leaf is not None and leaf.public_key() != key.public_key():
            key = None
        _make_leaf(files, ca_cert, ca_key, key, requested[0] if requested else "localhost", names)
    return files


def _read_pair(files: TLSFiles) -> tuple[bytes, bytes]:
    directory = files.cert.parent
    if (directory / ".lock").exists():
        with _locked(directory):
            return files.key.read_bytes(), files.cert.read_bytes()
    return files.key.read_bytes(), files.cert.read_bytes()


def server_tls_options(files: TLSFiles) -> CertificateOptions:
    """Twisted TLS settings for the servers: the generated certificate, TLS 1.2 at the least.

    Usable both for `transport.startTLS(...)` (STARTTLS, STLS) and for `SSL4ServerEndpoint`
    (implicit TLS on 465/995).
    """
    import OpenSSL
    from OpenSSL import crypto
    from twisted.internet import ssl as twisted_ssl

    key_pem, cert_pem = _read_pair(files)
    key = serialization.load_pem_private_key(key_pem, password=None)
    cert = x509.load_pem_x509_certificate(cert_pem)
    private_key: object = key
    certificate: object = cert
    if _version_tuple(OpenSSL.__version__) < (24, 3):
        # Older pyOpenSSL only takes its own wrappers; newer ones deprecate them.
        private_key = crypto.PKey.from_cryptography_key(key)
        certificate = crypto.X509.from_cryptography(cert)
    return twisted_ssl.CertificateOptions(
        privateKey=private_key,  # type: ignore[arg-type]
        certificate=certificate,  # type: ignore[arg-type]
        raiseMinimumTo=twisted_ssl.TLSVersion.TLSv1_2,
    )


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, piece))
        parts.append(int(digits or 0))
    return tuple(parts)


def client_ssl_context(ca_cert: Path) -> ssl.SSLContext:
    """A stdlib client context that trusts only the maillab CA and checks host names."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _common_name(name: x509.Name) -> str:
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else name.rfc4514_string()


def describe_certificate(cert_path: Path) -> str:
    """One line for people: "CN=smtp.qq.com, issued by maillab local CA, valid until 2029-03-01"."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    until = cert.not_valid_after_utc.date().isoformat()
    return f"CN={_common_name(cert.subject)}, issued by {_common_name(cert.issuer)}, valid until {until}"
