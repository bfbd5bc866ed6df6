"""Drive SMTP and POP3 sessions through a fake transport and a fake clock (no sockets, no sleeps)."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mockservers import auth
from mockservers.pop3 import POP3Session
from mockservers.accounts import Account
from mockservers.profile import Profile, load_profile
from mockservers.session import EventHub, ServerContext
from mockservers.smtp import SMTPSession
from mockservers.store import MailStore


class TLSStringTransport(StringTransport):
    """A StringTransport that records STARTTLS instead of doing a handshake."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.tls_started_with: object | None = None

    def startTLS(self, options: object) -> None:  # noqa: N802
        self.tls_started_with = options


class Harness:
    """One session on a fake transport; `send` returns the reply lines it produced."""

    def __init__(
        self,
        session_class: type,
        data_dir: Path,
        profile: Profile | str = "rfc",
        *,
        tls: bool = True,
        implicit_tls: bool = False,
        store: MailStore | None = None,
        clock: Clock | None = None,
        extra_accounts: tuple[Account, ...] = (),
        events: EventHub | None = None,
        transport: StringTransport | None = None,
    ) -> None:
        if isinstance(profile, str):
            profile = load_profile(profile)
        self.profile = profile.with_accounts(extra_accounts)
        self.store = store or MailStore(data_dir)
        self.clock = clock or Clock()
        self.events = events or EventHub()
        self.context = ServerContext(
            profile=self.profile,
            store=self.store,
            portal=auth.make_portal(self.profile),
            events=self.events,
            transcripts_dir=data_dir / "transcripts",
            tls_options=object() if tls else None,
            clock=self.clock,
            synchronous_io=True,
        )
        self.transport = transport if transport is not None else TLSStringTransport()
        self.session = session_class(self.context)
        self.session.tls_active = implicit_tls  # as the factory of an implicit-TLS port (465, 995) sets it
        self.session.makeConnection(self.transport)
        self.greeting = self.take()

    def take(self) -> list[str]:
        data = self.transport.value().decode("utf-8", "replace")
        self.transport.clear()
        return [line for line in data.split("\r\n")][:-1] if data else []

    def raw(self, data: bytes) -> list[str]:
        self.session.dataReceived(data)
        self.settle()
        return self.take()

    def settle(self) -> None:
        """Let the short pauses a session waits on (a failed login's delay) pass on the fake clock.

        Only while the session waits, and only as far as `auth_failure_delay_max`: the idle timer
        and other long timers are left for the tests that advance the clock themselves.
        """
        horizon = self.profile.policies.auth_failure_delay_max
        for _ in range(1000):
            if not self.session.waiting:
                return
            now = self.clock.seconds()
            due = [call.getTime() for call in self.clock.getDelayedCalls() if call.getTime() - now <= horizon]
            if not due:
                return
            self.clock.advance(max(0.0, min(due) - now))

    def send(self, line: str) -> list[str]:
        return self.raw(line.encode("utf-8") + b"\r\n")

    def codes(self, line: str) -> str:
        """The reply code (first three characters of the last line)."""
        lines = self.send(line)
        return lines[-1][:3] if lines else ""

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def smtp(data_dir: Path, profile: Profile | str = "rfc", **kwargs: object) -> Harness:
    return Harness(SMTPSession, data_dir, profile, **kwargs)


def pop3(data_dir: Path, profile: Profile | str = "rfc", **kwargs: object) -> Harness:
    return Harness(POP3Session, data_dir, profile, **kwargs)
