"""Every persona presents a certificate for its own host names, whichever personas ran before.

One CA per data directory, one certificate file per host name: before, a single server.pem was
reissued for each persona, so the persona started first decided the name every later one showed.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest

from live import persona, serving
from mockservers.profile_files import bundled_personas
from mockservers.tls import client_ssl_context

NAMES = bundled_personas()


def _read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data


def smtp_starttls_subject(port: int, context: ssl.SSLContext, hostname: str) -> dict:
    """The certificate a STARTTLS client asking for `hostname` gets (verified, host name checked)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        _read_reply(raw)
        raw.sendall(b"EHLO client.example\r\n")
        _read_reply(raw)
        raw.sendall(b"STARTTLS\r\n")
        assert _read_reply(raw).startswith(b"220")
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            return tls.getpeercert()


def pop3s_subject(port: int, context: ssl.SSLContext, hostname: str) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            assert tls.recv(4096).startswith(b"+OK")
            return tls.getpeercert()


def common_name(cert: dict) -> str:
    return next(value for part in cert["subject"] for key, value in part if key == "commonName")


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_every_persona_presents_its_own_name(tmp_path: Path, order: str) -> None:
    names = NAMES if order == "forward" else list(reversed(NAMES))
    shared = tmp_path / "data"  # one data directory, as in the app: one CA for everything
    for index, name in enumerate(names):
        profile = persona(name)
        with serving(profile, tmp_path / f"run{index}", tls_dir=shared, pop3s_port=0) as servers:
            context = client_ssl_context(servers.servers.tls_files.ca_cert)
            cert = smtp_starttls_subject(servers.port_of("SMTP"), context, profile.hostname)
            assert common_name(cert) == profile.hostname.lower(), name  # DNS names are case-insensitive
            pop = pop3s_subject(servers.port_of("POP3S"), context, profile.pop3_hostname)
            assert common_name(pop) == profile.hostname.lower(), name  # the same persona's certificate
    assert len({p.name for p in (shared / "tls" / "hosts").glob("*.pem")}) == len({persona(n).hostname.lower() for n in NAMES})
