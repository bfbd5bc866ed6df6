"""Where the TUI's servers are: embedded mock servers on free loopback ports (started per lesson
or sandbox persona, in the Twisted reactor thread), or a classroom server given by `--server`.

Server events and live session lines arrive on the reactor thread; `Lab` hands them to the app's
loop with the callback the app gives it (`App.call_from_thread`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mockservers.profile import Profile


@dataclass(frozen=True)
class Endpoints:
    """Where to connect: host, ports, and the CA that signs the server certificate (if known)."""

    host: str
    smtp: int
    pop3: int
    ca_cert: Path | None
    embedded: bool
    smtps: int | None = None
    pop3s: int | None = None
    smtp_host: str | None = None  # a world lesson that talks to an MX: the domain's own address
    dns: tuple[str, int] | None = None  # a world's DNS server (host, port), for `dig`
    dns_example: str = ""  # the domain a lesson's `dig` asks about (the recipient's)

    def host_for(self, protocol: str) -> str:
        return self.smtp_host if protocol != "pop3" and self.smtp_host else self.host

    def port(self, protocol: str, implicit: bool = False) -> int:
        """The plain port of `protocol`, or its implicit-TLS port (465/995 style) when asked and served."""
        if implicit and self.tls_port(protocol) is not None:
            return self.tls_port(protocol) or 0
        return self.pop3 if protocol == "pop3" else self.smtp

    def tls_port(self, protocol: str) -> int | None:
        return self.pop3s if protocol == "pop3" else self.smtps

    def implicit_tls(self, protocol: str) -> bool:
        """True when this protocol is only served over TLS from the first byte (SMTPS/POP3S)."""
        tls_port = self.tls_port(protocol)
        return tls_port is not None and tls_port == self.port(protocol)


class Lab:
    """Starts and stops the servers one lesson (or the sandbox) talks to."""

    def __init__(
        self,
        data_root: Path,
        *,
        remote_host: str | None = None,
        remote_smtp: int = 2525,
        remote_pop3: int = 2110,
        deliver: Callable[[Callable[..., Any], Any], None] | None = None,
    ) -> None:
        self.data_root = data_root
        self.remote_host = remote_host
        self.remote_smtp = remote_smtp
        self.remote_pop3 = remote_pop3
        self.deliver = deliver
        self.servers: Any = None
        self._unsubscribe: list[Callable[[], None]] = []

    @property
    def remote(self) -> bool:
        return self.remote_host is not None

    def start(
        self,
        profile: Profile,
        name: str,
        *,
        fresh: bool = True,
        on_line: Callable[[Any], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
    ) -> Endpoints:
        """Servers for `profile` over DATA/lab/<name> (emptied first when `fresh`)."""
        self.stop()
        if self.remote:
            return Endpoints(self.remote_host or "", self.remote_smtp, self.remote_pop3, None, embedded=False)
        from mockservers.server import EmbeddedServers

        data = self.data_root / "lab" / name
        if fresh and data.exists():
            shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True, exist_ok=True)
        # Implicit-TLS listeners too, so every persona can be reached the way its real server is.
        servers = EmbeddedServers(profile, data, tls_dir=self.data_root, smtps_port=0, pop3s_port=0)
        servers.start()
        self.servers = servers
        hub = servers.servers.events
        if on_line is not None:
            self._unsubscribe.append(hub.subscribe_lines(self._handoff(on_line)))
        if on_event is not None:
            self._unsubscribe.append(hub.subscribe(self._handoff(on_event)))
        listening = {item.name: item.port for item in servers.servers.listening}
        return Endpoints(
            "127.0.0.1",
            listening.get("SMTP") or listening.get("SMTPS", 0),
            listening.get("POP3") or listening.get("POP3S", 0),
            servers.servers.tls_files.ca_cert if servers.servers.tls_files else None,
            embedded=True,
            smtps=listening.get("SMTPS"),
            pop3s=listening.get("POP3S"),
        )

    def start_world(
        self,
        lesson: Any,
        name: str,
        *,
        fresh: bool = True,
        on_line: Callable[[Any], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
        on_dns: Callable[[Any], None] | None = None,
    ) -> Endpoints:
        """A fresh world for a world lesson (docs/world.md): SMTP to its smtp_domain, POP3 to its pop3_domain."""
        self.stop()
        if self.remote:
            return Endpoints(self.remote_host or "", self.remote_smtp, self.remote_pop3, None, embedded=False)
        from mockservers.world.servers import EmbeddedWorld
        from simulator.course.world_lab import lesson_domains, lesson_world, talks_to_mx, world_ports, world_smtp_host

        data = self.data_root / "lab" / name
        if fresh and data.exists():
            shutil.rmtree(data, ignore_errors=True)
        world = EmbeddedWorld(lesson_world(lesson).free_ports(), data)
        servers = world.start()
        self.servers = world
        if on_line is not None:
            # The learner's own sessions (and their telnet ones), never the servers' relay sessions.
            mine = self._handoff(on_line)
            learner_lines = lambda line: None if line.session.startswith("relay-") else mine(line)  # noqa: E731
            for domain in {d.name for d in lesson_domains(lesson, servers.world)}:
                self._unsubscribe.append(servers.domains[domain].events.subscribe_lines(learner_lines))
        if on_event is not None:
            for domain in {d.name for d in lesson_domains(lesson, servers.world)}:
                self._unsubscribe.append(servers.domains[domain].events.subscribe(self._handoff(on_event)))
        if on_dns is not None and servers.dns is not None:
            self._unsubscribe.append(servers.dns.subscribe(self._handoff(on_dns)))
        ports = world_ports(servers, lesson)
        smtp_domain, pop3_domain = lesson_domains(lesson, servers.world)
        return Endpoints(
            "127.0.0.1", ports["smtp"], ports["pop3"], data / "tls" / "ca.pem", embedded=True,
            smtp_host=world_smtp_host(servers, lesson),
            # the implicit-TLS ports of submission and POP3 (an MX has none: port 25 only)
            smtps=None if talks_to_mx(lesson) else _port_or_none(servers, smtp_domain.name, "SMTPS"),
            pop3s=_port_or_none(servers, pop3_domain.name, "POP3S"),
            dns=(servers.world.host, servers.dns.port) if servers.dns is not None else None,
            dns_example=lesson_domains(lesson, servers.world)[1].name,
        )

    @property
    def world(self) -> Any:
        """The running WorldServers of a world lesson, else None."""
        servers = getattr(self.servers, "servers", None)
        return servers if servers is not None and hasattr(servers, "domains") else None

    def _handoff(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        deliver = self.deliver
        if deliver is None:
            return callback
        return lambda item: deliver(callback, item)

    @property
    def store(self) -> Any:
        """The single server's store (None for a world: see `world`)."""
        if self.servers is None or self.world is not None:
            return None
        return self.servers.servers.store

    def stop(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        if self.servers is not None:
            self.servers.stop()
            self.servers = None


def _port_or_none(servers: Any, domain: str, listener: str) -> int | None:
    """The port of a world domain's listener, None when the world file turned it off."""
    try:
        return servers.port_of(domain, listener) or None
    except (KeyError, ValueError):
        return None
