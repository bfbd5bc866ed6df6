"""Start and stop the SMTP/POP3 listeners of one persona over one data directory.

`MailServers` is reactor-agnostic and used by `maillab serve` (reactor in the main thread).
`EmbeddedServers` runs the reactor in a daemon thread for the TUI and the lesson linter, which
live in another event loop (../DESIGN: Twisted beside Textual).
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from twisted.internet import defer, endpoints
from twisted.protocols.tls import TLSMemoryBIOFactory

from . import auth
from .pop3 import POP3Factory
from .accounts import Account
from .profile import Profile
from .session import EventHub, ServerContext, log
from .blocking import BlockingWorkers
from .limits import descriptor_budget
from .output import OutputQueue
from .smtp import SMTPFactory
from .store import MailStore


LISTEN_BACKLOG = 1024


@dataclass(frozen=True)
class Listening:
    """One bound listener: what the CLI prints and what clients connect to."""

    name: str  # "SMTP", "POP3", "SMTPS", "POP3S"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.name} listening on {host}:{self.port}"


class MailServers:
    """The listeners of one persona, sharing one store, portal and event hub."""

    def __init__(
        self,
        profile: Profile,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        smtp_port: int | None = 2525,
        pop3_port: int | None = 2110,
        smtps_port: int | None = None,
        pop3s_port: int | None = None,
        extra_accounts: Iterable[Account] = (),
        events: EventHub | None = None,
        reactor: Any = None,
        tls: bool = True,
        tls_dir: Path | None = None,
        record_transcripts: bool = True,
    ) -> None:
        self.profile = profile.with_accounts(extra_accounts)
        self.data_dir = Path(data_dir)
        self.host = host
        self.ports = {"SMTP": smtp_port, "POP3": pop3_port, "SMTPS": smtps_port, "POP3S": pop3s_port}
        self.events = events or EventHub()
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        policies = self.profile.policies
        self.store = MailStore(self.data_dir, quota=policies.mailbox_quota, min_free=policies.min_free_disk)
        (self.data_dir / "transcripts").mkdir(exist_ok=True, mode=0o700)  # the store made DATA 0700
        for account in self.profile.accounts:
            self.store.ensure_mailbox(account.address)
        self.preload_mail()
        if self.profile.policies.implicit_tls_only:
            # The persona speaks TLS from the first byte on its ports (RFC 8314), nothing in plain text.
            self.ports = {
                "SMTPS": smtps_port if smtps_port is not None else smtp_port,
                "POP3S": pop3s_port if pop3s_port is not None else pop3_port,
            }
        self.tls_files = None
        tls_options = None
        tls_subject = ""
        if tls:
            from .tls import describe_certificate, ensure_certificates, server_tls_options

            self.tls_files = ensure_certificates(
                tls_dir or self.data_dir, [self.profile.hostname, self.profile.pop3_hostname]
            )
            tls_options = server_tls_options(self.tls_files)
            tls_subject = describe_certificate(self.tls_files.cert)
        self.context = ServerContext(
            profile=self.profile,
            store=self.store,
            portal=auth.make_portal(self.profile),
            events=self.events,
            transcripts_dir=self.data_dir / "transcripts",
            tls_options=tls_options,
            tls_subject=tls_subject,
            record_transcripts=record_transcripts,
            output=OutputQueue("transcripts", self.profile.policies.transcript_queue_bytes),
            workers=BlockingWorkers(self.reactor) if hasattr(self.reactor, "getThreadPool") else None,
        )
        self.context.limits.max_sessions = self.profile.policies.max_sessions or descriptor_budget(
            self.profile.policies.fd_headroom
        )
        self.listening: list[Listening] = []
        self._ports: list[Any] = []

    def preload_mail(self) -> None:
        """Deliver the profile's preloaded messages once per data directory (a marker remembers)."""
        markers = self.data_dir / "preloaded"
        for mail in self.profile.preloaded_mail:
            digest = hashlib.sha256(f"{self.profile.name}\0{mail.to}\0".encode() + mail.content).hexdigest()[:32]
            marker = markers / digest
            if marker.exists():
                continue
            self.store.deliver([mail.to], mail.content)
            markers.mkdir(parents=True, exist_ok=True, mode=0o700)
            handle = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(f"{mail.origin} -> {mail.to}\n")

    def _endpoint(self, port: int) -> Any:
        # A class connects all at once: Twisted's default backlog of 50 drops SYNs and costs 1 s each.
        if ":" in self.host:
            return endpoints.TCP6ServerEndpoint(self.reactor, port, backlog=LISTEN_BACKLOG, interface=self.host)
        return endpoints.TCP4ServerEndpoint(self.reactor, port, backlog=LISTEN_BACKLOG, interface=self.host)

    def _factory(self, name: str) -> Any:
        """SMTPS/POP3S are the plain protocols inside TLS from the first byte (RFC 8314)."""
        implicit_tls = name in ("SMTPS", "POP3S")
        factory: Any = (SMTPFactory if name.startswith("SMTP") else POP3Factory)(self.context, implicit_tls=implicit_tls)
        if implicit_tls:
            if self.context.tls_options is None:
                raise RuntimeError(f"{name} needs TLS certificates")
            factory = TLSMemoryBIOFactory(self.context.tls_options, False, factory)
        return factory

    @defer.inlineCallbacks
    def start(self) -> Any:
        """Bind every configured listener; on any failure, unbind the ones already bound."""
        try:
            for name, port in self.ports.items():
                if port is None:
                    continue
                listening_port = yield self._endpoint(port).listen(self._factory(name))
                self._ports.append(listening_port)
                address = listening_port.getHost()
                self.listening.append(Listening(name, address.host, address.port))
        except Exception:
            yield self.stop()
            raise
        return self.listening

    def stop(self) -> defer.Deferred:
        """Stop listening and tell every open session the service is going away."""
        for session in list(self.context.sessions):
            session.shut_down()
        ports, self._ports = self._ports, []
        self.listening = []
        stopped = defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports], consumeErrors=True)
        return stopped.addBoth(self._written)

    def _written(self, result: Any) -> defer.Deferred:
        """Once stopped, the transcripts are on disk (waited for in a thread, never in the reactor)."""
        from twisted.internet import threads

        output = self.context.output
        workers = self.context.workers
        if output is None or not hasattr(self.reactor, "getThreadPool"):
            return defer.succeed(result)
        def drain_and_stop() -> None:
            if workers is not None:
                workers.drain(10.0)  # messages being stored: their transcript lines come after
                workers.stop()
            output.drain(10.0)
            output.stop()  # its thread ends; the next session (if started again) starts another

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), drain_and_stop).addCallback(
            lambda _: result
        )

    def port_of(self, name: str) -> int:
        for item in self.listening:
            if item.name == name:
                return item.port
        raise KeyError(name)


