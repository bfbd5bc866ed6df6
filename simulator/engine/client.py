"""An asyncio TCP client that sends exactly what a learner types, like telnet, plus STARTTLS.

Line-oriented: the caller feeds the lines it reads into a session model (which knows when a
reply is complete), so the same client serves the TUI, the lesson linter and grading replays.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path


class ClientError(Exception):
    """The connection failed or closed; the message says what happened, for the transcript."""


class MailClient:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        ca_cert: Path | None = None,
        implicit_tls: bool = False,
        server_hostname: str = "localhost",
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.ca_cert = ca_cert
        self.implicit_tls = implicit_tls
        self.server_hostname = server_hostname
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.tls_subject: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """Trust maillab's local CA (and only it) when known, else the system store."""
        if self.ca_cert is not None:
            from mockservers.tls import client_ssl_context

            return client_ssl_context(self.ca_cert)
        return ssl.create_default_context()

    async def connect(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.ssl_context() if self.implicit_tls else None,
                    server_hostname=self.server_hostname if self.implicit_tls else None,
                ),
                self.timeout,
            )
        except (OSError, asyncio.TimeoutError) as error:
            raise ClientError(f"cannot connect to {self.host}:{self.port}: {_reason(error)}") from None
        if self.implicit_tls:
            self.tls_subject = self._subject()

    async def read_line(self, timeout: float | None = None) -> str:
        """One line without its CRLF; ClientError when the server closed the connection."""
        assert self.reader is not None
        try:
            raw = await asyncio.wait_for(self.reader.readline(), timeout or self.timeout)
        except asyncio.TimeoutError:
            raise ClientError(f"no reply within {timeout or self.timeout:g} s") from None
        except (OSError, ssl.SSLError) as error:
            raise ClientError(f"connection lost: {_reason(error)}") from None
        if not raw:
            raise ClientError("the server closed the connection")
        return line_text(raw)

    async def poll_line(self, seconds: float) -> str | None:
        """The next line if the server sends one within `seconds`, else None (nothing is lost:
        a line still arriving stays buffered for the next read); ClientError when it hung up."""
        assert self.reader is not None
        try:
            raw = await asyncio.wait_for(self.reader.readline(), max(seconds, 0.001))
        except asyncio.TimeoutError:
            return None
        except (OSError, ssl.SSLError) as error:
            raise ClientError(f"connection lost: {_reason(error)}") from None
        if not raw:
            raise ClientError("the server closed the connection")
        return line_text(raw)

    async def send_line(self, line: str) -> None:
        await self.send_bytes(line.encode("utf-8") + b"\r\n")

    async def send_bytes(self, data: bytes) -> None:
        assert self.writer is not None
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (OSError, ssl.SSLError) as error:
            raise ClientError(f"connection lost: {_reason(error)}") from None

    async def starttls(self) -> str:
        """Upgrade this very connection to TLS (after `220 Ready to start TLS` / `+OK Begin TLS`)."""
        assert self.writer is not None
        try:
            await asyncio.wait_for(
                self.writer.start_tls(self.ssl_context(), server_hostname=self.server_hostname), self.timeout
            )
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as error:
            raise ClientError(f"TLS handshake failed: {_reason(error)}") from None
        self.tls_subject = self._subject()
        return self.tls_subject

    def _subject(self) -> str:
        assert self.writer is not None
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None:
            return ""
        cert = ssl_object.getpeercert() or {}
        short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C"}
        subject = ", ".join(f"{short.get(k, k)}={v}" for part in cert.get("subject", ()) for k, v in part)
        issuer = ", ".join(f"{short.get(k, k)}={v}" for part in cert.get("issuer", ()) for k, v in part)
        version = ssl_object.version() or "TLS"
        return f"{subject} (issued by {issuer}, {version})" if subject else version

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except (OSError, ssl.SSLError, asyncio.TimeoutError):
                pass
            self.writer = None


def line_text(raw: bytes) -> str:
    """One line without its ending, by the servers' own framing rule: a line ends at LF, and one
    CR before it belongs to the ending (RFC 5321 2.3.8, RFC 1939 3); other CRs are data."""
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw.decode("utf-8", "replace")


def _reason(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__
