"""One TCP conversation of the TUI: the client, the session model (or lesson run), and the
events a screen shows. Runs on the app's asyncio loop; no widget code here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from mockservers.masking import mask_line
from simulator.course.runner import LessonRun
from simulator.engine.client import ClientError, MailClient
from simulator.engine.session import Exchange, Expect, LineKind, POP3Session, SMTPSession

from .lab import Endpoints


@dataclass(frozen=True)
class Connected:
    host: str
    port: int


@dataclass(frozen=True)
class Sent:
    line: str
    shown: str
    kind: LineKind


@dataclass(frozen=True)
class Replied:
    exchange: Exchange


@dataclass(frozen=True)
class TLSStarted:
    subject: str


@dataclass(frozen=True)
class Closed:
    reason: str
    failed_to_connect: bool = False


class Conversation:
    """Sends what the learner types and reads what the server answers, like telnet."""

    def __init__(
        self,
        protocol: str,
        endpoints: Endpoints,
        on_event: Callable[[Any], None],
        run: LessonRun | None = None,
        implicit_tls: bool = False,
    ) -> None:
        self.protocol = protocol
        self.wants_implicit_tls = implicit_tls
        self.endpoints = endpoints
        self.on_event = on_event
        self.run = run
        self.session: SMTPSession | POP3Session = self._new_session()
        self.client: MailClient | None = None
        self._reader: asyncio.Task[None] | None = None
        self.connected = False
        self.ports_used: set[int] = set()  # every local port this conversation has had (watch mode)
        self.connecting = False

    def _new_session(self) -> SMTPSession | POP3Session:
        if self.run is not None:
            self.run.reconnect(self.protocol)
            return self.run.session
        return POP3Session() if self.protocol == "pop3" else SMTPSession()

    def _resume_run(self) -> None:
        """The lesson run may be following a session from another terminal: this one speaks now."""
        if self.run is not None and self.run.session is not self.session:
            self.run.resume(self.session)

    @property
    def local_port(self) -> int | None:
        writer = self.client.writer if self.client else None
        sockname = writer.get_extra_info("sockname") if writer else None
        return sockname[1] if sockname else None

    async def open(self) -> None:
        await self.close()
        self.session = self._new_session()
        implicit = self.endpoints.implicit_tls(self.protocol) or (
            self.wants_implicit_tls and self.endpoints.tls_port(self.protocol) is not None
        )
        port = self.endpoints.port(self.protocol, implicit)
        self.client = MailClient(self.endpoints.host_for(self.protocol), port, ca_cert=self.endpoints.ca_cert, implicit_tls=implicit, timeout=15)
        self.connecting = True
        try:
            await self.client.connect()
        except ClientError as error:
            self.connected = False
            self.on_event(Closed(str(error), failed_to_connect=True))
            return
        finally:
            self.connecting = False
        self.connected = True
        if self.local_port is not None:
            self.ports_used.add(self.local_port)
        self.on_event(Connected(self.endpoints.host_for(self.protocol), port))
        if implicit:
            self.session.tls_active = True
            self.on_event(TLSStarted(self.client.tls_subject or "TLS"))
        self._reader = asyncio.create_task(self._read_forever())

    async def _read_forever(self) -> None:
        assert self.client is not None
        try:
            while True:
                line = await self.client.read_line(timeout=3600)
                self._resume_run()
                exchanges = self.run.received([line]) if self.run is not None else self.session.received([line])
                for exchange in exchanges:
                    self.on_event(Replied(exchange))
                if self.session.expecting == Expect.TLS:
                    subject = await self.client.starttls()
                    if self.run is not None:
                        self.run.tls_started()
                    else:
                        self.session.tls_started()
                    self.on_event(TLSStarted(subject))
        except ClientError as error:
            self.connected = False
            if self.run is not None:
                self._resume_run()
                self.run.closed()
            else:
                self.session.closed = True
            self.on_event(Closed(str(error)))
        except asyncio.CancelledError:
            raise

    async def send(self, line: str, diagnostics: list[Any] | None = None) -> None:
        if self.client is None or not self.connected:
            self.on_event(Closed("not connected"))
            return
        self._resume_run()
        kind = self.run.sent(line, diagnostics) if self.run is not None else self.session.sent(line)
        shown = mask_line(line, in_sasl_exchange=kind == LineKind.AUTH_RESPONSE)
        self.on_event(Sent(line, shown, kind))
        try:
            await self.client.send_line(line)
        except ClientError as error:
            self.connected = False
            self.on_event(Closed(str(error)))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
            self._reader = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        self.connected = False