class _ReactorThread:
    """The one Twisted reactor of the process, run in a daemon thread on first use."""

    _lock = threading.Lock()
    _thread: threading.Thread | None = None

    @classmethod
    def ensure(cls) -> Any:
        from twisted.internet import reactor

        with cls._lock:
            if cls._thread is None:
                started = threading.Event()
                reactor.callWhenRunning(started.set)
                cls._thread = threading.Thread(
                    target=reactor.run, kwargs={"installSignalHandlers": False}, name="twisted-reactor", daemon=True
                )
                cls._thread.start()
                if not started.wait(10):
                    raise RuntimeError("the Twisted reactor did not start")
        return reactor


class EmbeddedServers:
    """MailServers on free loopback ports, driven from a non-Twisted thread (TUI, linter, tests)."""

    def __init__(self, profile: Profile, data_dir: Path, **options: Any) -> None:
        options.setdefault("smtp_port", 0)
        options.setdefault("pop3_port", 0)
        self.reactor = _ReactorThread.ensure()
        self._options = options
        self._profile = profile
        self._data_dir = data_dir
        self.servers: MailServers | None = None

    def start(self) -> list[Listening]:
        from twisted.internet.threads import blockingCallFromThread

        def build() -> defer.Deferred:
            self.servers = MailServers(self._profile, self._data_dir, reactor=self.reactor, **self._options)
            return self.servers.start()

        return blockingCallFromThread(self.reactor, build)

    def stop(self) -> None:
        from twisted.internet.threads import blockingCallFromThread

        if self.servers is not None:
            blockingCallFromThread(self.reactor, self.servers.stop)
            self.servers = None

    def port_of(self, name: str) -> int:
        assert self.servers is not None
        return self.servers.port_of(name)

    def subscribe(self, callback: Any) -> Any:
        assert self.servers is not None
        return self.servers.events.subscribe(callback)

    def __enter__(self) -> "EmbeddedServers":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["Listening", "MailServers", "EmbeddedServers", "log"]
