"""The local CA and server certificate: generation, reuse, growth, and real handshakes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL

from mockservers.tls import (
    TLSFiles,
    client_ssl_context,
    describe_certificate,
    ensure_certificates,
    server_tls_options,
)

PROJECT = Path(__file__).resolve().parents[1]
OPENSSL = shutil.which("openssl")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def san(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        set(names.get_values_for_type(x509.DNSName)),
        {str(ip) for ip in names.get_values_for_type(x509.IPAddress)},
    )


def cn(name: x509.Name) -> str:
    return str(name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def snapshot(files: TLSFiles) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (files.ca_cert, files.cert, files.key)}


def openssl_verify(files: TLSFiles) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, "verify", "-purpose", "sslserver", "-CAfile", str(files.ca_cert), str(files.cert)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return ensure_certificates(tmp_path, ["smtp.qq.com", "mail.example.com"])


def test_generated_files_and_modes(tmp_path: Path, files: TLSFiles) -> None:
    assert files == TLSFiles(
        ca_cert=tmp_path / "tls" / "ca.pem",
        cert=tmp_path / "tls" / "hosts" / "smtp.qq.com.pem",
        key=tmp_path / "tls" / "hosts" / "smtp.qq.com.key",
    )
    for path in (files.ca_cert, files.cert, files.key):
        assert path.is_file()
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "tls" / "ca.key").stat().st_mode) == 0o600
    assert not list((tmp_path / "tls").glob("*.tmp"))


def test_ca_certificate(files: TLSFiles) -> None:
    ca = load(files.ca_cert)
    assert cn(ca.subject) == "maillab local CA"
    assert ca.subject == ca.issuer
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert dt.timedelta(days=3640) <= lifetime <= dt.timedelta(days=3660)
    ca.verify_directly_issued_by(ca)


def test_server_certificate(files: TLSFiles) -> None:
    ca, leaf = load(files.ca_cert), load(files.cert)
    leaf.verify_directly_issued_by(ca)
    assert cn(leaf.subject) == "smtp.qq.com"
    dns, ips = san(leaf)
    assert dns == {"localhost", "smtp.qq.com", "mail.example.com"}
    assert ips == {"127.0.0.1", "::1"}
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(days=825)
    assert leaf.not_valid_after_utc > dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=800)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == leaf.public_key()


def test_default_names_and_cn(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path)
    leaf = load(files.cert)
    assert cn(leaf.subject) == "localhost"
    assert san(leaf) == ({"localhost"}, {"127.0.0.1", "::1"})
    with pytest.raises(TypeError):
        ensure_certificates(tmp_path, "smtp.qq.com")  # type: ignore[arg-type]


def test_second_call_reuses_everything(tmp_path: Path, files: TLSFiles) -> None:
    before = snapshot(files)
    again = ensure_certificates(tmp_path, ["SMTP.qq.com", "mail.example.com."])
    assert again == files
    assert snapshot(again) == before
    ensure_certificates(tmp_path, ["localhost", "127.0.0.1"])
    ensure_certificates(tmp_path)
    assert snapshot(files) == before


def test_new_hostname_grows_san_and_keeps_ca(tmp_path: Path, files: TLSFiles) -> None:
    before = snapshot(files)
    ca_key_before = (tmp_path / "tls" / "ca.key").read_bytes()
    grown = ensure_certificates(tmp_path, ["smtp.qq.com", "pop.qq.com"])
    assert grown == files
    after = snapshot(grown)
    assert after["ca.pem"] == before["ca.pem"]
    assert (tmp_path / "tls" / "ca.key").read_bytes() == ca_key_before
    assert after["smtp.qq.com.pem"][1] != before["smtp.qq.com.pem"][1]
    leaf = load(grown.cert)
    assert san(leaf)[0] == {"localhost", "smtp.qq.com", "mail.example.com", "pop.qq.com"}
    assert cn(leaf.subject) == "smtp.qq.com"
    leaf.verify_directly_issued_by(load(grown.ca_cert))
    # The key is kept, so a process already serving the old certificate pairs with either file.
    assert after["smtp.qq.com.key"][1] == before["smtp.qq.com.key"][1]
    if OPENSSL:
        assert openssl_verify(grown).returncode == 0


def test_another_host_name_gets_its_own_files_and_the_same_ca(tmp_path: Path, files: TLSFiles) -> None:
    before = snapshot(files)
    gmail = ensure_certificates(tmp_path, ["smtp.gmail.com", "pop.gmail.com"])
    assert gmail.cert != files.cert and gmail.ca_cert == files.ca_cert
    assert snapshot(files) == before  # the first name's certificate is left alone
    assert cn(load(gmail.cert).subject) == "smtp.gmail.com"
    load(gmail.cert).verify_directly_issued_by(load(files.ca_cert))


def test_ip_hostname_goes_into_ip_san(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, ["192.0.2.7", "2001:db8::1"])
    dns, ips = san(load(files.cert))
    assert ips == {"127.0.0.1", "::1", "192.0.2.7", "2001:db8::1"}
    assert dns == {"localhost"}
    assert all(ipaddress.ip_address(ip) for ip in ips)


def test_ca_never_regenerated_and_missing_ca_key_is_reported(tmp_path: Path, files: TLSFiles) -> None:
    ca_before = files.ca_cert.read_bytes()
    (tmp_path / "tls" / "ca.key").unlink()
    # Names already covered: nothing to sign, works without the CA key.
    ensure_certificates(tmp_path, ["smtp.qq.com"])
    with pytest.raises(ValueError, match="ca.key"):
        ensure_certificates(tmp_path, ["new.example.com"])
    assert files.ca_cert.read_bytes() == ca_before


def test_leaf_from_another_ca_is_reissued_keeping_names(tmp_path: Path, files: TLSFiles) -> None:
    other = ensure_certificates(tmp_path / "other", ["smtp.qq.com", "pop.qq.com"])
    shutil.copyfile(other.cert, files.cert)
    shutil.copyfile(other.key, files.key)
    with pytest.raises(InvalidSignature):
        load(files.cert).verify_directly_issued_by(load(files.ca_cert))
    ensure_certificates(tmp_path, ["smtp.qq.com"])
    load(files.cert).verify_directly_issued_by(load(files.ca_cert))
    assert san(load(files.cert))[0] == {"localhost", "smtp.qq.com", "pop.qq.com"}


def test_expiring_leaf_is_renewed(tmp_path: Path, files: TLSFiles, monkeypatch: pytest.MonkeyPatch) -> None:
    from mockservers import tls

    before = files.cert.read_bytes()
    real_now = tls._now
    monkeypatch.setattr(tls, "_now", lambda: real_now() + dt.timedelta(days=810))
    ensure_certificates(tmp_path, ["smtp.qq.com"])
    assert files.cert.read_bytes() != before
    assert san(load(files.cert))[0] == {"localhost", "smtp.qq.com", "mail.example.com"}


@pytest.mark.skipif(OPENSSL is None, reason="openssl command not installed")
def test_openssl_verify(files: TLSFiles) -> None:
    result = openssl_verify(files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


CONCURRENT_CHILD = """
import sys
from pathlib import Path
from mockservers.tls import ensure_certificates
ensure_certificates(Path(sys.argv[1]), [sys.argv[2]])
"""


def test_concurrent_processes_share_one_ca(tmp_path: Path) -> None:
    names = [f"host{i}.example.com" for i in range(4)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_CHILD, str(tmp_path), name],
            cwd=PROJECT,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
        )
        for name in names
    ]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0, 0]
    for name in names:  # one CA signed every name's own certificate
        files = ensure_certificates(tmp_path, [name])
        leaf = load(files.cert)
        leaf.verify_directly_issued_by(load(files.ca_cert))
        assert san(leaf)[0] == {"localhost", name} and cn(leaf.subject) == name
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        assert key.public_key() == leaf.public_key()
    assert not [p for p in (tmp_path / "tls").rglob("*.tmp")]


def test_describe_certificate(files: TLSFiles) -> None:
    until = load(files.cert).not_valid_after_utc.date().isoformat()
    assert describe_certificate(files.cert) == f"CN=smtp.qq.com, issued by maillab local CA, valid until {until}"
    assert re.fullmatch(
        r"CN=maillab local CA, issued by maillab local CA, valid until \d{4}-\d\d-\d\d", describe_certificate(files.ca_cert)
    )


def test_client_context_trusts_only_the_ca(files: TLSFiles) -> None:
    context = client_ssl_context(files.ca_cert)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [cn_of(ca) for ca in context.get_ca_certs()] == ["maillab local CA"]


def cn_of(ca: dict) -> str:
    return next(value for rdn in ca["subject"] for key, value in rdn if key == "commonName")


class LoopbackTLSServer:
    """A stdlib TLS server on 127.0.0.1 that echoes one line per connection."""

    def __init__(self, files: TLSFiles) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(files.cert, files.key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                raw, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with raw:
                raw.settimeout(10)
                try:
                    with self.context.wrap_socket(raw, server_side=True) as conn:
                        conn.sendall(conn.recv(1024))
                except (ssl.SSLError, OSError) as error:
                    self.errors.append(error)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.listener.close()


@pytest.fixture
def loopback(files: TLSFiles):
    server = LoopbackTLSServer(files)
    yield server
    server.close()


@pytest.mark.parametrize("server_name", ["localhost", "smtp.qq.com", "mail.example.com"])
def test_loopback_handshake(files: TLSFiles, loopback: LoopbackTLSServer, server_name: str) -> None:
    context = client_ssl_context(files.ca_cert)
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as conn:
            conn.sendall(b"EHLO tls\r\n")
            assert conn.recv(1024) == b"EHLO tls\r\n"
            assert conn.version() in ("TLSv1.2", "TLSv1.3")
            assert dict(x[0] for x in conn.getpeercert()["subject"])["commonName"] == "smtp.qq.com"


def test_loopback_rejects_unknown_name(files: TLSFiles, loopback: LoopbackTLSServer) -> None:
    context = client_ssl_context(files.ca_cert)
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch|doesn't match"):
            context.wrap_socket(raw, server_hostname="evil.example")


def test_loopback_rejects_other_ca(tmp_path: Path, files: TLSFiles, loopback: LoopbackTLSServer) -> None:
    stranger = ensure_certificates(tmp_path / "stranger")
    context = client_ssl_context(stranger.ca_cert)
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            context.wrap_socket(raw, server_hostname="localhost")


# -- the Twisted server options, driven through memory BIOs -----------------------------------------


def pump_handshake(client: SSL.Connection, server: SSL.Connection) -> SSL.Error | None:
    """Shuttle bytes between two memory-BIO connections until both finish or one fails."""
    done = {id(client): False, id(server): False}
    for _ in range(20):
        for side, peer in ((client, server), (server, client)):
            if not done[id(side)]:
                try:
                    side.do_handshake()
                    done[id(side)] = True
                except SSL.WantReadError:
                    pass
                except SSL.Error as error:
                    return error
            try:
                peer.bio_write(side.bio_read(65536))
            except SSL.WantReadError:
                pass
        if all(done.values()):
            return None
    raise AssertionError("handshake did not finish")


def client_connection(version: int, *, ca: Path | None = None) -> SSL.Connection:
    context = SSL.Context(SSL.TLS_METHOD)
    # Security level 0 lets this client really offer old protocol versions.
    context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    if ca is not None:
        context.load_verify_locations(str(ca))
        context.set_verify(SSL.VERIFY_PEER, lambda *args: args[-1])
    connection = SSL.Connection(context, None)
    connection.set_tlsext_host_name(b"localhost")
    connection.set_connect_state()
    return connection


def server_connection(context: SSL.Context) -> SSL.Connection:
    connection = SSL.Connection(context, None)
    connection.set_accept_state()
    return connection


@pytest.mark.parametrize(("version", "name"), [(SSL.TLS1_2_VERSION, "TLSv1.2"), (SSL.TLS1_3_VERSION, "TLSv1.3")])
def test_server_options_accept_modern_tls(files: TLSFiles, version: int, name: str) -> None:
    server = server_connection(server_tls_options(files).getContext())
    client = client_connection(version, ca=files.ca_cert)
    assert pump_handshake(client, server) is None
    assert server.get_protocol_version_name() == name
    assert client.get_peer_certificate(as_cryptography=True).subject == load(files.cert).subject


@pytest.mark.parametrize("version", [SSL.TLS1_1_VERSION, SSL.TLS1_VERSION])
def test_server_options_refuse_old_tls(files: TLSFiles, version: int) -> None:
    # Control: a permissive server completes the handshake with this very client, so the
    # refusal below comes from the server options, not from the client being unable to offer it.
    permissive = SSL.Context(SSL.TLS_METHOD)
    permissive.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    permissive.set_min_proto_version(SSL.TLS1_VERSION)
    permissive.use_certificate(load(files.cert))
    permissive.use_privatekey(serialization.load_pem_private_key(files.key.read_bytes(), password=None))
    control_server = server_connection(permissive)
    assert pump_handshake(client_connection(version), control_server) is None
    assert control_server.get_protocol_version() == version

    server = server_connection(server_tls_options(files).getContext())
    error = pump_handshake(client_connection(version), server)
    assert error is not None
    assert "unsupported protocol" in str(error) or "version" in str(error).lower()

    # OpenSSL's default security level alone already rules out TLS 1.0/1.1 on many builds; lower it
    # so that only the protocol floor of the options stands between the client and a handshake.
    floor_only = server_tls_options(files).getContext()
    floor_only.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    error = pump_handshake(client_connection(version), server_connection(floor_only))
    assert error is not None
    assert "unsupported protocol" in str(error) or "version" in str(error).lower()
