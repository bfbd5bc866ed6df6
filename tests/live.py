"""Real-socket helpers: embedded servers on free loopback ports and a line client like telnet."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
import time
from pathlib import Path
from typing import Any, Iterator

from mockservers.profile import Profile, load_profile
from mockservers.server import EmbeddedServers


def persona(name: str = "rfc", **policies: Any) -> Profile:
    """A bundled persona with some policies changed."""
    profile = load_profile(name)
    if policies:
        profile = dataclasses.replace(profile, policies=dataclasses.replace(profile.policies, **policies))
    return profile


@contextlib.contextmanager
def serving(profile: Profile, data_dir: Path, **options: Any) -> Iterator[EmbeddedServers]:
    servers = EmbeddedServers(profile, data_dir, **options)
    servers.start()
    try:
        yield servers
    finally:
        servers.stop()


class LineClient:
    """Sends lines and reads whole replies (SMTP multi-line aware), with timeouts."""

    def __init__(self, port: int, *, timeout: float = 5.0, tls_context: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname="localhost")
        self.buffer = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> "LineClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_line(self) -> str:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed (buffer {self.buffer!r})")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def smtp_reply(self) -> list[str]:
        lines = [self.read_line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.read_line())
        return lines

    def pop3_reply(self, multiline: bool = False) -> list[str]:
        lines = [self.read_line()]
        if multiline and lines[0].startswith("+OK"):
            while lines[-1] != ".":
                lines.append(self.read_line())
        return lines

    def send(self, line: str | bytes) -> None:
        data = line if isinstance(line, bytes) else line.encode("utf-8") + b"\r\n"
        self.sock.sendall(data)

    def smtp(self, line: str | bytes) -> list[str]:
        self.send(line)
        return self.smtp_reply()

    def pop3(self, line: str, multiline: bool = False) -> list[str]:
        self.send(line)
        return self.pop3_reply(multiline)

    def closed_by_server(self, wait: float = 3.0) -> bool:
        """True when the server has closed the connection (EOF) within `wait` seconds."""
        self.sock.settimeout(wait)
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        return False
