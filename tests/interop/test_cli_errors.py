"""`maillab serve` as a command: usage errors exit 2 with one line on stderr, signals exit 0."""

from __future__ import annotations

import base64
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from interop_helpers import STOP_TIMEOUT, maillab_command, run_tool

pytestmark = pytest.mark.interop


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_tool([*maillab_command(), "serve", "--host", "127.0.0.1", "--data", str(tmp_path / "data"), *args],
                    timeout=30)


def assert_usage_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert done.returncode == 2, f"exit {done.returncode}\nstdout: {done.stdout!r}\nstderr: {done.stderr!r}"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {done.stderr!r}"
    assert "Traceback" not in done.stderr
    assert "listening on" not in done.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def busy_port():
    """A loopback port with a listener on it, held for the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


@pytest.mark.parametrize("listener", ["smtp", "pop3", "smtps", "pop3s"])
def test_port_in_use_exits_2_naming_the_port(tmp_path, busy_port, listener) -> None:
    ports = {"smtp": "0", "pop3": "0"}
    ports[listener] = str(busy_port)
    args = [arg for name, port in ports.items() for arg in (f"--{name}-port", port)]
    done = serve(tmp_path, "--profile", "rfc", *args)
    line = assert_usage_error(done, str(busy_port))
    assert "in use" in line.lower(), line


def test_unknown_profile_exits_2(tmp_path) -> None:
    done = serve(tmp_path, "--profile", "no-such-persona", "--smtp-port", "0", "--pop3-port", "0")
    assert_usage_error(done, "no-such-persona")


@pytest.mark.parametrize("spec", ["no-separator", "user@example.org:", "@example.org:secret", "not-an-address:secret"])
def test_malformed_account_exits_2(tmp_path, spec) -> None:
    done = serve(tmp_path, "--profile", "rfc", "--smtp-port", "0", "--pop3-port", "0", "--account", spec)
    assert_usage_error(done, spec)


@pytest.mark.parametrize("port", ["70000", "-1", "smtp"])
def test_bad_port_exits_2(tmp_path, port) -> None:
    done = serve(tmp_path, "--profile", "rfc", "--smtp-port", port, "--pop3-port", "0")
    assert_usage_error(done, "--smtp-port")


def test_sigint_exits_0(maillab_server) -> None:
    server = maillab_server("rfc")
    assert server.stop(signal.SIGINT) == 0
    assert server.process.stderr is not None and "Traceback" not in server.process.stderr.read()


def test_sigterm_with_clients_connected_exits_0(maillab_server) -> None:
    server = maillab_server("rfc", pop3s=True)
    smtp = socket.create_connection(("127.0.0.1", server.smtp_port), timeout=5)
    pop3 = socket.create_connection(("127.0.0.1", server.pop3_port), timeout=5)
    try:
        smtp.sendall(b"EHLO client.test\r\nMAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        pop3.sendall(b"USER bob@example.com\r\nPASS bob-secret\r\n")
        server.wait_for_output(r"POP3 \S+ \S+ authenticated: bob@example\.com")
        received = bytearray()
        while b"\r\n354 " not in received:  # the SMTP session is mid-message now (recv has the 5 s timeout)
            chunk = smtp.recv(4096)
            assert chunk, bytes(received)
            received += chunk
        started = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        assert time.monotonic() - started < STOP_TIMEOUT
    finally:
        smtp.close()
        pop3.close()


def test_account_option_adds_a_working_mailbox(maillab_server) -> None:
    """--account ADDRESS:SECRET: a new mailbox whose domain becomes local (checked over SMTP AUTH)."""
    server = maillab_server("rfc", accounts=["carol@school.test:carol-secret"])
    assert server.mailbox_dir("carol@school.test").is_dir()
    with socket.create_connection(("127.0.0.1", server.smtp_port), timeout=5) as sock:
        reader = sock.makefile("rb")

        def reply(command: bytes | None = None) -> bytes:
            if command is not None:
                sock.sendall(command + b"\r\n")
            out = b""
            while True:
                line = reader.readline()
                out += line
                if line[3:4] != b"-":
                    return out

        reply()
        reply(b"EHLO client.test")
        assert reply(b"MAIL FROM:<alice@example.com>") == b"250 2.1.0 Ok\r\n"
        assert reply(b"RCPT TO:<carol@school.test>") == b"250 2.1.5 Ok\r\n"  # local now, no relay needed
        assert reply(b"RSET") == b"250 2.0.0 Ok\r\n"
        plain = base64.b64encode(b"\0carol@school.test\0carol-secret")
        assert reply(b"AUTH PLAIN " + plain) == b"235 2.7.0 Authentication successful\r\n"
        assert reply(b"QUIT") == b"221 2.0.0 Bye\r\n"
