"""Everything of one world, started and stopped together.

Per domain, two roles share one store (DATA/<domain>/), as at a real provider:

- submission (smtp.<domain>, pop.<domain>): the persona as it is, on 127.0.0.1 at the domain's own
  ports (the 587/465/110/995 of the lab): the learner logs in there;
- MX (mx.<domain>): the same persona's texts on the domain's own loopback address at the world's
  relay port (the lab's port 25), where other domains deliver: no AUTH asked, local recipients
  only, the domain's greylisting and full mailboxes, lab time for its waits.

Then the world's DNS and one relay agent per domain. `EmbeddedWorld` runs it in the reactor thread
for the app, the lesson linter and tests.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from twisted.internet import defer

from ..profile import Profile
from ..server import Listening, MailServers, _ReactorThread
from ..session import EventHub, ServerEvent
from .clock import LabClock
from .dns import WorldDNS, confirmed_name
from .relay import RelayAgent
from .roles import mx_profile, submission_profile
from .senderauth import SenderChecks
from .worldfile import Domain, World


@dataclass
class DomainServers:
    """The running pieces of one domain."""

    domain: Domain
    submission: MailServers
    mx: MailServers
    relay: RelayAgent
    events: EventHub


class WorldServers:
    """DNS, then every domain's submission and MX listeners, then the relay agents."""

    def __init__(
        self,
        world: World,
        data_dir: Path,
        *,
        reactor: Any = None,
        tls: bool = True,
        record_transcripts: bool = True,
        adapt: Callable[[Profile], Profile] | None = None,
    ) -> None:
        """`adapt` changes each domain's submission profile before it starts (a class's limits)."""
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.reactor = reactor
        self.world = world
        self.data_dir = Path(data_dir)
        self.tls = tls
        self.record_transcripts = record_transcripts
        self.adapt = adapt
        self.clock = LabClock(reactor, world.time_scale)
        self.dns: WorldDNS | None = None
        self.domains: dict[str, DomainServers] = {}
        self._event_subscribers: list[Callable[[str, ServerEvent], None]] = []

    # -- start / stop ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def start(self) -> Any:
        try:
            yield self._start()
        except Exception:
            yield self.stop()
            raise
        return self

    @defer.inlineCallbacks
    def _start(self) -> Any:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tls_context = None
        if self.tls:
            from twisted.internet import ssl

            from ..tls import ensure_certificates

            names = [name for d in self.world.domains for name in (d.smtp_host, d.pop3_host, d.mx_host)]
            # ...and the addresses a learner's client dials (127.0.0.1, each MX's own), so that
            # `smtplib.SMTP_SSL("127.0.0.1", ...)` verifies the certificate instead of turning
            # the check off (the lab has no names in the system's resolver).
            names += [self.world.reach_host, *(d.address for d in self.world.domains)]
            ensure_certificates(self.data_dir, names)
            # MTA to MTA TLS is opportunistic (RFC 3207 4.1 leaves verification to policy): encrypt, don't verify.
            tls_context = ssl.CertificateOptions()
        dkim_public = self.dkim_public_keys()
        self.dns = WorldDNS(self.world, dkim_public, self.reactor)
        dns_port = self.dns.start()
        resolver = self.dns.resolver()
        relay_port = self.world.relay_port
        for domain in self.world.domains:
            events = EventHub()
            directory = self.data_dir / domain.name
            common = dict(reactor=self.reactor, events=events, tls=self.tls, tls_dir=self.data_dir, record_transcripts=self.record_transcripts)
            profile = submission_profile(self.world, domain)
            if self.adapt is not None:
                profile = self.adapt(profile)
            submission = MailServers(
                profile, directory, host=self.world.host,
                smtp_port=domain.submission_port, pop3_port=domain.pop3_port,
                smtps_port=domain.smtps_port, pop3s_port=domain.pop3s_port, **common,
            )
            # The MX has its own hub: the relays' sessions arriving there are not the learner's.
            mx_events = EventHub()
            mx_common = {**common, "events": mx_events}
            mx = MailServers(mx_profile(self.world, domain, profile if self.adapt else None), directory, host=domain.address, smtp_port=relay_port, pop3_port=None, **mx_common)
            for servers in (submission, mx):
                servers.context.clock = self.clock  # dates, greylisting and the queue in lab time
            mx.context.message_check = SenderChecks(domain.mx_host, (self.world.reach_host, dns_port), domain.enforce_dmarc)
            # The MX names its clients from the world's DNS (PTR, then A back): `from smtp.qq.lab
            # (smtp.qq.lab [127.0.0.2])` in its Received line, as a real MX writes.
            mx.context.client_namer = functools.partial(confirmed_name, resolver)
            yield submission.start()
            agent = RelayAgent(
                world=self.world, domain=domain, store=submission.store, clock=self.clock, resolver=resolver,
                events=events, transcripts_dir=directory / "transcripts", tls_context=tls_context,
                prepare=self.signer(domain),
                is_local_account=lambda address, p=submission.profile: p.find_account(address) is not None,
                run_blocking=submission.context.run_blocking,
            )
            events.subscribe(agent.on_event)
            events.subscribe(lambda event, name=domain.name: self._publish(name, event))
            mx_events.subscribe(lambda event, name=domain.name: self._publish(name, event))
            self.domains[domain.name] = DomainServers(domain, submission, mx, agent, events)
        relay_port = yield self._start_mx(relay_port)
        self.world = replace(self.world, relay_port=relay_port, dns_port=dns_port)
        for servers in self.domains.values():
            servers.relay.relay_port = relay_port
            servers.relay.world = self.world
            servers.relay.start()

    @defer.inlineCallbacks
    def _start_mx(self, relay_port: int) -> Any:
        """Every MX on its own address at one port. With port 0 the first MX picks a free port;
        if that port is busy on another address (a client's ephemeral port there), all try anew."""
        from twisted.internet.error import CannotListenError

        for _ in range(20):
            port = relay_port
            started: list[MailServers] = []
            try:
                for servers in self.domains.values():
                    servers.mx.ports["SMTP"] = port
                    yield servers.mx.start()
                    started.append(servers.mx)
                    port = servers.mx.port_of("SMTP")
                return port
            except CannotListenError:
                yield defer.gatherResults([mx.stop() for mx in started], consumeErrors=True)
                if relay_port:
                    raise
        raise CannotListenError(self.world.host, 0, OSError("no port free on every domain's address"))

    def stop(self) -> defer.Deferred:
        stopping: list[defer.Deferred] = []
        for servers in self.domains.values():
            stopping += [servers.relay.stop(), servers.submission.stop(), servers.mx.stop()]
        if self.dns is not None:
            stopping.append(self.dns.stop())
        return defer.gatherResults(stopping, consumeErrors=True)

    # -- sender authentication ------------------------------------------------------------

    def _dkim_keys(self) -> dict[str, tuple[bytes, str]]:
        """Each signing domain's key, made once under DATA/dkim/ and kept across restarts."""
        from .senderauth import ensure_dkim_key

        if not hasattr(self, "_keys"):
            self._keys = {d.name: ensure_dkim_key(self.data_dir / "dkim", d.name) for d in self.world.domains if d.dkim_sign}
        return self._keys

    def dkim_public_keys(self) -> dict[str, str]:
        return {name: public for name, (_, public) in self._dkim_keys().items()}

    def signer(self, domain: Domain) -> Callable[[bytes], bytes] | None:
        """The relay signs what it sends for its domain (RFC 6376), as the provider's MTA would."""
        from .senderauth import dkim_signer

        key = self._dkim_keys().get(domain.name)
        return dkim_signer(domain.name, domain.dkim_selector, key[0]) if key else None

    # -- what the CLI and the app show ----------------------------------------------------

    def listening(self) -> list[tuple[str, Listening]]:
        """(domain, listener) for every bound port; DNS first."""
        found: list[tuple[str, Listening]] = []
        if self.dns is not None:
            found.append(("world", Listening("DNS", self.world.host, self.dns.port)))
        for name, servers in self.domains.items():
            found += [(name, item) for item in servers.submission.listening]
            found += [(name, Listening("MX", item.host, item.port)) for item in servers.mx.listening]
        return found

    def subscribe(self, callback: Callable[[str, ServerEvent], None]) -> None:
        """Every server and relay event of the world, with the domain it happened in."""
        self._event_subscribers.append(callback)

    def _publish(self, domain: str, event: ServerEvent) -> None:
        for callback in list(self._event_subscribers):
            callback(domain, event)

    def store(self, domain: str) -> Any:
        return self.domains[domain].submission.store

    def port_of(self, domain: str, name: str) -> int:
        """Port of a domain's listener: SMTP (submission), SMTPS, POP3, POP3S or MX."""
        servers = self.domains[domain]
        if name == "MX":
            return servers.mx.port_of("SMTP")
        return servers.submission.port_of(name)


class EmbeddedWorld:
    """A world in the reactor thread, driven from another thread (the app, the linter, tests)."""

    def __init__(self, world: World, data_dir: Path, **options: Any) -> None:
        self.reactor = _ReactorThread.ensure()
        self.world = world
        self.data_dir = Path(data_dir)
        self.options = options
        self.servers: WorldServers | None = None

    def start(self) -> WorldServers:
        from twisted.internet.threads import blockingCallFromThread

        def build() -> defer.Deferred:
            self.servers = WorldServers(self.world, self.data_dir, reactor=self.reactor, **self.options)
            return self.servers.start()

        return blockingCallFromThread(self.reactor, build)

    def stop(self) -> None:
        from twisted.internet.threads import blockingCallFromThread

        if self.servers is not None:
            blockingCallFromThread(self.reactor, self.servers.stop)
            self.servers = None

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run `function` in the reactor thread and return its result (Deferreds waited for)."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, lambda: defer.maybeDeferred(function, *args))

    def __enter__(self) -> WorldServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
